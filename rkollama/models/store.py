"""The model store: content-addressed blobs plus one manifest per `name:tag` (Ollama's layout).

    <root>/blobs/sha256-<hex>                       model weights, Modelfile config
    <root>/manifests/<host>/<namespace>/<model>/<tag>   JSON manifest naming the blobs
"""

import errno
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Literal, NoReturn

from filelock import FileLock

from rkollama.errors import BadRequest, CorruptModel, DigestMismatch, ModelNotFound, RkollamaError, StoreFull
from rkollama.fsutil import write_bytes_atomic
from rkollama.models.modelfile import Modelfile
from rkollama.models.names import ModelName

CONFIG_TYPE = "application/vnd.rkollama.modelfile.v1+json"
MANIFEST_TYPE = "application/vnd.rkollama.manifest.v1+json"
MODEL_TYPE = "application/vnd.rkollama.model.{fmt}"
TOKENIZER_TYPE = "application/vnd.rkollama.tokenizer"
"""A Hugging Face tokenizer.json beside an .rkllm model (the NPU engine then feeds token ids)."""
TOKENIZER_CONFIG_TYPE = "application/vnd.rkollama.tokenizer.config"
"""Its tokenizer_config.json (chat template, BOS/EOS)."""
PROJECTOR_TYPE = "application/vnd.rkollama.projector"
"""A vision model's projector (`mmproj` GGUF) beside its language model."""
STALE_PARTIAL_S = 7 * 86400
"""A partial download untouched this long (seconds) is removed when the daemon starts; younger
ones are kept so that the next pull of the same file resumes them."""
HASH_CHUNK = 1 << 20

log = logging.getLogger("rkollama.store")


@dataclass(frozen=True)
class ModelSpec:
    """A resolved local model. `digest` is the sha256 of its manifest (Ollama's model id)."""

    name: ModelName
    modelfile: Modelfile
    model_path: Path
    digest: str
    size: int
    modified_at: datetime
    tokenizer_path: Path | None = None
    """The model's tokenizer.json, when the store has one for it (.rkllm models)."""
    tokenizer_config_path: Path | None = None
    projector_path: Path | None = None
    """The vision projector (`mmproj` GGUF) of a model that reads images."""

    @property
    def format(self) -> str:
        return self.modelfile.format

    @property
    def capabilities(self) -> list[str]:
        """The Modelfile's, with `vision` exactly when the model has a projector to see with."""
        caps = [c for c in self.modelfile.capabilities if c != "vision"]
        return caps + ["vision"] if self.projector_path is not None else caps


class ModelStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.blobs = self.root / "blobs"
        self.manifests = self.root / "manifests"

    # -- blobs ---------------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        """Path of the blob with this sha256 hex digest (with or without `sha256:`)."""
        hexdigest = digest.split(":", 1)[-1]
        if len(hexdigest) != 64 or any(c not in "0123456789abcdef" for c in hexdigest):
            raise RkollamaError(f"invalid digest {digest!r}", 400)
        return self.blobs / f"sha256-{hexdigest}"

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def verify_blob(self, digest: str, size: int = 0) -> bool:
        """True when the blob exists with this sha256 (and size, when given); a damaged blob is
        removed, so that the caller fetches it again."""
        path = self.blob_path(digest)
        try:
            if size and path.stat().st_size != size:
                raise ValueError("size")
            hasher = hashlib.sha256()
            with open(path, "rb") as handle:
                while block := handle.read(HASH_CHUNK):
                    hasher.update(block)
            if hasher.hexdigest() != digest.split(":", 1)[-1]:
                raise ValueError("digest")
            return True
        except FileNotFoundError:
            return False
        except (OSError, ValueError):
            log.warning("blob %s is damaged: removing it to fetch it again", path.name)
            path.unlink(missing_ok=True)
            return False

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Serialise operations that change manifests or remove blobs (pull, cp, rm), across
        threads and processes (an advisory lock on <root>/.lock)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(self.root / ".lock"):
            yield

    @contextmanager
    def download_lock(self, key: str) -> Iterator[None]:
        """Held while one download of `key` (a digest or URL) runs: a second pull of the same
        file waits here, then finds the blob in place."""
        # The lock files live in <root>/.locks, not among the blobs (a lock file cannot be
        # removed safely while another pull may be waiting on it; these are a few bytes each).
        locks = self.root / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        path = locks / f"{self.partial_path(key).name.lstrip('.')}.lock"
        with FileLock(path):
            os.utime(path)  # the lock's age says when this download last started
            yield

    def partial_path(self, key: str) -> Path:
        """Where a download identified by `key` (a digest or a source URL) is resumed from."""
        return self.blobs / f".partial-{hashlib.sha256(key.encode()).hexdigest()[:32]}"

    def prepare(self) -> None:
        """Create the store's directories (a daemon starts only with a store it can write to)."""
        from rkollama.errors import RkollamaError

        try:
            self.blobs.mkdir(parents=True, exist_ok=True)
            self.manifests.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RkollamaError(f"the model store {self.root} cannot be created: {exc.strerror} "
                                "(RKOLLAMA_MODELS)") from None

    def clean_partials(self, now: float | None = None) -> int:
        """Remove partial downloads older than STALE_PARTIAL_S and leftovers of writers that
        cannot be resumed; returns how many files went."""
        if not self.blobs.is_dir():
            return 0
        now = time.time() if now is None else now
        removed = 0
        for path in self.blobs.glob(".*"):
            try:
                stale = path.name.startswith(".incoming-") or now - path.stat().st_mtime > STALE_PARTIAL_S
                if stale and path.is_file():
                    path.unlink()
                    removed += 1
            except OSError:
                continue
        if removed:
            log.info("removed %d stale partial download(s) from %s", removed, self.blobs)
        return removed

    def write_blob_bytes(self, data: bytes) -> str:
        """A small blob (a config, a tokenizer) by its content; one already there is rewritten
        when its bytes differ (damaged on disk), so registering again repairs it."""
        digest = hashlib.sha256(data).hexdigest()
        path = self.blob_path(digest)
        try:
            intact = path.stat().st_size == len(data) and path.read_bytes() == data
        except OSError:
            intact = False
        if not intact:
            write_bytes_atomic(path, data)
        return digest

    def write_blob_stream(self, chunks: Iterable[bytes], expected_sha256: str = "") -> tuple[str, int]:
        """Write an iterable of byte chunks as a blob; verify `expected_sha256` when given.

        Returns (hex digest, size). Nothing is left behind on failure or mismatch.
        """
        with self.blob_writer(expected_sha256) as writer:
            for chunk in chunks:
                writer.write(chunk)
        return writer.digest, writer.size

    def blob_writer(self, expected_sha256: str = "", resume_key: str = "") -> "BlobWriter":
        """A writer for one blob; with `resume_key` it continues the partial file of an earlier
        interrupted download of the same thing (see BlobWriter.resumed)."""
        self.blobs.mkdir(parents=True, exist_ok=True)
        return BlobWriter(self, expected_sha256, resume_key)

    # -- manifests -----------------------------------------------------------------------------
    def _manifest_path(self, name: ModelName) -> Path:
        return self.manifests.joinpath(*name.manifest_parts())

    def _find_manifest(self, name: ModelName) -> Path | None:
        exact = self._manifest_path(name)
        if exact.is_file():
            return exact
        for path in self._manifest_files():
            if _name_from_path(self.manifests, path).key() == name.key():
                return path
        return None

    def _manifest_files(self) -> list[Path]:
        """<host>/<namespace>/<model>/<tag> files; a directory a delete removes meanwhile is
        simply not there (no lock is taken for reading)."""
        level = [self.manifests]
        for _ in range(4):
            found = []
            for directory in level:
                try:
                    found += [Path(entry.path) for entry in os.scandir(directory)
                              if not entry.name.startswith(".")]
                except (FileNotFoundError, NotADirectoryError):
                    continue
            level = found
        return [p for p in level if p.is_file()]

    def check_name_free(self, name: ModelName) -> None:
        """Ollama's rule: a name that differs from an existing model's only in case is taken."""
        for path in self._manifest_files():
            other = _name_from_path(self.manifests, path)
            if other.key() == name.key() and other != name:
                raise BadRequest("a model with that name already exists")

    def register(self, name: ModelName, modelfile: Modelfile, model_digest: str,
                 model_size: int, extra: tuple[tuple[str, str, int], ...] = ()) -> "ModelSpec":
        """Write the config blob and the manifest for `name` (atomically replacing any old one).
        `extra` lists further layers as (media type, digest, size), e.g. a tokenizer. Call it
        under `lock()`."""
        config = json.dumps(modelfile.to_dict(), sort_keys=True).encode()
        config_digest = self.write_blob_bytes(config)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {"mediaType": CONFIG_TYPE, "digest": f"sha256:{config_digest}", "size": len(config)},
            "layers": [{"mediaType": MODEL_TYPE.format(fmt=modelfile.format),
                        "digest": f"sha256:{model_digest}", "size": model_size}]
            + [{"mediaType": kind, "digest": f"sha256:{digest}", "size": size}
               for kind, digest, size in extra],
        }
        self.check_name_free(name)
        write_bytes_atomic(self._manifest_path(name), json.dumps(manifest, indent=2).encode())
        return self.resolve(name)

    def resolve(self, name: "str | ModelName") -> ModelSpec:
        """Look `name` up (case-insensitively); raise ModelNotFound with the name as given."""
        parsed = name if isinstance(name, ModelName) else ModelName.parse(name)
        missing = ModelNotFound(f"model '{name if isinstance(name, str) else parsed.display()}' not found")
        path = self._find_manifest(parsed)
        if path is None:
            raise missing
        try:
            return self._load(path)
        except ModelNotFound:  # deleted since it was found
            raise missing from None

    def _load(self, path: Path) -> ModelSpec:
        label = _name_from_path(self.manifests, path).display()
        try:
            raw = path.read_bytes()
        except FileNotFoundError:  # removed since it was found: a delete won the race
            raise ModelNotFound(f"model '{label}' not found") from None
        try:
            manifest = json.loads(raw)
            config_digest = manifest["config"]["digest"]
            layer = manifest["layers"][0]
            config = json.loads(self.blob_path(config_digest).read_bytes())
            modelfile = Modelfile.from_dict(config, origin=str(path))
        except (OSError, ValueError, KeyError, IndexError, TypeError, RkollamaError) as exc:
            if not path.exists():  # its blobs went with a delete that raced this read
                raise ModelNotFound(f"model '{label}' not found") from None
            raise CorruptModel(f"model '{label}' is damaged (its manifest or configuration "
                               f"cannot be read: {exc}); pull it again or remove it") from None
        size = sum(int(layer.get("size", 0)) for layer in manifest["layers"]) \
            + int(manifest["config"].get("size", 0))
        try:
            modified = datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc).astimezone()
        except FileNotFoundError:
            raise ModelNotFound(f"model '{label}' not found") from None
        by_type = {item.get("mediaType"): item.get("digest", "") for item in manifest["layers"][1:]
                   if isinstance(item, dict)}
        tokenizer, tokenizer_config, projector = (
            self._layer_path(by_type.get(kind, ""))
            for kind in (TOKENIZER_TYPE, TOKENIZER_CONFIG_TYPE, PROJECTOR_TYPE))
        return ModelSpec(
            name=_name_from_path(self.manifests, path),
            modelfile=modelfile,
            model_path=self.blob_path(layer["digest"]),
            digest=hashlib.sha256(raw).hexdigest(),
            size=size,
            modified_at=modified,
            tokenizer_path=tokenizer,
            tokenizer_config_path=tokenizer_config,
            projector_path=projector,
        )

    def _layer_path(self, digest: str) -> Path | None:
        """A further layer's blob, or None when the manifest names none or it is missing."""
        try:
            path = self.blob_path(digest) if digest else None
        except RkollamaError:
            return None
        return path if path is not None and path.is_file() else None

    def list(self) -> list[ModelSpec]:
        """Every valid local model, most recently modified first (corrupt manifests skipped)."""
        specs = []
        for path in self._manifest_files():
            try:
                specs.append(self._load(path))
            except CorruptModel as exc:
                log.warning("%s", exc.message)
            except ModelNotFound:  # deleted while the list was read
                continue
        return sorted(specs, key=lambda s: s.modified_at, reverse=True)

    def copy(self, source: str, destination: str) -> None:
        """Another name for the same blobs; an existing `destination` is replaced (Ollama)."""
        src = ModelName.parse(source)
        dst = ModelName.parse(destination)
        with self.lock():
            path = self._find_manifest(src)
            if path is None:
                raise ModelNotFound(f'model "{source}" not found')
            self._load(path)  # a damaged source is reported, not copied
            self.check_name_free(dst)
            write_bytes_atomic(self._manifest_path(dst), path.read_bytes())

    def delete(self, name: str) -> None:
        """Remove the manifest, then every blob no manifest references any more."""
        parsed = ModelName.parse(name)
        with self.lock():
            path = self._find_manifest(parsed)
            if path is None:
                raise ModelNotFound(f"model '{name}' not found")
            path.unlink()
            for parent in path.parents:
                if parent == self.manifests:
                    break
                try:
                    parent.rmdir()
                except OSError:
                    break
            self.prune()

    def prune(self) -> None:
        referenced = set()
        for path in self._manifest_files():
            try:
                manifest = json.loads(path.read_bytes())
                referenced.add(manifest["config"]["digest"].split(":")[-1])
                referenced.update(layer["digest"].split(":")[-1] for layer in manifest["layers"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
        if self.blobs.is_dir():
            for blob in self.blobs.glob("sha256-*"):
                if blob.name[len("sha256-"):] not in referenced:
                    blob.unlink(missing_ok=True)


class BlobWriter:
    """Context manager: `write()` chunks; on clean exit the blob is verified and renamed in place
    (call `finish()` under the store lock to register it in the same critical section).

    With a resume key the bytes go to a partial file that outlives an interruption: `resumed`
    says how many bytes of it are already there (the source is asked for the rest). A digest
    mismatch or a full disk removes the partial file."""

    def __init__(self, store: "ModelStore", expected_sha256: str, resume_key: str = ""):
        self.store, self.expected = store, expected_sha256
        self.hasher, self.size, self.digest = hashlib.sha256(), 0, ""
        self.resumed = 0
        self.handle: BinaryIO
        if resume_key:
            self.tmp = str(store.partial_path(resume_key))
            self.handle = open(self.tmp, "a+b")
            self.handle.seek(0)
            while block := self.handle.read(HASH_CHUNK):
                self.hasher.update(block)
                self.resumed += len(block)
            self.size = self.resumed
            self.keep_on_error = True
        else:
            self.tmp = str(store.blobs / f".incoming-{os.getpid()}-{id(self):x}")
            self.handle = open(self.tmp, "wb")
            self.keep_on_error = False
        self._finished = False

    def restart(self) -> None:
        """Drop what was resumed (the source sent the whole file again)."""
        self.handle.seek(0)
        self.handle.truncate()
        self.hasher, self.size, self.resumed = hashlib.sha256(), 0, 0

    def write(self, chunk: bytes) -> None:
        try:
            self.handle.write(chunk)
        except OSError as exc:
            self._fail_disk(exc)
        self.hasher.update(chunk)
        self.size += len(chunk)

    def _fail_disk(self, exc: OSError) -> NoReturn:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            self.keep_on_error = False
            raise StoreFull(f"no space left on the device of {self.store.root} after "
                            f"{self.size} bytes; nothing was registered") from None
        raise exc

    def __enter__(self) -> "BlobWriter":
        return self

    def finish(self) -> None:
        """Flush, verify and move the blob into place; idempotent."""
        if self._finished:
            return
        try:
            self.handle.flush()
            os.fsync(self.handle.fileno())
        except OSError as exc:
            self._fail_disk(exc)
        self.handle.close()
        self.digest = self.hasher.hexdigest()
        if self.expected and self.digest != self.expected:
            self.keep_on_error = False
            raise DigestMismatch(
                f"digest mismatch, expected sha256:{self.expected}, got sha256:{self.digest}")
        os.replace(self.tmp, self.store.blob_path(self.digest))
        self._finished = True

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> Literal[False]:
        try:
            if exc_type is None:
                self.finish()
        finally:
            if not self.handle.closed:
                self.handle.close()
            # An interrupted download (client gone, connection dropped, daemon stopping) stays
            # resumable; a bad digest, a full disk or a writer without a key leaves nothing.
            if not self._finished and not (exc_type is not None and self.keep_on_error):
                Path(self.tmp).unlink(missing_ok=True)
        return False


def _name_from_path(root: Path, path: Path) -> ModelName:
    host, namespace, model, tag = path.relative_to(root).parts
    return ModelName(host, namespace, model, tag)
