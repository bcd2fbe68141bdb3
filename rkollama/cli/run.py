"""`rkollama run`: one-shot generation, or the interactive chat REPL (Ollama's flow)."""

import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import typer

from rkollama.api.types import (
    ChatRequest,
    ChatResponse,
    GenerateRequest,
    GenerateResponse,
    RequestBase,
    ShowResponse,
)
from rkollama.cli import common, render
from rkollama.client import Client

HELP = """Available Commands:
  /set            Set session variables
  /show           Show model information
  /load <model>   Load a session or model
  /save <model>   Save your current session
  /clear          Clear session context
  /bye            Exit
  /?, /help       Help for a command
  /? shortcuts    Help for keyboard shortcuts

Use \"\"\" to begin a multi-line message.
"""
SHORTCUTS_HELP = """Available keyboard shortcuts:
  Ctrl + a            Move to the beginning of the line (Home)
  Ctrl + e            Move to the end of the line (End)
   Alt + b            Move back (left) one word
   Alt + f            Move forward (right) one word
  Ctrl + k            Delete the sentence after the cursor
  Ctrl + u            Delete the sentence before the cursor
  Ctrl + w            Delete the word before the cursor

  Ctrl + l            Clear the screen
  Ctrl + c            Stop the model from responding
  Ctrl + d            Exit rkollama (/bye)
"""
"""Ollama's list, less its editor key (Ctrl + g): these are readline's own bindings."""
SET_HELP = """Available Commands:
  /set parameter ...     Set a parameter
  /set system <string>   Set system message
  /set verbose           Show LLM stats
  /set quiet             Disable LLM stats
  /set think             Enable thinking
  /set nothink           Disable thinking
  /set format json       Enable JSON mode
  /set noformat          Disable formatting
"""
SHOW_HELP = """Available Commands:
  /show info         Show details for this model
  /show license      Show model license
  /show modelfile    Show Modelfile for this model
  /show parameters   Show parameters for this model
  /show system       Show system message
  /show template     Show prompt template
"""

_SWITCHES: dict[str, tuple[str, object, str]] = {
    # /set WORD: (session attribute, its new value, what is said), Ollama's words
    "verbose": ("verbose", True, "Set 'verbose' mode."),
    "quiet": ("verbose", False, "Set 'quiet' mode."),
    "nothink": ("think", False, "Set 'nothink' mode."),
    "noformat": ("format", None, "Disabled format."),
    "wordwrap": ("wordwrap", True, "Set 'wordwrap' mode."),
    "nowordwrap": ("wordwrap", False, "Set 'nowordwrap' mode."),
    "history": ("history", True, "Set 'history' mode."),
    "nohistory": ("history", False, "Set 'nohistory' mode."),
}


HISTORY_FILE = Path("~/.rkollama/history")
HISTORY_LENGTH = 1000


def register(app: typer.Typer) -> None:
    app.command("run", help="Run a model")(run)


def run(model: str = typer.Argument(..., help="Model name, e.g. smollm2:135m"),
        prompt: list[str] = typer.Argument(None, help="Prompt (else stdin, else interactive)"),
        verbose: bool = typer.Option(False, "--verbose", help="Show timings for response"),
        keepalive: str = typer.Option(None, "--keepalive", help="Duration to keep a model loaded (e.g. 5m)"),
        format_: str = typer.Option(None, "--format", help='Response format (e.g. json)'),
        think: str = typer.Option(None, "--think", help="Enable thinking: true, false, low, medium, high"),
        hidethinking: bool = typer.Option(False, "--hidethinking", help="Hide thinking output"),
        nowordwrap: bool = typer.Option(False, "--nowordwrap",
                                        help="Don't wrap words to the next line automatically"),
        no_autostart: bool = typer.Option(False, "--no-autostart",
                                          help="Do not start a daemon when none answers")) -> None:
    cli = common.client(autostart=not no_autostart)
    info = _show_or_pull(cli, model)
    session = Session(cli, model, info, verbose=verbose, hide_thinking=hidethinking)
    session.wordwrap = not nowordwrap and sys.stdout.isatty()
    if keepalive is not None:
        session.keep_alive = keepalive
    if format_:
        session.format = format_
    session.think = _think_flag(think, info)
    text = " ".join(prompt or [])
    piped = not sys.stdin.isatty()
    if piped:
        stdin_text = sys.stdin.read()
        text = f"{stdin_text}\n\n{text}".strip() if text else stdin_text.strip()
    if text or piped or not sys.stdout.isatty():
        session.generate_once(text)
        return
    session.repl()


def _show_or_pull(cli: Client, model: str) -> ShowResponse:
    from rkollama.cli.models import pull_with_progress

    with common.daemon_errors():
        try:
            return cli.show(model)
        except common.StatusError as exc:
            if exc.status != 404:
                raise
    pull_with_progress(cli, model)
    return common.call(cli.show, model)


def _think_flag(flag: str | None, info: ShowResponse) -> bool | str | None:
    if flag is None:
        return True if "thinking" in info.get("capabilities", []) else None
    lowered = flag.lower()
    if lowered in ("true", "1", ""):
        return True
    if lowered in ("false", "0"):
        return False
    return lowered


def _pieces(obj: ChatResponse | GenerateResponse) -> tuple[str, str]:
    """(thinking, answer text) of one streamed chat or generate object."""
    if "message" in obj:
        message = cast(ChatResponse, obj)["message"]
        return message.get("thinking", ""), message.get("content", "")
    reply = cast(GenerateResponse, obj)
    return reply.get("thinking", ""), reply.get("response", "")


class Session:
    """State of one `run`: the chat history, the options set with /set, and output rendering."""

    def __init__(self, cli: Client, model: str, info: ShowResponse, verbose: bool = False,
                 hide_thinking: bool = False):
        self.cli, self.model, self.info = cli, model, info
        self.verbose, self.hide_thinking = verbose, hide_thinking
        self.keep_alive: str | None = None
        self.format: str | None = None
        self.think: bool | str | None = None
        """None: the model's default; True/False or a level ("low", "medium", "high")."""
        self.options: dict[str, Any] = {}
        self.system: str | None = None
        self.messages: list[Any] = []
        self.wordwrap = False
        self.history = not common.settings().nohistory

    def _common(self) -> RequestBase:
        body: RequestBase = {"model": self.model}
        if self.options:
            body["options"] = self.options
        if self.keep_alive is not None:
            body["keep_alive"] = self.keep_alive
        if self.format:
            body["format"] = self.format
        if self.think is not None:
            body["think"] = self.think
        return body

    def generate_once(self, prompt: str) -> None:
        prompt, images = self._images(prompt)
        body: GenerateRequest = {**self._common(), "prompt": prompt}
        if images:
            body["images"] = images
        if self.system:
            body["system"] = self.system
        try:
            final = self._print_stream(self.cli.generate(body))
        except KeyboardInterrupt:
            print()
            raise typer.Exit(130) from None
        if prompt:
            sys.stdout.write("\n\n")
            sys.stdout.flush()
        if self.verbose and final:
            print(render.verbose_stats(final), file=sys.stderr)

    def _print_stream(self, stream: Iterator[ChatResponse] | Iterator[GenerateResponse]
                      ) -> ChatResponse | GenerateResponse | None:
        """Print tokens as they come (the answer is kept in `last_answer`); return the final object."""
        final, thinking_open = None, False
        self.last_answer = ""
        out = render.WordWrap(sys.stdout, shutil.get_terminal_size().columns - 5) if self.wordwrap \
            else sys.stdout
        with common.daemon_errors():
            try:
                for obj in stream:
                    thinking, text = _pieces(obj)
                    if thinking and not self.hide_thinking:
                        if not thinking_open:
                            out.write("Thinking...\n")
                            thinking_open = True
                        out.write(thinking)
                    if text:
                        if thinking_open:
                            out.write("\n...done thinking.\n\n")
                            thinking_open = False
                        out.write(text)
                        self.last_answer += text
                    sys.stdout.flush()
                    if obj.get("done"):
                        final = obj
            finally:
                if isinstance(out, render.WordWrap):
                    out.finish()
        return final

    # -- interactive -------------------------------------------------------------------------
    def repl(self) -> None:
        try:
            import readline  # line editing and history for input()
        except ImportError:  # no line editing on this Python
            readline = None  # type: ignore[assignment]  # the module or nothing: checked below
        history = HISTORY_FILE.expanduser()
        if readline is not None and self.history:
            try:
                readline.read_history_file(history)
            except OSError:
                pass  # no history yet
        try:
            self._repl()
        finally:
            if readline is not None and self.history:
                try:
                    history.parent.mkdir(parents=True, exist_ok=True)
                    readline.set_history_length(HISTORY_LENGTH)
                    readline.write_history_file(history)
                except OSError:
                    pass  # a read-only home keeps the session, not its history

    def _repl(self) -> None:
        self._load()
        while True:
            try:
                line = self._read()
            except EOFError:
                print()
                return
            except KeyboardInterrupt:
                print("\nUse Ctrl + d or /bye to exit.")
                continue
            if line is None or not line.strip():
                continue
            if line.startswith("/"):
                if self._command(line.strip()):
                    return
                continue
            self._chat(line)

    def _load(self) -> None:
        body: GenerateRequest = {**self._common(), "prompt": "", "stream": False}
        common.call(self.cli.request, "POST", "/api/generate", body)

    def _read(self) -> str:
        """One message: a line, or a \"\"\"-delimited block spanning several lines."""
        line = input(">>> ")
        if not line.lstrip().startswith('"""'):
            return line
        body = line.lstrip()[3:]
        if body.endswith('"""') and len(body) >= 3:
            return body[:-3]
        parts = [body] if body else []
        while True:
            more = input("... ")
            if more.rstrip().endswith('"""'):
                parts.append(more.rstrip()[:-3])
                return "\n".join(parts)
            parts.append(more)

    def _images(self, text: str) -> tuple[str, list[str]]:
        """`text` without the image paths it names, and those images (base64), for a vision
        model (Ollama's extractFileData); otherwise the text as it is."""
        if "vision" not in self.info.get("capabilities", []):
            return text, []
        from rkollama.cli.images import extract

        text, images, added = extract(text)
        for path in added:
            print(f"Added image '{path}'", file=sys.stderr)
        return text, images

    def _chat(self, text: str) -> None:
        text, images = self._images(text)
        user: dict[str, Any] = {"role": "user", "content": text, **({"images": images} if images else {})}
        messages = ([{"role": "system", "content": self.system}] if self.system else []) + \
            self.messages + [user]
        body: ChatRequest = {**self._common(), "messages": messages}
        stream = self.cli.chat(body)
        try:
            final = self._print_stream(stream)
        except KeyboardInterrupt:
            # Closing the stream drops the connection: the daemon stops generating. Now, not
            # when the garbage collector gets to it: a Ctrl+C that lands while a token is being
            # printed leaves the stream suspended, its connection open.
            stream.close()
            print()
            return
        except typer.Exit:
            return
        self.messages += [user, {"role": "assistant", "content": self.last_answer}]
        sys.stdout.write("\n\n")
        sys.stdout.flush()
        if self.verbose and final:
            print(render.verbose_stats(final), file=sys.stderr)

    def _command(self, line: str) -> bool:
        """Run one /command; True when it ends the session."""
        words = line.split()
        cmd, args = words[0].lower(), words[1:]
        if cmd in ("/bye", "/exit"):
            return True
        if cmd in ("/?", "/help"):
            topic = args[0].lstrip("/") if args else ""
            print({"set": SET_HELP, "show": SHOW_HELP, "shortcut": SHORTCUTS_HELP,
                   "shortcuts": SHORTCUTS_HELP}.get(topic, HELP), file=sys.stderr)
        elif cmd == "/clear":
            self.messages = []
            print("Cleared session context")
        elif cmd == "/set":
            self._set(args, line)
        elif cmd == "/show":
            self._show(args)
        elif cmd == "/load" and args:
            self._switch(args[0])
        elif cmd == "/save" and args:
            self._save(args[0])
        elif cmd == "/list":
            from rkollama.cli.models import list_models
            list_models("")
        else:
            print(f"Unknown command '{words[0]}'. Type /? for help")
        return False

    def _set(self, args: list[str], line: str) -> None:
        if not args:
            print(SET_HELP, file=sys.stderr)
            return
        what = args[0]
        if what == "parameter":
            self._set_parameter(args[1:])
        elif what == "system":
            text = line.split("system", 1)[1].strip()
            if text.startswith('"""') and text.endswith('"""') and len(text) >= 6:
                text = text[3:-3]
            self.system = text.strip('"')
            print("Set system message.")
        elif what == "think":
            self.think = args[1] if len(args) > 1 else True
            if "thinking" not in self.info.get("capabilities", []):
                print(f'warning: model "{self.model}" does not support thinking output', file=sys.stderr)
            print(f"Set 'think' mode{' to ' + repr(args[1]) if len(args) > 1 else ''}.")
        elif what == "format" and args[1:] == ["json"]:
            self.format = "json"
            print("Set format to 'json' mode.")
        elif what in _SWITCHES:
            attribute, value, said = _SWITCHES[what]
            setattr(self, attribute, value)
            print(said)
        else:
            print(f"Unknown command '/set {what}'. Type /? for help")

    def _set_parameter(self, args: list[str]) -> None:
        """/set parameter NAME VALUE…: typed as the option table types it."""
        from rkollama.core.options import parse_cli_value
        from rkollama.errors import BadRequest

        if len(args) < 2:
            print("Usage: /set parameter <name> <value>", file=sys.stderr)
            return
        try:
            value = parse_cli_value(args[0], args[1:])
        except BadRequest as exc:
            print(f'Couldn\'t set parameter: "{exc.message}"')
            return
        self.options[args[0]] = value
        shown = ", ".join(value) if isinstance(value, list) else value
        print(f"Set parameter '{args[0]}' to '{shown}'")

    def _switch(self, model: str) -> None:
        """/load: another model, a fresh conversation."""
        try:
            info = self.cli.show(model)
        except common.StatusError:
            print(f"Couldn't find model '{model}'")
            return
        print(f"Loading model '{model}'")
        self.model, self.info, self.messages = model, info, []
        self._load()

    def _save(self, name: str) -> None:
        """/save: this session as a new model (its system, parameters and conversation)."""
        body = {"model": name, "from": self.model, "stream": False}
        if self.system:
            body["system"] = self.system
        if self.options:
            body["parameters"] = self.options
        if self.messages:
            body["messages"] = self.messages
        try:
            self.cli.request("POST", "/api/create", body)
        except common.StatusError as exc:
            print(f"error: {exc.message}")
            return
        print(f"Created new model '{name}'")

    def _show(self, args: list[str]) -> None:
        from rkollama.cli.models import show_info

        what = args[0] if args else ""
        info = self.info
        if what == "info":
            print(show_info(info))
        elif what == "license":
            print(info.get("license") or "No license was specified for this model.")
        elif what == "modelfile":
            print(info.get("modelfile", ""))
        elif what == "parameters":
            print("Model defined parameters:")
            print(info.get("parameters") or "No parameters were specified for this model.")
            if self.options:
                print("\nUser defined parameters:")
                for key, value in self.options.items():
                    print(f"{key:<30} {json.dumps(value)}")
        elif what == "system":
            print(self.system or info.get("system") or "No system message was specified for this model.")
        elif what == "template":
            print(info.get("template") or "No prompt template was specified for this model.")
        else:
            print(SHOW_HELP, file=sys.stderr)
