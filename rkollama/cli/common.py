"""What every client command shares: settings, the client, errors, starting a daemon."""

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import typer

from rkollama.client import Client, ConnectError, StatusError
from rkollama.config import ConfigError, Settings, parse_host

T = TypeVar("T")
AUTOSTART_WAIT_S = 60.0


def settings() -> Settings:
    """The files and the environment; a bad value ends the command with its one-line reason."""
    try:
        return Settings.load()
    except ConfigError as exc:
        raise fail(str(exc)) from None


def for_settings(cfg: Settings, base_url: str = "") -> Client:
    """A client for `base_url` (default: the configured host) that sends the configured API key,
    so the CLI works against a daemon that needs one."""
    return Client(base_url or cfg.base_url(), api_key=cfg.api_key[0] if cfg.api_key else "")


def fail(message: str) -> "typer.Exit":
    print(f"Error: {message}", file=sys.stderr)
    return typer.Exit(1)


def client(autostart: bool = False) -> Client:
    """A client for the configured host; checks the daemon answers (HEAD /) first.

    With `autostart`, a local host and no daemon answering, start `rkollama serve` in the
    background and wait for it.
    """
    cfg = settings()
    cli = for_settings(cfg)
    if cli.heartbeat():
        return cli
    if autostart and not cfg.no_autostart and _is_local(cfg.host):
        _start_daemon(cfg, cli)
        return cli
    raise fail("could not connect to rkollama server, run 'rkollama serve' to start it")


def _is_local(host_setting: str) -> bool:
    _, host, _ = parse_host(host_setting)
    return host in ("127.0.0.1", "localhost", "0.0.0.0", "::1", "::", "")


def _start_daemon(cfg: Settings, cli: Client) -> None:
    log_path = Path(os.path.expanduser("~/.rkollama/serve.log"))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"Starting the rkollama daemon in the background (log: {log_path})", file=sys.stderr)
    with open(log_path, "ab") as log:
        subprocess.Popen([sys.executable, "-m", "rkollama", "serve"], stdin=subprocess.DEVNULL,
                         stdout=log, stderr=log, start_new_session=True, close_fds=True)
    deadline = time.monotonic() + AUTOSTART_WAIT_S
    while time.monotonic() < deadline:
        if cli.heartbeat(timeout=1.0):
            return
        time.sleep(0.1)
    raise fail(f"the rkollama daemon did not start; see {log_path}")


@contextmanager
def daemon_errors(where: str = "rkollama server") -> Iterator[None]:
    """Daemon errors inside the block end the command with `Error: …` and exit code 1 (the one
    place the CLI turns client errors into words)."""
    try:
        yield
    except StatusError as exc:
        raise fail(exc.message) from None
    except ConnectError as exc:
        raise fail(f"could not connect to {where}: {exc}") from None


def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a client call under daemon_errors()."""
    with daemon_errors():
        return fn(*args, **kwargs)
