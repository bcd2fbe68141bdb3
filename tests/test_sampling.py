"""The CPU engine's token choice: its greedy shortcut picks what llama.cpp's own sampler chain
picks, step after step, under every repetition-penalty setting; repeat_last_n reaches both."""

import ctypes

import numpy as np
import pytest

from rkollama.core.types import SamplingOptions

llama_cpp = pytest.importorskip("llama_cpp")
from rkollama.backends.llamacpp_sampling import Chain, Greedy, LogitRows, make_sampler, penalty_window  # noqa: E402

VOCAB = 300


def _chain_pick(chain: Chain, logits: np.ndarray) -> int:
    """llama.cpp's chain applied to `logits` (as llama_sampler_sample does, without a context)."""
    data = (llama_cpp.llama_token_data * VOCAB)(*[llama_cpp.llama_token_data(i, float(x), 0.0)
                                                  for i, x in enumerate(logits)])
    array = llama_cpp.llama_token_data_array(data, VOCAB, -1, False)
    llama_cpp.llama_sampler_apply(chain.chain, ctypes.byref(array))
    token = data[array.selected].id
    llama_cpp.llama_sampler_accept(chain.chain, token)
    return token


@pytest.mark.parametrize("options", [
    {}, {"repeat_penalty": 1.3}, {"repeat_penalty": 0.7}, {"repeat_penalty": 1.1, "repeat_last_n": 3},
    {"repeat_penalty": 1.5, "repeat_last_n": 0}, {"repeat_penalty": 1.2, "repeat_last_n": -1},
    {"frequency_penalty": 0.8}, {"presence_penalty": -1.5}, {"presence_penalty": 2.0, "frequency_penalty": 0.3},
    {"repeat_penalty": 2.0, "frequency_penalty": 0.5, "presence_penalty": 0.5, "repeat_last_n": 7},
])
def test_the_greedy_shortcut_picks_what_llama_cpps_chain_picks(options):
    opts = SamplingOptions(temperature=0.0, **options)
    rng = np.random.default_rng(7)
    greedy = make_sampler(llama_cpp, None, LogitRows(llama_cpp, VOCAB), opts, 64, None)
    chain = Chain(llama_cpp, None, VOCAB, opts, 64, None)
    assert isinstance(greedy, Greedy)
    try:
        picks = []
        for step in range(120):
            # Few distinct values (ties), both signs, and a favourite the penalties must push
            # down as it repeats.
            logits = rng.choice(np.linspace(-3, 3, 13, dtype=np.float32), VOCAB).astype(np.float32)
            logits[step % 5] += 4.0
            before = logits.copy()
            ours = greedy.pick(logits)
            greedy.accept(ours)
            assert np.array_equal(logits, before), "the engine's logits are read, never changed"
            assert ours == _chain_pick(chain, logits), f"step {step}"
            picks.append(ours)
        if opts.repeat_penalty > 1 and options.get("repeat_last_n", 64) > 0:
            assert len(set(picks)) > 5, "the penalties moved the choice off the favourites"
    finally:
        chain.close()


def test_repeat_last_n_is_ollamas_window():
    assert penalty_window(SamplingOptions(repeat_last_n=64), 2048) == 64
    assert penalty_window(SamplingOptions(repeat_last_n=-1), 2048) == 2048  # -1: the whole window
    assert penalty_window(SamplingOptions(repeat_last_n=0), 2048) == 0
    # llama.cpp allocates the whole look-back up front: a huge value is held to the window.
    assert penalty_window(SamplingOptions(repeat_last_n=2**31 - 1), 2048) == 2048


def test_sampling_with_temperature_or_a_grammar_keeps_llama_cpps_chain():
    assert isinstance(make_sampler(llama_cpp, None, LogitRows(llama_cpp, VOCAB), SamplingOptions(), 64, None), Chain)
