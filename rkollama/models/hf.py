"""Models by name from Hugging Face: `hf.co/OWNER/REPO[:TAG]` (or `huggingface.co/…`), as Ollama
accepts them, and catalogue sources that name a repository (`hf: OWNER/REPO`).

The repository's file list, sizes, revision and LFS sha256 come from the Hub's model API
(`huggingface_hub`); the file itself is downloaded by rkollama's own downloader (progress lines,
resume, retries) from `/{repo}/resolve/{commit}/{file}`, pinned to the commit the API named and
verified against the sha256 the Hub publishes.

Which file: a TAG picks by file name or quantization (`Q4_K_M`, `Q8_0`, `w8a8`, `w4a16`). Without
one, an NPU platform takes the `.rkllm` built for it (`rk3588`/`rk3576` in the name; w8a8 first on
RK3588, w4a16 first on RK3576), anything else a GGUF (Q4_K_M, then Q8_0, then the smallest).
"""

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from rkollama.core.prompt import chat_template_of
from rkollama.errors import Forbidden, ModelNotFound, PullFailed
from rkollama.models.modelfile import Modelfile
from rkollama.models.names import DEFAULT_TAG, ModelName
from rkollama.models.schema import EntrySource
from rkollama.platform import NPU_ENGINE_PLATFORMS, npu_quantizations

HF_HOSTS = ("hf.co", "huggingface.co")
DEFAULT_ENDPOINT = "https://huggingface.co"
GGUF_QUANT_PREFERENCE = ("q4_k_m", "q8_0")
TOKENIZER_LIMIT = 64 << 20
"""Largest tokenizer.json / tokenizer_config.json taken from a repository, in bytes (the
biggest public ones are about 33 MB)."""


@dataclass(frozen=True)
class HubConfig:
    """Where the Hub is (HF_ENDPOINT, for mirrors) and the token for gated repositories."""

    endpoint: str = DEFAULT_ENDPOINT
    token: str = ""


@dataclass(frozen=True)
class RepoFile:
    name: str
    size: int
    sha256: str
    """LFS sha256 as the Hub publishes it; empty for files kept in git itself."""


def is_hf_name(name: ModelName) -> bool:
    return name.host.lower() in HF_HOSTS


def repo_listing(hub: HubConfig, repo: str) -> tuple[str, list[RepoFile]]:
    """(commit, files) of `repo` at its main revision, from the Hub's model API."""
    from huggingface_hub import HfApi
    from huggingface_hub import errors as hf_errors

    api = HfApi(endpoint=hub.endpoint.rstrip("/"), token=hub.token or False)
    try:
        info = api.model_info(repo, files_metadata=True, timeout=30)
    except hf_errors.GatedRepoError:
        raise Forbidden(f"{repo} is a gated repository: accept its terms on Hugging Face and set "
                        "HF_TOKEN to a token that may read it") from None
    except hf_errors.RepositoryNotFoundError:
        raise ModelNotFound(f"pull model manifest: {repo} not found on {hub.endpoint} (a private "
                            "repository needs HF_TOKEN)") from None
    except hf_errors.HfHubHTTPError as exc:
        raise PullFailed(f"pull model manifest: {hub.endpoint} answered: {exc}") from None
    except Exception as exc:  # the client's transport errors (httpx) and timeouts
        raise PullFailed(f"pull model manifest: cannot reach {hub.endpoint}: "
                         f"{type(exc).__name__}: {exc}") from None
    files = []
    for sibling in info.siblings or []:
        lfs = sibling.lfs
        files.append(RepoFile(sibling.rfilename, int(sibling.size or (lfs.size if lfs else 0) or 0),
                              lfs.sha256 if lfs else ""))
    return info.sha or "main", files


def runnable(files: list[RepoFile], platform: str) -> list[RepoFile]:
    """The files this machine can run: GGUFs (not vision projectors) anywhere, `.rkllm` files
    built for this NPU platform on it."""
    out = []
    for file in files:
        lower = file.name.lower()
        if lower.endswith(".gguf") and "mmproj" not in lower:
            out.append(file)
        elif lower.endswith(".rkllm") and platform in NPU_ENGINE_PLATFORMS and platform in lower:
            out.append(file)
    return out


def pick(files: list[RepoFile], tag: str, platform: str, repo: str) -> RepoFile:
    """The file `tag` names (or the default choice for `platform`); ModelNotFound, listing what
    the repository has, when none fits."""
    candidates = runnable(files, platform)
    chosen = _by_tag(candidates, tag) if tag.lower() != DEFAULT_TAG else _default(candidates, platform)
    if chosen is None:
        models = [f.name for f in files if f.name.lower().endswith((".gguf", ".rkllm"))]
        have = ", ".join(models) if models else "no .gguf or .rkllm files"
        wanted = f"a file matching '{tag}'" if tag.lower() != DEFAULT_TAG else "a file"
        raise ModelNotFound(f"pull model manifest: {repo} has no {wanted} that this machine "
                            f"({platform}) can run; it has: {have}")
    return chosen


def _by_tag(files: list[RepoFile], tag: str) -> RepoFile | None:
    lower = tag.lower()
    exact = [f for f in files if f.name.rsplit("/", 1)[-1].lower() == lower]
    if exact:
        return exact[0]
    pattern = re.compile(rf"(^|[^a-z0-9]){re.escape(lower)}([^a-z0-9]|$)")
    matching = [f for f in files if pattern.search(f.name.rsplit("/", 1)[-1].lower())]
    return min(matching, key=lambda f: f.size) if matching else None


def _default(files: list[RepoFile], platform: str) -> RepoFile | None:
    npu = [f for f in files if f.name.lower().endswith(".rkllm")]
    for quant in npu_quantizations(platform):
        found = _by_tag(npu, quant)
        if found is not None:
            return found
    if npu:
        return min(npu, key=lambda f: f.size)
    gguf = [f for f in files if f.name.lower().endswith(".gguf")]
    for quant in GGUF_QUANT_PREFERENCE:
        found = _by_tag(gguf, quant)
        if found is not None:
            return found
    return min(gguf, key=lambda f: f.size) if gguf else None


PROJECTOR_PREFERENCE = ("f16", "q8_0", "bf16", "f32")
"""Which of a repository's projectors to take: llama.cpp's converter writes f16 by default."""


def projector(files: list[RepoFile]) -> RepoFile | None:
    """The vision projector (`mmproj` GGUF) a repository ships beside its model, if any."""
    found = [f for f in files if f.name.lower().endswith(".gguf") and "mmproj" in f.name.lower()]
    for quant in PROJECTOR_PREFERENCE:
        chosen = _by_tag(found, quant)
        if chosen is not None:
            return chosen
    return min(found, key=lambda f: f.size) if found else None


def encoder(files: list[RepoFile], platform: str) -> RepoFile | None:
    """The vision encoder (`.rknn`) an .rkllm repository ships for `platform`, if any."""
    found = [f for f in files if f.name.lower().endswith(".rknn")]
    mine = [f for f in found if platform in f.name.lower()]
    return min(mine or found, key=lambda f: f.size) if (mine or found) else None


def resolve_url(hub: HubConfig, repo: str, commit: str, path: str) -> str:
    return f"{hub.endpoint.rstrip('/')}/{repo}/resolve/{commit}/{quote(path)}"


def entry(name: ModelName, hub: HubConfig, platform: str, base: Modelfile | None = None,
          repo: str = "", file_pattern: str = "") -> Modelfile:
    """The flattened Modelfile of a Hub model: `name` itself (hf.co/OWNER/REPO:TAG), or a
    catalogue entry `base` whose source names `repo` (and optionally a file or quantization)."""
    repo = repo or f"{name.namespace}/{name.model}"
    commit, files = repo_listing(hub, repo)
    tag = file_pattern or (name.tag if base is None else DEFAULT_TAG)
    chosen = pick(files, tag, platform, repo)
    fmt = "rkllm" if chosen.name.lower().endswith(".rkllm") else "gguf"
    source = {"url": resolve_url(hub, repo, commit, chosen.name), "size": chosen.size,
              "format": fmt, "platform": platform if fmt == "rkllm" else "cpu",
              "revision": commit, "file": chosen.name, "repo": repo}
    if chosen.sha256:
        source["sha256"] = chosen.sha256
    vision = projector(files) if fmt == "gguf" else encoder(files, platform)
    if vision is not None:
        source["projector"] = {"url": resolve_url(hub, repo, commit, vision.name), "size": vision.size,
                               "file": vision.name, **({"sha256": vision.sha256} if vision.sha256 else {})}
    if base is not None:
        if base.source.tokenizer:  # where its tokenizer comes from, if not from `repo`
            source["tokenizer"] = base.source.tokenizer
        return base.changed(source=source)
    return Modelfile.model_validate({"name": name.model, "tag": name.tag,
                                     "description": f"{repo} ({chosen.name})",
                                     "homepage": f"{hub.endpoint.rstrip('/')}/{repo}", "source": source})


def repo_file(hub: HubConfig, repo: str, revision: str, path: str, limit: int) -> bytes | None:
    """A small file of a repository (a tokenizer or its config), at most `limit` bytes; None
    when the repository has no such file or it is larger."""
    import requests

    headers = {"Authorization": f"Bearer {hub.token}"} if hub.token else {}
    try:
        with requests.get(resolve_url(hub, repo, revision or "main", path), headers=headers,
                          timeout=30, stream=True) as response:
            if response.status_code != 200:
                return None
            data = b""
            for chunk in response.iter_content(1 << 16):
                data += chunk
                if len(data) > limit:
                    return None
            return data
    except requests.RequestException:
        return None


def repo_chat_template(hub: HubConfig, source: EntrySource) -> str | None:
    """The chat template of the repository's tokenizer_config.json, if it has one."""
    repo, revision = source.repo, source.revision
    if not repo:
        return None
    raw = repo_file(hub, repo, revision or "main", "tokenizer_config.json", TOKENIZER_LIMIT)
    try:
        config = json.loads(raw) if raw else None
    except (ValueError, RecursionError):
        return None  # no readable tokenizer_config.json: the model keeps its built-in template
    return (chat_template_of(config) or None) if isinstance(config, dict) else None


def rkllm_details(file_name: str, repo: str = "") -> dict[str, Any]:
    """What an .rkllm file's name (or its repository's) says: its quantization (w8a8,
    w4a16_g128, …) and the context it was converted for (`ctx16384`, `-16k`), which is all
    the runtime will allow."""
    details: dict[str, Any] = {"format": "rkllm"}
    found = re.search(r"w\d+a\d+(?:_g\d+)?", file_name.lower())
    if found:
        details["quantization_level"] = found.group().upper()
    for name in (file_name.rsplit("/", 1)[-1].lower(), repo.rsplit("/", 1)[-1].lower()):
        tokens = re.search(r"ctx[-_]?(\d{3,6})(?!\d)", name)
        kilo = re.search(r"(?<![a-z0-9])(\d{1,3})k(?![a-z0-9])", name)
        if tokens is not None:
            details["context_length"] = int(tokens.group(1))
            break
        if kilo is not None:
            details["context_length"] = int(kilo.group(1)) * 1024
            break
    return details
