"""Which platform's model sources to use: a Rockchip SoC from the device tree, or `cpu`."""

from pathlib import Path

# Device-tree compatible strings -> platform names used by Modelfile sources.
_SOCS = (("rockchip,rk3588", "rk3588"), ("rockchip,rk3576", "rk3576"),
         ("rockchip,rk3562", "rk3562"), ("rockchip,rv1126b", "rv1126b"))

# Per-platform runtime defaults: the big cores (CPU4-7 on RK3588 and RK3576; the small SoCs have
# none, so CPU0-3) and the NPU core count.
_DEFAULTS = {
    "rk3588": {"cpus_mask": 0xF0, "npu_cores": 3},
    "rk3576": {"cpus_mask": 0xF0, "npu_cores": 2},
    "rk3562": {"cpus_mask": 0x0F, "npu_cores": 1},
    "rv1126b": {"cpus_mask": 0x0F, "npu_cores": 1},
}
NPU_ENGINE_PLATFORMS = tuple(_DEFAULTS)


def platform_defaults(platform: str) -> dict:
    return dict(_DEFAULTS.get(platform, {"cpus_mask": 0x0F, "npu_cores": 1}))


def detect_soc(root: Path = Path("/proc/device-tree")) -> str:
    """The SoC from `<root>/compatible` (NUL-separated), or `cpu` when it is not a known Rockchip."""
    try:
        compatible = (root / "compatible").read_bytes().decode("ascii", "replace").lower()
    except OSError:
        return "cpu"
    for marker, name in _SOCS:
        if marker in compatible:
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


RUNTIME_PATHS = ("/usr/lib/librkllmrt.so", "/usr/lib/aarch64-linux-gnu/librkllmrt.so",
                 "/usr/local/lib/librkllmrt.so", "/lib/librkllmrt.so")
"""Where a system-wide RKLLM runtime is looked for, after RKOLLAMA_RKLLM_LIB and external/."""
REQUIRED_DRIVER = (0, 9, 8)
"""The oldest RKNPU driver the RKLLM runtime works with."""


def find_library(setting: str = "") -> Path | None:
    """RKOLLAMA_RKLLM_LIB, then external/ beside the package, then RUNTIME_PATHS."""
    candidates = [setting] if setting else []
    candidates.append(str(Path(__file__).resolve().parents[1] / "external" / "librkllmrt.so"))
    candidates += RUNTIME_PATHS
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def driver_problem() -> str | None:
    """Why this kernel's NPU driver cannot run the RKLLM runtime, or None (also when unknown)."""
    if npu_driver_kind() == "rocket":
        return ROCKET_HINT
    driver = npu_driver_version()
    if driver and tuple(int(x) for x in driver.split(".")) < REQUIRED_DRIVER:
        return (f"the RKNPU driver is {driver}; the RKLLM runtime needs "
                f"{'.'.join(map(str, REQUIRED_DRIVER))} or newer. Upgrade the board's kernel "
                "(5.10.209 or 6.1.84 ship 0.9.8)")
    return None
