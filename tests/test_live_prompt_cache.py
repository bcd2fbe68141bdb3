"""The prompt cache on the real daemon with SmolLM2, one slot (Ollama's default), through the
official `ollama` client: Open WebUI's pattern — a chat turn, a side request that shares nothing
with it (the title request), the chat's next turn — no longer reads the whole history again,
and the answer is the one the history gives."""

import ollama
import pytest

pytestmark = pytest.mark.live
MODEL = "smollm2:135m"
GREEDY = {"temperature": 0, "seed": 1, "num_predict": 12}
FACTS = " ".join(f"Fact {i}: the lighthouse at cape {i} was built in {1800 + i}." for i in range(30))
TITLE = ("### Task:\nGenerate a concise, 3-5 word title summarizing the chat history.\n"
         "### Chat History:\n<chat_history>\nUSER: Which cape is first?\nASSISTANT: Cape 0.\n</chat_history>")


def test_a_chats_next_turn_after_a_side_request_at_one_slot_is_not_read_again(live_daemon):
    client = ollama.Client(host=live_daemon)
    history = [{"role": "user", "content": f"Prompt cache test. {FACTS}"},
               {"role": "assistant", "content": "Noted."},
               {"role": "user", "content": "Which cape is first?"}]
    first = client.chat(model=MODEL, messages=history, options=GREEDY)
    assert first.prompt_eval_count > 600
    client.chat(model=MODEL, messages=[{"role": "user", "content": TITLE}], options=GREEDY)
    turn = history + [{"role": "assistant", "content": first.message.content},
                      {"role": "user", "content": "And which cape is last?"}]
    following = client.chat(model=MODEL, messages=turn, options=GREEDY)
    # Put back from RAM, then only the new turn read: a fraction of reading the history.
    assert following.prompt_eval_duration < first.prompt_eval_duration / 3, (
        following.prompt_eval_duration, first.prompt_eval_duration)
    again = client.chat(model=MODEL, messages=turn, options=GREEDY)  # from the slot's own cache
    assert following.message.content == again.message.content
