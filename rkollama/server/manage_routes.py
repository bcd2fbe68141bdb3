"""`GET /metrics` (Prometheus) and the model-management aliases some RKLLM servers offer under
/v1 (`/v1/health`, `/v1/models/load|unload|loaded|available`), over the same scheduler, store
and catalogue as the Ollama routes. Errors use OpenAI's shape, as everywhere under /v1."""

from flask import Blueprint, Response, current_app

from rkollama import __version__
from rkollama.api.fields import Fields, parse_body
from rkollama.durations import keep_alive_seconds
from rkollama.errors import BadRequest
from rkollama.openai import convert
from rkollama.server import describe, pipeline
from rkollama.server.deps import deps
from rkollama.server.metrics import CONTENT_TYPE
from rkollama.server.streaming import json_response

bp = Blueprint("manage", __name__)


@bp.route("/metrics", methods=["GET"])
def metrics() -> Response:
    return current_app.response_class(deps().metrics.render(), content_type=CONTENT_TYPE)


@bp.route("/v1/health", methods=["GET", "HEAD"])
def health() -> Response:
    here = deps()
    if here.scheduler.stopping:
        return json_response({"status": "shutting down"}, 503)
    return json_response({"status": "ok", "version": __version__,
                          "models_loaded": len(here.scheduler.ps())})


def _model(type_name: str) -> tuple[Fields, str]:
    from flask import request

    f = Fields(parse_body(request.get_data(cache=False)), type_name)
    name = f.get("model", str, "")
    if not name:
        raise BadRequest("model is required")
    return f, name


@bp.route("/v1/models/load", methods=["POST"])
def load() -> Response:
    """Load a model now (as an empty /api/generate does): `model`, optional `keep_alive`, `options`."""
    f, name = _model("LoadRequest")
    spec = deps().store.resolve(name)
    seconds = pipeline.load(spec, f.get("options", dict), keep_alive_seconds(f.raw("keep_alive")))
    return json_response({"model": spec.name.display(), "loaded": True,
                          "load_duration": int(seconds * 1e9)})


@bp.route("/v1/models/unload", methods=["POST"])
def unload() -> Response:
    _, name = _model("UnloadRequest")
    here = deps()
    spec = here.store.resolve(name)
    here.scheduler.unload(spec)
    return json_response({"model": spec.name.display(), "unloaded": True})


@bp.route("/v1/models/loaded", methods=["GET"])
def loaded() -> Response:
    entries = []
    for model in deps().scheduler.ps():
        ps = describe.ps_entry(model)
        entries.append(dict(convert.model_entry(model.spec), size=ps["size"],
                            context_length=ps["context_length"], expires_at=ps["expires_at"]))
    return json_response({"object": "list", "data": entries})


@bp.route("/v1/models/available", methods=["GET"])
def available() -> Response:
    """Pulled models, then the catalogue's models for this machine that are not pulled yet."""
    here = deps()
    pulled = [dict(convert.model_entry(spec), downloaded=True) for spec in here.store.list()]
    have = {entry["id"] for entry in pulled}
    more = [{"id": name, "object": "model", "created": 0, "owned_by": "library",
             "downloaded": False, "description": entry.description}
            for name, entry in here.catalog.offered(here.platform) if name not in have]
    return json_response({"object": "list", "data": pulled + more})
