"""Which platform's model sources to use: a Rockchip SoC from the device tree, or `cpu`."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any


# The one table of platforms: device-tree compatible marker, the big cores' CPU mask (CPU4-7 on
# RK3588 and RK3576; the small SoCs have none, so CPU0-3), NPU cores, NPU device node, and the
# .rkllm quantizations it runs, best first (fact sheet §3.7, §6). `cpu` is every other machine.
@dataclass(frozen=True)
class NPUPlatform:
    compatible: str
    cpus_mask: int
    npu_cores: int
    npu_node: str
    quants: tuple[str, ...]


_NPU = {
    "rk3588": NPUPlatform("rockchip,rk3588", 0xF0, 3, "fdab0000.npu", ("w8a8", "w4a16")),
    "rk3576": NPUPlatform("rockchip,rk3576", 0xF0, 2, "27700000.npu", ("w4a16", "w8a8")),
    "rk3562": NPUPlatform("rockchip,rk3562", 0x0F, 1, "ff300000.npu", ("w8a8", "w4a16", "w4a8")),
    "rv1126b": NPUPlatform("rockchip,rv1126b", 0x0F, 1, "", ("w4a16", "w8a8")),
}
_UNKNOWN = NPUPlatform("", 0x0F, 1, "", ())
NPU_ENGINE_PLATFORMS = tuple(_NPU)
PLATFORMS = ("cpu", *NPU_ENGINE_PLATFORMS)
"""Every platform a Modelfile source or RKOLLAMA_PLATFORM may name."""


ROCKCHIP_DECODE = {("qwen3:0.6b", "rk3588"): 32.91, ("qwen3:0.6b", "rk3576"): 24.85}
"""Rockchip's published decode speeds (tokens/s; runtime 1.3.0, 128-token prompt, frequencies
pinned; RK3588 w8a8, RK3576 w4a16: the fact sheet's table), for the catalogue models they cover."""


def npu_quantizations(platform: str) -> tuple[str, ...]:
    """The .rkllm quantizations `platform` runs, best first; () for the CPU."""
    return _NPU.get(platform, _UNKNOWN).quants


def npu_node(platform: str) -> str:
    """The NPU's device name under /sys/class/devfreq (and in dmesg), "" when unknown."""
    return _NPU.get(platform, _UNKNOWN).npu_node


def platform_defaults(platform: str) -> dict[str, Any]:
    """{"cpus_mask", "npu_cores"} of `platform` (the little cores and one NPU core if unknown)."""
    entry = _NPU.get(platform, _UNKNOWN)
    return {"cpus_mask": entry.cpus_mask, "npu_cores": entry.npu_cores}


def detect_soc(root: Path = Path("/proc/device-tree")) -> str:
    """The SoC from `<root>/compatible` (NUL-separated), or `cpu` when it is not a known Rockchip."""
    try:
        compatible = (root / "compatible").read_bytes().decode("ascii", "replace").lower()
    except OSError:
        return "cpu"
    for name, entry in _NPU.items():
        if entry.compatible in compatible:
            return name
    return "cpu"


def source_platform(setting: str, rkllm_lib: str = "") -> str:
    """Platform whose Modelfile sources are pulled: the override; else the SoC when it has an NPU
    and an RKLLM runtime is installed; else `cpu`."""
    if setting and setting != "auto":
        return setting
    soc = detect_soc()
    if soc in NPU_ENGINE_PLATFORMS:
        if find_library(rkllm_lib) is not None:
            return soc
    return "cpu"


DRIVER_VERSION_FILES = ("sys/module/rknpu/version",       # readable by every user
                        "proc/rknpu/version",              # CONFIG_ROCKCHIP_RKNPU_PROC_FS
                        "sys/kernel/debug/rknpu/version",  # debugfs: root only
                        "proc/debug/rknpu/version")
ROCKET_HINT = ("the mainline 'rocket' NPU driver is loaded, which the RKLLM runtime cannot use: "
               "boot a kernel with Rockchip's rknpu driver (a vendor/BSP kernel image for the board)")


def npu_driver_version(root: Path = Path("/")) -> str:
    """The RKNPU driver version ("0.9.8"), from sysfs, debugfs or procfs under `root`; "" when
    none is readable."""
    import re

    for rel in DRIVER_VERSION_FILES:
        try:
            text = (root / rel).read_text()
        except OSError:
            continue
        match = re.search(r"(\d+\.\d+\.\d+)", text)
        if match:
            return match.group(1)
    return ""


def npu_driver_kind(root: Path = Path("/")) -> str:
    """"rknpu" (Rockchip's driver, what RKLLM needs), "rocket" (the mainline accel driver, which
    it cannot use) or "" (no NPU driver seen)."""
    if (root / "dev/rknpu").exists() or (root / "sys/module/rknpu").exists():
        return "rknpu"
    if (root / "sys/module/rocket").exists():
        return "rocket"
    return ""


LIBRARY_DIRS = ("/usr/lib", "/usr/lib/aarch64-linux-gnu", "/usr/local/lib", "/lib")
"""Where a system-wide Rockchip runtime is looked for, after its setting and external/."""
RECOMMENDED_DRIVER = (0, 9, 8)
"""The RKNPU driver Rockchip's SDK asks for; the runtime itself only warns below 0.9.7, and
Armbian's vendor kernel ships 0.9.7."""
BROKEN_DRIVER_BELOW = (0, 9, 0)
"""Drivers older than this are known not to work (W8A8 matmuls fail on 0.8.2)."""


def find_library(setting: str = "", name: str = "librkllmrt.so") -> Path | None:
    """The runtime library `name` (librkllmrt.so, or librknnrt.so for vision encoders): its
    setting's path, then external/ beside the package, then LIBRARY_DIRS."""
    candidates = [setting] if setting else []
    candidates.append(str(Path(__file__).resolve().parents[1] / "external" / name))
    candidates += [f"{directory}/{name}" for directory in LIBRARY_DIRS]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def driver_problem() -> str | None:
    """Why this kernel's NPU driver cannot run the RKLLM runtime, or None (also when unknown)."""
    if npu_driver_kind() == "rocket":
        return ROCKET_HINT
    driver = npu_driver_version()
    if driver and _version(driver) < BROKEN_DRIVER_BELOW:
        return (f"the RKNPU driver is {driver}, which is known not to work with the RKLLM runtime; "
                f"it needs {_dotted(RECOMMENDED_DRIVER)} (kernels 5.10.209 or 6.1.84 ship it). "
                "RKOLLAMA_NPU_DRIVER_CHECK=false skips this check")
    return None


def driver_warning() -> str | None:
    """A driver that works but is older than Rockchip asks for, or None."""
    driver = npu_driver_version()
    if driver and BROKEN_DRIVER_BELOW <= _version(driver) < RECOMMENDED_DRIVER:
        return (f"the RKNPU driver is {driver}; Rockchip recommends {_dotted(RECOMMENDED_DRIVER)} "
                "(the runtime itself warns below 0.9.7)")
    return None


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split("."))


def _dotted(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))
