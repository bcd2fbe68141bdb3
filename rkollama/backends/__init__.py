"""Engine registry: picks the backend for a model from its format and the `backend` setting."""

from rkollama.errors import LoadFailed


def load_backend(spec, opts, settings):
    """Default `backend_factory` of the Scheduler. Heavy engines are imported only here."""
    choice = settings.backend
    if choice == "fake":
        from rkollama.backends.fake import Script, ScriptedBackend
        return ScriptedBackend.load(spec, opts, settings, script=Script())
    if spec.format == "rkllm":
        if settings.npu_isolation:
            from rkollama.backends.rkllm.worker import WorkerBackend
            return WorkerBackend.load(spec, opts, settings)
        from rkollama.backends.rkllm.backend import RKLLMBackend
        return RKLLMBackend.load(spec, opts, settings)
    if choice not in ("auto", "llamacpp"):
        raise LoadFailed(f"unknown backend {choice!r} (RKOLLAMA_BACKEND): use auto, llamacpp or fake")
    from rkollama.backends.llamacpp import LlamaCppBackend
    return LlamaCppBackend.load(spec, opts, settings)
