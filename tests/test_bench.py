"""`rkollama bench` against the fake backend (exact figures from its scripted counters) and the
real CPU model (a report and a valid PNG)."""

import json
import struct

import pytest
from test_cli import rk


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_bench_reports_the_servers_own_counters_per_concurrency(fake_server, tmp_path):
    report, table, plot = tmp_path / "r.json", tmp_path / "r.md", tmp_path / "r.png"
    result = rk(["bench", "tiny", "--prompt", "short", "--runs", "2", "--concurrency", "1,2",
                 "--json", str(report), "--markdown", str(table), "--plot", str(plot)],
                url=fake_server.url, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = json.loads(report.read_text())["summary"]
    assert [(r["concurrency"], r["runs"]) for r in rows] == [(1, 2), (2, 4)]
    # The fake takes 1 ms per prompt token and 10 ms per generated one.
    assert all(r["decode_tps"]["median"] == pytest.approx(100.0) for r in rows)
    assert all(r["prefill_tps"]["median"] == pytest.approx(1000.0) for r in rows)
    assert "| tiny | 2 | 4 |" in table.read_text() and "| tiny | 1 | 2 |" in result.stdout
    width, height = png_size(plot)
    assert width >= 200 and height == 220


def test_bench_errors_are_clear(fake_server):
    missing = rk(["bench", "nope"], url=fake_server.url)
    assert missing.returncode == 1 and "Error: model 'nope' not found" in missing.stderr
    nowhere = rk(["bench", "tiny", "--host", "http://127.0.0.1:9"], url=fake_server.url)
    assert nowhere.returncode == 1 and "could not connect" in nowhere.stderr
    bad = rk(["bench", "tiny", "--concurrency", "two"], url=fake_server.url)
    assert bad.returncode == 1 and "invalid --concurrency" in bad.stderr


def test_quality_prompts_count_the_right_answers(fake_server, script):
    from rkollama.cli.bench import QUALITY, quality
    from rkollama.client import Client

    for answer in ["Paris.", "It is 42", "Saturn", "Blue!", "Gracias"]:
        script.enqueue([answer])
    result = quality(Client(fake_server.url), "tiny")
    assert (result["passed"], result["total"]) == (3, len(QUALITY))
    assert [a["passed"] for a in result["answers"]] == [True, True, False, True, False]


def test_server_memory_is_read_from_proc_when_it_runs_here(fake_server):
    import os

    from rkollama.cli.bench import local_rss
    from rkollama.cli.procmem import listening_pid

    assert listening_pid(int(fake_server.port)) == os.getpid()  # the test's own Waitress thread
    rss = local_rss(fake_server.url)
    own = int(next(line for line in open("/proc/self/status") if line.startswith("VmRSS:")).split()[1]) * 1024
    assert rss is not None and rss >= own * 0.9
    assert local_rss("http://192.0.2.1:11434") is None  # another machine: not measured


@pytest.mark.live
def test_bench_measures_the_cpu_model(live_daemon, tmp_path):
    plot = tmp_path / "cpu.png"
    result = rk(["bench", "smollm2:135m", "--host", live_daemon, "--runs", "2", "--num-predict", "16",
                 "--quality", "--json", str(tmp_path / "cpu.json"), "--plot", str(plot)], timeout=300)
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "cpu.json").read_text())
    row = data["summary"][0]
    assert row["decode_tps"]["median"] > 1 and row["ttft_ms"]["median"] > 0
    assert data["report"]["daemon_rss_bytes"]["smollm2:135m"] > 50_000_000  # daemon + its runner
    quality = data["report"]["quality"]["smollm2:135m"]
    assert quality["total"] == 5 and all(a["answer"] for a in quality["answers"])
    assert "quality prompts" in result.stdout and "server RSS" in result.stdout
    png_size(plot)
