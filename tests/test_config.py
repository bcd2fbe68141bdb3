"""One configuration from three sources: files, then the environment, then `serve` flags; every
bad value is one line naming its source and key, and the daemon does not start."""

import subprocess
import sys

import pytest

from rkollama.cli.serve import parse_flags
from rkollama.config import SETTINGS, ConfigError, Settings


def write(path, text):
    path.write_text(text)
    return path


def test_files_then_environment_then_flags(tmp_path):
    system = write(tmp_path / "system.yaml", "keep_alive: 10m\nmax_queue: 7\nplatform: rk3588\n"
                                             "api_key: [a, b]\n")
    user = write(tmp_path / "user.yaml", "max-queue: 8\nhost: 0.0.0.0:9000\n")
    cfg = Settings.load({}, files=[system, user])
    assert (cfg.keep_alive, cfg.max_queue, cfg.platform, cfg.api_key) == ("10m", 8, "rk3588", ("a", "b"))
    assert cfg.bind_address() == ("0.0.0.0", 9000)
    cfg = Settings.load({"OLLAMA_MAX_QUEUE": "9", "RKOLLAMA_API_KEY": "k1, k2"}, files=[system, user])
    assert cfg.max_queue == 9 and cfg.api_key == ("k1", "k2")
    cfg = Settings.load({"OLLAMA_MAX_QUEUE": "9"}, flags=parse_flags(["--max-queue", "10", "--debug"]),
                        files=[system, user])
    assert cfg.max_queue == 10 and cfg.debug is True and cfg.keep_alive == "10m"


def test_rkollama_config_names_the_system_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    custom = write(tmp_path / "custom.yaml", "context_length: 2048\n")
    assert Settings.load({"RKOLLAMA_CONFIG": str(custom)}).context_length == 2048
    (tmp_path / ".rkollama").mkdir()
    write(tmp_path / ".rkollama" / "config.yaml", "context_length: 1024\n")
    assert Settings.load({"RKOLLAMA_CONFIG": str(custom)}).context_length == 1024  # the user's wins
    assert Settings.load({"RKOLLAMA_CONFIG": str(tmp_path / "absent.yaml")}).context_length == 1024


@pytest.mark.parametrize("text,message", [
    ("keep_alive: soon\n", "f.yaml: keep_alive must be a duration such as 5m, 1h30m or 300 (seconds), got 'soon'"),
    ("max_queue: many\n", "f.yaml: max_queue must be an integer, got 'many'"),
    ("max_loaded_models: -2\n", "f.yaml: max_loaded_models must be at least 1, got -2"),
    ("platform: rk9\n", "f.yaml: platform must be one of auto, cpu, rk3588, rk3576, rk3562, rv1126b, got 'rk9'"),
    ("isolation: maybe\n", "f.yaml: isolation must be true or false, got 'maybe'"),
    ("hots: x\n", "f.yaml: unknown setting 'hots' (known: host, models,"),
    ("config: /x\n", "f.yaml: unknown setting 'config'"),
    ("host: [a, b]\n", "f.yaml: host must be a single value, got list"),
    ("- a\n- b\n", "f.yaml: must be a mapping of setting: value"),
    ("host: 'unclosed\n", "f.yaml: not valid YAML (line"),
])
def test_a_bad_file_is_one_line_naming_file_key_and_allowed_values(tmp_path, text, message):
    path = write(tmp_path / "f.yaml", text)
    with pytest.raises(ConfigError) as caught:
        Settings.load({}, files=[path])
    assert str(caught.value).startswith(f"{tmp_path}/{message}")
    assert "\n" not in str(caught.value)


def test_bad_environment_and_flags_name_their_source():
    with pytest.raises(ConfigError, match="^environment OLLAMA_MAX_QUEUE: max_queue must be an integer"):
        Settings.load({"OLLAMA_MAX_QUEUE": "x"}, files=[])
    with pytest.raises(ConfigError, match="^flag --rate-limit: rate_limit must be at least 0, got -1"):
        Settings.load({}, flags=parse_flags(["--rate-limit=-1"]), files=[])
    with pytest.raises(ConfigError, match="unknown flag '--nope'"):
        parse_flags(["--nope", "1"])


def test_every_setting_has_a_flag_but_the_files_own_path():
    flags = {s.flag for s in SETTINGS if s.field != "config"}
    parsed = parse_flags([f"{s.flag}={s.default}" for s in SETTINGS if s.field != "config"])
    assert len(parsed) == len(flags)
    assert Settings.load({}, flags=parsed, files=[]) == Settings.load({}, files=[])  # defaults round-trip


def test_the_daemon_refuses_to_start_half_configured(tmp_path):
    bad = write(tmp_path / "bad.yaml", "keep_alive: soon\n")
    env = {"RKOLLAMA_CONFIG": str(bad), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin",
           "RKOLLAMA_HOST": "127.0.0.1:1"}
    done = subprocess.run([sys.executable, "-m", "rkollama", "serve"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip() == (f"Error: {bad}: keep_alive must be a duration such as 5m, 1h30m "
                                   "or 300 (seconds), got 'soon'")
    shown = subprocess.run([sys.executable, "-m", "rkollama", "serve", "--help"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert "--keep-alive VALUE   [RKOLLAMA_KEEP_ALIVE, OLLAMA_KEEP_ALIVE]" in shown.stdout


def test_every_platform_the_detector_knows_is_a_setting_and_a_modelfile_source():
    """One home for platforms: RKOLLAMA_PLATFORM=rk3562 is accepted as the device tree's is."""
    from rkollama.models.schema import Tag
    from rkollama.platform import NPU_ENGINE_PLATFORMS

    for name in NPU_ENGINE_PLATFORMS:
        assert Settings.from_env({"RKOLLAMA_PLATFORM": name}).platform == name
        Tag.model_validate({"sources": {name: {"url": "https://x/m.rkllm"}}})


@pytest.mark.parametrize("raw,value", [
    ("auto", "auto"), ("false", "false"), ("0", "false"), ("F", "false"), ("FALSE", "false"),
    ("true", "true"), ("1", "true"), ("T", "true"), ("True", "true"),
    ("sometimes", "true"),  # Go's ParseBool fails, and Ollama then counts the variable as set
])
def test_ollama_flash_attention_reaches_the_cpu_engine(raw, value):
    settings = Settings.from_env({"OLLAMA_FLASH_ATTENTION": raw})
    assert settings.flash_attention == value
    llama_cpp = pytest.importorskip("llama_cpp")
    from rkollama.backends.llamacpp import _flash_attention

    expected = {"auto": llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO, "false": llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED,
                "true": llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED}
    assert _flash_attention(settings.flash_attention) == expected[value]


def test_flash_attention_in_a_file_or_flag_is_auto_or_a_boolean(tmp_path):
    assert Settings.load({}, files=[write(tmp_path / "f.yaml", "flash_attention: off\n")]).flash_attention == "false"
    assert Settings.load({}, flags=parse_flags(["--flash-attention", "auto"]), files=[]).flash_attention == "auto"
    with pytest.raises(ConfigError, match="flash_attention must be auto, true or false, got 'sometimes'"):
        Settings.load({}, files=[write(tmp_path / "g.yaml", "flash_attention: sometimes\n")])


@pytest.mark.parametrize("env,field,value", [
    ("OLLAMA_CONTEXT_LENGTH", "context_length", 4096),  # Ollama: 0 = automatic (4k without a GPU)
    ("OLLAMA_MAX_LOADED_MODELS", "max_loaded_models", 1),  # 0 = automatic
    ("OLLAMA_NUM_PARALLEL", "num_parallel", 1),  # Ollama's scheduler takes max(0, 1)
    ("OLLAMA_MAX_QUEUE", "max_queue", 1),  # an unbuffered queue: one request gets through
])
def test_the_zeros_an_ollama_setup_carries_start_the_daemon(env, field, value):
    """`ollama serve --help` shows several of these as their defaults; setups copy them."""
    assert getattr(Settings.from_env({env: "0"}), field) == value
    with pytest.raises(ConfigError, match=f"^environment {env}: {field} must be at least"):
        Settings.from_env({env: "-1"})
