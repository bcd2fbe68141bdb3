"""Ollama's account and cloud routes, answered for a daemon that has no cloud.

Ollama serves these next to the local API (`/api/status`, `/api/me`, `/api/signout`,
`/api/experimental/*`); clients such as Ollama's own app and `ollama launch` call them to decide
what to offer. rkollama never talks to ollama.com, so each answers in Ollama's shape with what a
cloud-disabled Ollama says (`ollama cloud is disabled: …`, its exported prefix, which clients test
for), never a bare 404 page.
"""

from flask import Blueprint, Response, request

from rkollama.server.deps import deps
from rkollama.server.streaming import error_response, json_response

bp = Blueprint("cloud", __name__)

CLOUD_DISABLED = "ollama cloud is disabled"


def _disabled(operation: str) -> Response:
    return error_response(f"{CLOUD_DISABLED}: {operation}", 403)


@bp.route("/api/status", methods=["GET"])
def status() -> Response:
    # Ollama's `source` says which setting disabled the cloud (none/env/config/both); here it is
    # the build itself, reported as "config" so clients that only read `disabled` see the truth.
    return json_response({"cloud": {"disabled": True, "source": "config"}})


@bp.route("/api/me", methods=["POST"])
def whoami() -> Response:
    return _disabled("accounts are unavailable (rkollama is local only)")


@bp.route("/api/signout", methods=["POST"])
@bp.route("/api/user/keys/<path:_key>", methods=["DELETE"])
def signout(_key: str = "") -> Response:
    return error_response("you are not currently signed in", 401)  # Ollama's text, and true here


@bp.route("/api/experimental/web_search", methods=["POST"])
def web_search() -> Response:
    return _web("web search is unavailable")


@bp.route("/api/experimental/web_fetch", methods=["POST"])
def web_fetch() -> Response:
    return _web("web fetch is unavailable")


def _web(operation: str) -> Response:
    if not request.get_data(cache=False).strip():
        return error_response("missing request body", 400)  # Ollama checks the body first
    return _disabled(operation)


@bp.route("/api/experimental/model-recommendations", methods=["GET"])
def recommendations() -> Response:
    """The catalogue's models that have a source for this machine, default tags first."""
    here = deps()
    entries = []
    for name, entry in here.catalog.offered(here.platform):
        item: dict[str, str | int] = {"model": name, "description": entry.description}
        if entry.details.context_length > 0:
            item["context_length"] = entry.details.context_length
        entries.append(item)
    return json_response({"recommendations": entries})

