"""The `rkollama` command as a user runs it: a real process against a daemon on a free port."""

import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers import free_port, png, register_fake

from rkollama import cpu_cores
from rkollama.core.types import DoneReason


def rk(args, url=None, stdin=None, env=None, timeout=60):
    full_env = dict(os.environ, **(env or {}))
    if url:
        full_env["OLLAMA_HOST"] = url
    return subprocess.run([sys.executable, "-m", "rkollama", *args], input=stdin, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def test_list_prints_ollamas_table(fake_server):
    out = rk(["list"], fake_server.url)
    assert out.returncode == 0, out.stderr
    header, *rows = out.stdout.splitlines()
    assert header.split() == ["NAME", "ID", "SIZE", "MODIFIED"]
    assert {r.split()[0] for r in rows} == {"tiny:latest", "thinker:1b", "embedder:latest", "other:7b"}
    assert rk(["ls", "thi"], fake_server.url).stdout.splitlines()[1].startswith("thinker:1b")


def test_ps_shows_loaded_models(fake_server):
    assert rk(["run", "tiny", "hello"], fake_server.url).returncode == 0
    out = rk(["ps"], fake_server.url)
    header, row = out.stdout.splitlines()
    assert header.split() == ["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]
    assert row.startswith("tiny:latest") and "100% CPU" in row and "from now" in row


def test_run_one_shot_prints_the_answer_then_a_blank_line(fake_server, script):
    script.enqueue(["Hel", "lo"])
    out = rk(["run", "tiny", "say", "hi"], fake_server.url)
    assert out.returncode == 0 and out.stdout == "Hello\n\n"
    assert script.history[-1].messages[-1].content == "say hi"


def test_run_reads_a_piped_prompt(fake_server, script):
    out = rk(["run", "tiny"], fake_server.url, stdin="piped words\n")
    assert out.stdout == "piped words\n\n"


def test_run_verbose_prints_stats_on_stderr(fake_server, script):
    script.enqueue(["a", "b"])
    out = rk(["run", "tiny", "x", "--verbose"], fake_server.url)
    assert "eval count:           2 token(s)" in out.stderr
    assert "eval rate:            100.00 tokens/s" in out.stderr
    assert "prompt eval duration: 1ms" in out.stderr


def test_show_and_its_flags(fake_server):
    out = rk(["show", "tiny"], fake_server.url)
    assert "Capabilities" in out.stdout and "completion" in out.stdout
    assert rk(["show", "tiny", "--parameters"], fake_server.url).stdout.strip() == "temperature                    0.5"
    both = rk(["show", "tiny", "--license", "--system"], fake_server.url)
    assert both.returncode == 1 and both.stderr.startswith("Error: only one of '--license'")


def test_cp_then_rm(fake_server):
    out = rk(["cp", "tiny", "mine:v1"], fake_server.url)
    assert out.stdout == "copied 'tiny' to 'mine:v1'\n"
    out = rk(["rm", "mine:v1"], fake_server.url)
    assert out.stdout == "deleted 'mine:v1'\n"
    assert "mine:v1" not in rk(["list"], fake_server.url).stdout


def test_stop_unloads_a_running_model_and_errors_otherwise(fake_server, scheduler):
    rk(["run", "tiny", "x"], fake_server.url)
    assert scheduler.ps()
    assert rk(["stop", "tiny"], fake_server.url).returncode == 0
    assert scheduler.ps() == []
    out = rk(["stop", "tiny"], fake_server.url)
    assert out.returncode == 1 and out.stderr == 'Error: couldn\'t find model "tiny" to stop\n'


def test_errors_are_one_line_and_exit_1(fake_server):
    out = rk(["rm", "nope"], fake_server.url)
    assert out.returncode == 1 and out.stderr == "Error: model 'nope' not found\n"
    out = rk(["run", "bad name!", "x"], fake_server.url)
    assert out.returncode == 1 and out.stderr.startswith("Error: ") and "Traceback" not in out.stderr


def test_no_daemon_is_a_clear_error(tmp_path):
    url = f"127.0.0.1:{free_port()}"
    out = rk(["list"], url)
    assert out.returncode == 1
    assert out.stderr == "Error: could not connect to rkollama server, run 'rkollama serve' to start it\n"
    out = rk(["run", "tiny", "x", "--no-autostart"], url)
    assert out.returncode == 1 and "could not connect" in out.stderr


def test_help_lists_commands_and_serve_help_lists_every_setting():
    out = rk(["--help"])
    for command in ["serve", "run", "list", "ps", "show", "stop", "rm", "cp", "pull"]:
        assert f"  {command}" in out.stdout
    serve_help = rk(["serve", "--help"]).stdout
    from rkollama.config import SETTINGS
    for setting in SETTINGS:
        assert setting.envs[0] in serve_help


def test_run_starts_a_daemon_when_none_answers(tmp_path):
    from rkollama.models.store import ModelStore

    models = tmp_path / "auto-models"
    register_fake(ModelStore(models), "tiny")
    port = free_port()
    env = {"RKOLLAMA_BACKEND": "fake", "RKOLLAMA_MODELS": str(models)}
    try:
        out = rk(["run", "tiny", "hello", "auto"], f"127.0.0.1:{port}", env=env)
        assert out.returncode == 0, out.stderr
        assert "Starting the rkollama daemon in the background" in out.stderr
        assert out.stdout == "hello auto\n\n"
        again = rk(["run", "tiny", "second"], f"127.0.0.1:{port}", env=env)
        assert "Starting" not in again.stderr and again.stdout == "second\n\n"
    finally:
        for pid in _daemons_on(port):
            os.kill(pid, signal.SIGTERM)


def _daemons_on(port: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        if b"rkollama" in cmd and b"serve" in cmd and f"127.0.0.1:{port}".encode() in environ:
            pids.append(int(entry))
    return pids


# -- the interactive REPL, through a pseudo-terminal ------------------------------------------
class Terminal:
    def __init__(self, args, url, env=None, sigint_ignored=False):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            if sigint_ignored:  # as a shell starts its background jobs (and all they start)
                signal.signal(signal.SIGINT, signal.SIG_IGN)
            os.environ["OLLAMA_HOST"] = url
            os.environ["TERM"] = "dumb"
            os.environ.update(env or {})
            os.execv(sys.executable, [sys.executable, "-m", "rkollama", *args])
        self.buffer = b""

    def expect(self, text: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        needle = text.encode()
        while needle not in self.buffer:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"timed out waiting for {text!r}; got {self.buffer[-500:]!r}"
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if ready:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:
                    chunk = b""
                assert chunk, f"terminal closed waiting for {text!r}; got {self.buffer[-500:]!r}"
                self.buffer += chunk
        before, _, after = self.buffer.partition(needle)
        self.buffer = after
        return before.decode(errors="replace")

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def wait(self, timeout: float = 10) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            ready, _, _ = select.select([self.fd], [], [], 0.05)
            if ready:
                try:
                    os.read(self.fd, 4096)
                except OSError:
                    pass
        os.kill(self.pid, signal.SIGKILL)
        raise AssertionError("REPL did not exit")


def test_repl_chats_with_history_commands_and_multiline(fake_server, script):
    term = Terminal(["run", "tiny"], fake_server.url)
    term.expect(">>> ")
    term.send("hello there\r")
    term.expect("hello there")
    term.expect(">>> ")
    term.send('"""\r')
    term.expect("... ")
    term.send("line one\r")
    term.send('line two"""\r')
    term.expect("line one line two")
    term.expect(">>> ")
    chat = script.history[-1]
    assert [(m.role, m.content) for m in chat.messages] == [
        ("user", "hello there"), ("assistant", "hello there"), ("user", "line one\nline two")]
    term.send("/set parameter temperature 0.25\r")
    term.expect("Set parameter 'temperature' to '0.25'")
    term.send("/set parameter warp 9\r")
    term.expect('Couldn\'t set parameter: "unknown parameter \'warp\'"')
    term.send("/set system Be brief.\r")
    term.expect("Set system message.")
    term.send("/show info\r")
    term.expect("Capabilities")
    term.send("/clear\r")
    term.expect("Cleared session context")
    term.send("/nonsense\r")
    term.expect("Unknown command '/nonsense'. Type /? for help")
    term.expect(">>> ")
    term.send("/?\r")  # Ollama's list, /load and /save included
    help_text = term.expect(">>> ")
    for line in ("/load <model>   Load a session or model", "/save <model>   Save your current session",
                 "/? shortcuts    Help for keyboard shortcuts"):
        assert line in help_text, help_text
    term.send("/? shortcuts\r")
    term.expect("Ctrl + a            Move to the beginning of the line")
    term.expect(">>> ")
    term.send("again\r")
    out = term.expect(">>> ")
    assert out.count("again") == 2, out  # the echo of the input, then the answer
    last = script.history[-1]
    assert [(m.role, m.content) for m in last.messages] == [("system", "Be brief."), ("user", "again")]
    assert last.options.temperature == 0.25
    term.send("/bye\r")
    assert term.wait() == 0


def test_repl_ctrl_c_cancels_the_answer_not_the_session(fake_server, script):
    """Also when rkollama was started with SIGINT ignored (a CI script run in the background
    passed that on, and Ctrl+C did nothing)."""
    term = Terminal(["run", "tiny"], fake_server.url, sigint_ignored=True)
    term.expect(">>> ")
    script.enqueue([f"w{i} " for i in range(2000)])
    script.delay_s = 0.01
    term.send("go\r")
    term.expect("w5 ")
    term.send("\x03")
    term.expect(">>> ")
    deadline = time.monotonic() + 10
    while not script.finished and time.monotonic() < deadline:
        time.sleep(0.02)
    assert script.finished[-1][0] is DoneReason.CANCELLED and script.finished[-1][1] < 2000
    script.delay_s = 0
    term.send("still here\r")
    term.expect("still here")
    term.expect(">>> ")
    # CPython's readline loses a SIGINT that lands between printing the prompt and waiting for
    # input (microseconds; no person types that fast), so give it a moment to start waiting.
    time.sleep(0.3)
    term.send("\x03")
    term.expect("Use Ctrl + d or /bye to exit.")
    term.expect(">>> ")
    time.sleep(0.3)
    term.send("\x04")
    assert term.wait() == 0


def test_run_pulls_a_missing_catalogue_model_first(fake_server, app, tmp_path):
    from rkollama.models.catalog import Catalog

    weights = tmp_path / "demo.gguf"
    weights.write_bytes(b"GGUF demo weights")
    directory = tmp_path / "modelfiles"
    directory.mkdir()
    (directory / "demo.yaml").write_text(
        f"name: demo\ntags:\n  small:\n    default: true\n    sources:\n      cpu: {{path: {weights}}}\n")
    app.config["RKOLLAMA"].catalog = Catalog(str(directory))
    out = rk(["run", "demo", "hello", "pulled"], fake_server.url)
    assert out.returncode == 0, out.stderr
    assert "success" in out.stderr and out.stdout == "hello pulled\n\n"
    assert "demo:latest" in rk(["list"], fake_server.url).stdout
    # Ollama's order: the download's bar, then verifying, writing and success below it.
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    bar = next(i for i, line in enumerate(lines) if line.startswith("pulling ") and "manifest" not in line)
    assert bar < lines.index("verifying sha256 digest") < lines.index("success"), lines


def test_doctor_on_a_machine_without_npu_says_so_and_reports_what_it_can(fake_server, fake_runtime):
    rk(["run", "tiny", "x"], fake_server.url)
    out = rk(["doctor"], fake_server.url, env={"RKOLLAMA_RKLLM_LIB": str(fake_runtime["1.3"])})
    assert out.returncode == 0, out.stderr
    assert "no Rockchip NPU (CPU engine)" in out.stdout and "free memory" in out.stdout
    threads = next(line for line in out.stdout.splitlines() if line.startswith("CPU engine threads"))
    assert threads.removeprefix("CPU engine threads").strip() == cpu_cores.choose().describe()
    assert "version 1.3.0, ABI family 1.3" in out.stdout
    assert "not installed (only vision models need it)" in out.stdout
    found = rk(["doctor"], fake_server.url, env={"RKOLLAMA_RKLLM_LIB": str(fake_runtime["1.3"]),
                                                 "RKOLLAMA_RKNN_LIB": str(fake_runtime["1.3"])})
    assert str(fake_runtime["1.3"]) in found.stdout.split("RKNN runtime (vision encoders)")[1].splitlines()[0]
    assert "tiny:latest" in out.stdout
    pinned = rk(["doctor", "--pin-frequencies"], fake_server.url)
    assert pinned.returncode == 1 and pinned.stderr.startswith("Error: frequency pinning is for RK3588 and RK3576")


def test_run_shows_thinking_like_ollama_and_hides_it_on_request(fake_server, script):
    script.enqueue(["<think>", "hmm", "</think>", "Yes."])
    out = rk(["run", "thinker:1b", "q"], fake_server.url)
    assert out.stdout == "Thinking...\nhmm\n...done thinking.\n\nYes.\n\n"
    assert script.history[-1].think is True
    script.enqueue(["<think>", "hmm", "</think>", "Yes."])
    out = rk(["run", "thinker:1b", "q", "--hidethinking"], fake_server.url)
    assert out.stdout == "Yes.\n\n"
    rk(["run", "thinker:1b", "q", "--think", "false"], fake_server.url)
    assert script.history[-1].think is False


LONG_ANSWER = ["The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", " and",
               " keeps", " running", " through", " the", " forest", " until", " nightfall."]


def test_repl_wraps_words_at_the_terminal_edge_unless_told_not_to(fake_server, script):
    term = Terminal(["run", "tiny"], fake_server.url, env={"COLUMNS": "30"})
    term.expect(">>> ")
    script.enqueue(LONG_ANSWER)
    term.send("tell me\r")
    term.expect("tell me")
    answer = term.expect(">>> ").replace("\r", "")
    lines = [line for line in answer.split("\n") if line.strip()]
    assert len(lines) > 1 and all(len(line) <= 25 for line in lines), lines
    words = " ".join(lines).split()
    assert words == "".join(LONG_ANSWER).split()  # no word was cut
    term.send("/set nowordwrap\r")
    term.expect("Set 'nowordwrap' mode.")
    term.expect(">>> ")
    script.enqueue(LONG_ANSWER)
    term.send("again\r")
    term.expect("again")
    unwrapped = term.expect(">>> ").replace("\r", "")
    assert "".join(LONG_ANSWER) in unwrapped
    term.send("/bye\r")
    assert term.wait() == 0


def test_repl_keeps_a_history_file_and_loads_and_saves_models(fake_server, script, store, tmp_path):
    term = Terminal(["run", "tiny"], fake_server.url)
    term.expect(">>> ")
    term.send("/load nothing-here\r")
    term.expect("Couldn't find model 'nothing-here'")
    term.send("/load other:7b\r")
    term.expect("Loading model 'other:7b'")
    term.expect(">>> ")
    term.send("hello other\r")
    term.expect("hello other")
    term.expect(">>> ")
    assert script.loads[-1][0] == "other:7b"
    term.send("/set system Be a pirate.\r")
    term.expect("Set system message.")
    term.send("/save pirate\r")
    term.expect("Created new model 'pirate'")
    term.send("/bye\r")
    assert term.wait() == 0
    saved = store.resolve("pirate").modelfile
    assert saved.system == "Be a pirate."
    assert [(m.role, m.content) for m in saved.messages] == [("user", "hello other"),
                                                            ("assistant", "hello other")]
    history = (Path(os.environ["HOME"]) / ".rkollama" / "history").read_text()
    assert "hello other" in history and "/save pirate" in history


def test_repl_sends_image_paths_to_a_vision_model(fake_server, script, store, seer, tmp_path):
    import base64

    picture = tmp_path / "my cat.png"
    picture.write_bytes(png())
    term = Terminal(["run", "seer"], fake_server.url)
    term.expect(">>> ")
    term.send(f"what is in {str(picture).replace(' ', chr(92) + ' ')} ?\r")
    term.expect(f"Added image '{picture}'")
    term.expect(">>> ")
    message = script.history[-1].messages[-1]
    assert message.content == "what is in ?"
    assert [base64.b64decode(i) for i in message.images] == [png()]
    term.send("/bye\r")
    assert term.wait() == 0
    plain = Terminal(["run", "tiny"], fake_server.url)  # no vision: the path is only text
    plain.expect(">>> ")
    plain.send(f"look at {picture.parent}/x.png\r")
    plain.expect(">>> ")
    assert script.history[-1].messages[-1].images == [] and "x.png" in script.history[-1].messages[-1].content
    plain.send("/bye\r")
    assert plain.wait() == 0


def test_pull_says_when_the_daemon_keeps_its_models_elsewhere(fake_server, tmp_path):
    same = rk(["pull", "no-such-model"], fake_server.url)  # RKOLLAMA_MODELS is the daemon's store
    assert "another store" not in same.stderr
    other = rk(["pull", "no-such-model"], fake_server.url, env={"RKOLLAMA_MODELS": str(tmp_path / "elsewhere")})
    lines = [line for line in other.stderr.splitlines() if "another store" in line]
    assert len(lines) == 1 and f"RKOLLAMA_MODELS={tmp_path / 'elsewhere'}" in lines[0], other.stderr
