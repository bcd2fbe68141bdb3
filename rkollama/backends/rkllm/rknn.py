"""A vision model's image encoder on the NPU: Rockchip's RKNN runtime (librknnrt.so) running the
`.rknn` file that ships beside an `.rkllm` language model, as Rockchip's multimodal demo runs it.

The structs are declared as the public `rknn_api.h` (rknn-toolkit2 2.x) lays them out; their
sizes and offsets are checked against measured layouts (tests/data/rknn_abi_layouts.json). The
encoder takes one RGB picture of its input size (NHWC, uint8) per run and returns float
embeddings: `tokens` rows of `width` floats per image, which the RKLLM runtime places where the
prompt writes `<image>` (RKLLM_INPUT_MULTIMODAL).
"""

import ctypes
import logging
import threading
import time
from ctypes import POINTER, Structure, c_char, c_float, c_int8, c_int32, c_uint8, c_uint32, c_uint64, c_void_p
from dataclasses import dataclass
from pathlib import Path

from rkollama.core import images
from rkollama.errors import BackendFailed, LoadFailed
from rkollama.platform import find_library

log = logging.getLogger("rkollama.rkllm")

RKNN_QUERY_IN_OUT_NUM, RKNN_QUERY_INPUT_ATTR, RKNN_QUERY_OUTPUT_ATTR = 0, 1, 2
RKNN_TENSOR_FLOAT32, RKNN_TENSOR_UINT8 = 0, 3
RKNN_TENSOR_NCHW, RKNN_TENSOR_NHWC = 0, 1
RKNN_MAX_DIMS, RKNN_MAX_NAME_LEN = 16, 256
PAD_GREY = (127, 127, 127)
"""What Rockchip's demo fills a picture out to a square with (the encoder's mean grey)."""
LIBRARY = "librknnrt.so"


class RKNNInputOutputNum(Structure):
    _fields_ = [("n_input", c_uint32), ("n_output", c_uint32)]


class RKNNTensorAttr(Structure):
    _fields_ = [("index", c_uint32), ("n_dims", c_uint32), ("dims", c_uint32 * RKNN_MAX_DIMS),
                ("name", c_char * RKNN_MAX_NAME_LEN), ("n_elems", c_uint32), ("size", c_uint32),
                ("fmt", c_int32), ("type", c_int32), ("qnt_type", c_int32), ("fl", c_int8),
                ("zp", c_int32), ("scale", c_float), ("w_stride", c_uint32),
                ("size_with_stride", c_uint32), ("pass_through", c_uint8), ("h_stride", c_uint32)]


class RKNNInput(Structure):
    _fields_ = [("index", c_uint32), ("buf", c_void_p), ("size", c_uint32), ("pass_through", c_uint8),
                ("type", c_int32), ("fmt", c_int32)]


class RKNNOutput(Structure):
    _fields_ = [("want_float", c_uint8), ("is_prealloc", c_uint8), ("index", c_uint32),
                ("buf", c_void_p), ("size", c_uint32)]


STRUCTS = {"rknn_input_output_num": RKNNInputOutputNum, "rknn_tensor_attr": RKNNTensorAttr,
           "rknn_input": RKNNInput, "rknn_output": RKNNOutput}
"""The C names of the declared structs (for the layout check)."""


def open_library(setting: str) -> ctypes.CDLL:
    """librknnrt.so (RKOLLAMA_RKNN_LIB, external/, the system's) with the prototypes of the
    calls the encoder makes."""
    found = find_library(setting, LIBRARY)
    try:
        lib = ctypes.CDLL(str(found) if found is not None else LIBRARY)
    except OSError as exc:
        raise LoadFailed(f"the RKNN runtime (librknnrt.so, for the vision encoder) could not be "
                         f"loaded: {exc}; install.sh installs it on a board, or set "
                         "RKOLLAMA_RKNN_LIB") from None
    ctx = c_uint64
    lib.rknn_init.argtypes = [POINTER(ctx), c_void_p, c_uint32, c_uint32, c_void_p]
    lib.rknn_query.argtypes = [ctx, c_int32, c_void_p, c_uint32]
    lib.rknn_inputs_set.argtypes = [ctx, c_uint32, POINTER(RKNNInput)]
    lib.rknn_run.argtypes = [ctx, c_void_p]
    lib.rknn_outputs_get.argtypes = [ctx, c_uint32, POINTER(RKNNOutput), c_void_p]
    lib.rknn_outputs_release.argtypes = [ctx, c_uint32, POINTER(RKNNOutput)]
    lib.rknn_destroy.argtypes = [ctx]
    for name in ("rknn_init", "rknn_query", "rknn_inputs_set", "rknn_run", "rknn_outputs_get",
                 "rknn_outputs_release", "rknn_destroy"):
        getattr(lib, name).restype = c_int32
    return lib


@dataclass
class Embedded:
    """The embeddings of a request's images, in order, ready for RKLLM_INPUT_MULTIMODAL."""

    floats: "ctypes.Array[c_float]"
    count: int
    """Images."""
    tokens: int
    """Embeddings per image."""
    width: int
    height: int
    """The encoder's input size in pixels (what each image was resized to)."""


class Encoder:
    """One loaded `.rknn` vision encoder; `encode` may be called from any thread."""

    def __init__(self, lib: ctypes.CDLL, path: Path):
        self.lib = lib
        self.ctx = c_uint64(0)
        code = lib.rknn_init(ctypes.byref(self.ctx), ctypes.c_char_p(str(path).encode()), 0, 0, None)
        if code != 0:
            raise LoadFailed(f"the RKNN runtime could not load the vision encoder {path.name} "
                             f"(error {code})")
        try:
            self.width, self.height, self.channels, self.tokens, self.per_image, self.outputs = \
                self._shape(path)
        except LoadFailed:
            lib.rknn_destroy(self.ctx)
            raise
        self.lock = threading.Lock()
        log.info("vision encoder %s: %d×%d pixels in, %d embeddings of %d floats out", path.name,
                 self.width, self.height, self.tokens, self.per_image // max(1, self.tokens))

    def _query(self, command: int, item: Structure) -> None:
        code = self.lib.rknn_query(self.ctx, command, ctypes.byref(item), ctypes.sizeof(item))
        if code != 0:
            raise LoadFailed(f"the RKNN runtime could not describe the vision encoder (query {command}: "
                             f"error {code})")

    def _shape(self, path: Path) -> tuple[int, int, int, int, int, int]:
        """(width, height, channels, embeddings per image, floats per image, outputs)."""
        counts = RKNNInputOutputNum()
        self._query(RKNN_QUERY_IN_OUT_NUM, counts)
        if counts.n_input != 1 or counts.n_output < 1:
            raise LoadFailed(f"{path.name} is not an image encoder: {counts.n_input} inputs, "
                             f"{counts.n_output} outputs")
        attr = RKNNTensorAttr(index=0)
        self._query(RKNN_QUERY_INPUT_ATTR, attr)
        dims = list(attr.dims[:attr.n_dims])
        if attr.n_dims != 4:
            raise LoadFailed(f"{path.name} takes a tensor of shape {dims}, not a picture")
        # NHWC (the usual export) or NCHW: the runtime converts what it is given.
        height, width, channels = ((dims[2], dims[3], dims[1]) if attr.fmt == RKNN_TENSOR_NCHW
                                   else (dims[1], dims[2], dims[3]))
        if channels != 3 or not (0 < width <= images.MAX_SIDE and 0 < height <= images.MAX_SIDE):
            raise LoadFailed(f"{path.name} takes {width}×{height}×{channels}, not an RGB picture")
        floats, tokens = 0, 0
        for index in range(counts.n_output):
            out = RKNNTensorAttr(index=index)
            self._query(RKNN_QUERY_OUTPUT_ATTR, out)
            floats += out.n_elems
            if index == 0:
                tokens = out.dims[out.n_dims - 2] if out.n_dims >= 2 else 1
        if tokens < 1 or floats < tokens:
            raise LoadFailed(f"{path.name} makes no embeddings ({floats} floats)")
        return width, height, channels, tokens, floats, counts.n_output

    def encode(self, pictures: list[images.Picture]) -> Embedded:
        """The embeddings of `pictures`, each padded to a square and resized to the encoder's
        input (as Rockchip's demo prepares them), one run per picture."""
        floats = (c_float * (self.per_image * len(pictures)))()
        started = time.perf_counter()
        with self.lock:
            for number, picture in enumerate(pictures):
                self._run(fitted(picture, self.width, self.height), floats, number * self.per_image)
        log.info("vision encoder: %d image(s) in %.0f ms", len(pictures),
                 (time.perf_counter() - started) * 1000.0)
        return Embedded(floats, len(pictures), self.tokens, self.width, self.height)

    def _run(self, pixels: bytes, into: "ctypes.Array[c_float]", at: int) -> None:
        lib = self.lib
        data = (c_uint8 * len(pixels)).from_buffer_copy(pixels)
        given = RKNNInput(index=0, buf=ctypes.cast(data, c_void_p), size=len(pixels), pass_through=0,
                          type=RKNN_TENSOR_UINT8, fmt=RKNN_TENSOR_NHWC)
        self._check(lib.rknn_inputs_set(self.ctx, 1, ctypes.byref(given)), "rknn_inputs_set")
        self._check(lib.rknn_run(self.ctx, None), "rknn_run")
        outputs = (RKNNOutput * self.outputs)()
        for index in range(self.outputs):
            outputs[index].index, outputs[index].want_float = index, 1
        self._check(lib.rknn_outputs_get(self.ctx, self.outputs, outputs, None), "rknn_outputs_get")
        try:
            offset = at
            for out in outputs:
                count = out.size // ctypes.sizeof(c_float)
                if offset + count > at + self.per_image:
                    raise BackendFailed("the vision encoder returned more than its outputs declare")
                ctypes.memmove(ctypes.byref(into, offset * ctypes.sizeof(c_float)), out.buf, out.size)
                offset += count
        finally:
            lib.rknn_outputs_release(self.ctx, self.outputs, outputs)

    @staticmethod
    def _check(code: int, call: str) -> None:
        if code != 0:
            raise BackendFailed(f"the vision encoder failed ({call}: error {code})")

    def close(self) -> None:
        if self.ctx.value:
            self.lib.rknn_destroy(self.ctx)
            self.ctx = c_uint64(0)


def fitted(picture: images.Picture, width: int, height: int) -> bytes:
    """`picture` filled out to a square with PAD_GREY (centred) and resized to width × height,
    as RGB bytes row by row."""
    from PIL import Image

    source = Image.frombytes("RGB", (picture.width, picture.height), picture.rgb)
    side = max(picture.width, picture.height)
    square = Image.new("RGB", (side, side), PAD_GREY)
    square.paste(source, ((side - picture.width) // 2, (side - picture.height) // 2))
    return square.resize((width, height), Image.Resampling.BILINEAR).tobytes()
