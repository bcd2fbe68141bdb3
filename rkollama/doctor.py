"""`rkollama doctor`: what this machine offers the NPU engine, and the command that fixes each
problem. Reads only; pinning frequencies is a separate, explicit, root-only step."""

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rkollama.config import Settings
from rkollama.meminfo import available_bytes
from rkollama.platform import ROCKET_HINT, detect_soc, driver_problem, find_library, npu_driver_version

# What Rockchip's fix_freq_<platform>.sh scripts set (fact sheet §3.8): sysfs file -> value.
PINS = {
    "rk3588": {
        "/sys/class/devfreq/fdab0000.npu/governor": "userspace",
        "/sys/class/devfreq/fdab0000.npu/userspace/set_freq": "1000000000",
        "/sys/devices/system/cpu/cpufreq/policy0/scaling_governor": "userspace",
        "/sys/devices/system/cpu/cpufreq/policy0/scaling_setspeed": "1800000",
        "/sys/devices/system/cpu/cpufreq/policy4/scaling_governor": "userspace",
        "/sys/devices/system/cpu/cpufreq/policy4/scaling_setspeed": "2352000",
        "/sys/devices/system/cpu/cpufreq/policy6/scaling_governor": "userspace",
        "/sys/devices/system/cpu/cpufreq/policy6/scaling_setspeed": "2352000",
        "/sys/class/devfreq/dmc/governor": "userspace",
        "/sys/class/devfreq/dmc/userspace/set_freq": "2112000000",
        # Rockchip's script also disables the deep idle state on every CPU.
        **{f"/sys/devices/system/cpu/cpu{n}/cpuidle/state1/disable": "1" for n in range(8)},
    },
    "rk3576": {
        "/sys/class/devfreq/27700000.npu/governor": "userspace",
        "/sys/class/devfreq/27700000.npu/userspace/set_freq": "1000000000",
        "/sys/devices/system/cpu/cpufreq/policy0/scaling_governor": "userspace",
        "/sys/devices/system/cpu/cpufreq/policy0/scaling_setspeed": "2208000",
        "/sys/devices/system/cpu/cpufreq/policy4/scaling_governor": "userspace",
        "/sys/devices/system/cpu/cpufreq/policy4/scaling_setspeed": "2304000",
        "/sys/class/devfreq/dmc/governor": "userspace",
        "/sys/class/devfreq/dmc/userspace/set_freq": "2112000000",
        **{f"/sys/devices/system/cpu/cpu{n}/cpuidle/state1/disable": "1" for n in range(8)},
    },
}


@dataclass
class Report:
    facts: list[Any] = field(default_factory=list[Any])     # (label, value)
    problems: list[Any] = field(default_factory=list[Any])  # (problem, fix)


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip().strip("\x00")
    except OSError:
        return ""


def _freq(path: str, scale: float, unit: str) -> str:
    value = _read(path)
    return f"{int(value) / scale:g} {unit}" if value.isdigit() else "unknown"


def check(settings: Settings, loaded: list[Any] | None) -> Report:
    report = Report()
    soc = detect_soc()
    board = _read("/proc/device-tree/model") or "unknown"
    report.facts += [("platform", soc if soc != "cpu" else "no Rockchip NPU (CPU engine)"), ("board", board)]
    if soc == "cpu":
        report.problems.append(("This machine has no Rockchip NPU: models run on the CPU engine "
                                "(llama.cpp), which needs nothing more.",
                                "nothing to do; on an RK3588/RK3576 board run ./install.sh there"))
    driver = npu_driver_version()
    unknown = "unknown (needs root to read debugfs)" if soc != "cpu" else "none"
    report.facts.append(("NPU driver", driver or unknown))
    problem = driver_problem()
    if problem == ROCKET_HINT:
        report.problems.append((ROCKET_HINT, "the rknpu driver comes with the board vendor's kernel"))
    elif problem is not None:
        report.problems.append((problem, "or build the driver from rknn-llm's rknpu-driver tarball"))
    node = next((d for d in ("/dev/rknpu", "/dev/dri/renderD129") if os.path.exists(d)), "none")
    report.facts.append(("NPU device", node))
    if soc != "cpu" and node == "none":
        report.problems.append((f"this {soc.upper()} has an NPU but no NPU device node (/dev/rknpu or "
                                "/dev/dri/renderD129): the runtime cannot reach it",
                                "boot a vendor kernel with the rknpu driver; a kernel built with "
                                "CONFIG_ROCKCHIP_RKNPU_DMA_HEAP and no DRM GEM lacks renderD129"))
    _runtime(settings, soc, report)
    policies = sorted(Path("/sys/devices/system/cpu/cpufreq").glob("policy*"))
    for policy in policies:
        report.facts.append((f"CPU {policy.name}", f"{_read(str(policy / 'scaling_governor')) or 'unknown'}, "
                             + _freq(str(policy / "scaling_cur_freq"), 1000, "MHz")))
    if not policies:
        report.facts.append(("CPU frequency", "not exposed by this kernel"))
    devfreq = sorted(Path("/sys/class/devfreq").glob("*")) if Path("/sys/class/devfreq").is_dir() else []
    shown = 0
    for device in devfreq:
        kind = "NPU" if "npu" in device.name else "DDR" if device.name == "dmc" else None
        if kind:
            shown += 1
            report.facts.append((f"{kind} {device.name}", f"{_read(str(device / 'governor')) or 'unknown'}, "
                                 + _freq(str(device / "cur_freq"), 1e6, "MHz")))
    if not shown:
        report.facts.append(("NPU/DDR frequency", "not exposed (no devfreq devices)"))
    if soc in PINS and _read(next(iter(PINS[soc]))) not in ("userspace", "performance"):
        report.problems.append(("NPU, CPU and DDR frequencies are not pinned; Rockchip's figures "
                                "assume they are", "sudo rkollama doctor --pin-frequencies"))
    report.facts.append(("CPU engine threads", settings.thread_choice()[1]))
    report.facts.append(("free memory", _meminfo()))
    for name, path in npu_prompt_paths(settings):
        report.facts.append((f"NPU model {name}", path))
    idle = "none" if loaded is not None else "daemon not running"
    report.facts.append(("loaded models", ", ".join(loaded) if loaded else idle))
    return report


def _runtime(settings: Settings, soc: str, report: Report) -> None:
    from rkollama.backends.rkllm.runtime import INSTALL_HINT, identify
    from rkollama.errors import LoadFailed

    path = find_library(settings.rkllm_lib)
    if path is None:
        report.facts.append(("RKLLM runtime", "not installed"))
        if soc != "cpu":
            report.problems.append(("no RKLLM runtime (librkllmrt.so) found", INSTALL_HINT))
        return
    try:
        found = identify(path)
    except LoadFailed as exc:
        report.facts.append(("RKLLM runtime", str(path)))
        report.problems.append((exc.message, INSTALL_HINT))
        return
    report.facts.append(("RKLLM runtime", f"{path} (version {found.version or 'unknown'}, "
                                          f"ABI family {found.family}, by {found.how})"))
    encoders = find_library(settings.rknn_lib, "librknnrt.so")
    report.facts.append(("RKNN runtime (vision encoders)",
                         str(encoders) if encoders else "not installed (only vision models need it)"))


def npu_prompt_paths(settings: Settings) -> list[tuple[str, str]]:
    """(model, how its prompts reach the runtime) for every .rkllm model in the store."""
    from rkollama.models.describe_npu import prompt_path
    from rkollama.models.store import ModelStore

    return [(spec.name.display(), prompt_path(spec)) for spec in ModelStore(settings.models).list()
            if spec.format == "rkllm"]


def _meminfo() -> str:
    available = available_bytes()
    return f"{available // 2**20} MB available" if available else "unknown"


def pin_frequencies() -> list[str]:
    """Write Rockchip's frequency settings for this SoC; returns what was written. Root only."""
    soc = detect_soc()
    if soc not in PINS:
        raise PermissionError(f"frequency pinning is for RK3588 and RK3576 boards; this is {soc}")
    if os.geteuid() != 0:
        raise PermissionError("pinning frequencies writes to /sys: run it as root (sudo)")
    done = []
    for path, value in PINS[soc].items():
        try:
            Path(path).write_text(value)
            done.append(f"{path} = {value}")
        except OSError as exc:
            done.append(f"{path}: not written ({exc.strerror})")
    return done
