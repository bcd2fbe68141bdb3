"""Reading what the RKLLM runtime printed during rkllm_init (fact sheet §2.1, §8): its limits,
its refusals, and what a user should do about each, in the runtime's own words.

The runtime prints `I rkllm: …` (information), `W rkllm: …` (warnings) and `E rkllm: …` /
`E RKNN: …` (errors) with printf.
"""

import logging
import re

log = logging.getLogger("rkollama.rkllm.runtime")

_CONTEXT_REFUSAL = re.compile(r"max_context\[(\d+)\][^\[]*max_context_limit\[(\d+)\]")

HINTS = (
    ("max_context_limit", "the model was converted for a shorter context: lower num_ctx "
                          "(or rkllm.max_context_len in its Modelfile)"),
    ("failed to malloc npu memory", "the NPU is out of memory: unload other models (`rkollama stop`) "
                                    "or load this one with a smaller num_ctx"),
    ("insmod rknpu", "the rknpu kernel driver is not loaded: use a vendor kernel with the rknpu "
                     "driver 0.9.8 (docs/npu.md); the mainline `rocket` driver does not work"),
    ("invalid magic", "the model was converted by an rkllm-toolkit this runtime cannot read: "
                      "pull a conversion made for this runtime version"),
    ("failed to open model", "the model file cannot be read: pull the model again"),
)


def log_lines(lines: list[str]) -> None:
    """Each line in the log at its own level (I: debug, W: warning, E: error)."""
    for line in lines:
        text = line.strip()
        if not text:
            continue
        level = {"W": logging.WARNING, "E": logging.ERROR}.get(text[:1], logging.DEBUG)
        log.log(level, "%s", text)


def context_refusal(lines: list[str]) -> tuple[int, int] | None:
    """(asked, limit) when the runtime refused max_context_len as larger than the model allows."""
    for line in lines:
        found = _CONTEXT_REFUSAL.search(line)
        if found:
            return int(found.group(1)), int(found.group(2))
    return None


def errors(lines: list[str]) -> list[str]:
    """The runtime's error lines, without their `E rkllm:` / `E RKNN:` tags."""
    out = []
    for line in lines:
        text = line.strip()
        if text.startswith("E "):
            out.append(text.split(":", 1)[-1].strip() if ":" in text else text[2:])
    return [e for e in out if e and e != "rkllm init failed"] or [e for e in out if e]


def refusal(lines: list[str], rc: int) -> str:
    """The user's words for a failed rkllm_init: what the runtime said, and what to do."""
    said = errors(lines)
    if not said:
        return (f"the NPU runtime refused the model without saying why (rkllm_init returned {rc}); "
                "check that it was converted for this board and runtime (RKLLM_LOG_LEVEL=2 "
                "makes the runtime say more)")
    text = "; ".join(said[:3])
    hint = next((h for key, h in HINTS if key in " ".join(said).lower()), "")
    return f"the NPU runtime refused the model: {text}" + (f" ({hint})" if hint else "")
