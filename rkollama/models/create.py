"""Creating a model from another one or from an uploaded file (`/api/create`), as Ollama's JSON
form describes it: `from` (an existing model) or `files` ({name: digest} of blobs uploaded with
`/api/blobs`), and `template`, `system`, `parameters`, `messages`, `license`, `renderer`,
`parser`, `requires` over it."""

from collections.abc import Generator
from typing import Any

from rkollama.core import create_fields
from rkollama.core.options import OPTIONS, coerce_option
from rkollama.errors import BadRequest, ModelNotFound, PullFailed
from rkollama.models import gguf_facts
from rkollama.models.modelfile import Modelfile
from rkollama.models.names import ModelName
from rkollama.models.progress import Progress
from rkollama.models.store import PROJECTOR_TYPE, ModelStore

MODEL_SUFFIXES = {".gguf": "gguf", ".rkllm": "rkllm"}
GO_TEMPLATE_HINT = (
    "Go templates ({{ .Prompt }}, {{ range .Messages }}) cannot run here: write the TEMPLATE as a "
    "Jinja chat template, e.g. {% for m in messages %}<|im_start|>{{ m.role }}\\n{{ m.content }}"
    "<|im_end|>\\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\\n{% endif %}")


def create(store: ModelStore, body: dict[str, Any]) -> Generator[Progress, None, None]:
    """Yield Ollama's create progress while the model is registered; errors before the first
    line (bad name, missing source, bad template or parameter) are raised as they are."""
    name = ModelName.parse(body.get("model") or body.get("name") or "")
    if body.get("quantize"):
        raise BadRequest("quantization is not supported: pull or upload a quantized GGUF instead")
    if body.get("adapters"):
        raise BadRequest("adapters are not supported by /api/create here; name an NPU LoRA in a "
                         "YAML Modelfile (rkllm.lora) instead")
    if body.get("draft_files"):
        raise BadRequest("draft models are not supported: rkollama has no speculative decoding")
    if body.get("modelfile") and not (body.get("from") or body.get("files")):
        raise BadRequest("the modelfile field is no longer accepted: send from/files as Ollama's "
                         "client does (rkollama create NAME -f Modelfile parses it)")
    base, digest = _source(store, body)
    projector = _projector(store, body)
    modelfile = _override(base, name, body)
    store.check_name_free(name)
    yield {"status": f"using existing layer sha256:{digest}"}
    extra: tuple[tuple[str, str, int], ...] = ()
    if projector:
        yield {"status": f"using existing layer sha256:{projector}"}
        extra = ((PROJECTOR_TYPE, projector, store.blob_path(projector).stat().st_size),)
    yield {"status": "writing manifest"}
    with store.lock():
        store.register(name, modelfile, digest, store.blob_path(digest).stat().st_size, extra)
    yield {"status": "success"}


def _source(store: ModelStore, body: dict[str, Any]) -> tuple[Modelfile, str]:
    """The Modelfile to start from and the digest of its weights."""
    files = body.get("files") or {}
    if not isinstance(files, dict):
        raise BadRequest("files must be an object of {name: digest}")
    if body.get("from"):
        try:
            spec = store.resolve(str(body["from"]))
        except ModelNotFound:
            raise ModelNotFound(f"model '{body['from']}' not found") from None
        return spec.modelfile, spec.model_path.name.removeprefix("sha256-")
    models = [(n, d) for n, d in files.items()
              if isinstance(n, str) and any(n.lower().endswith(s) for s in MODEL_SUFFIXES)
              and not _is_projector(store, d)]
    if not files:
        raise BadRequest("neither 'from' or 'files' was specified")
    if len(models) != 1:
        raise BadRequest("files must hold exactly one .gguf or .rkllm model file")
    filename, digest = models[0]
    if not isinstance(digest, str) or not store.has_blob(digest):
        raise BadRequest(f"blob {digest} was not uploaded: POST it to /api/blobs/{digest} first")
    fmt = next(f for s, f in MODEL_SUFFIXES.items() if filename.lower().endswith(s))
    hexdigest = digest.split(":", 1)[-1]
    data: dict[str, Any] = {"name": "", "tag": "", "source": {"path": filename, "format": fmt},
                            "details": {"format": fmt}}
    if fmt == "gguf":  # what its header says, as a pull reads it: tools and thinking from its template
        try:
            facts = gguf_facts.read(store.blob_path(hexdigest))
        except PullFailed:
            raise BadRequest(f"{filename} is not a valid GGUF file") from None
        data.update(details=facts.details, capabilities=facts.capabilities, model_info=facts.model_info)
    return Modelfile.model_validate(data), hexdigest


def _projector(store: ModelStore, body: dict[str, Any]) -> str:
    """The digest of the vision projector: an uploaded GGUF whose architecture is `clip` (as
    Ollama's create tells a projector from a model), else the `from` model's; "" for none."""
    files = body.get("files") or {}
    found = [str(d).split(":", 1)[-1] for n, d in files.items()
             if isinstance(n, str) and n.lower().endswith(".gguf") and _is_projector(store, d)]
    if len(found) > 1:
        raise BadRequest("files must hold at most one vision projector")
    if found:
        return found[0]
    if body.get("from"):
        path = store.resolve(str(body["from"])).projector_path
        return path.name.removeprefix("sha256-") if path is not None else ""
    return ""


def _is_projector(store: ModelStore, digest: object) -> bool:
    if not isinstance(digest, str) or not store.has_blob(digest):
        return False
    try:
        return gguf_facts.read(store.blob_path(digest)).details.get("family") == "clip"
    except PullFailed:
        return False


def _override(base: Modelfile, name: ModelName, body: dict[str, Any]) -> Modelfile:
    template = body.get("template")
    if template is not None:
        if not isinstance(template, str):
            raise BadRequest("template must be a string")
        if "{{ ." in template or "{{- ." in template or "{{." in template:
            raise BadRequest(GO_TEMPLATE_HINT)
    parameters = dict(base.parameters)
    given = body.get("parameters") or {}
    if not isinstance(given, dict):
        raise BadRequest("parameters must be an object of {name: value}")
    for key, value in given.items():
        if key not in OPTIONS:
            raise BadRequest(f"unknown parameter '{key}'")
        parameters[key] = coerce_option(key, value)
    messages = body.get("messages")
    if messages is not None:
        if not isinstance(messages, list) or not all(
                isinstance(m, dict) and m.get("role") in ("system", "user", "assistant")
                and isinstance(m.get("content", ""), str) for m in messages):
            raise BadRequest("messages must be [{role: system|user|assistant, content}]")
        messages = [{"role": m["role"], "content": m.get("content", "")} for m in messages]
    license_text = body.get("license")
    if isinstance(license_text, list):
        license_text = "\n".join(str(t) for t in license_text)
    system = body.get("system")
    # Kept and shown as Ollama keeps them, a base model's carried over unless given.
    named = {field: create_fields.checked(field, body[field]) for field in create_fields.FIELDS
             if body.get(field) not in (None, "")}
    capabilities = list(base.capabilities)
    if template:  # what the template can render decides tools and thinking, as in Ollama
        capabilities = [c for c in capabilities if c not in ("tools", "thinking")]
        capabilities += gguf_facts.template_capabilities(template)
    return base.changed(name=name.model, tag=name.tag, capabilities=capabilities,
                        template=template if template else base.template,
                        system=system if isinstance(system, str) else base.system,
                        parameters=parameters, messages=messages if messages is not None else base.messages,
                        license=license_text if isinstance(license_text, str) else base.license, **named)
