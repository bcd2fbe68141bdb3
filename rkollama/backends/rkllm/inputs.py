"""The RKLLMInput of each kind rkollama sends besides text: token ids (prompts it rendered and
tokenized itself) and multimodal (a prompt with `<image>` placeholders and the embeddings of
its images, vision_input.py)."""

import ctypes
from typing import Any

from rkollama.backends.rkllm import abi
from rkollama.backends.rkllm.rknn import Embedded
from rkollama.backends.rkllm.vision_input import tags
from rkollama.models.rkllm_section import RKLLMSection


def token_array(tokens: list[int]) -> "ctypes.Array[ctypes.c_int32]":
    return (ctypes.c_int32 * len(tokens))(*tokens)


def point_at_tokens(inp: Any, ids: "ctypes.Array[ctypes.c_int32]") -> None:
    """Make the RKLLMInput `inp` send the token ids in `ids` (which must outlive the run)."""
    inp.role = b"user"
    inp.enable_thinking = False  # the rendered prompt already says; the runtime's switch
    inp.input_type = abi.RKLLM_INPUT_TOKEN  # only works with its own template
    inp.token_input.input_ids = ctypes.cast(ids, ctypes.POINTER(ctypes.c_int32))
    inp.token_input.n_tokens = len(ids)


def multimodal_input(fam: abi.Family, prompt: bytes, embedded: Embedded, rk: RKLLMSection) -> Any:
    """An RKLLMInput of type MULTIMODAL for `fam`'s layout. The caller keeps `prompt` and
    `embedded` alive until the run ends."""
    inp = fam.RKLLMInput()
    inp.role = b"user"
    inp.input_type = abi.RKLLM_INPUT_MULTIMODAL
    given = inp.multimodal_input
    given.prompt = prompt
    fields = {name for name, *_ in type(given)._fields_}
    target = given.image if "image" in fields else given  # 1.3.x nests the image part
    target.image_embed = ctypes.cast(embedded.floats, ctypes.POINTER(ctypes.c_float))
    target.n_image_tokens = embedded.tokens
    if "image" in fields:
        target.image_start, target.image_end, target.image_content = tags(rk)
    if "n_image" in {name for name, *_ in type(target)._fields_}:  # 1.2.0's input has one image
        target.n_image = embedded.count
        target.image_width, target.image_height = embedded.width, embedded.height
    return inp
