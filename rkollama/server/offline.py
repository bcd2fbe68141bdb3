"""The daemon's own work on this machine's store, run in the CLI's process where no daemon can
do it: a pull when no daemon answers (the store's file lock keeps a daemon started meanwhile
out of its way), and the import of Ollama's store, which links files rather than sending them.

The CLI reaches the store through this module only; every other command is an HTTP client.
"""

from collections.abc import Iterator
from pathlib import Path

from rkollama.api.types import ProgressResponse
from rkollama.config import Settings
from rkollama.models.catalog import Catalog
from rkollama.models.ollama_import import Imported, default_root, import_all
from rkollama.models.pull import pull as pull_into
from rkollama.models.store import ModelStore
from rkollama.platform import source_platform


def pull(cfg: Settings, name: str) -> Iterator[ProgressResponse]:
    """`name` pulled into the configured store; Ollama's progress lines."""
    return pull_into(ModelStore(cfg.models), Catalog(cfg.modelfiles), name,
                     source_platform(cfg.platform, cfg.rkllm_lib))


def import_ollama(cfg: Settings, root: Path | None, dry_run: bool) -> tuple[Path, list[Imported]]:
    """Ollama's models under `root` (default: OLLAMA_MODELS, else ~/.ollama/models) registered
    in the configured store; returns the root read and one result per model."""
    root = root or default_root()
    return root, list(import_all(ModelStore(cfg.models), root, dry_run))
