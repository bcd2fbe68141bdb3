"""Error types with an HTTP status. Routes render them once per dialect; never match on messages."""


class RkollamaError(Exception):
    """Base error: `status` is the HTTP status code, `message` what the user reads."""

    status = 500

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class BadRequest(RkollamaError):
    status = 400


class InvalidModelName(BadRequest):
    def __init__(self, message: str = "invalid model name"):
        super().__init__(message)


class ModelNotFound(RkollamaError):
    status = 404


class Forbidden(RkollamaError):
    status = 403


class QueueFull(RkollamaError):
    status = 503

    def __init__(self, message: str = "server busy, please try again.  maximum pending requests exceeded"):
        super().__init__(message)


class ShuttingDown(RkollamaError):
    """The daemon is stopping: queued requests and running streams end with this."""

    status = 503

    def __init__(self, message: str = "server is shutting down"):
        super().__init__(message)


class Cancelled(RkollamaError):
    status = 499

    def __init__(self, message: str = "request canceled"):
        super().__init__(message)


class LoadFailed(RkollamaError):
    status = 500


class BackendFailed(RkollamaError):
    status = 500


class FormatNotMet(RkollamaError):
    """The model answered, but not in the requested `format`, after every retry. 422, not a 5xx:
    a 5xx makes clients (the openai SDK) send the request again, tripling the cost of an answer
    the model cannot give."""

    status = 422


class ModelfileError(RkollamaError):
    """A Modelfile is invalid; the message names the file and the offending key."""

    status = 400


class PullFailed(RkollamaError):
    status = 500


class CorruptModel(RkollamaError):
    """A manifest or config blob that cannot be read: `rm` and `pull` still work on the name."""

    status = 500


class DigestMismatch(RkollamaError):
    """Downloaded or uploaded bytes are not what their digest says; nothing was kept."""

    status = 500


class StoreFull(RkollamaError):
    """The disk filled up while writing a blob; the partial file has been removed."""

    status = 507
