"""The app's collaborators (store, scheduler, settings, …) and how a request reaches them:
the one thing every route needs, kept apart from the app factory so routes never import it."""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from flask import current_app, request

from rkollama.server.describe import VerboseHeaders
from rkollama.server.metrics import Metrics

if TYPE_CHECKING:
    from rkollama.config import Settings
    from rkollama.models.catalog import Catalog
    from rkollama.models.store import ModelStore
    from rkollama.scheduler import Scheduler


@dataclass
class Deps:
    """The app's collaborators, reached from a request through `deps()`."""

    settings: "Settings"
    scheduler: "Scheduler"
    store: "ModelStore"
    catalog: "Catalog"
    platform: str
    metrics: Metrics
    headers: VerboseHeaders = field(default_factory=VerboseHeaders)
    """GGUF headers for /api/show `verbose`, one read at a time."""


def deps() -> Deps:
    """The current app's collaborators (inside a request)."""
    return cast(Deps, current_app.config["RKOLLAMA"])


def disconnected() -> Callable[[], bool] | None:
    """Waitress's "client went away" probe (present with channel_request_lookahead)."""
    return request.environ.get("waitress.client_disconnected")
