"""Model management commands: list/ls, ps, show, stop, rm, cp, pull."""

import sys
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import typer

from rkollama.api.types import ShowResponse
from rkollama.cli import common, render
from rkollama.client import Client
from rkollama.config import Settings

if TYPE_CHECKING:
    from pathlib import Path

    from rkollama.api.modelfile import Parsed


def register(app: typer.Typer) -> None:
    app.command("list", help="List models")(list_models)
    app.command("ls", help="List models (alias of list)", hidden=True)(list_models)
    app.command("ps", help="List running models")(ps)
    app.command("show", help="Show information for a model")(show)
    app.command("stop", help="Stop a running model")(stop)
    app.command("rm", help="Remove a model")(rm)
    app.command("cp", help="Copy a model")(cp)
    app.command("pull", help="Pull a model from its sources")(pull)
    app.command("create", help="Create a model from a Modelfile")(create)
    app.command("push", help="Push a model to a registry (not available)")(push)
    app.command("import-ollama", help="Register the models of an Ollama store (no copy)")(import_ollama)
    app.command("doctor", help="Check the NPU, its driver and runtime, and frequencies")(doctor)


def list_models(prefix: str = typer.Argument("", help="Only models whose name starts with this")) -> None:
    cli = common.client()
    models = common.call(cli.list)
    rows = [[m["name"], m["digest"][:12], render.human_bytes(m["size"]),
             render.human_time_ago(m["modified_at"])]
            for m in models if m["name"].startswith(prefix)]
    print(render.table(["NAME", "ID", "SIZE", "MODIFIED"], rows))


def ps() -> None:
    cli = common.client()
    models = common.call(cli.ps)
    rows = []
    for m in models:
        processor = "100% NPU" if m["size_vram"] else "100% CPU"
        rows.append([m["name"], m["digest"][:12], render.human_bytes(m["size"]), processor,
                     str(m.get("context_length", "")), render.human_until(m["expires_at"])])
    print(render.table(["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"], rows))


def show(model: str,
         license_: bool = typer.Option(False, "--license", help="Show license of a model"),
         modelfile: bool = typer.Option(False, "--modelfile", help="Show Modelfile of a model"),
         parameters: bool = typer.Option(False, "--parameters", help="Show parameters of a model"),
         system: bool = typer.Option(False, "--system", help="Show system message of a model"),
         template: bool = typer.Option(False, "--template", help="Show template of a model")) -> None:
    flags = {"license": license_, "modelfile": modelfile, "parameters": parameters,
             "system": system, "template": template}
    chosen = [k for k, v in flags.items() if v]
    if len(chosen) > 1:
        raise common.fail("only one of '--license', '--modelfile', '--parameters', '--system', or "
                          "'--template' can be specified")
    cli = common.client()
    info = common.call(cli.show, model)
    if chosen:
        print(info.get(chosen[0], ""))
        return
    print(show_info(info))


def show_info(info: ShowResponse) -> str:
    """The default `show` text: indented Model, Capabilities, Parameters, System, License."""
    details = info.get("details", {})
    model_info = info.get("model_info") or {}
    arch = model_info.get("general.architecture") or details.get("family", "")
    rows = [("architecture", arch), ("parameters", details.get("parameter_size", "")),
            ("context length", model_info.get(f"{arch}.context_length") or details.get("context_length", "")),
            ("embedding length",
             model_info.get(f"{arch}.embedding_length") or details.get("embedding_length", "")),
            ("quantization", details.get("quantization_level", "")), ("requires", info.get("requires", ""))]
    out = ["  Model"] + [f"    {k:<20}{v}" for k, v in rows if v]
    if info.get("capabilities"):
        out += ["", "  Capabilities"] + [f"    {c}" for c in info["capabilities"]]
    out += _projector(info.get("projector_info") or {})
    if model_info.get("rkollama.npu.prompts"):
        out += ["", "  NPU", f"    {'prompts sent as':<20}{model_info['rkollama.npu.prompts']}"]
    if info.get("parameters"):
        out += ["", "  Parameters"]
        for line in info["parameters"].splitlines():
            key, _, value = line.partition(" ")
            out.append(f"    {key:<20}{value.strip()}")
    if info.get("system"):
        out += ["", "  System"] + [f"    {line}" for line in info["system"].splitlines()[:2]]
    if info.get("license"):
        lines = info["license"].splitlines()
        out += ["", "  License"] + [f"    {line}" for line in lines[:2]]
        if len(lines) > 2:
            out.append("    ...")
    return "\n".join(out) + "\n"


def _projector(info: dict[str, Any]) -> list[str]:
    """`show`'s Projector section (Ollama's rows) from `projector_info`."""
    if not info:
        return []
    arch = info.get("general.architecture", "")
    rows = [("architecture", arch)]
    count = info.get("general.parameter_count")
    if isinstance(count, int):
        rows.append(("parameters", render.human_number(count)))
    for suffix, label in (("embedding_length", "embedding length"), ("projection_dim", "dimensions")):
        value = next((info[key] for key in (f"{arch}.vision.{suffix}", f"{arch}.audio.{suffix}")
                      if key in info), "")
        rows.append((label, value))
    return ["", "  Projector"] + [f"    {k:<20}{v}" for k, v in rows if v != ""]


def stop(model: str) -> None:
    cli = common.client()
    loaded = common.call(cli.ps)
    if not any(m["name"] == model or m["name"] == f"{model}:latest" or m["model"] == model
               for m in loaded):
        raise common.fail(f'couldn\'t find model "{model}" to stop')
    common.call(cli.request, "POST", "/api/generate", {"model": model, "keep_alive": 0, "stream": False})


def rm(models: list[str]) -> None:
    cli = common.client()
    for model in models:
        common.call(cli.delete, model)
        print(f"deleted '{model}'")


def cp(source: str, destination: str) -> None:
    cli = common.client()
    common.call(cli.copy, source, destination)
    print(f"copied '{source}' to '{destination}'")


def pull(model: str) -> None:
    """Through the daemon when one answers; otherwise straight into the local store."""
    cfg = common.settings()
    cli = common.for_settings(cfg)
    if cli.heartbeat():
        _say_if_another_store(cli, cfg)
        pull_with_progress(cli, model)
        return
    from rkollama.errors import RkollamaError
    from rkollama.server import offline

    try:
        _draw_progress(offline.pull(cfg, model))
    except RkollamaError as exc:
        raise common.fail(exc.message) from None


def _say_if_another_store(cli: Client, cfg: Settings) -> None:
    """With RKOLLAMA_MODELS set, the pull still goes to whichever daemon answers (as Ollama's
    does); when that daemon keeps its models elsewhere, one line on stderr says so."""
    import os

    named = next((n for n in ("RKOLLAMA_MODELS", "OLLAMA_MODELS") if os.environ.get(n)), None)
    theirs = cli.store_fingerprint() if named else ""
    if named and theirs and theirs != cfg.store_fingerprint():
        print(f"rkollama: the daemon at {cfg.base_url()} keeps its models in another store than "
              f"{named}={os.environ[named]}: this model goes there (start `rkollama serve` with "
              f"{named} set to use that store)", file=sys.stderr)


def pull_with_progress(cli: Client, model: str) -> None:
    """Show Ollama-style progress: one bar per digest, status lines otherwise, then `success`."""
    with common.daemon_errors():
        _draw_progress(cli.pull(model))


def _draw_progress(lines: Iterable[Mapping[str, Any]]) -> None:
    """Bars for lines with a total, status lines otherwise, in the order they come (as Ollama
    draws them: a finished download's bar stays above the `verifying` and `success` that
    follow it)."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    console = Console(stderr=True)
    progress: Progress | None = None
    bars: dict[str, Any] = {}
    try:
        for line in lines:
            status = line.get("status", "")
            if "total" not in line:
                if progress is not None:  # freeze the bars drawn so far where they are
                    progress.stop()
                    progress, bars = None, {}
                console.print(status)
                continue
            if progress is None:
                progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                    TransferSpeedColumn(), console=console, transient=False)
                progress.start()
            key = line.get("digest", status)
            if key not in bars:
                bars[key] = progress.add_task(status, total=line["total"] or None)
            progress.update(bars[key], total=line["total"] or None, completed=line.get("completed", 0))
    finally:
        if progress is not None:
            progress.stop()
        sys.stderr.flush()


def doctor(pin_frequencies: bool = typer.Option(
        False, "--pin-frequencies",
        help="As root: pin NPU, CPU and DDR frequencies as Rockchip's scripts do"),
        npu_check: bool = typer.Option(
            False, "--npu-check",
            help="Load an NPU model here and run a scripted session; write a report to attach to a bug"),
        model: str = typer.Option("", "--model", help="With --npu-check: the model (default: the "
                                                       "smallest pulled NPU model)"),
        report_dir: str = typer.Option(
            "", "--report-dir",
            help="With --npu-check: where the report goes (default ~/.rkollama/npu-check)")) -> None:
    """Check what this machine offers the NPU engine."""
    from rkollama import doctor as checks

    if npu_check:
        _npu_check(model, report_dir)
        return
    if pin_frequencies:
        try:
            for line in checks.pin_frequencies():
                print(line)
        except PermissionError as exc:
            raise common.fail(str(exc)) from None
        return
    cfg = common.settings()
    cli = common.for_settings(cfg)
    loaded = [m["name"] for m in cli.ps()] if cli.heartbeat() else None
    report = checks.check(cfg, loaded)
    width = max(len(label) for label, _ in report.facts)
    for label, value in report.facts:
        print(f"{label:<{width}}  {value}")
    if report.problems:
        print()
        for problem, fix in report.problems:
            print(f"- {problem}\n  fix: {fix}")


def _npu_check(model: str, report_dir: str) -> None:
    import os
    from pathlib import Path

    from rkollama import npu_check
    from rkollama.errors import RkollamaError

    cfg = common.settings()
    out = Path(report_dir or os.path.expanduser("~/.rkollama/npu-check"))
    try:
        outcome = npu_check.run_check(cfg, model, out, progress=lambda line: print(line, file=sys.stderr))
    except RkollamaError as exc:
        raise common.fail(exc.message) from None
    for step in outcome.steps:
        print(f"{'pass' if step.passed else 'FAIL'}  {step.name}: {step.detail}")
    if not outcome.steps:
        print("the model did not load: see the report")
    print(f"\nreport: {outcome.report}\ndata:   {outcome.data}\n"
          "Attach both files to a bug report at the project's issue tracker.")


def create(name: str = typer.Argument(..., help="Name of the new model"),
           file: str = typer.Option("Modelfile", "--file", "-f", help="Ollama Modelfile to read")) -> None:
    """Parse the Modelfile here (as `ollama create` does), upload a local model file, create."""
    parsed = _read_modelfile(name, file)
    cli = common.client(autostart=True)
    body = dict(parsed.body, model=name)
    print("gathering model components", file=sys.stderr)
    if parsed.uploads:
        body["files"] = {path.name: _upload(cli, path) for path in parsed.uploads}
    if body.get("from"):
        with common.daemon_errors():
            try:
                cli.show(body["from"])
            except common.StatusError as exc:
                if exc.status != 404:
                    raise
                pull_with_progress(cli, body["from"])  # as `ollama create` pulls a missing FROM
    with common.daemon_errors():
        for line in cli.create(body):
            print(line.get("status", ""), file=sys.stderr)


def _read_modelfile(name: str, file: str) -> "Parsed":
    """The text or YAML Modelfile at `file` as a create request, or the command ends with why."""
    from pathlib import Path

    from rkollama.api.modelfile import parse, parse_yaml
    from rkollama.errors import BadRequest

    path = Path(file).expanduser()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            if not path.is_file():
                raise common.fail(f"open {file}: No such file or directory")
            return parse_yaml(path, name)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise common.fail(f"open {file}: {exc.strerror or exc}") from None
        return parse(text, path.parent)
    except BadRequest as exc:
        raise common.fail(exc.message) from None


def _upload(cli: Client, path: "Path") -> str:
    """The local model file as a blob of the daemon's store (sent only if it lacks it); its digest."""
    import hashlib

    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)
    digest = f"sha256:{hasher.hexdigest()}"
    if not common.call(cli.blob_exists, digest):
        print(f"copying file {digest}", file=sys.stderr)
        common.call(cli.upload_blob, digest, path)
    return digest


def push(name: str = typer.Argument(..., help="Model to push")) -> None:
    cli = common.client()
    common.call(cli.request, "POST", "/api/push", {"model": name})


def import_ollama(source: str = typer.Option("", "--from", help="Ollama's models folder "
                                             "(default: OLLAMA_MODELS, else ~/.ollama/models)"),
                  dry_run: bool = typer.Option(False, "--dry-run",
                                               help="Only list what would be imported")) -> None:
    """Works on the store's files directly (the daemon reads manifests afresh on every request,
    and a file lock serialises the store), so it needs no running daemon."""
    from pathlib import Path

    from rkollama.errors import RkollamaError
    from rkollama.server import offline

    try:
        given = Path(source).expanduser() if source else None
        root, results = offline.import_ollama(common.settings(), given, dry_run)
    except RkollamaError as exc:
        raise common.fail(exc.message) from None
    for result in results:
        print(f"{result.name:<40} {result.outcome}")
    if not results:
        print(f"no models in {root}")
