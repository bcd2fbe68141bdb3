"""Images on the NPU, on the language model's side: where the prompt puts them and the
model's image tags (inputs.multimodal_input builds the RKLLM_INPUT_MULTIMODAL input that
carries the embeddings rknn.Encoder makes).

The runtime takes a text prompt in which `<image>` marks where each image goes, the embeddings
of all the images (n_image × n_image_tokens rows), and the model's image tags (`img_start`,
`img_end`, `img_content` of the Modelfile's rkllm section: set in RKLLMParam at init on 1.2.x
runtimes, in the input itself on 1.3.x), as Rockchip's multimodal demo sends them.
"""

from rkollama.core import media
from rkollama.models.rkllm_section import RKLLMSection

PLACEHOLDER = "<image>"
"""Where the RKLLM runtime puts an image's embeddings in a multimodal prompt."""


def placed(text: str, pictures: list[str]) -> tuple[str, list[str]]:
    """`text` with each `[img-N]` tag (core.media) as the runtime's placeholder, and the images
    (base64) in the order their placeholders appear."""
    out: list[str] = []
    used: list[str] = []
    for piece in media.split(text, len(pictures)):
        if isinstance(piece, str):
            out.append(piece)
        else:
            out.append(PLACEHOLDER)
            used.append(pictures[piece])
    return "".join(out), used


def tags(rk: RKLLMSection) -> tuple[bytes, bytes, bytes]:
    """The model's image start, end and content tags."""
    return rk.img_start.encode(), rk.img_end.encode(), rk.img_content.encode()
