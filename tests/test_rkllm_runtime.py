"""Finding and identifying the runtime before the first real call, and platform detection."""

import subprocess
from pathlib import Path

import pytest

from rkollama import platform
from rkollama.backends.rkllm import runtime
from rkollama.errors import LoadFailed
from rkollama.platform import detect_soc, platform_defaults, source_platform


def compile_lib(tmp_path: Path, name: str, source: str) -> Path:
    c_file = tmp_path / f"{name}.c"
    c_file.write_text(source)
    target = tmp_path / f"{name}.so"
    subprocess.run(["gcc", "-shared", "-fPIC", str(c_file), "-o", str(target)], check=True)
    return target


@pytest.mark.parametrize("family,version,by_defaults", [("1.2", "1.2.3", "1.2"), ("1.3", "1.3.0", "1.3.1"),
                                                        ("1.3.1", "1.3.1", "1.3.1")])
def test_the_double_is_identified_by_probe_and_by_its_defaults(fake_runtime, family, version, by_defaults):
    probed = runtime.identify(fake_runtime[family])
    assert (probed.family, probed.version, probed.how) == (family, version, "probe")
    # The defaults cannot tell 1.3.0 from 1.3.1: the wider 1.3.1 layouts, and no version.
    quick = runtime.identify(fake_runtime[family], probe=False)
    assert (quick.family, quick.version, quick.how) == (by_defaults, "", "default parameters")


def test_runtime_1_3_1_is_accepted_by_its_banner_and_by_its_sha256(fake_runtime, monkeypatch):
    import hashlib

    lib = fake_runtime["1.3.1"]
    assert runtime.identify(lib).family == "1.3.1"
    digest = hashlib.sha256(lib.read_bytes()).hexdigest()
    monkeypatch.setitem(runtime.KNOWN_SHA256, digest, "1.3.1")
    found = runtime.identify(lib)
    assert (found.family, found.version, found.how) == ("1.3.1", "1.3.1", "known file")
    assert runtime.abi.sizeof(runtime.abi.family(found.family).RKLLMInput) == 208


def test_the_probe_keeps_the_banner_of_a_runtime_that_crashes_after_printing_it(fake_runtime, monkeypatch):
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)
    monkeypatch.setenv("FAKE_RKLLM_INIT", "crash")
    assert runtime.probe_version(fake_runtime["1.3.1"]) == "1.3.1"


def test_the_probe_of_a_runtime_whose_init_hangs_gives_up(fake_runtime, monkeypatch):
    import time

    monkeypatch.setenv("FAKE_RKLLM_INIT", "hang")
    started = time.monotonic()
    assert runtime.probe_version(fake_runtime["1.3"], timeout=2) in ("", "1.3.0")
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("family", ["1.2", "1.3"])
def test_defaults_reach_rkllm_init_without_stack_garbage(fake_runtime, family):
    import ctypes

    rt = runtime.Runtime(runtime.identify(fake_runtime[family]))
    for _ in range(20):  # the return buffer is whatever the stack held: dirty it between calls
        ctypes.create_string_buffer(b"\xAA" * 4096)
        param = rt.default_param()
        assert param.max_context_len == 512 and param.extend_param.enabled_cpus_num == 4
        assert bytes(param.extend_param.reserved) == bytes(len(param.extend_param.reserved))
        if hasattr(param, "img_start"):
            assert param.img_start == b"" and param.img_content == b""


def test_a_known_official_file_is_identified_by_its_blob_id(tmp_path, monkeypatch, fake_runtime):
    monkeypatch.setitem(runtime.KNOWN_BLOBS, runtime.blob_id(fake_runtime["1.3"]), "1.3.0")
    found = runtime.identify(fake_runtime["1.3"])
    assert (found.family, found.version, found.how) == ("1.3", "1.3.0", "known file")


def test_an_unsupported_known_release_is_refused_with_what_to_install(monkeypatch, fake_runtime):
    monkeypatch.setitem(runtime.KNOWN_BLOBS, runtime.blob_id(fake_runtime["1.2"]), "1.1.4")
    with pytest.raises(LoadFailed, match=r"runtime 1\.1\.4.*install runtime 1\.3\.1"):
        runtime.identify(fake_runtime["1.2"])


def test_a_1_2_0_runtime_is_refused_by_its_exported_symbols(tmp_path):
    lib = compile_lib(tmp_path, "old", "int rkllm_init(void){return 0;} int rkllm_set_chat_template(void){return 0;}")
    with pytest.raises(LoadFailed, match="1.2.0 \\(by its exported functions\\)"):
        runtime.identify(lib)


def test_a_library_that_is_not_rkllm_is_refused(tmp_path):
    lib = compile_lib(tmp_path, "other", "int something(void){return 0;}")
    with pytest.raises(LoadFailed, match="not an RKLLM runtime"):
        runtime.identify(lib)


def test_an_unrecognisable_runtime_is_refused(tmp_path):
    lib = compile_lib(tmp_path, "odd", """
        #include <string.h>
        typedef struct { unsigned char raw[256]; } P;
        P rkllm_createDefaultParam(void) { P p; memset(&p, 0, sizeof p); return p; }
        int rkllm_init(void){return -1;} int rkllm_set_function_tools(void){return 0;}""")
    with pytest.raises(LoadFailed, match="cannot tell which RKLLM runtime"):
        runtime.identify(lib)


def test_the_library_is_found_from_the_setting_first(tmp_path, fake_runtime):
    assert platform.find_library(str(fake_runtime["1.2"])) == fake_runtime["1.2"]
    assert platform.find_library(str(tmp_path / "missing.so")) != tmp_path / "missing.so"


@pytest.mark.parametrize("compatible,soc", [
    (b"radxa,rock-5b\x00rockchip,rk3588\x00", "rk3588"), (b"xunlong,orangepi-5\x00rockchip,rk3588s\x00", "rk3588"),
    (b"rockchip,rk3576-evb\x00rockchip,rk3576\x00", "rk3576"), (b"rockchip,rk3562\x00", "rk3562"),
    (b"rockchip,rv1126b\x00", "rv1126b"), (b"raspberrypi,4-model-b\x00brcm,bcm2711\x00", "cpu")])
def test_soc_from_the_device_tree(tmp_path, compatible, soc):
    (tmp_path / "compatible").write_bytes(compatible)
    assert detect_soc(tmp_path) == soc


def test_no_device_tree_means_cpu(tmp_path):
    assert detect_soc(tmp_path / "none") == "cpu"


def test_platform_override_and_defaults():
    assert source_platform("rk3576") == "rk3576"
    assert source_platform("auto") == "cpu"  # this machine has no Rockchip device tree
    assert platform_defaults("rk3588") == {"cpus_mask": 0xF0, "npu_cores": 3}
    assert platform_defaults("rk3576")["npu_cores"] == 2 and platform_defaults("rk3562")["cpus_mask"] == 0x0F


def test_an_old_npu_driver_is_refused_with_the_fix(fake_runtime, tmp_path, monkeypatch):
    from helpers import register_fake

    from rkollama.backends.rkllm import backend
    from rkollama.config import Settings
    from rkollama.core.types import LoadOptions
    from rkollama.models.store import ModelStore

    spec = register_fake(ModelStore(tmp_path), "m", source={"path": "m.rkllm", "format": "rkllm"})
    settings = Settings.from_env({}, models=tmp_path, rkllm_lib=str(fake_runtime["1.2"]))
    monkeypatch.setattr(platform, "npu_driver_version", lambda: "0.8.2")
    with pytest.raises(LoadFailed, match="RKNPU driver is 0.8.2, which is known not to work.*needs 0.9.8.*"
                                         "RKOLLAMA_NPU_DRIVER_CHECK=false skips"):
        backend.RKLLMBackend.load(spec, LoadOptions(), settings)
    unchecked = Settings.from_env({"RKOLLAMA_NPU_DRIVER_CHECK": "false"}, models=tmp_path,
                                  rkllm_lib=str(fake_runtime["1.2"]))
    backend.RKLLMBackend.load(spec, LoadOptions(), unchecked).close()
    monkeypatch.setattr(platform, "npu_driver_version", lambda: "0.9.8")
    loaded = backend.RKLLMBackend.load(spec, LoadOptions(), settings)
    loaded.close()


def test_armbians_0_9_7_driver_is_a_warning_not_a_refusal(fake_runtime, tmp_path, monkeypatch, caplog):
    from helpers import register_fake

    from rkollama.backends.rkllm import backend
    from rkollama.config import Settings
    from rkollama.core.types import LoadOptions
    from rkollama.models.store import ModelStore

    spec = register_fake(ModelStore(tmp_path), "m", source={"path": "m.rkllm", "format": "rkllm"})
    settings = Settings.from_env({}, models=tmp_path, rkllm_lib=str(fake_runtime["1.3"]))
    monkeypatch.setattr(platform, "npu_driver_version", lambda: "0.9.7")
    backend.RKLLMBackend.load(spec, LoadOptions(), settings).close()
    assert "the RKNPU driver is 0.9.7; Rockchip recommends 0.9.8" in caplog.text


@pytest.mark.parametrize("family", ["1.2", "1.3.1"])
def test_a_release_newer_than_rkollama_knows_is_used_like_one_without_a_banner(fake_runtime, monkeypatch,
                                                                             caplog, family):
    """1.3.2 (or a beta) and a build that prints no version get one decision: the ABI family its
    defaults show, in that family's newest layouts, with a warning."""
    monkeypatch.setenv("FAKE_RKLLM_VERSION", "1.3.2b1" if family != "1.2" else "1.2.9")
    newer = runtime.identify(fake_runtime[family])
    monkeypatch.setenv("FAKE_RKLLM_VERSION", "")
    monkeypatch.setenv("FAKE_RKLLM_INIT", "silent")
    silent = runtime.identify(fake_runtime[family])
    assert (newer.family, newer.version) == (silent.family, silent.version) == (family, "")
    assert "newer than rkollama knows" in caplog.text and "names no version" in caplog.text


def test_an_older_release_is_still_refused_and_the_abi_setting_decides(fake_runtime, monkeypatch):
    monkeypatch.setenv("FAKE_RKLLM_VERSION", "1.1.4")
    with pytest.raises(LoadFailed, match="runtime 1.1.4, which rkollama does not support"):
        runtime.identify(fake_runtime["1.2"])
    forced = runtime.identify(fake_runtime["1.2"], abi_override="1.2")
    assert (forced.family, forced.how) == ("1.2", "RKOLLAMA_RKLLM_ABI")


def test_a_model_that_names_no_platform_gets_this_boards_big_cores(fake_runtime, tmp_path):
    """A model made with `create` from a local .rkllm names no platform: RK3588's mask, not 0x0F."""
    import ctypes
    import json

    from helpers import register_fake

    from rkollama.backends.rkllm.backend import RKLLMBackend
    from rkollama.config import Settings
    from rkollama.core.types import LoadOptions
    from rkollama.models.store import ModelStore

    spec = register_fake(ModelStore(tmp_path), "mine", source={"path": "m.rkllm", "format": "rkllm"})
    settings = Settings.from_env({}, models=tmp_path, rkllm_lib=str(fake_runtime["1.3"]), platform="rk3588")
    RKLLMBackend.load(spec, LoadOptions(), settings).close()
    lib = ctypes.CDLL(str(fake_runtime["1.3"]))
    lib.fake_last_json.restype = ctypes.c_char_p
    assert json.loads(lib.fake_last_json())["param"]["enabled_cpus_mask"] == 0xF0


def test_n_batch_is_refused_when_the_runtime_is_known_only_by_its_abi_family(fake_runtime, tmp_path, monkeypatch):
    from helpers import register_fake

    from rkollama.backends.rkllm.backend import RKLLMBackend
    from rkollama.config import Settings
    from rkollama.core.types import LoadOptions
    from rkollama.models.store import ModelStore

    monkeypatch.setenv("FAKE_RKLLM_INIT", "silent")  # no banner: 1.3.0 and 1.3.1 look alike
    store = ModelStore(tmp_path / "m")
    spec = register_fake(store, "npu", source={"path": "m.rkllm", "format": "rkllm"},
                         rkllm={"n_batch": 2})
    settings = Settings.from_env({}, models=tmp_path / "m", rkllm_lib=str(fake_runtime["1.3"]))
    with pytest.raises(LoadFailed, match="n_batch 2 needs the exact runtime version"):
        RKLLMBackend.load(spec, LoadOptions(), settings)


def test_a_runtime_whose_init_hangs_fails_the_load_after_the_load_timeout(fake_runtime, tmp_path, monkeypatch):
    import time

    from helpers import register_fake

    from rkollama.backends.rkllm.backend import RKLLMBackend
    from rkollama.backends.runner import RunnerBackend
    from rkollama.config import Settings
    from rkollama.core.types import LoadOptions
    from rkollama.models.store import ModelStore

    monkeypatch.setenv("FAKE_RKLLM_INIT", "hang")
    store = ModelStore(tmp_path / "m")
    model = tmp_path / "m.rkllm"
    model.write_bytes(b"x")
    spec = register_fake(store, "npu", source={"path": str(model), "format": "rkllm"})
    spec = type(spec)(spec.name, spec.modelfile, model, spec.digest, spec.size, spec.modified_at)
    settings = Settings.from_env({}, models=tmp_path / "m", rkllm_lib=str(fake_runtime["1.3"]),
                                 load_timeout="2s")
    started = time.monotonic()
    with pytest.raises(LoadFailed, match="took longer than 2s"):
        RunnerBackend.load(spec, LoadOptions(), settings, backend_cls=RKLLMBackend)
    assert time.monotonic() - started < 15


@pytest.mark.parametrize("rel", ["sys/module/rknpu/version", "sys/kernel/debug/rknpu/version",
                                 "proc/debug/rknpu/version"])
def test_the_driver_version_is_read_wherever_the_driver_exposes_it(tmp_path, rel):
    from rkollama.platform import npu_driver_version

    (tmp_path / rel).parent.mkdir(parents=True)
    (tmp_path / rel).write_text("RKNPU driver: v0.9.8\n")
    assert npu_driver_version(tmp_path) == "0.9.8"
    assert npu_driver_version(tmp_path / "elsewhere") == ""


def test_the_mainline_rocket_driver_is_told_apart_from_rknpu(tmp_path):
    from rkollama.platform import npu_driver_kind

    assert npu_driver_kind(tmp_path) == ""
    (tmp_path / "sys/module/rocket").mkdir(parents=True)
    assert npu_driver_kind(tmp_path) == "rocket"
    (tmp_path / "sys/module/rknpu").mkdir(parents=True)
    assert npu_driver_kind(tmp_path) == "rknpu"


def test_loading_on_the_rocket_driver_is_refused_with_the_fix(fake_runtime, tmp_path, monkeypatch):
    from helpers import register_fake

    from rkollama.backends.rkllm import backend
    from rkollama.config import Settings
    from rkollama.core.types import LoadOptions
    from rkollama.models.store import ModelStore

    monkeypatch.setattr(platform, "npu_driver_kind", lambda: "rocket")
    spec = register_fake(ModelStore(tmp_path / "m"), "npu", source={"path": "m.rkllm", "format": "rkllm"})
    settings = Settings.from_env({}, models=tmp_path / "m", rkllm_lib=str(fake_runtime["1.3"]))
    with pytest.raises(LoadFailed, match="rocket.*rknpu driver"):
        backend.RKLLMBackend.load(spec, LoadOptions(), settings)


def test_an_rkllm_built_for_another_board_is_refused_with_the_fix(fake_runtime, tmp_path):
    from helpers import register_fake

    from rkollama.backends.rkllm.backend import RKLLMBackend
    from rkollama.config import Settings
    from rkollama.core.types import LoadOptions
    from rkollama.models.store import ModelStore

    store = ModelStore(tmp_path / "m")
    spec = register_fake(store, "npu", source={"url": "https://x/Qwen3-0.6B-rk3576-w4a16.rkllm",
                                               "format": "rkllm"})
    settings = Settings.from_env({}, models=tmp_path / "m", rkllm_lib=str(fake_runtime["1.3"]),
                                 platform="rk3588")
    with pytest.raises(LoadFailed, match="converted for RK3576.*is RK3588: pull the rk3588 build"):
        RKLLMBackend.load(spec, LoadOptions(), settings)


def _handles_alive(lib_path) -> int:
    """rkllm_init calls minus rkllm_destroy calls the double has seen in this process."""
    import ctypes
    import json

    lib = ctypes.CDLL(str(lib_path))  # the same loaded copy the backend uses
    lib.fake_last_json.restype = ctypes.c_char_p
    seen = json.loads(lib.fake_last_json())
    return seen["inits"] - seen["destroys"]


@pytest.mark.parametrize("fields,error", [
    ({"template": "{% if messages %}unclosed"}, "invalid chat template for npu:latest"),
    ({"rkllm": {"lora": [{"path": "/nonexistent/adapter.rkllm", "name": "a"}]}}, "could not load the LoRA"),
    ({"rkllm": {"prompt_cache": "/nonexistent/cache.bin"}}, "could not load the prompt cache"),
])
def test_a_load_that_fails_after_the_runtime_starts_holds_no_handle(fake_runtime, tmp_path, fields, error):
    from helpers import register_fake

    from rkollama.backends.rkllm.backend import RKLLMBackend
    from rkollama.config import Settings
    from rkollama.core.types import LoadOptions
    from rkollama.models.store import ModelStore

    store = ModelStore(tmp_path / "m")
    spec = register_fake(store, "npu", source={"path": "m.rkllm", "format": "rkllm"}, **fields)
    settings = Settings.from_env({}, models=tmp_path / "m", rkllm_lib=str(fake_runtime["1.3.1"]))
    alive = _handles_alive(fake_runtime["1.3.1"])
    with pytest.raises(LoadFailed, match=error):
        RKLLMBackend.load(spec, LoadOptions(), settings)
    assert _handles_alive(fake_runtime["1.3.1"]) == alive


def test_init_sampling_is_ollamas_defaults_under_the_modelfiles_parameters(fake_runtime, tmp_path):
    """1.2.x runtimes sample with what rkllm_init got: Ollama's defaults (repeat_penalty 1.0, not
    the runtime's 1.1), the Modelfile's parameters over them, its rkllm section over both."""
    import ctypes
    import json

    from helpers import register_fake

    from rkollama.backends.rkllm.backend import RKLLMBackend
    from rkollama.config import Settings
    from rkollama.core.types import LoadOptions
    from rkollama.models.store import ModelStore

    store = ModelStore(tmp_path / "m")
    plain = register_fake(store, "plain", source={"path": "m.rkllm", "format": "rkllm"})
    tuned = register_fake(store, "tuned", source={"path": "m.rkllm", "format": "rkllm"},
                          parameters={"temperature": 0.3, "top_k": 20}, rkllm={"top_k": 5})
    settings = Settings.from_env({}, models=tmp_path / "m", rkllm_lib=str(fake_runtime["1.2"]))
    lib = ctypes.CDLL(str(fake_runtime["1.2"]))
    lib.fake_last_json.restype = ctypes.c_char_p
    seen = []
    for spec in (plain, tuned):
        RKLLMBackend.load(spec, LoadOptions(), settings).close()
        seen.append(json.loads(lib.fake_last_json())["param"])
    assert (seen[0]["repeat_penalty"], seen[0]["temperature"], seen[0]["top_k"], seen[0]["top_p"]) == \
        (1.0, 0.8, 40, 0.9)
    assert (seen[1]["temperature"], seen[1]["top_k"]) == (0.3, 5)


def _npu_spec(tmp_path, **rkllm):
    from helpers import register_fake

    from rkollama.models.store import ModelStore

    store = ModelStore(tmp_path / "m")
    model = tmp_path / "m.rkllm"
    model.write_bytes(b"x")
    spec = register_fake(store, "npu", source={"path": str(model), "format": "rkllm"},
                         rkllm=rkllm or {})
    return type(spec)(spec.name, spec.modelfile, model, spec.digest, spec.size, spec.modified_at)


@pytest.mark.parametrize("mode,words", [
    ("nodriver", r"the NPU runtime refused the model: failed to open rknpu module, need to insmod rknpu "
                 r"dirver!.*the rknpu kernel driver is not loaded"),
    ("nomem", r"the NPU runtime refused the model: failed to malloc npu memory.*NPU is out of memory: unload"),
    ("fail", r"refused the model without saying why \(rkllm_init returned -1\).*RKLLM_LOG_LEVEL=2"),
    ("sigill", r"died while loading: killed by SIGILL: this runtime build uses instructions this CPU lacks; "
               r"try runtime 1\.2\.3"),
])
def test_a_load_the_runtime_refuses_is_explained_in_its_own_words(fake_runtime, tmp_path, monkeypatch,
                                                                  mode, words):
    from rkollama.backends.rkllm.backend import RKLLMBackend
    from rkollama.backends.runner import RunnerBackend
    from rkollama.config import Settings
    from rkollama.core.types import LoadOptions

    monkeypatch.setenv("FAKE_RKLLM_INIT", mode)
    settings = Settings.from_env({}, models=tmp_path / "m", rkllm_lib=str(fake_runtime["1.3.1"]))
    with pytest.raises(LoadFailed, match=words):
        RunnerBackend.load(_npu_spec(tmp_path), LoadOptions(), settings, backend_cls=RKLLMBackend)


def test_a_context_longer_than_the_model_allows_is_clamped_to_its_limit(fake_runtime, tmp_path, monkeypatch,
                                                                        caplog):
    import json

    from rkollama.backends.rkllm.backend import RKLLMBackend
    from rkollama.config import Settings
    from rkollama.core.types import LoadOptions

    record = tmp_path / "record.json"
    monkeypatch.setenv("FAKE_RKLLM_RECORD", str(record))
    monkeypatch.setenv("FAKE_RKLLM_CTX_LIMIT", "4096")
    settings = Settings.from_env({}, models=tmp_path / "m", rkllm_lib=str(fake_runtime["1.3"]))
    backend = RKLLMBackend.load(_npu_spec(tmp_path, max_context_len=16384), LoadOptions(), settings)
    try:
        assert backend.context_length == 4096
        assert json.loads(record.read_text())["param"]["max_context_len"] == 4096
        assert "allows 4096 tokens of context" in caplog.text
        # The runtime's refusal is in the log at its level.
        assert any(r.levelname == "ERROR" and "max_context[16384] must be less than" in r.getMessage()
                   for r in caplog.records)
    finally:
        backend.close()


def test_a_runner_outlives_the_thread_that_loaded_it_and_ends_with_its_daemon(fake_runtime, tmp_path):
    """A model is loaded by whichever HTTP thread asked first, and that thread ends when it has
    been idle a while: the runner must stay (it once died with it, PR_SET_PDEATHSIG). When the
    daemon itself dies, the runner ends within seconds."""
    import os
    import signal
    import threading
    import time

    from helpers import register_fake

    from rkollama.backends.rkllm.backend import RKLLMBackend
    from rkollama.backends.runner import RunnerBackend
    from rkollama.config import Settings
    from rkollama.core.types import Generation, LoadOptions, Message
    from rkollama.models.store import ModelStore

    store = ModelStore(tmp_path / "m")
    model = tmp_path / "m.rkllm"
    model.write_bytes(b"x")
    spec = register_fake(store, "npu", source={"path": str(model), "format": "rkllm"})
    spec = type(spec)(spec.name, spec.modelfile, model, spec.digest, spec.size, spec.modified_at)
    settings = Settings.from_env({}, models=tmp_path / "m", rkllm_lib=str(fake_runtime["1.3"]))
    loaded = []
    loader = threading.Thread(target=lambda: loaded.append(
        RunnerBackend.load(spec, LoadOptions(), settings, backend_cls=RKLLMBackend)))
    loader.start()
    loader.join(60)
    backend = loaded[0]
    try:
        time.sleep(1.5)  # the loading thread is gone
        assert backend.process.is_alive()
        answer = list(backend.generate(Generation(messages=[Message("user", "still here")]), threading.Event()))
        assert "".join(t.text for t in answer[:-1]) == "still here"
    finally:
        backend.close()
    # A daemon killed outright: its runner goes too (within PARENT_POLL_S and a margin).
    import sys

    script = tmp_path / "daemon.py"
    script.write_text(
        "import time\n"
        "from pathlib import Path\n"
        "from rkollama.backends.rkllm.backend import RKLLMBackend\n"
        "from rkollama.backends.runner import RunnerBackend\n"
        "from rkollama.config import Settings\n"
        "from rkollama.core.types import LoadOptions\n"
        "from rkollama.models.store import ModelStore\n"
        "if __name__ == '__main__':  # the runner is spawned: it imports this file again\n"
        f"    store = ModelStore(Path({str(tmp_path / 'm')!r}))\n"
        "    spec = store.resolve('npu')\n"
        f"    spec = type(spec)(spec.name, spec.modelfile, Path({str(model)!r}), spec.digest, spec.size,\n"
        "                      spec.modified_at)\n"
        f"    settings = Settings.from_env({{}}, models=Path({str(tmp_path / 'm')!r}),\n"
        f"                                 rkllm_lib={str(fake_runtime['1.3'])!r})\n"
        "    backend = RunnerBackend.load(spec, LoadOptions(), settings, backend_cls=RKLLMBackend)\n"
        "    print(backend.process.pid, flush=True)\n"
        "    time.sleep(120)\n")
    daemon = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    runner_pid = int(daemon.stdout.readline())
    assert _alive(runner_pid)
    os.kill(daemon.pid, signal.SIGKILL)
    daemon.wait(10)
    deadline = time.monotonic() + 10
    while _alive(runner_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(runner_pid)


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
