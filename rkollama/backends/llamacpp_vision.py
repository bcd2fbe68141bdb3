"""The CPU engine's images: a vision model's projector (`mmproj` GGUF) run by llama.cpp's
multimodal library (libmtmd, shipped in llama-cpp-python's wheel).

An image is decoded once (core.images), preprocessed by the projector's own rules (resize,
tiles, the special tokens around it) into an mtmd chunk, and kept in a small cache by its
sha256, so a follow-up question about the same picture neither decodes nor preprocesses it
again. Its tokens are stand-in ids (core.media); the slot loop encodes the chunk and decodes
its embeddings into a sequence only when the KV cache does not hold them already.
"""

import base64
import ctypes
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from rkollama.core import images, media
from rkollama.errors import BackendFailed, BadRequest, LoadFailed

log = logging.getLogger("rkollama.llamacpp")

CACHED_IMAGES = 16
"""Preprocessed images kept per loaded model (each a few MB of floats)."""


class Picture:
    """One image, preprocessed for the projector; frees its chunk when dropped."""

    def __init__(self, mtmd: Any, chunk: Any, tokens: list[int], count: int, positions: int):
        self.mtmd, self.chunk = mtmd, chunk
        self.tokens = tokens
        """Its ids in a prompt: the projector's own text tokens around it, and one stand-in
        per embedding."""
        self.count = count
        """Embeddings the image becomes."""
        self.positions = positions
        """Positions they take (differs from `count` under M-RoPE, e.g. Qwen2-VL)."""

    def __del__(self) -> None:
        if self.chunk:
            self.mtmd.mtmd_input_chunk_free(self.chunk)
            self.chunk = None


class Vision:
    """A loaded projector beside a loaded llama.cpp model."""

    def __init__(self, model: Any, projector: Path, threads: int):
        from llama_cpp import _logger, mtmd_cpp

        self.lib = mtmd_cpp
        mtmd_cpp.mtmd_helper_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))  # as quiet as the model
        params = mtmd_cpp.mtmd_context_params_default()
        params.use_gpu = False
        params.print_timings = False
        params.n_threads = threads
        self.ctx = mtmd_cpp.mtmd_init_from_file(str(projector).encode(), model, params)
        if not self.ctx:
            raise LoadFailed(f"llama.cpp could not load the vision projector {projector.name}")
        if not mtmd_cpp.mtmd_support_vision(self.ctx):
            self.lib.mtmd_free(self.ctx)
            raise LoadFailed(f"the projector {projector.name} has no vision encoder")
        self.marker = mtmd_cpp.mtmd_default_marker()
        self.lock = threading.Lock()
        self.cache: OrderedDict[int, Picture] = OrderedDict()

    def tokenize(self, text: str, bos: bool, pictures: list[str],
                 text_tokens: Callable[[str, bool], list[int]]) -> list[int]:
        """The ids of a rendered prompt whose `[img-N]` tags stand for `pictures[N]`. A prompt
        that would end with an image (a raw one can) gets a newline after it: the answer's first
        token is sampled from the last position's logits, and an image's embeddings give none."""
        out: list[int] = []
        for piece in media.split(text, len(pictures)):
            if isinstance(piece, str):
                out += text_tokens(piece, bos and not out)
            else:
                if bos and not out:
                    out += text_tokens("", True)
                out += self.picture(pictures[piece]).tokens
        if out and media.is_image(out[-1]):
            out += text_tokens("\n", False)
        return out

    def pictures(self, encoded: Iterable[str], tokens: list[int]) -> dict[int, Picture]:
        """The preprocessed images of `encoded` (base64) that `tokens` holds, by key."""
        wanted = {key for _, key in media.image_starts(tokens)}
        found: dict[int, Picture] = {}
        for text in encoded:
            if len(found) == len(wanted):
                break
            key = media.key_of(base64.b64decode(text))
            if key in wanted and key not in found:
                found[key] = self.picture(text)
        return found

    def picture(self, encoded: str) -> Picture:
        """The image in base64 `encoded`, preprocessed (from the cache when it was seen)."""
        data = base64.b64decode(encoded)
        key = media.key_of(data)
        with self.lock:
            cached = self.cache.get(key)
            if cached is not None:
                self.cache.move_to_end(key)
                return cached
        try:
            decoded = images.decode(data)
        except images.BadImage as exc:
            raise BadRequest(f"invalid image: {exc}") from None
        picture = self._preprocess(decoded, key)
        with self.lock:
            self.cache[key] = picture
            while len(self.cache) > CACHED_IMAGES:
                self.cache.popitem(last=False)
        return picture

    def _preprocess(self, decoded: images.Picture, key: int) -> Picture:
        lib = self.lib
        pixels = (ctypes.c_uint8 * len(decoded.rgb)).from_buffer_copy(decoded.rgb)
        bitmap = lib.mtmd_bitmap_init(decoded.width, decoded.height, pixels)
        chunks = lib.mtmd_input_chunks_init()
        try:
            lib.mtmd_bitmap_set_id(bitmap, f"{key:010x}".encode())
            text = lib.mtmd_input_text(self.marker, len(self.marker), False, True)
            bitmaps = (lib.mtmd_bitmap_p_ctypes * 1)(bitmap)
            if lib.mtmd_tokenize(self.ctx, chunks, ctypes.byref(text), bitmaps, 1) != 0:
                raise BadRequest("invalid image: the model's projector could not read it")
            return self._picture(chunks, key)
        finally:
            lib.mtmd_input_chunks_free(chunks)
            lib.mtmd_bitmap_free(bitmap)

    def _picture(self, chunks: Any, key: int) -> Picture:
        lib = self.lib
        tokens: list[int] = []
        image, count, positions = None, 0, 0
        for i in range(lib.mtmd_input_chunks_size(chunks)):
            chunk = lib.mtmd_input_chunks_get(chunks, i)
            if lib.mtmd_input_chunk_get_type(chunk) == lib.MTMD_INPUT_CHUNK_TYPE_TEXT:
                n = ctypes.c_size_t(0)
                ids = lib.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
                tokens += [ids[j] for j in range(n.value)]
            elif image is None:
                image = lib.mtmd_input_chunk_copy(chunk)
                count = lib.mtmd_input_chunk_get_n_tokens(chunk)
                positions = lib.mtmd_input_chunk_get_n_pos(chunk)
                tokens += media.image_tokens(key, count)
        if image is None:
            raise BadRequest("invalid image: the model's projector made nothing of it")
        return Picture(lib, image, tokens, count, positions)

    def decode(self, lctx: Any, picture: Picture, position: int, seq_id: int, n_batch: int) -> None:
        """Encode `picture` and decode its embeddings into sequence `seq_id` from `position`
        (no logits: an image is never a prompt's last position, see `tokenize`)."""
        started = time.perf_counter()
        end = ctypes.c_int32(0)
        code = self.lib.mtmd_helper_eval_chunk_single(self.ctx, lctx, picture.chunk, position, seq_id,
                                                      n_batch, False, ctypes.byref(end))
        if code != 0:
            raise BackendFailed(f"llama.cpp could not read an image (error {code})")
        log.info("image read: %d embeddings in %.0f ms", picture.count,
                 (time.perf_counter() - started) * 1000.0)

    def close(self) -> None:
        with self.lock:
            self.cache.clear()
        if self.ctx:
            self.lib.mtmd_free(self.ctx)
            self.ctx = None
