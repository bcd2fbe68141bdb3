"""Reading a chat's next turn ahead while the CPU engine is idle (backends/llamacpp_read_ahead):
once nothing has run for IDLE_KEEP_S, the slot loop reads the answer as the template writes it
back and the turn-closing tokens, so the next turn reads only its own message; a request that
comes meanwhile stops it; what cannot be the next turn is not read. On a scripted llama.cpp
whose sequences are the tokens they hold; the live test is test_live_read_ahead."""

import ctypes
import logging
import threading
from collections import deque
from types import SimpleNamespace

import pytest

import rkollama.backends.llamacpp_slots as slot_module
from rkollama.backends.llamacpp_prompt_cache import PromptCache
from rkollama.backends.llamacpp_read_ahead import READ_AHEAD_MAX, answered, background_request
from rkollama.backends.llamacpp_slot_start import Request, Seq
from rkollama.backends.llamacpp_slots import IDLE_KEEP_S, SlotLoop
from rkollama.core.types import Done, DoneReason, Generation, Message

EOG = 2
CHAT = list(range(1000, 1300))  # a 300-token conversation
CLOSE = [90, 91, 92, 93, 94]  # <|im_end|>\n<|im_start|>user\n
MESSAGE = [60, 61, 62, 63, 90, 91, 95, 96]  # the user's next message, then the assistant header


class _Engine:
    """llama.cpp's calls the slot loop makes, on a record of the tokens each sequence holds
    (a state is its tokens as int32s); `decode` checks each row's position."""

    def __init__(self, slots: int):
        self.held: dict[int, list[int]] = {slot: [] for slot in range(slots)}
        self.steps: list[dict[int, int]] = []
        """Tokens each decode read, by sequence."""
        self.abort_checks: list[object] = []

    def decode(self, ctx, batch) -> int:
        read: dict[int, int] = {}
        for row in range(batch.n_tokens):
            seq = batch.seq_id[row][0]
            assert batch.pos[row] == len(self.held[seq]), "a token written at the wrong position"
            self.held[seq].append(batch.token[row])
            read[seq] = read.get(seq, 0) + 1
        self.steps.append(read)
        return 0

    def llama_memory_seq_rm(self, memory, seq: int, start: int, end: int) -> bool:
        self.held[seq] = self.held[seq][:max(0, start)]
        return True

    def llama_memory_seq_cp(self, memory, source: int, target: int, start: int, end: int) -> None:
        self.held[target] = list(self.held[source])

    def llama_state_seq_get_size(self, ctx, seq: int) -> int:
        return 4 * len(self.held[seq])

    def llama_state_seq_get_data(self, ctx, data, size: int, seq: int) -> int:
        tokens = self.held[seq]
        ctypes.memmove(data, (ctypes.c_int32 * len(tokens))(*tokens), 4 * len(tokens))
        return size

    def llama_state_seq_set_data(self, ctx, data, size: int, seq: int) -> int:
        self.held[seq] = list((ctypes.c_int32 * (size // 4)).from_buffer(data))
        return size

    def llama_set_abort_callback(self, ctx, callback, data) -> None:
        self.abort_checks.append(callback)

    def llama_vocab_is_eog(self, vocab, token: int) -> bool:
        return token == EOG


class _Answers:
    """make_sampler's stand-in: each request answers the tokens scripted for it, in turn."""

    def __init__(self, *answers: list[int]):
        self.answers = deque(list(answer) for answer in answers)

    def __call__(self, *args):
        tokens = self.answers.popleft()
        return SimpleNamespace(sample=lambda ctx, row: tokens.pop(0), close=lambda: None)


def scripted(monkeypatch, slots: int = 2) -> tuple[SlotLoop, _Engine]:
    """(a SlotLoop of `slots` on a scripted llama.cpp, its engine); the loop is driven by the
    test (`settle`), not by its thread."""
    lib = _Engine(slots)
    state = SlotLoop.__new__(SlotLoop)
    state.lib, state.memory, state.ctx, state.decode, state.vision = lib, None, None, lib.decode, None
    state.n_ctx, state.n_batch, state.slots, state.cuttable, state.copy_min = 2048, 512, slots, True, 4
    state.free, state.cached, state.ended = list(range(slots)), [[] for _ in range(slots)], []
    state.used = [0.0] * slots
    state.batch = SimpleNamespace(token=[0] * 512, pos=[0] * 512, n_seq_id=[0] * 512,
                                  seq_id=[[0] for _ in range(512)], logits=[0] * 512, n_tokens=0)
    state.answered, state.active, state.waiting = deque(maxlen=READ_AHEAD_MAX), [], deque()
    state.cond, state.stopping, state.preparing, state.watched = threading.Condition(), False, 0, []
    state.held = False
    state.prompt_token_s, state.abort_check, state.no_abort_check = 0.0, "check", None
    state.prompt_cache = PromptCache(lib, None, 2**20, available=lambda: 2**30)
    state.vocab, state.rows, state.pieces = None, None, {}
    state.llm = SimpleNamespace(detokenize=lambda tokens: b"x")
    monkeypatch.setattr(slot_module, "make_sampler", _Answers([7, 8, EOG], [9, EOG], [9, EOG]))
    return state, lib


@pytest.fixture
def engine(monkeypatch):
    return scripted(monkeypatch)


def settle(state: SlotLoop) -> None:
    """Run the loop's steps until nothing is left to run."""
    while state.active or state.waiting:
        with state.cond:
            state._admit()
        state._step()


def chat(tokens: list[int], guess=lambda answer: CHAT + answer + CLOSE) -> tuple[Request, list[object]]:
    """A chat request for `tokens` whose next turn the engine guesses with `guess`, and what it
    is sent."""
    request = Request(Generation(messages=[Message("user", "x")]), threading.Event(), tokens, 100, False, 0,
                      next_turn=guess)
    return request, []


def idle(state: SlotLoop) -> float | None:
    """The loop's idle work, as if the user had been reading for IDLE_KEEP_S."""
    state.used = [used - IDLE_KEEP_S for used in state.used]
    with state.cond:
        return state._keep_idle()


def test_a_chats_next_turn_is_read_while_idle_and_the_turn_then_reads_only_its_message(engine):
    state, lib = engine
    request, events = chat(CHAT)
    state.submit(request, events.append)
    settle(state)
    assert isinstance(events[-1], Done) and events[-1].reason is DoneReason.STOP
    assert lib.held[0] == CHAT + [7, 8]  # the end-of-turn token is never read
    lib.abort_checks.clear()
    with state.cond:
        assert 0 < state._keep_idle() <= IDLE_KEEP_S  # a next request usually comes sooner
    assert not state.waiting
    assert idle(state) == 0.0
    settle(state)
    assert lib.held[0] == CHAT + [7, 8] + CLOSE  # the answer's tail and the closing tokens
    assert lib.abort_checks == ["check", None]  # a short read-ahead step stops for any request
    assert [event for event in events if isinstance(event, Done)] == [events[-1]]  # nobody told
    lib.steps.clear()
    following, events = chat(CHAT + [7, 8] + CLOSE + MESSAGE)
    state.submit(following, events.append)
    settle(state)
    assert lib.steps[0] == {0: len(MESSAGE)}
    assert events[-1].reason is DoneReason.STOP and events[-1].prompt_tokens == len(following.tokens)


def test_a_read_ahead_is_not_itself_read_ahead_and_each_answer_is_read_ahead_once(engine):
    state, lib = engine
    request, events = chat(CHAT)
    state.submit(request, events.append)
    settle(state)
    idle(state)
    settle(state)
    assert not state.answered and not state.waiting
    assert idle(state) == 0.0  # the slot is kept in the prompt cache now, nothing read
    settle(state)
    assert lib.held[0] == CHAT + [7, 8] + CLOSE and len(state.prompt_cache.entries) == 1


def reading_ahead(monkeypatch) -> tuple[SlotLoop, _Engine, Seq]:
    """(a one-slot loop, its engine, a read-ahead it runs): a 40-token chat answered, the
    user reading, and the first of the several steps (4 tokens each) of a long read-ahead."""
    state, lib = scripted(monkeypatch, slots=1)
    state.n_batch = 4
    request, events = chat(CHAT[:40], guess=lambda answer: CHAT)
    state.submit(request, events.append)
    settle(state)
    idle(state)
    with state.cond:
        state._admit()
    state._step()
    return state, lib, state.active[0]


def test_a_request_that_comes_during_a_read_ahead_stops_it_and_takes_its_slot_at_once(monkeypatch):
    state, lib, ahead = reading_ahead(monkeypatch)
    assert ahead.request.background and not ahead.request.cancel.is_set()
    state.expect(1)  # a request arrived at the runner: its prompt is being fitted
    assert ahead.request.cancel.is_set()
    assert state._abort_wanted() is False  # between steps; during one, llama.cpp is told to stop
    state.watched = [ahead]
    assert state._abort_wanted() is True
    state.watched = []
    following, events = chat(CHAT[:40] + [5, 6])
    state.submit(following, events.append)
    lib.steps.clear()
    settle(state)
    assert lib.steps[0] == {0: 2}  # the next step: the request's own two tokens, nothing else
    assert events[-1].reason is DoneReason.STOP and not state.active


def test_a_read_ahead_step_cut_short_by_a_request_is_undone_and_logged_as_routine(monkeypatch, caplog):
    state, lib, ahead = reading_ahead(monkeypatch)
    held = list(lib.held[0])

    def request_arrives_mid_step(ctx, batch) -> int:
        state.expect(1)  # llama.cpp asks after each graph node, is told to stop, and returns 2
        return 2 if state._abort_wanted() else lib.decode(ctx, batch)

    state.decode = request_arrives_mid_step
    with caplog.at_level(logging.DEBUG, logger="rkollama.llamacpp"):
        state._step()
    assert lib.held[0] == held and ahead.fed == len(held)  # nothing of the cut step stays
    assert "a read-ahead gave way to a request" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.INFO]  # not an operator's news


def test_nothing_is_read_ahead_while_a_request_is_being_prepared(engine):
    state, lib = engine
    request, events = chat(CHAT)
    state.submit(request, events.append)
    settle(state)
    state.ended.clear()
    state.preparing = 1
    assert idle(state) is None and not state.waiting  # woken when it comes
    state.preparing = 0
    assert idle(state) == 0.0 and state.waiting[0].request.background


def test_only_a_chat_answer_that_ended_with_its_prompt_intact_is_read_ahead():
    request, _ = chat(CHAT)
    window = CHAT + [7, 8]
    assert answered(request, DoneReason.STOP, window, len(window) - 1).answer == [7, 8]
    assert answered(request, DoneReason.LENGTH, window, len(window) - 1) is not None
    assert answered(request, DoneReason.CANCELLED, window, len(window)) is None  # a stop string, a client gone
    assert answered(request, DoneReason.STOP, CHAT[:4] + CHAT[154:] + [7], 150) is None  # shifted
    raw = Request(Generation(prompt="x"), threading.Event(), CHAT, 100, False, 0)
    assert answered(raw, DoneReason.STOP, window, len(window)) is None  # no guess: not a chat
    ahead = Request(Generation(prompt=""), threading.Event(), CHAT, 0, False, 0, next_turn=lambda a: CHAT,
                    background=True)
    assert answered(ahead, DoneReason.STOP, CHAT, len(CHAT)) is None


def test_a_guess_that_cannot_be_the_next_turn_is_not_read():
    def ended(guess):
        request, _ = chat(CHAT, guess)
        done = answered(request, DoneReason.STOP, CHAT + [7, 8], len(CHAT) + 1)
        return background_request(done, [[], []], 2048)

    def refuse(answer):
        raise ValueError("the template cannot render it")

    assert ended(lambda answer: CHAT + answer + CLOSE).tokens == CHAT + [7, 8] + CLOSE
    thinking = ended(lambda answer: CHAT + [8] + CLOSE)  # history without the thinking
    assert thinking is not None and thinking.background
    assert ended(lambda answer: []) is None
    assert ended(refuse) is None
    assert ended(lambda answer: CHAT[:140] + [3] * 200) is None  # keeps under half the prompt
    assert ended(lambda answer: CHAT + [1] * 2000) is None  # longer than a slot
    request, _ = chat(CHAT)
    done = answered(request, DoneReason.STOP, CHAT + [7, 8], len(CHAT) + 1)
    assert background_request(done, [[], CHAT + [7, 8] + CLOSE + [1]], 2048) is None  # a slot has it


def test_the_newest_answers_wait_to_be_read_ahead(monkeypatch):
    state, lib = scripted(monkeypatch)
    monkeypatch.setattr(slot_module, "make_sampler", _Answers(*([[EOG]] * (READ_AHEAD_MAX + 2))))
    for index in range(READ_AHEAD_MAX + 2):
        request, events = chat([index] + CHAT, guess=lambda answer, index=index: [index] + CHAT + CLOSE)
        state.submit(request, events.append)
        settle(state)
    assert len(state.answered) == READ_AHEAD_MAX
    assert [done.held[0] for done in state.answered] == list(range(2, READ_AHEAD_MAX + 2))


def test_a_request_submitted_while_a_read_ahead_waits_for_a_slot_goes_first(monkeypatch):
    """In-process callers submit without announcing (`expect`): the read-ahead gives way all the same."""
    state, lib = scripted(monkeypatch, slots=1)
    request, events = chat(CHAT)
    state.submit(request, events.append)
    settle(state)
    idle(state)
    ahead = state.waiting[0]
    following, events = chat(CHAT + [7, 8] + [1, 2])
    state.submit(following, events.append)
    assert ahead.request.cancel.is_set()
    lib.steps.clear()
    settle(state)
    assert lib.steps[0] == {0: 2} and lib.held[0] == CHAT + [7, 8, 1, 2, 9]


THINKING_TEMPLATE = (  # as Qwen3's: an answer's thinking is dropped once a user message follows it
    "{%- set ns = namespace(last=0) -%}"
    "{%- for m in messages %}{% if m.role == 'user' %}{% set ns.last = loop.index0 %}{% endif %}{% endfor -%}"
    "{%- for m in messages -%}"
    "{%- set content = m.content -%}"
    "{%- if m.role == 'assistant' and loop.index0 < ns.last and '</think>' in content -%}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') -%}{%- endif -%}"
    "<|im_start|>{{ m.role }}\n{{ content }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _fitter(source: str):
    from rkollama.core.fitting import PromptFitter
    from rkollama.core.prompt import ChatTemplate

    return PromptFitter(2048, ChatTemplate(source), lambda text, bos: [ord(c) for c in text], 1)


def _text(tokens: list[int]) -> str:
    return "".join(map(chr, tokens))


def test_the_guessed_next_turn_is_the_conversation_with_the_answer_sent_back_up_to_the_users_message():
    from rkollama.core.prompt import CHATML

    history = [Message("user", "Which cape is first?")]
    guess = _fitter(CHATML).next_turn_start(Generation(messages=history), "Cape 0.")
    assert _text(guess).endswith("<|im_start|>user\nWhich cape is first?<|im_end|>\n"
                                 "<|im_start|>assistant\nCape 0.<|im_end|>\n<|im_start|>user\n")
    thinking = _fitter(THINKING_TEMPLATE).next_turn_start(
        Generation(messages=history), "<think>\nThe list starts at 0.\n</think>\n\nCape 0.")
    assert _text(thinking) == ("<|im_start|>user\nWhich cape is first?<|im_end|>\n"
                               "<|im_start|>assistant\nCape 0.<|im_end|>\n<|im_start|>user\n")


def test_no_next_turn_is_guessed_where_the_template_does_not_show_where_the_message_goes():
    from rkollama.core.prompt import CHATML

    twice = "{% for m in messages %}{{ m.content }}|{{ m.content }}{% endfor %}"
    assert _fitter(twice).next_turn_start(Generation(messages=[Message("user", "x")]), "y") == []
    hidden = "{% for m in messages %}{% if m.role != 'user' %}{{ m.content }}{% endif %}{% endfor %}"
    assert _fitter(hidden).next_turn_start(Generation(messages=[Message("user", "x")]), "y") == []
    assert _fitter(CHATML).next_turn_start(Generation(prompt="raw text"), "y") == []
    assert _fitter(CHATML).next_turn_start(Generation(messages=[Message("user", "x")], context=[1, 2]), "y") == []


def test_nothing_is_read_ahead_while_the_daemon_runs_another_models_request(monkeypatch):
    state, lib, ahead = reading_ahead(monkeypatch)
    state.hold(True)  # another model's request started
    assert ahead.request.cancel.is_set()
    settle(state)
    assert not state.active
    request, _ = chat(CHAT[:40], guess=lambda answer: CHAT)  # another answer ends
    state.answered.append(answered(request, DoneReason.STOP, CHAT[:40] + [7, 8], 41))
    assert idle(state) is None and not state.waiting and not state.prompt_cache.entries  # nothing
    state.hold(False)
    assert idle(state) == 0.0 and state.waiting[0].request.background


def test_a_conversation_that_cannot_fit_the_window_whole_is_neither_guessed_nor_held():
    """A hostile 30 MB message would otherwise be rendered and tokenized whole in the idle loop,
    and held until then: the length alone says it cannot be a next turn's start."""
    from rkollama.core.prompt import CHATML

    fitter = _fitter(CHATML)  # 2,048 tokens of at most one byte each here
    small = Generation(messages=[Message("user", "x" * 1000)])
    assert fitter.fits_whole(small) and fitter.next_turn_start(small, "y")
    assert not fitter.fits_whole(small, "y" * 1100) and fitter.next_turn_start(small, "y" * 1100) == []
    huge = Generation(messages=[Message("user", "x" * 30_000_000)])
    assert not fitter.fits_whole(huge) and fitter.next_turn_start(huge, "y") == []
    tools = Generation(messages=[Message("user", "x")], tools=[{"name": "t", "description": "d" * 3000}])
    assert not fitter.fits_whole(tools)
    calls = Generation(messages=[Message("assistant", "", tool_calls=[{"function": {"name": "f" * 3000}}])])
    assert not fitter.fits_whole(calls)
