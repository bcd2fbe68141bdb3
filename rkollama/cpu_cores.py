"""Which CPU cores the CPU engine's threads should use by default: one thread per physical core,
of the fastest kind this process may run on.

llama.cpp's threads meet at a barrier after every operation of a step, so a step runs at the pace
of its slowest thread. On a big.LITTLE SoC (RK3588: 4x Cortex-A76 + 4x A55; RK3576: 4x A72 + 4x
A53) a thread on a little core holds back the big ones: on an Orange Pi 5, llama.cpp with 8
threads decoded at 3.8 tokens/s and with 4 at 6.9 (llama.cpp issue 7176), and llama.cpp's own
default still counts every core on ARM. Two SMT threads of one core share its arithmetic units,
so a hyperthreaded PC gets one thread per core (as llama.cpp counts them on x86).

Read from sysfs (`root` lets tests point at a tree they built): `topology/thread_siblings_list`
(SMT), `cpu_capacity` (the kernel's relative performance of each core, 1024 for the fastest;
arm64 kernels expose it), else `cpufreq/cpuinfo_max_freq`. A machine whose sysfs says nothing
gets a thread per CPU it may use. A container's CPU quota (cgroup v2 `cpu.max`, `docker run
--cpus`) caps the count: more threads than the quota's CPUs only take turns.

Threads are not pinned: the kernel moves a busy thread to a big core (issue 7176's 4 threads ran
at full speed without taskset), and pinning would crowd the big cores whenever another engine (a
second model, the NPU runtime's own CPU threads) runs beside this one."""

import os
from dataclasses import dataclass
from pathlib import Path

BIG_CAPACITY_SHARE = 0.7
"""A core whose cpu_capacity is at least this share of the fastest core's is of the fastest kind
(a binned A76 cluster at 2.256 GHz beside one at 2.4 is ~0.94; an A55 beside an A76 ~0.39; an A53
beside an A72 ~0.4)."""

BIG_FREQUENCY_SHARE = 0.9
"""Without capacities, the same from maximum clocks alone, which understate a core's kind (an A55
at 1.8 GHz beside an A76 at 2.4 is 0.75): only cores clocked within 10% of the fastest count."""


@dataclass(frozen=True)
class CoreChoice:
    cpus: tuple[int, ...]
    """One CPU id per chosen physical core (the lowest id of its SMT siblings)."""
    cores: int
    """Physical cores this process may run on, of every kind."""
    basis: str
    """What told the kinds apart: "cpu_capacity", "cpuinfo_max_freq" or "" (one kind)."""
    quota: int = 0
    """CPUs the cgroup's cpu.max allows, rounded up; 0 when it sets no limit."""

    @property
    def threads(self) -> int:
        """The CPU engine's default thread count."""
        count = max(1, len(self.cpus))
        return min(count, self.quota) if self.quota else count

    def describe(self) -> str:
        """One line for the load log and `rkollama doctor`."""
        cpus = _ranges(self.cpus)
        kind = f": the fastest {len(self.cpus)} of {self.cores} cores by {self.basis}" if self.basis else ""
        capped = (f", capped by the cgroup's cpu.max at {self.quota}"
                  if self.quota and self.quota < len(self.cpus) else "")
        return f"{self.threads} (one per core on CPUs {cpus}{kind}{capped})"


def choose(root: Path = Path("/"), allowed: set[int] | None = None) -> CoreChoice:
    """The cores for the CPU engine's default threads; `allowed` defaults to this process's
    affinity (taskset, systemd's CPUAffinity=), so a restriction set from outside is obeyed."""
    usable = sorted(allowed if allowed is not None else _affinity())
    base = root / "sys/devices/system/cpu"
    cores: dict[frozenset[int], int] = {}
    for cpu in usable:
        siblings = _cpu_list(_read(base / f"cpu{cpu}/topology/thread_siblings_list")) or {cpu}
        key = frozenset(siblings | {cpu})
        cores[key] = min(cores.get(key, cpu), cpu)
    firsts = sorted(cores.values())
    for basis, share, path in (("cpu_capacity", BIG_CAPACITY_SHARE, "cpu_capacity"),
                               ("cpuinfo_max_freq", BIG_FREQUENCY_SHARE, "cpufreq/cpuinfo_max_freq")):
        speeds = {cpu: _number(_read(base / f"cpu{cpu}/{path}")) for cpu in firsts}
        known = {cpu: speed for cpu, speed in speeds.items() if speed}
        if len(known) < len(firsts) or len(set(known.values())) < 2:
            continue  # unknown for some core, or all alike: this reading cannot tell kinds apart
        fastest = max(known.values())
        chosen = tuple(cpu for cpu in firsts if known[cpu] >= share * fastest)
        return CoreChoice(chosen, len(firsts), basis, _quota(root))
    return CoreChoice(tuple(firsts), len(firsts), "", _quota(root))


def _quota(root: Path) -> int:
    """The tightest cgroup v2 `cpu.max` from this process's group up to the root, in whole CPUs
    (rounded up); 0 for none ("max"), for cgroup v1 and where nothing can be read."""
    group = next((line[3:] for line in _read(root / "proc/self/cgroup").splitlines()
                  if line.startswith("0::/")), None)
    if group is None:
        return 0
    tightest = 0
    path = (root / "sys/fs/cgroup" / group.lstrip("/")).resolve()
    top = (root / "sys/fs/cgroup").resolve()
    while path == top or top in path.parents:
        quota, _, period = _read(path / "cpu.max").partition(" ")
        if quota.isdigit() and period.isdigit() and int(period) > 0:
            cpus = max(1, -(-int(quota) // int(period)))
            tightest = min(tightest, cpus) if tightest else cpus
        if path == top:
            break
        path = path.parent
    return tightest


def _affinity() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return ""


def _number(text: str) -> int:
    return int(text) if text.isdigit() else 0


def _cpu_list(text: str) -> set[int]:
    """The kernel's CPU list format ("0-3,8,10-11"); empty for anything else."""
    cpus: set[int] = set()
    for part in filter(None, text.split(",")):
        low, _, high = part.partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            return set()
        cpus.update(range(int(low), int(high or low) + 1))
    return cpus


def _ranges(cpus: tuple[int, ...]) -> str:
    """(0, 1, 2, 4) -> "0-2,4"."""
    spans: list[list[int]] = []
    for cpu in cpus:
        if spans and cpu == spans[-1][1] + 1:
            spans[-1][1] = cpu
        else:
            spans.append([cpu, cpu])
    return ",".join(f"{a}-{b}" if b > a else f"{a}" for a, b in spans) or "none"
