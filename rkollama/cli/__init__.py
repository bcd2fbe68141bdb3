"""The `rkollama` command: a typer app whose commands talk to the daemon over HTTP.

Heavy modules (Flask, llama.cpp, rich) are imported inside the commands that need them, so
`rkollama --help` and `rkollama list` start fast.
"""

import signal

import typer

from rkollama.cli import bench, models, run, serve

app = typer.Typer(
    name="rkollama", no_args_is_help=True, add_completion=False, rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Run large language models on Rockchip NPUs and CPUs, with Ollama's API.")

serve.register(app)
run.register(app)
models.register(app)
app.command("bench", help="Measure models: TTFT, prefill and decode tokens/s, concurrency")(bench.command)


def _version(value: bool) -> None:
    if value:
        from rkollama import __version__
        print(f"rkollama version is {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", "-v", callback=_version, is_eager=True,
                                       help="Show version information")) -> None:
    """Run large language models on Rockchip NPUs and CPUs, with Ollama's API."""
    # Ctrl+C stops a command (an answer, a pull) even when this process was started with SIGINT
    # ignored, as a shell's background job is and all it starts: Python would not raise
    # KeyboardInterrupt then. (`serve` installs its own handler.)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def main() -> None:
    app(prog_name="rkollama")
