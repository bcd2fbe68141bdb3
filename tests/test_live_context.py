"""The context window as Ollama handles it, on the real daemon with SmolLM2: prompts fitted with
`truncate`, refused without it, the answer shifting the window unless `shift: false`, num_ctx
exactly as asked, and no sequence of load options that ends in a 500."""

import itertools

import ollama
import pytest
import requests

pytestmark = pytest.mark.live
MODEL = "smollm2:135m"
LONG = " ".join(f"word{i}" for i in range(300))  # about 1,200 tokens
COUNT = "Count from 1 to 1000, separated by commas: 1, 2, 3,"


def generate(url: str, **body) -> requests.Response:
    return requests.post(f"{url}/api/generate", timeout=300,
                         json={"model": MODEL, "stream": False, **body})


def test_a_prompt_longer_than_num_ctx_is_fitted_to_exactly_the_window(live_daemon):
    reply = generate(live_daemon, prompt=LONG, options={"num_ctx": 128, "num_predict": 4})
    assert reply.status_code == 200, reply.text
    assert reply.json()["prompt_eval_count"] == 128
    running = requests.get(f"{live_daemon}/api/ps").json()["models"]
    assert running[0]["context_length"] == 128  # not llama.cpp's padded 256


def test_truncate_false_refuses_a_prompt_that_does_not_fit(live_daemon):
    for path, body in (("/api/generate", {"prompt": LONG}),
                       ("/api/chat", {"messages": [{"role": "user", "content": "old " * 400},
                                                   {"role": "assistant", "content": "ok"},
                                                   {"role": "user", "content": "hi"}]})):
        reply = requests.post(f"{live_daemon}{path}", timeout=300, json={
            "model": MODEL, "stream": False, "truncate": False,
            "options": {"num_ctx": 128, "num_predict": 4}, **body})
        assert reply.status_code == 400
        assert reply.json() == {"error": "the input length exceeds the context length"}


def test_old_messages_are_dropped_first_keeping_system_and_the_last_message(live_daemon):
    history = [{"role": "system", "content": "You answer in one word."}]
    for i in range(40):
        history += [{"role": "user", "content": f"Tell me about topic {i}. " + "filler " * 20},
                    {"role": "assistant", "content": "Okay. " + "more " * 20}]
    history.append({"role": "user", "content": "What is the capital of France?"})
    reply = ollama.Client(host=live_daemon).chat(
        model=MODEL, messages=history, options={"num_ctx": 512, "temperature": 0, "num_predict": 16})
    assert 0 < reply.prompt_eval_count <= 512
    assert "paris" in reply.message.content.lower()


def test_an_answer_that_fills_the_window_shifts_it_and_goes_on(live_daemon):
    shifted = generate(live_daemon, prompt=COUNT,
                       options={"num_ctx": 256, "num_predict": 400, "temperature": 0}).json()
    assert shifted["done_reason"] == "length" and shifted["eval_count"] == 400
    stopped = generate(live_daemon, prompt=COUNT, shift=False,
                       options={"num_ctx": 256, "num_predict": 400, "temperature": 0}).json()
    assert stopped["done_reason"] == "length"
    assert stopped["prompt_eval_count"] + stopped["eval_count"] <= 256 < 400


def test_a_first_message_with_thousands_of_tokens_of_tools_is_answered(live_daemon):
    # Open WebUI adds its built-in tools (about 7,000 tokens) to the first "hi" of every chat.
    tools = [{"type": "function", "function": {
        "name": f"tool_{i}", "description": "does a useful thing " * 40,
        "parameters": {"type": "object", "properties": {"a": {"type": "string", "description": "x " * 30}}}}}
        for i in range(30)]
    reply = requests.post(f"{live_daemon}/api/chat", timeout=300, json={
        "model": MODEL, "stream": False, "tools": tools, "options": {"num_predict": 16},
        "messages": [{"role": "user", "content": "hi"}]})
    assert reply.status_code == 200, reply.text
    assert reply.json()["prompt_eval_count"] == 2048  # the daemon's default window, full
    assert reply.json()["message"]["role"] == "assistant"


def test_embed_with_truncate_false_refuses_an_input_longer_than_num_ctx(live_daemon):
    reply = requests.post(f"{live_daemon}/api/embed", timeout=300, json={
        "model": MODEL, "input": LONG, "truncate": False, "options": {"num_ctx": 64}})
    assert reply.status_code == 400
    assert reply.json() == {"error": "the input length exceeds the context length"}
    fitted = requests.post(f"{live_daemon}/api/embed", timeout=300, json={
        "model": MODEL, "input": LONG, "options": {"num_ctx": 64}}).json()
    assert fitted["prompt_eval_count"] == 64


def test_no_sequence_of_load_options_across_endpoints_gives_a_500(live_daemon):
    calls = {
        "embed": lambda o: requests.post(f"{live_daemon}/api/embed", timeout=300,
                                         json={"model": MODEL, "input": ["a b c", LONG], "options": o}),
        "chat": lambda o: requests.post(f"{live_daemon}/api/chat", timeout=300, json={
            "model": MODEL, "stream": False, "options": {"num_predict": 3, **o},
            "messages": [{"role": "user", "content": "Say hi."}]}),
        "generate": lambda o: generate(live_daemon, prompt=LONG, options={"num_predict": 3, **o}),
    }
    options = [{}, {"num_ctx": 10}, {"num_ctx": 64, "num_batch": 8}, {"num_batch": 1},
               {"num_thread": 1}, {"num_ctx": 300, "num_batch": 512}, {"num_ctx": 4}]
    for (name, call), option in itertools.product(calls.items(), options):
        reply = call(option)
        assert reply.status_code == 200, (name, option, reply.status_code, reply.text)
    final = generate(live_daemon, prompt="What is 2 + 2?", options={"num_predict": 32, "temperature": 0})
    assert final.status_code == 200 and "4" in final.json()["response"]
    assert requests.get(f"{live_daemon}/api/ps").json()["models"][0]["context_length"] == 2048


def test_generate_continues_from_the_context_it_returned(live_daemon):
    client = ollama.Client(host=live_daemon)
    first = client.generate(model=MODEL, prompt="My name is Alice. Remember it.",
                            options={"temperature": 0, "num_predict": 16})
    assert first.context and all(isinstance(t, int) for t in first.context)
    second = client.generate(model=MODEL, prompt="What is my name?", context=first.context,
                             options={"temperature": 0, "num_predict": 16})
    alone = client.generate(model=MODEL, prompt="What is my name?",
                            options={"temperature": 0, "num_predict": 16})
    # The earlier exchange is in front of the new prompt, token for token.
    assert second.prompt_eval_count == len(first.context) + alone.prompt_eval_count
    assert second.context[: len(first.context)] == first.context


def test_debug_render_only_shows_the_models_own_template(live_daemon):
    reply = requests.post(f"{live_daemon}/api/chat", timeout=60, json={
        "model": MODEL, "_debug_render_only": True,
        "messages": [{"role": "user", "content": "hello"}]}).json()
    rendered = reply["_debug_info"]["rendered_template"]
    assert "<|im_start|>user\nhello<|im_end|>" in rendered and rendered.endswith("<|im_start|>assistant\n")


def test_the_responses_api_answers_with_the_cpu_model(live_daemon):
    import openai

    client = openai.OpenAI(base_url=f"{live_daemon}/v1", api_key="x")
    reply = client.responses.create(model=MODEL, temperature=0, max_output_tokens=48,
                                    input="What is the capital of France? Answer in one word.")
    assert "paris" in reply.output_text.lower()


def test_logprobs_of_the_cpu_model_are_log_probabilities_of_what_it_chose(live_daemon):
    reply = ollama.Client(host=live_daemon).generate(
        model=MODEL, prompt="The capital of France is", raw=True, logprobs=True, top_logprobs=3,
        options={"temperature": 0, "num_predict": 6})
    assert len(reply.logprobs) == reply.eval_count
    for lp in reply.logprobs:
        assert lp.logprob <= 0 and len(lp.top_logprobs) == 3
        tops = [t.logprob for t in lp.top_logprobs]
        assert tops == sorted(tops, reverse=True)
        assert lp.top_logprobs[0].token == lp.token  # greedy: the most likely token was chosen
    assert "".join(lp.token for lp in reply.logprobs) == reply.response


def test_openai_completions_and_responses_carry_the_same_greedy_logprobs(live_daemon):
    import openai

    oai = openai.OpenAI(base_url=f"{live_daemon}/v1", api_key="unused")
    legacy = oai.completions.create(model=MODEL, prompt="The capital of France is", logprobs=2,
                                    max_tokens=5, temperature=0).choices[0]
    assert "".join(legacy.logprobs.tokens) == legacy.text and len(legacy.logprobs.tokens) == 5
    assert all(lp <= 0 for lp in legacy.logprobs.token_logprobs)
    assert [max(top, key=top.get) for top in legacy.logprobs.top_logprobs] == legacy.logprobs.tokens
    answer = oai.responses.create(model=MODEL, input="Name a colour.", max_output_tokens=5,
                                  temperature=0, include=["message.output_text.logprobs"])
    text = answer.output[-1].content[0]
    assert "".join(lp.token for lp in text.logprobs) == text.text and text.logprobs


def test_a_num_keep_as_large_as_the_window_still_shifts(live_daemon):
    # A prompt longer than the window keeps num_ctx - 1 tokens: each shift must still free one.
    reply = generate(live_daemon, prompt=LONG,
                     options={"num_ctx": 64, "num_keep": -1, "num_predict": 20, "temperature": 0})
    assert reply.status_code == 200 and reply.json()["eval_count"] == 20


def test_show_reports_the_gguf_header_and_with_verbose_its_arrays_and_tensors(live_daemon):
    shown = ollama.Client(host=live_daemon).show(MODEL)
    info = shown.modelinfo
    assert info["general.architecture"] == "llama" and info["llama.block_count"] == 30
    assert info["llama.context_length"] == 8192 and info["general.parameter_count"] > 100_000_000
    assert info["tokenizer.ggml.tokens"] == []  # arrays only with verbose, as Ollama does
    verbose = requests.post(f"{live_daemon}/api/show", json={"model": MODEL, "verbose": True},
                            timeout=60).json()
    assert len(verbose["model_info"]["tokenizer.ggml.tokens"]) == 49152
    names = {t["name"]: t for t in verbose["tensors"]}
    assert names["token_embd.weight"]["shape"] == [576, 49152] and names["token_embd.weight"]["type"]
