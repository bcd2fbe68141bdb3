"""`rkollama doctor --npu-check` on the C double: every step passes on a well-behaved runtime,
and a hostile runtime behaviour shows up in the report by name."""

import json

import pytest
from npu_tokenizer import register_with_tokenizer
from test_cli import rk

from rkollama.models.store import ModelStore

SMART = {"FAKE_RKLLM_MODEL": "smart", "FAKE_RKLLM_REUSE": "prefix"}


def check(tmp_path, fake_runtime, family="1.3.1", **env):
    store = ModelStore(tmp_path / "models")
    register_with_tokenizer(store, "qwen-tok", tmp_path / "tokenizer",
                            source={"path": "model.rkllm", "format": "rkllm", "platform": "rk3588"},
                            capabilities=["completion", "tools", "thinking"], rkllm={"max_context_len": 512})
    full = {"RKOLLAMA_MODELS": str(tmp_path / "models"), "RKOLLAMA_RKLLM_LIB": str(fake_runtime[family]),
            "RKOLLAMA_PLATFORM": "rk3588", **env}
    result = rk(["doctor", "--npu-check", "--report-dir", str(tmp_path / "report")], env=full, timeout=120)
    reports = sorted((tmp_path / "report").glob("npu-check-*.json"))
    data = json.loads(reports[-1].read_text()) if reports else None
    return result, data


@pytest.mark.parametrize("family", ["1.2", "1.3", "1.3.1"])
def test_every_step_passes_on_a_well_behaved_runtime(tmp_path, fake_runtime, family):
    result, data = check(tmp_path, fake_runtime, family, **SMART)
    assert result.returncode == 0, result.stderr
    steps = {s["name"]: s for s in data["steps"]}
    assert [name for name, s in steps.items() if not s["passed"]] == [], result.stdout
    assert set(steps) == {"plain answer", "second turn reuses the cache", "thinking on", "thinking off",
                          "tool call and result", "abort mid-answer", "num_predict stop",
                          "prompt over the window"}
    assert data["load"]["ok"] and any("rkllm-runtime version" in line for line in data["load"]["runtime_lines"])
    plain = steps["plain answer"]
    assert plain["prompts_sent_as"] == "tokens" and plain["callbacks"] > 3
    assert plain["trace"][0]["state"] in ("NORMAL", "WAITING") and plain["trace"][-1]["state"] == "FINISH"
    assert "report:" in result.stdout and "Attach both files" in result.stdout
    report = sorted((tmp_path / "report").glob("npu-check-*.md"))[-1].read_text()
    assert "| plain answer | pass |" in report and "on rk3588" in report


@pytest.mark.parametrize("env,step,words", [
    ({"FAKE_RKLLM_REUSE": "none"}, "second turn reuses the cache", "no reuse"),
    ({"FAKE_RKLLM_THINK_FINISH": "always"}, "thinking on", "1 run(s) added after the runtime stopped at </think>"),
    ({"FAKE_RKLLM_WAITING": "null"}, None, None),
])
def test_a_hostile_runtime_shows_in_the_report(tmp_path, fake_runtime, env, step, words):
    result, data = check(tmp_path, fake_runtime, **{**SMART, **env})
    assert result.returncode == 0, result.stderr
    steps = {s["name"]: s for s in data["steps"]}
    if step is not None:
        assert words in steps[step]["detail"]
    else:  # WAITING callbacks with no text are in the trace, and the answers are whole anyway
        waiting = [c for s in data["steps"] for c in s["trace"] if c["state"] == "WAITING"]
        assert waiting and all(c["text"] is None for c in waiting)
        assert steps["thinking on"]["answer"] == "51 ✓" and steps["thinking on"]["passed"]


def test_a_model_the_runtime_refuses_is_a_report_that_quotes_it(tmp_path, fake_runtime):
    result, data = check(tmp_path, fake_runtime, FAKE_RKLLM_INIT="nomem", **SMART)
    assert data["load"]["ok"] is False and "failed to malloc npu memory" in data["load"]["error"]
    assert "did not load" in result.stdout


def test_with_no_npu_model_pulled_it_pulls_the_catalogues_own_first(tmp_path, fake_runtime):
    """The first board has nothing pulled yet: the check takes the catalogue's NPU model for the
    board (qwen3:0.6b on RK3588) from the Hub, its tokenizer with it, and runs on the token path."""
    import random

    import hf_standin
    from npu_tokenizer import write_tokenizer

    root = tmp_path / "hub"
    repo = root / "dulimov" / "Qwen3-0.6B-rk3588-1.2.1-unsloth-16k"
    repo.mkdir(parents=True)
    (repo / "Qwen3-0.6B-rk3588-w8a8-opt-1-hybrid-ratio-0.0.rkllm").write_bytes(random.Random(5).randbytes(1 << 20))
    write_tokenizer(root / "Qwen" / "Qwen3-0.6B")
    srv = hf_standin.serve(str(root))
    try:
        env = {"RKOLLAMA_MODELS": str(tmp_path / "models"), "RKOLLAMA_RKLLM_LIB": str(fake_runtime["1.3.1"]),
               "RKOLLAMA_PLATFORM": "rk3588", "RKOLLAMA_HF_ENDPOINT": srv.url, **SMART}
        result = rk(["doctor", "--npu-check", "--report-dir", str(tmp_path / "report")], env=env, timeout=180)
    finally:
        srv.shutdown()
    assert result.returncode == 0, result.stderr
    assert "pulling qwen3:0.6b" in result.stderr
    data = json.loads(sorted((tmp_path / "report").glob("npu-check-*.json"))[-1].read_text())
    assert data["model"] == "qwen3:0.6b" and data["steps"][0]["prompts_sent_as"] == "tokens"
