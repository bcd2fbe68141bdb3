"""Engine registry: picks the backend for a model from its format and the `backend` setting."""

from typing import TYPE_CHECKING

from rkollama.backends.base import Backend
from rkollama.core.types import LoadOptions
from rkollama.errors import LoadFailed

if TYPE_CHECKING:
    from rkollama.config import Settings
    from rkollama.models.store import ModelSpec


def engine_class(spec: "ModelSpec", settings: "Settings") -> type[Backend]:
    """The engine that runs `spec`. Heavy engines are imported only here."""
    choice = settings.backend
    if spec.format == "rkllm":
        from rkollama.backends.rkllm.backend import RKLLMBackend
        return RKLLMBackend
    if choice not in ("auto", "llamacpp"):
        raise LoadFailed(f"unknown backend {choice!r} (RKOLLAMA_BACKEND): use auto, llamacpp or fake")
    from rkollama.backends.llamacpp import LlamaCppBackend
    return LlamaCppBackend


class EngineFactory:
    """The Scheduler's default backend factory: loads a model's engine, and says before loading
    whether that engine enforces a `format` itself."""

    def __call__(self, spec: "ModelSpec", opts: LoadOptions, settings: "Settings") -> Backend:
        """The model's engine in a runner process of its own (RKOLLAMA_ISOLATION, the default),
        or in the daemon's process."""
        if settings.backend == "fake":
            from rkollama.backends.fake import Script, ScriptedFactory
            return ScriptedFactory(Script())(spec, opts, settings)
        cls = engine_class(spec, settings)
        if settings.isolation:
            from rkollama.backends.runner import RunnerBackend
            return RunnerBackend.load(spec, opts, settings, backend_cls=cls)
        from rkollama.backends.engine_thread import OnEngineThread
        return OnEngineThread.load(spec, opts, settings, backend_cls=cls)

    @staticmethod
    def engine_class(spec: "ModelSpec", settings: "Settings") -> type[Backend]:
        if settings.backend == "fake":
            from rkollama.backends.fake import ScriptedBackend
            return ScriptedBackend
        return engine_class(spec, settings)
