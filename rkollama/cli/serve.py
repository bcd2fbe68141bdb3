"""`rkollama serve`: run the daemon in the foreground."""

import typer

from rkollama.config import describe


def _epilog() -> str:
    lines = ["Environment variables (RKOLLAMA_* first, then the OLLAMA_* alias):", ""]
    for envs, default, text in describe():
        lines.append(f"  {envs}")
        lines.append(f"      {text} (default: {default or 'unset'})")
    # "\b" tells click to keep this paragraph's line breaks.
    return "\b\n" + "\n".join(line or " " for line in lines)


def register(app: typer.Typer) -> None:
    @app.command("serve", help="Start the rkollama daemon (Ollama API on OLLAMA_HOST).",
                 epilog=_epilog())
    def serve():
        from rkollama.config import Settings
        from rkollama.server.serve import run

        run(Settings.from_env())
