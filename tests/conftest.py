import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers import FakeClock, ThreadServer, register_fake, start_daemon  # noqa: E402

from rkollama.backends.fake import Script, factory  # noqa: E402
from rkollama.config import Settings  # noqa: E402
from rkollama.models.catalog import Catalog  # noqa: E402
from rkollama.models.store import ModelStore  # noqa: E402
from rkollama.scheduler import Scheduler  # noqa: E402
from rkollama.server.app import create_app  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch, request):
    """No test sees the developer's store, host or settings."""
    if request.node.get_closest_marker("npu"):
        return  # hardware tests use the board's own settings
    for name in list(os.environ):
        if name.startswith(("RKOLLAMA_", "OLLAMA_", "HF_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("RKOLLAMA_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture
def settings(tmp_path):
    return Settings.from_env(models=tmp_path / "models", keep_alive="5m")


@pytest.fixture
def store(settings):
    store = ModelStore(settings.models)
    register_fake(store, "tiny", parameters={"temperature": 0.5})
    register_fake(store, "thinker:1b", capabilities=["completion", "thinking"])
    register_fake(store, "embedder", capabilities=["embedding"])
    register_fake(store, "other:7b")
    return store


@pytest.fixture
def seer(store):
    """A fake model with a vision projector: it takes images."""
    return register_fake(store, "seer", projector=b"projector weights")


@pytest.fixture
def script():
    return Script()


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def scheduler(settings, script, clock):
    sched = Scheduler(settings, backend_factory=factory(script), clock=clock)
    yield sched
    sched.shutdown()


@pytest.fixture
def app(settings, scheduler, store):
    return create_app(settings, scheduler, store, Catalog(), "cpu")


@pytest.fixture
def http(app):
    return app.test_client()


@pytest.fixture
def fake_server(app):
    """The app with the fake backend behind real Waitress, on a free port."""
    server = ThreadServer(app)
    yield server
    server.close()


@pytest.fixture(scope="session")
def smollm2_store(tmp_path_factory):
    """A store holding the real smollm2:135m, pulled once per session from the installed wheel."""
    from rkollama.models.pull import pull

    root = tmp_path_factory.mktemp("live-models")
    store = ModelStore(root)
    lines = list(pull(store, Catalog(), "smollm2:135m", "cpu"))
    assert lines[-1] == {"status": "success"}
    return root


@pytest.fixture(scope="session")
def live_daemon(smollm2_store, tmp_path_factory):
    """`rkollama serve` as a subprocess with the real CPU engine and SmolLM2."""
    log = tmp_path_factory.mktemp("live-log") / "serve.log"
    env = {"RKOLLAMA_MODELS": str(smollm2_store), "RKOLLAMA_NUM_THREADS": "2",
           "RKOLLAMA_CONTEXT_LENGTH": "2048"}
    process, url = start_daemon(env, log)
    yield url
    process.terminate()
    process.wait(timeout=20)


@pytest.fixture(scope="session")
def fake_runtime(tmp_path_factory):
    """The C test double of librkllmrt.so, compiled once per ABI family: {family: path}."""
    import subprocess

    source = Path(__file__).parent / "fakes" / "fake_rkllm.c"
    out = tmp_path_factory.mktemp("fake-rkllm")
    libs = {}
    for family, flags in (("1.2", []), ("1.3", ["-DRKLLM_ABI_13"]),
                          ("1.3.1", ["-DRKLLM_ABI_13", "-DRKLLM_ABI_131"])):
        target = out / f"librkllmrt-{family}.so"
        subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-pthread", *flags, str(source), "-o", str(target)],
                       check=True)
        libs[family] = target
    return libs


@pytest.fixture(scope="session")
def fake_rknn(tmp_path_factory):
    """The C test double of librknnrt.so (the vision encoder's runtime), compiled once."""
    import subprocess

    source = Path(__file__).parent / "fakes" / "fake_rknn.c"
    target = tmp_path_factory.mktemp("fake-rknn") / "librknnrt.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", str(source), "-o", str(target)], check=True)
    return target
