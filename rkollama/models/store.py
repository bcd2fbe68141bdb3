"""The model store: content-addressed blobs plus one manifest per `name:tag` (Ollama's layout).

    <root>/blobs/sha256-<hex>                       model weights, Modelfile config
    <root>/manifests/<host>/<namespace>/<model>/<tag>   JSON manifest naming the blobs
"""

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from rkollama.errors import ModelNotFound, RkollamaError
from rkollama.fsutil import write_bytes_atomic
from rkollama.models.modelfile import Modelfile
from rkollama.models.names import ModelName

CONFIG_TYPE = "application/vnd.rkollama.modelfile.v1+json"
MANIFEST_TYPE = "application/vnd.rkollama.manifest.v1+json"
MODEL_TYPE = "application/vnd.rkollama.model.{fmt}"


@dataclass(frozen=True)
class ModelSpec:
    """A resolved local model. `digest` is the sha256 of its manifest (Ollama's model id)."""

    name: ModelName
    modelfile: Modelfile
    model_path: Path
    digest: str
    size: int
    modified_at: datetime

    @property
    def format(self) -> str:
        return self.modelfile.format

    @property
    def capabilities(self) -> list[str]:
        return list(self.modelfile.capabilities)


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

    def write_blob_bytes(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        path = self.blob_path(digest)
        if not path.exists():
            write_bytes_atomic(path, data)
        return digest

    def write_blob_stream(self, chunks, expected_sha256: str = "") -> tuple[str, int]:
        """Write an iterable of byte chunks as a blob; verify `expected_sha256` when given.

        Returns (hex digest, size). Nothing is left behind on failure or mismatch.
        """
        with self.blob_writer(expected_sha256) as writer:
            for chunk in chunks:
                writer.write(chunk)
        return writer.digest, writer.size

    def blob_writer(self, expected_sha256: str = "") -> "BlobWriter":
        self.blobs.mkdir(parents=True, exist_ok=True)
        return BlobWriter(self, expected_sha256)

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

    def _manifest_files(self):
        if not self.manifests.is_dir():
            return []
        return [p for p in self.manifests.glob("*/*/*/*") if p.is_file() and not p.name.startswith(".")]

    def register(self, name: ModelName, modelfile: Modelfile, model_digest: str, model_size: int) -> "ModelSpec":
        """Write the config blob and the manifest for `name` (atomically replacing any old one)."""
        config = json.dumps(modelfile.to_dict(), sort_keys=True).encode()
        config_digest = self.write_blob_bytes(config)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {"mediaType": CONFIG_TYPE, "digest": f"sha256:{config_digest}", "size": len(config)},
            "layers": [{"mediaType": MODEL_TYPE.format(fmt=modelfile.format),
                        "digest": f"sha256:{model_digest}", "size": model_size}],
        }
        old = self._find_manifest(name)
        if old is not None and old != self._manifest_path(name):
            old.unlink()
        write_bytes_atomic(self._manifest_path(name), json.dumps(manifest, indent=2).encode())
        return self.resolve(name)

    def resolve(self, name) -> ModelSpec:
        """Look `name` up (case-insensitively); raise ModelNotFound with the name as given."""
        parsed = name if isinstance(name, ModelName) else ModelName.parse(name)
        path = self._find_manifest(parsed)
        if path is None:
            raise ModelNotFound(f"model '{name if isinstance(name, str) else parsed.display()}' not found")
        return self._load(path)

    def _load(self, path: Path) -> ModelSpec:
        raw = path.read_bytes()
        try:
            manifest = json.loads(raw)
            config_digest = manifest["config"]["digest"]
            layer = manifest["layers"][0]
            config = json.loads(self.blob_path(config_digest).read_bytes())
            modelfile = Modelfile.from_dict(config, origin=str(path))
        except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise RkollamaError(f"corrupt manifest {path}: {exc}")
        size = sum(int(l.get("size", 0)) for l in manifest["layers"]) + int(manifest["config"].get("size", 0))
        modified = datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc).astimezone()
        return ModelSpec(
            name=_name_from_path(self.manifests, path),
            modelfile=modelfile,
            model_path=self.blob_path(layer["digest"]),
            digest=hashlib.sha256(raw).hexdigest(),
            size=size,
            modified_at=modified,
        )

    def list(self) -> list[ModelSpec]:
        """Every valid local model, most recently modified first (corrupt manifests skipped)."""
        specs = []
        for path in self._manifest_files():
            try:
                specs.append(self._load(path))
            except RkollamaError:
                continue
        return sorted(specs, key=lambda s: s.modified_at, reverse=True)

    def copy(self, source: str, destination: str) -> None:
        src = ModelName.parse(source)
        dst = ModelName.parse(destination)
        path = self._find_manifest(src)
        if path is None:
            raise ModelNotFound(f'model "{source}" not found')
        write_bytes_atomic(self._manifest_path(dst), path.read_bytes())

    def delete(self, name: str) -> None:
        """Remove the manifest, then every blob no manifest references any more."""
        parsed = ModelName.parse(name)
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
                referenced.update(l["digest"].split(":")[-1] for l in manifest["layers"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
        if self.blobs.is_dir():
            for blob in self.blobs.glob("sha256-*"):
                if blob.name[len("sha256-"):] not in referenced:
                    blob.unlink(missing_ok=True)


class BlobWriter:
    """Context manager: `write()` chunks; on clean exit the blob is verified and renamed in place."""

    def __init__(self, store: "ModelStore", expected_sha256: str):
        self.store, self.expected = store, expected_sha256
        self.hasher, self.size, self.digest = hashlib.sha256(), 0, ""
        fd, self.tmp = tempfile.mkstemp(prefix=".incoming-", suffix=".partial", dir=store.blobs)
        self.handle = os.fdopen(fd, "wb")

    def write(self, chunk: bytes) -> None:
        self.handle.write(chunk)
        self.hasher.update(chunk)
        self.size += len(chunk)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self.handle.flush()
                os.fsync(self.handle.fileno())
            self.handle.close()
            if exc_type is not None:
                return False
            self.digest = self.hasher.hexdigest()
            if self.expected and self.digest != self.expected:
                raise RkollamaError(
                    f"digest mismatch, expected sha256:{self.expected}, got sha256:{self.digest}")
            os.replace(self.tmp, self.store.blob_path(self.digest))
        finally:
            Path(self.tmp).unlink(missing_ok=True)
        return False


def _name_from_path(root: Path, path: Path) -> ModelName:
    host, namespace, model, tag = path.relative_to(root).parts
    return ModelName(host, namespace, model, tag)
