"""The models of an existing Ollama store (`~/.ollama/models`, or OLLAMA_MODELS), registered in
rkollama's store without copying their weights: each GGUF blob is hard-linked (a symbolic link
when the stores are on different file systems), with its parameters, system prompt, messages and
license, and the names of the built-in renderer and parser and the version it requires. Ollama's
Go chat templates cannot run here: the GGUF's own template is used instead.

Ollama's layout: manifests/<host>/<namespace>/<model>/<tag> (JSON: config + layers with media
types `application/vnd.ollama.image.model`, `.params`, `.system`, `.messages`, `.license`,
`.template`, `.projector`, `.adapter`) and blobs/sha256-<hex>.
"""

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rkollama.core import create_fields
from rkollama.core.options import OPTIONS, coerce_option
from rkollama.errors import BadRequest, RkollamaError
from rkollama.models import gguf_facts
from rkollama.models.modelfile import Modelfile
from rkollama.models.names import ModelName
from rkollama.models.store import PROJECTOR_TYPE, ModelStore

MEDIA = "application/vnd.ollama.image."
log = logging.getLogger("rkollama.import")


@dataclass
class Imported:
    name: str
    outcome: str  # "imported", "exists", or why it was skipped


def default_root() -> Path:
    """Where Ollama keeps its models: OLLAMA_MODELS, else ~/.ollama/models."""
    return Path(os.environ.get("OLLAMA_MODELS") or "~/.ollama/models").expanduser()


def import_all(store: ModelStore, root: Path, dry_run: bool = False) -> Iterator[Imported]:
    """Register every model of the Ollama store at `root`; one result per manifest."""
    manifests = root / "manifests"
    if not manifests.is_dir():
        raise BadRequest(f"no Ollama models at {root} (no manifests/ folder); set OLLAMA_MODELS "
                         "or pass --from")
    for path in sorted(p for p in manifests.glob("*/*/*/*") if p.is_file()):
        host, namespace, model, tag = path.relative_to(manifests).parts
        try:
            name = ModelName(host, namespace, model, tag)
            ModelName.parse(name.full())  # Ollama's names follow the same grammar
            yield _import_one(store, root, path, name, dry_run)
        except RkollamaError as exc:
            yield Imported(f"{model}:{tag}", f"skipped: {exc.message}")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            yield Imported(f"{model}:{tag}", f"skipped: unreadable manifest ({exc})")


def _import_one(store: ModelStore, root: Path, path: Path, name: ModelName, dry_run: bool) -> Imported:
    label = name.display()
    try:
        store.resolve(name)
        return Imported(label, "exists")
    except RkollamaError:
        pass
    manifest = json.loads(path.read_bytes())
    layers = {layer["mediaType"].removeprefix(MEDIA): layer["digest"] for layer in manifest["layers"]}
    if "model" not in layers:
        return Imported(label, "skipped: no model layer")
    if "adapter" in layers:
        return Imported(label, "skipped: LoRA adapters are not supported")
    blob = _blob(root, layers["model"])
    facts = gguf_facts.read(blob)
    parameters = {}
    if "params" in layers:
        for key, value in json.loads(_blob(root, layers["params"]).read_text()).items():
            if key in OPTIONS:
                parameters[key] = coerce_option(key, value)
    messages = json.loads(_blob(root, layers["messages"]).read_text()) if "messages" in layers else []
    modelfile = Modelfile.model_validate({
        "name": name.model, "tag": name.tag, "description": f"imported from Ollama ({root})",
        "system": _blob(root, layers["system"]).read_text() if "system" in layers else "",
        "license": _blob(root, layers["license"]).read_text() if "license" in layers else "",
        "parameters": parameters, "capabilities": facts.capabilities,
        "details": facts.details, "model_info": facts.model_info,
        "messages": [{"role": m["role"], "content": str(m.get("content", ""))} for m in messages
                     if isinstance(m, dict) and m.get("role") in ("system", "user", "assistant")],
        "source": {"path": str(blob), "format": "gguf"}, **_builtins(root, manifest)})
    if dry_run:
        return Imported(label, "would import")
    digest = layers["model"].split(":", 1)[-1]
    extra: tuple[tuple[str, str, int], ...] = ()
    if "projector" in layers:  # a GGUF vision model's projector (mmproj): it keeps its eyes
        projector = _blob(root, layers["projector"])
        extra = ((PROJECTOR_TYPE, layers["projector"].split(":", 1)[-1], projector.stat().st_size),)
    with store.lock():
        store.check_name_free(name)
        _link(blob, store.blob_path(digest))
        for _, other, _ in extra:
            _link(_blob(root, other), store.blob_path(other))
        store.register(name, modelfile, digest, blob.stat().st_size, extra)
    log.info("imported %s from %s", label, root)
    return Imported(label, "imported")


def _builtins(root: Path, manifest: dict[str, Any]) -> dict[str, str]:
    """The config blob's renderer, parser and requires (RENDERER, PARSER, REQUIRES), those that
    fit their grammar: kept and shown as a model created with them."""
    try:
        config = json.loads(_blob(root, manifest["config"]["digest"]).read_bytes())
    except (KeyError, TypeError, ValueError, BadRequest):
        return {}
    kept: dict[str, str] = {}
    for key in create_fields.FIELDS:
        value = config.get(key) if isinstance(config, dict) else None
        try:
            if value:
                kept[key] = create_fields.checked(key, value)
        except BadRequest:
            log.warning("import: the Ollama model's %s %r is left out", key, value)
    return kept


def _blob(root: Path, digest: str) -> Path:
    path = root / "blobs" / f"sha256-{digest.split(':', 1)[-1]}"
    if not path.is_file():
        raise BadRequest(f"blob {path.name} is missing from the Ollama store")
    return path


def _link(source: Path, target: Path) -> None:
    """Hard link, else a symbolic link: the weights are never copied."""
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed
        os.symlink(source.resolve(), target)
