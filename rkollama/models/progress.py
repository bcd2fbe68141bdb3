"""The progress line a pull or a create produces: Ollama's ProgressResponse (api/types.py names
it so for the server, the client and the CLI), declared here, where the lines are made."""

import sys

if sys.version_info >= (3, 11):
    from typing import NotRequired, TypedDict
else:  # Python 3.10: its TypedDict ignores NotRequired
    from typing_extensions import NotRequired, TypedDict


class Progress(TypedDict):
    """One line of /api/pull, /api/create and /api/push progress."""

    status: str
    digest: NotRequired[str]
    total: NotRequired[int]
    """Bytes of the file being fetched."""
    completed: NotRequired[int]
    """Bytes of it fetched so far."""
