"""Engine registry: picks the backend for a model from its format and the `backend` setting."""

from rkollama.backends.base import Backend
from rkollama.errors import LoadFailed


def engine_class(spec, settings) -> type[Backend]:
    """The engine that runs `spec`. Heavy engines are imported only here."""
    choice = settings.backend
    if spec.format == "rkllm":
        from rkollama.backends.rkllm.backend import RKLLMBackend
        return RKLLMBackend
    if choice not in ("auto", "llamacpp"):
        raise LoadFailed(f"unknown backend {choice!r} (RKOLLAMA_BACKEND): use auto, llamacpp or fake")
    from rkollama.backends.llamacpp import LlamaCppBackend
    return LlamaCppBackend


def load_backend(spec, opts, settings) -> Backend:
    """Default `backend_factory` of the Scheduler: the model's engine in a runner process of its
    own (RKOLLAMA_ISOLATION, the default), or in the daemon's process."""
    if settings.backend == "fake":
        from rkollama.backends.fake import Script, ScriptedBackend
        return ScriptedBackend.load(spec, opts, settings, script=Script())
    cls = engine_class(spec, settings)
    if settings.isolation:
        from rkollama.backends.runner import RunnerBackend
        return RunnerBackend.load(spec, opts, settings, backend_cls=cls)
    return cls.load(spec, opts, settings)
