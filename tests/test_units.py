"""Names, durations, settings, Modelfiles and the store: the pieces under the API."""

import json
import os

import pytest

from rkollama.config import SETTINGS, Settings, parse_host
from rkollama.durations import FOREVER, format_go_duration, parse_keep_alive
from rkollama.errors import BadRequest, InvalidModelName, ModelfileError, ModelNotFound
from rkollama.models.catalog import Catalog
from rkollama.models.modelfile import load_family
from rkollama.models.names import ModelName


@pytest.mark.parametrize("text,display", [
    ("qwen3", "qwen3:latest"), ("qwen3:0.6b", "qwen3:0.6b"), ("library/qwen3", "qwen3:latest"),
    ("registry.ollama.ai/library/qwen3:latest", "qwen3:latest"), ("me/foo:7b", "me/foo:7b"),
    ("localhost:5000/a/b:c", "localhost:5000/a/b:c")])
def test_names_follow_ollamas_grammar(text, display):
    assert ModelName.parse(text).display() == display


@pytest.mark.parametrize("text", ["", "../x", "a/../b", "a/b/c/d", "x:", ":x", "a b", "-x", "a\\b",
                                  "x" * 81, "ns.dot/x", 5, None])
def test_invalid_names_are_rejected(text):
    with pytest.raises(InvalidModelName):
        ModelName.parse(text)


@pytest.mark.parametrize("value,seconds", [
    (300, 300.0), (0.0, 0.0), (1.5, 1.5), ("5m", 300.0), ("1h30m", 5400.0), ("10s", 10.0),
    ("0", 0.0), ("300", 300.0), ("500ms", 0.5), (-1, FOREVER), ("-1m", FOREVER), (-1.0, FOREVER),
    # Go's longest durations still parse; a number past them means forever (Ollama: a negative Duration)
    ("2562047h", 2562047 * 3600.0), ("9223372036854775807ns", FOREVER), ("-9223372036854775808ns", FOREVER),
    (1e30, FOREVER), ("1.5h", 5400.0), ("1.000000001s", 1.000000001), (".5m", 30.0), ("1.h", 3600.0),
    ("0" * 5000 + "1s", 1.0), ("1." + "5" * 5000 + "s", 1.555555555)])
def test_keep_alive_accepts_numbers_and_go_durations(value, seconds):
    assert parse_keep_alive(value) == seconds


@pytest.mark.parametrize("value", ["forever", "5x", "", True, [], {}, float("inf"), float("nan"),
                                   "9999999999999999h", "-9999999999999999h", "2562048h", "9223372036854775808ns",
                                   "-9223372036854775809ns", "2562047h47m16.854775808s", "9" * 5000 + "h"])
def test_keep_alive_rejects_garbage(value):
    with pytest.raises(BadRequest):
        parse_keep_alive(value)


@pytest.mark.parametrize("ns,text", [
    (0, "0s"), (123, "123ns"), (12_500, "12.5µs"), (342_546_000, "342.546ms"),
    (4_535_599_000, "4.535599s"), (62_500_000_000, "1m2.5s"), (3_600_000_000_000, "1h0m0s")])
def test_durations_print_like_go(ns, text):
    assert format_go_duration(ns) == text


def test_settings_prefer_rkollama_names_then_ollama_aliases():
    cfg = Settings.from_env({"OLLAMA_HOST": "0.0.0.0:9000", "RKOLLAMA_KEEP_ALIVE": "1m",
                             "OLLAMA_KEEP_ALIVE": "2m", "OLLAMA_MODELS": "/srv/m"})
    assert cfg.bind_address() == ("0.0.0.0", 9000)
    assert cfg.base_url() == "http://127.0.0.1:9000"
    assert cfg.keep_alive == "1m" and str(cfg.models) == "/srv/m"


@pytest.mark.parametrize("value,expected", [
    ("example.com", ("http", "example.com", 11434)), (":8080", ("http", "127.0.0.1", 8080)),
    ("http://h", ("http", "h", 80)), ("https://h", ("https", "h", 443)),
    ("http://h:1/path", ("http", "h", 1))])
def test_ollama_host_forms(value, expected):
    assert parse_host(value) == expected


def test_configuration_doc_lists_every_setting():
    from rkollama.config import markdown_table

    doc = open(os.path.join(os.path.dirname(__file__), "..", "docs", "configuration.md")).read()
    assert markdown_table() in doc, "docs/configuration.md is out of date: regenerate its table"
    for setting in SETTINGS:
        assert f"`{setting.envs[0]}`" in doc


def test_modelfile_doc_lists_every_rkllm_key():
    from rkollama.models.rkllm_section import markdown_table

    doc = open(os.path.join(os.path.dirname(__file__), "..", "docs", "modelfiles.md")).read()
    assert markdown_table() in doc, "docs/modelfiles.md is out of date: regenerate its rkllm table"


def test_builtin_modelfiles_are_valid_and_ship_the_required_models():
    catalog = Catalog()
    for name in ["smollm2:135m", "gemma3:270m", "qwen3:0.6b", "qwen3:1.7b", "gemma3:1b", "smollm2"]:
        entry = catalog.find(ModelName.parse(name), "cpu")
        assert entry.source and entry.format == "gguf"
    assert catalog.find(ModelName.parse("qwen3:1.7b"), "rk3588").format == "rkllm"
    assert "thinking" in catalog.find(ModelName.parse("qwen3:0.6b"), "cpu").capabilities


def test_unknown_modelfile_key_names_the_key_and_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\ntags:\n  x:\n    sources:\n      cpu: {path: a.gguf, colour: red}\n")
    with pytest.raises(ModelfileError) as error:
        load_family(path)
    assert "colour" in error.value.message and str(path) in error.value.message


@pytest.mark.parametrize("yaml_text,fragment", [
    ("name: x\ntags: {a: {sources: {cpu: {path: a}}}}\nparameters: {warp: 9}\n", "unknown parameter 'warp'"),
    ("name: x\ntags: {a: {sources: {cpu: {path: a}}}}\nparameters: {top_k: fast}\n", "top_k"),
    ("name: x\ntags: {a: {sources: {mars: {path: a}}}}\n", "unknown key 'mars'"),
    ("name: x\ntags: {a: {sources: {cpu: {}}}}\n", "exactly one of"),
    ("name: x\ntags: {a: {sources: {cpu: {path: a}}}}\ncapabilities: [flying]\n", "unknown capability"),
    ("name: x\ntags: {a: {sources: {cpu: {path: a, sha256: abc}}}}\n", "sha256"),
    ("name: x\ntags: {}\n", "tags"),
    ("name: x\ntags: {a: {sources: {cpu: {path: a}}}}\nrkllm: {n_batch: many}\n", "n_batch"),
    ("name: x\ntags: {a: {sources: {cpu: {path: a}}}}\nrkllm: {n_batch: 9}\n",
     "rkllm.n_batch: input should be less than or equal to 8"),
    ("name: x\ntags: {a: {rkllm: {top_p: 1.5}, sources: {cpu: {path: a}}}}\n",
     "tags.a.rkllm.top_p: input should be less than or equal to 1"),
    ("name: x\ntags: {a: {sources: {cpu: {path: a}}}}\nrkllm: {lora: [{path: a.lora}]}\n",
     r"missing key 'name' in rkllm.lora\[0\]"),
    ("name: x\ntags: {a: {sources: {cpu: {path: a}}}}\nrkllm: {embed_flash: 1}\n",
     "rkllm.embed_flash: input should be a valid boolean"),
    ("name: x\ntags: {a: {sources: {cpu: {path: a}}}}\nrkllm: {n_batchs: 2}\n", "unknown key 'n_batchs' in rkllm"),
    ("name: x\ntags: {a: {sources: {cpu: {path: a}}}}\nsystem: null\n", "system: input should be a valid string"),
    ("name: x\ntags: {a: {sources: {cpu: {path: a}}}}\nmessages: [{role: robot, content: hi}]\n",
     r'messages\[0\].role: role must be one of "system", "user", or "assistant"'),
    ("name: x\ntags: {a: {sources: {cpu: {path: a}}, colour: red}}\n", "unknown key 'colour' in tags.a"),
    ("name: x\ntags: {a: {sources: {cpu: {path: a, size: many}}}}\n", "tags.a.sources.cpu.size: input should be"),
    ("tags: {a: {sources: {cpu: {path: a}}}}\n", "missing key 'name'"),
    ("- just\n- a list\n", "mapping"),
])
def test_modelfile_validation_errors(tmp_path, yaml_text, fragment):
    """Each problem is one line naming the file and the key."""
    path = tmp_path / "m.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ModelfileError, match=fragment) as error:
        load_family(path)
    assert error.value.message.startswith(f"{path}: ") and "\n" not in error.value.message


def test_store_round_trip_copy_delete_and_prune(store):
    spec = store.resolve("tiny")
    assert spec.model_path.is_file()
    store.copy("tiny", "Tiny2:v")
    assert store.resolve("tiny2:V").model_path == spec.model_path  # case-insensitive lookup
    store.delete("tiny")
    assert spec.model_path.is_file()  # still referenced by the copy
    store.delete("tiny2:v")
    assert not spec.model_path.exists()
    with pytest.raises(ModelNotFound):
        store.resolve("tiny")


def test_store_writes_leave_no_temporary_files(store):
    leftovers = [p for p in store.root.rglob("*") if p.name.endswith(".partial")]
    assert leftovers == []
    manifest = json.loads(next(store.manifests.rglob("latest")).read_text())
    assert manifest["layers"][0]["digest"].startswith("sha256:")


def test_corrupt_manifest_is_skipped_by_list(store):
    (store.manifests / "registry.ollama.ai" / "library" / "broken").mkdir(parents=True)
    (store.manifests / "registry.ollama.ai" / "library" / "broken" / "latest").write_text("{oops")
    assert "broken:latest" not in {s.name.display() for s in store.list()}


def test_the_waitress_internals_serve_py_relies_on_are_there():
    """serve.py passes its own task dispatcher (`_dispatcher`), walks the socket map
    (`server._map`, each channel's `total_outbufs_len`) and drives `wasyncore.loop` itself to
    drain on shutdown: none of that is Waitress's public API, so the version is pinned
    (setup.cfg) and this test fails first when an upgrade moves them."""
    import inspect

    from waitress import wasyncore
    from waitress.channel import HTTPChannel
    from waitress.server import BaseWSGIServer, create_server
    from waitress.task import ThreadedTaskDispatcher

    assert "_dispatcher" in inspect.signature(create_server).parameters
    assert "self._map" in inspect.getsource(BaseWSGIServer)
    assert {"loop", "close_all"} <= set(dir(wasyncore))
    assert "map" in inspect.signature(wasyncore.loop).parameters
    assert "total_outbufs_len" in inspect.getsource(HTTPChannel)
    assert {"add_task", "shutdown", "set_thread_count"} <= set(dir(ThreadedTaskDispatcher))
    # body_limits.py: its own channel and parser classes, the limit read from `adj`, the chunk
    # size announced but not yet read.
    from waitress.parser import HTTPRequestParser
    from waitress.receiver import ChunkedReceiver

    assert HTTPChannel.parser_class is HTTPRequestParser
    assert "self.channel_class(" in inspect.getsource(BaseWSGIServer)
    assert "self.adj.max_request_body_size" in inspect.getsource(HTTPRequestParser.received)
    assert "chunk_remainder" in inspect.getsource(ChunkedReceiver)
    from importlib.metadata import version

    assert version("waitress").startswith("3.0.")


def test_a_template_render_has_one_loop_budget():
    import time

    from rkollama.core.prompt import ChatTemplate, TemplateRenderError

    nested = ChatTemplate("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}")
    started = time.monotonic()
    with pytest.raises(TemplateRenderError, match="loops more than 1000000 times"):
        nested.render([])
    assert time.monotonic() - started < 1.0
    assert ChatTemplate("{% for i in range(3) %}{{ i }}{% endfor %}").render([]) == "012"


def test_a_context_of_a_hundred_thousand_ids_is_fitted_to_the_window_at_once():
    """/api/generate's `context` is token ids of an earlier exchange: only a window's worth can
    be prefilled, and cutting it costs no more than copying it."""
    import time

    from rkollama.core.fitting import PromptFitter
    from rkollama.core.prompt import ChatTemplate
    from rkollama.core.types import Generation

    fitter = PromptFitter(4096, ChatTemplate("{{ messages }}"), lambda text, bos: [7] * len(text.split()), 16,
                          vocab_size=50_000)
    started = time.monotonic()
    tokens = fitter.prompt_tokens(Generation(prompt="continue", context=[123] * 100_000))
    assert len(tokens) == 4096 and time.monotonic() - started < 1.0


def test_common_prefix_counts_the_tokens_two_sequences_share_from_their_start():
    import random

    from rkollama.core.fitting import common_prefix

    def naive(a: list[int], b: list[int]) -> int:
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        return n

    draw = random.Random(5)
    for _ in range(3000):
        a = [draw.randint(0, 3) for _ in range(draw.randint(0, 60))]
        b = a[:draw.randint(0, len(a))] + [draw.randint(0, 3) for _ in range(draw.randint(0, 60))]
        assert common_prefix(a, b) == naive(a, b) == common_prefix(b, a)
    assert common_prefix([], [1]) == 0 and common_prefix([1, 2], [1, 2]) == 2
