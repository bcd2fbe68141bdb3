"""How an .rkllm model's prompts reach the NPU runtime, in words for `show` and `doctor`."""

from rkollama.models.store import ModelSpec

TOKENS = "token ids (rendered with the model's own tokenizer and chat template)"
TEXT = ("text (no tokenizer: the runtime's built-in template applies; this model loses prompt "
        "fitting to num_ctx, exact prompt counts, /api/generate context, and an answer after a "
        "1.3.x runtime ends the thinking at </think>; pull it from a repository with a "
        "tokenizer.json to get them)")


def prompt_path(spec: ModelSpec) -> str:
    return TOKENS if spec.tokenizer_path is not None else TEXT
