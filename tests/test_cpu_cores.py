"""The CPU engine's default threads: one per physical core of the fastest kind, read from sysfs
trees built as the boards' and PCs' kernels lay them out (values from their device trees: an A55
is 530 DMIPS/MHz against an A76's 1024, at 1.8 against 2.4 GHz; an A53 beside an A72 likewise)."""

import logging
from pathlib import Path

import pytest

from rkollama import cpu_cores
from rkollama.config import Settings
from rkollama.cpu_cores import CoreChoice, choose
from rkollama.platform import platform_defaults


def sysfs(root: Path, cpus: dict[int, dict[str, str]]) -> Path:
    """Write /sys/devices/system/cpu/cpuN/<file> for each CPU's {file: text}."""
    for cpu, files in cpus.items():
        for name, text in files.items():
            path = root / f"sys/devices/system/cpu/cpu{cpu}/{name}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text + "\n")
    return root


def core(capacity: int | None, khz: int | None, siblings: str | None = None) -> dict[str, str]:
    files = {"cpu_capacity": str(capacity), "cpufreq/cpuinfo_max_freq": str(khz),
             "topology/thread_siblings_list": siblings}
    return {name: text for name, text in files.items() if text not in (None, "None")}


def rk3588(big: tuple[int, int] = (1024, 1024), khz: tuple[int, int] = (2400000, 2400000),
           capacity: bool = True) -> dict[int, dict[str, str]]:
    """4x A55 (CPU0-3) and two A76 clusters (CPU4-5, CPU6-7), each binned to its own clock."""
    little = core(397 if capacity else None, 1800000, None)
    return {**{n: {**little, "topology/thread_siblings_list": str(n)} for n in range(4)},
            **{n: core(big[(n - 4) // 2] if capacity else None, khz[(n - 4) // 2], str(n))
               for n in range(4, 8)}}


def mask(choice: CoreChoice) -> int:
    return sum(1 << cpu for cpu in choice.cpus)


def test_an_rk3588_gets_a_thread_per_big_core_the_cores_the_npu_runtime_is_given(tmp_path):
    choice = choose(sysfs(tmp_path, rk3588()), allowed=set(range(8)))
    assert choice.threads == 4 and choice.cpus == (4, 5, 6, 7) and choice.basis == "cpu_capacity"
    assert mask(choice) == platform_defaults("rk3588")["cpus_mask"]
    assert choice.describe() == "4 (one per core on CPUs 4-7: the fastest 4 of 8 cores by cpu_capacity)"


def test_a_big_cluster_binned_to_a_lower_clock_is_still_a_big_core(tmp_path):
    tree = sysfs(tmp_path, rk3588(big=(1024, 963), khz=(2400000, 2256000)))
    assert choose(tree, allowed=set(range(8))).cpus == (4, 5, 6, 7)


def test_an_rk3576_gets_its_a72s(tmp_path):
    cpus = {**{n: core(412, 2000000, str(n)) for n in range(4)},
            **{n: core(1024, 2304000, str(n)) for n in range(4, 8)}}
    choice = choose(sysfs(tmp_path, cpus), allowed=set(range(8)))
    assert choice.cpus == (4, 5, 6, 7) and mask(choice) == platform_defaults("rk3576")["cpus_mask"]


@pytest.mark.parametrize("equal_capacities", [False, True], ids=["no cpu_capacity", "all 1024"])
def test_without_capacities_the_clocks_tell_an_a55_from_an_a76(tmp_path, equal_capacities):
    cpus = rk3588(khz=(2400000, 2256000), capacity=False)
    if equal_capacities:  # a device tree without capacity-dmips-mhz: every core reads 1024
        cpus = {n: {**files, "cpu_capacity": "1024"} for n, files in cpus.items()}
    choice = choose(sysfs(tmp_path, cpus), allowed=set(range(8)))
    assert choice.cpus == (4, 5, 6, 7) and choice.basis == "cpuinfo_max_freq"


def test_clocks_too_close_to_tell_kinds_apart_keep_every_core(tmp_path):
    # An A53 at 2.1 GHz beside an A72 at 2.3: without capacities nothing says which is faster.
    cpus = {**{n: core(None, 2100000, str(n)) for n in range(4)},
            **{n: core(None, 2304000, str(n)) for n in range(4, 8)}}
    choice = choose(sysfs(tmp_path, cpus), allowed=set(range(8)))
    assert choice.threads == 8 and choice.basis == "cpuinfo_max_freq"


def test_a_board_of_one_kind_uses_every_core(tmp_path):
    cpus = {n: core(1024, 2000000, str(n)) for n in range(4)}  # RK3562: 4x A53
    choice = choose(sysfs(tmp_path, cpus), allowed=set(range(4)))
    assert choice == CoreChoice((0, 1, 2, 3), 4, "")
    assert choice.describe() == "4 (one per core on CPUs 0-3)"


def test_a_hyperthreaded_pc_gets_a_thread_per_core_not_per_sibling(tmp_path):
    cpus = {n: core(1024, 4000000, f"{n % 4},{n % 4 + 4}") for n in range(8)}
    choice = choose(sysfs(tmp_path, cpus), allowed=set(range(8)))
    assert choice.cpus == (0, 1, 2, 3) and choice.cores == 4


def test_a_hybrid_pc_gets_its_performance_cores_once_each(tmp_path):
    # 2 P-cores with SMT (CPU0-1, 2-3) at 5.4 GHz, 4 E-cores at 4.3 GHz, no capacities.
    cpus = {**{n: core(None, 5400000, f"{n - n % 2}-{n - n % 2 + 1}") for n in range(4)},
            **{n: core(None, 4300000, str(n)) for n in range(4, 8)}}
    choice = choose(sysfs(tmp_path, cpus), allowed=set(range(8)))
    assert choice.cpus == (0, 2) and choice.cores == 6


@pytest.mark.parametrize("allowed, cpus", [({0, 1, 2, 3}, (0, 1, 2, 3)), ({4, 5}, (4, 5)),
                                           ({2, 6}, (6,))])
def test_cores_restricted_from_outside_are_obeyed(tmp_path, allowed, cpus):
    # taskset or systemd's CPUAffinity=: the choice is among the cores this process may use.
    assert choose(sysfs(tmp_path, rk3588()), allowed=allowed).cpus == cpus


def test_a_sysfs_that_says_nothing_gets_a_thread_per_usable_cpu(tmp_path):
    assert choose(tmp_path, allowed={0, 1, 5}) == CoreChoice((0, 1, 5), 3, "")


@pytest.mark.parametrize("damage", [
    {3: {"cpu_capacity": "fast"}}, {3: {"cpu_capacity": "-1"}}, {3: {"cpu_capacity": ""}},
    {5: {"topology/thread_siblings_list": "0-x"}}])
def test_unreadable_values_fall_back_without_failing(tmp_path, damage):
    cpus = rk3588()
    for cpu, files in damage.items():
        cpus[cpu] = {**cpus[cpu], **files}
    choice = choose(sysfs(tmp_path, cpus), allowed=set(range(8)))
    assert choice.cpus == (4, 5, 6, 7)  # the clocks still tell the kinds apart


def test_the_default_comes_from_the_choice_and_the_setting_overrides_it(monkeypatch):
    monkeypatch.setattr(cpu_cores, "choose", lambda: CoreChoice((4, 5, 6, 7), 8, "cpu_capacity"))
    threads, told = Settings.from_env({}).thread_choice()
    assert threads == 4 and told.startswith("4 (one per core on CPUs 4-7")
    assert Settings.from_env({"RKOLLAMA_NUM_THREADS": "8"}).thread_choice() == (8, "8 (RKOLLAMA_NUM_THREADS)")


@pytest.mark.live
def test_the_cpu_engine_runs_its_default_threads_and_logs_them(smollm2_store, monkeypatch, caplog):
    import llama_cpp

    from rkollama.backends.llamacpp import LlamaCppBackend
    from rkollama.core.types import LoadOptions
    from rkollama.models.store import ModelStore

    monkeypatch.setattr(cpu_cores, "choose", lambda: CoreChoice((1,), 2, "cpu_capacity"))
    spec = ModelStore(smollm2_store).resolve("smollm2:135m")
    with caplog.at_level(logging.INFO, logger="rkollama.llamacpp"):
        backend = LlamaCppBackend.load(spec, LoadOptions(num_ctx=256), Settings.from_env({}))
    try:
        assert backend.loop is not None and llama_cpp.llama_n_threads(backend.loop.ctx) == 1
        assert "CPU threads 1 (one per core on CPUs 1: the fastest 1 of 2 cores" in caplog.text
    finally:
        backend.close()


@pytest.mark.parametrize("limits, quota", [
    ({"": "max 100000", "system.slice/docker-1.scope": "200000 100000"}, 2),
    ({"": "max 100000", "system.slice": "150000 100000", "system.slice/docker-1.scope": "max 100000"}, 2),
    ({"system.slice/docker-1.scope": "max 100000"}, 0),
    ({"system.slice/docker-1.scope": "garbage"}, 0)])
def test_a_containers_cpu_quota_caps_the_threads(tmp_path, limits, quota):
    # docker run --cpus=1.5 on an RK3588: more than two threads would only take turns.
    tree = sysfs(tmp_path, rk3588())
    (tree / "proc/self").mkdir(parents=True)
    (tree / "proc/self/cgroup").write_text("0::/system.slice/docker-1.scope\n")
    for group, text in limits.items():
        (tree / "sys/fs/cgroup" / group).mkdir(parents=True, exist_ok=True)
        (tree / "sys/fs/cgroup" / group / "cpu.max").write_text(text + "\n")
    choice = choose(tree, allowed=set(range(8)))
    assert choice.quota == quota and choice.threads == (quota or 4)
    assert ("capped by the cgroup's cpu.max at 2" in choice.describe()) == bool(quota)


def test_cgroup_v1_sets_no_quota(tmp_path):
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/cgroup").write_text("4:cpu,cpuacct:/docker/1\n")
    assert choose(tmp_path, allowed={0, 1}).threads == 2
