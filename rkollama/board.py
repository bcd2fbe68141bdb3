"""Live readings of the board from sysfs/debugfs: NPU load per core, temperatures, CPU and NPU
frequencies. Each is absent (not zero) where the kernel does not expose it or cannot be read
(debugfs is root-only on most images). `root` lets tests point at a tree they built."""

import re
from dataclasses import dataclass, field
from pathlib import Path

_NPU_LOAD = re.compile(r"Core(\d+):\s*(\d+)%")


@dataclass
class Readings:
    npu_load: dict[str, float] = field(default_factory=dict)
    """Percent busy per NPU core ("0", "1", "2")."""
    temperatures: dict[str, float] = field(default_factory=dict)
    """Degrees Celsius per thermal zone type (soc-thermal, npu-thermal, …)."""
    cpu_freq_hz: dict[str, float] = field(default_factory=dict)
    """Current frequency per CPU ("0", "4", …), in hertz."""
    npu_freq_hz: float | None = None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def read(root: Path = Path("/")) -> Readings:
    """Everything readable now; a few small file reads (a scrape's worth, not a hot path)."""
    out = Readings()
    load = _read(root / "sys/kernel/debug/rknpu/load")
    if load:
        out.npu_load = {core: float(percent) for core, percent in _NPU_LOAD.findall(load)}
    for zone in sorted((root / "sys/class/thermal").glob("thermal_zone*")):
        millidegrees = _number(_read(zone / "temp"))
        if millidegrees is not None:
            out.temperatures[_read(zone / "type") or zone.name] = millidegrees / 1000.0
    for cpu in sorted((root / "sys/devices/system/cpu").glob("cpu[0-9]*")):
        khz = _number(_read(cpu / "cpufreq/scaling_cur_freq"))
        if khz is not None:
            out.cpu_freq_hz[cpu.name.removeprefix("cpu")] = khz * 1000.0
    for device in sorted((root / "sys/class/devfreq").glob("*npu*")):
        hz = _number(_read(device / "cur_freq"))
        if hz is not None:
            out.npu_freq_hz = hz
            break
    return out
