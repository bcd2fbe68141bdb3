"""`rkollama serve`: run the daemon in the foreground, configured by files, environment and flags."""

import argparse
import sys

import typer

from rkollama.config import SETTINGS, ConfigError, flag_settings


def _epilog() -> str:
    lines = ["Every setting, as a flag and as its environment variables (flags win over the",
             "environment, which wins over /etc/rkollama/config.yaml and ~/.rkollama/config.yaml,",
             "whose keys are the flag names without the leading dashes):", ""]
    for s in SETTINGS:
        flag = f"{s.flag} VALUE" if s in flag_settings() else "(no flag)"
        lines.append(f"  {flag}   [{', '.join(s.envs)}]")
        lines.append(f"      {s.help} (default: {s.default or 'unset'})")
    # "\b" tells click to keep this paragraph's line breaks.
    return "\b\n" + "\n".join(line or " " for line in lines)


def parse_flags(args: list[str]) -> dict[str, str]:
    """`--name VALUE` / `--name=VALUE` for each setting; a bare boolean flag means true."""
    parser = argparse.ArgumentParser(prog="rkollama serve", add_help=False, exit_on_error=False)
    for s in flag_settings():
        parser.add_argument(s.flag, dest=s.field, nargs="?" if s.kind == "bool" else None,
                            const="true" if s.kind == "bool" else None)
    try:
        parsed, unknown = parser.parse_known_args(args)
    except argparse.ArgumentError as exc:
        raise ConfigError(f"flag {exc.argument_name}: {exc.message}") from None
    if unknown:
        raise ConfigError(f"unknown flag {unknown[0]!r} (see rkollama serve --help)")
    return {k: v for k, v in vars(parsed).items() if v is not None}


def register(app: typer.Typer) -> None:
    @app.command("serve", help="Start the rkollama daemon (Ollama API on OLLAMA_HOST).",
                 epilog=_epilog(),
                 context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def serve(ctx: typer.Context) -> None:
        from rkollama.config import Settings
        from rkollama.errors import RkollamaError
        from rkollama.server.serve import run

        try:
            run(Settings.load(flags=parse_flags(list(ctx.args))))
        except ConfigError as exc:
            print(f"Error: {exc}", file=sys.stderr)
            raise typer.Exit(1) from None
        except RkollamaError as exc:  # e.g. a store it cannot create: one line, no traceback
            print(f"Error: {exc.message}", file=sys.stderr)
            raise typer.Exit(1) from None
