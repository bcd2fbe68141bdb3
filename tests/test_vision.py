"""Images on the real CPU engine, with a tiny random-weight vision model (tiny_vlm.py: SmolLM2's
tokenizer, a LLaVA-style projector that makes 16 embeddings of any image). Its answers are
noise; what is checked is the pipeline a user relies on: the model pulled with its projector
from a Hub repository, `vision` in `show`, each image reaching the engine (16 more prompt
tokens, through the ollama, openai and anthropic clients and the REPL), a picture read once
for a follow-up question (also when its chat's state waited in the prompt cache), and bad
images refused before any engine work."""

import base64
import os
import subprocess
import sys

import anthropic
import hf_standin
import ollama
import openai
import pytest
import requests
import tiny_vlm
from helpers import png, png_b64, start_daemon

REPO = "standin-org/tiny-vlm-GGUF"
MODEL = f"hf.co/{REPO}"
TEXT_ONLY = "smollm2:135m"
QUESTION = "What is in this picture?"


@pytest.fixture(scope="session")
def vision_daemon(smollm2_store, tmp_path_factory):
    """A daemon whose store has SmolLM2 and the tiny vision model, pulled (with its projector)
    from a stand-in Hub repository that also holds a second, unused projector."""
    import shutil

    hub = tmp_path_factory.mktemp("vision-hub")
    model, projector = tiny_vlm.write(hub / REPO)
    shutil.copy(projector, hub / REPO / "mmproj-tiny-vlm-f32.gguf")  # the f16 one must be chosen
    projector.rename(hub / REPO / "mmproj-tiny-vlm-f16.gguf")
    model.rename(hub / REPO / "tiny-vlm-F16.gguf")
    srv = hf_standin.serve(str(hub))
    store = tmp_path_factory.mktemp("vision-models")
    shutil.copytree(smollm2_store, store, dirs_exist_ok=True)
    log = tmp_path_factory.mktemp("vision-log") / "serve.log"
    process, url = start_daemon({"RKOLLAMA_MODELS": str(store), "RKOLLAMA_NUM_THREADS": "2",
                                 "RKOLLAMA_CONTEXT_LENGTH": "2048", "HF_ENDPOINT": srv.url,
                                 "OLLAMA_NUM_PARALLEL": "2"}, log)
    lines = list(ollama.Client(url).pull(MODEL, stream=True))
    assert lines[-1].status == "success"
    yield url, log
    process.terminate()
    process.wait(timeout=20)
    srv.shutdown()


def chat(url, images=(), model=MODEL, content=QUESTION):
    return ollama.Client(url).chat(model=model, messages=[{"role": "user", "content": content,
                                                           "images": list(images)}],
                                   options={"num_predict": 3, "temperature": 0})


def test_a_pulled_vision_model_shows_its_projector(vision_daemon):
    url, _ = vision_daemon
    assert "vision" in ollama.Client(url).show(MODEL).capabilities
    shown = requests.post(f"{url}/api/show", json={"model": MODEL}, timeout=30).json()
    assert list(shown).index("projector_info") == list(shown).index("model_info") + 1  # Go's order
    assert shown["projector_info"]["clip.projector_type"] == "mlp"
    assert shown["projector_info"]["general.architecture"] == "clip"
    assert shown["projector_info"]["clip.vision.image_mean"] == []  # arrays only with verbose
    verbose = requests.post(f"{url}/api/show", json={"model": MODEL, "verbose": True}, timeout=30).json()
    assert verbose["projector_info"]["clip.vision.image_mean"] == [0.5, 0.5, 0.5]
    assert "vision" not in ollama.Client(url).show(TEXT_ONLY).capabilities
    text = subprocess.run([sys.executable, "-m", "rkollama", "show", MODEL], capture_output=True, text=True,
                          env=dict(os.environ, OLLAMA_HOST=url), timeout=60).stdout
    assert "  Projector\n    architecture        clip\n    parameters          30K\n" in text
    assert "    embedding length    32\n    dimensions          64\n" in text


def test_each_image_reaches_the_engine_as_its_embeddings(vision_daemon):
    url, _ = vision_daemon
    plain = chat(url).prompt_eval_count
    one = chat(url, [png(40, 30)]).prompt_eval_count
    two = chat(url, [png(40, 30), png(300, 200, (0, 90, 200))]).prompt_eval_count
    assert one == plain + tiny_vlm.IMAGE_TOKENS
    assert two == plain + 2 * tiny_vlm.IMAGE_TOKENS
    generated = ollama.Client(url).generate(model=MODEL, prompt=QUESTION, images=[png(8, 8)],
                                            options={"num_predict": 3, "temperature": 0})
    assert generated.prompt_eval_count == plain + tiny_vlm.IMAGE_TOKENS


def test_a_raw_prompt_that_ends_with_its_image_is_answered(vision_daemon):
    """Image embeddings give no logits to sample the first answer token from: a prompt ending
    with an image once aborted llama.cpp (and its runner); the engine puts a newline after it."""
    url, _ = vision_daemon
    reply = ollama.Client(url).generate(model=MODEL, prompt="Describe [img-0]", raw=True, images=[png(9, 9)],
                                        options={"num_predict": 3, "temperature": 0})
    assert reply.done and reply.eval_count == 3
    assert reply.prompt_eval_count > tiny_vlm.IMAGE_TOKENS


def test_openai_and_anthropic_clients_send_images(vision_daemon):
    url, _ = vision_daemon
    plain = chat(url).prompt_eval_count
    picture = png_b64(64, 64, (10, 200, 10))
    oai = openai.OpenAI(base_url=f"{url}/v1", api_key="x")
    reply = oai.chat.completions.create(model=MODEL, max_tokens=3, temperature=0, messages=[
        {"role": "user", "content": [{"type": "text", "text": QUESTION},
                                     {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{picture}"}}]}])
    assert reply.usage.prompt_tokens == plain + tiny_vlm.IMAGE_TOKENS
    claude = anthropic.Anthropic(base_url=url, api_key="x")
    message = claude.messages.create(model=MODEL, max_tokens=3, messages=[
        {"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": picture}},
            {"type": "text", "text": QUESTION}]}])
    assert message.usage.input_tokens == plain + tiny_vlm.IMAGE_TOKENS


def image_reads(log) -> int:
    """Pictures the engine has encoded so far (its log says so for each)."""
    return log.read_text(errors="replace").count("image read: 16 embeddings")


def picture_chat(url, question, picture):
    """(the first turn about `picture`, a follow-up turn after it), greedy, two tokens each; the
    caller runs whatever goes between them."""
    options = {"num_predict": 2, "temperature": 0}
    turn = [{"role": "user", "content": question, "images": [picture]}]
    first = ollama.Client(url).chat(model=MODEL, messages=turn, options=options)
    yield first
    yield ollama.Client(url).chat(model=MODEL, options=options, messages=turn + [
        {"role": "assistant", "content": first.message.content},
        {"role": "user", "content": "And what colour is it?"}])


def test_a_follow_up_about_the_same_picture_does_not_read_it_again(vision_daemon):
    url, log = vision_daemon
    before = image_reads(log)
    turns = picture_chat(url, QUESTION, png(50, 50, (123, 45, 67)))
    first = next(turns)
    assert image_reads(log) == before + 1
    follow_up = next(turns)
    assert follow_up.prompt_eval_count > first.prompt_eval_count
    assert image_reads(log) == before + 1  # the KV cache held the picture's embeddings
    other = chat(url, [png(50, 50, (1, 2, 3))])
    assert other.prompt_eval_count == first.prompt_eval_count and image_reads(log) == before + 2


def test_a_picture_kept_in_the_prompt_cache_is_not_read_again(vision_daemon):
    """Two longer requests take both slots after a chat about a picture (the shorter cache is
    the one thrown away): the chat's state, the picture's embeddings in it, waits in RAM, and
    its follow-up is put back from there instead of encoding the picture again."""
    url, log = vision_daemon
    before = image_reads(log)
    question = f"{QUESTION} " + " ".join(f"Detail {i}: the shapes." for i in range(12))
    turns = picture_chat(url, question, png(40, 40, (9, 99, 199)))
    first = next(turns)
    assert image_reads(log) == before + 1
    for tag in ("one", "two"):
        chat(url, content=f"Unrelated {tag}. " + " ".join(f"Point {i}: note this." for i in range(50)))
    follow_up = next(turns)
    assert follow_up.prompt_eval_count > first.prompt_eval_count
    assert image_reads(log) == before + 1


def test_two_pictures_at_once_each_reach_their_own_sequence(vision_daemon):
    from concurrent.futures import ThreadPoolExecutor

    url, _ = vision_daemon
    plain = chat(url).prompt_eval_count
    pictures = [[png(30, 30, (255, 0, 0))], [png(30, 30, (0, 0, 255)), png(10, 10)]]
    with ThreadPoolExecutor(2) as pool:
        replies = list(pool.map(lambda images: chat(url, images), pictures))
    assert [r.prompt_eval_count for r in replies] == [plain + 16, plain + 32]


def test_a_long_answer_shifts_the_window_past_an_image_and_a_long_prompt_drops_one_whole(vision_daemon):
    url, _ = vision_daemon
    client = ollama.Client(url)
    long = client.generate(model=MODEL, prompt="tell me everything", images=[png(20, 20)],
                           options={"num_predict": 2500, "temperature": 1, "seed": 3, "num_keep": 5})
    assert long.eval_count == 2500 and long.done_reason == "length"  # past the 2048-token window
    words = " ".join(["word"] * 900)
    fitted = client.chat(model=MODEL, options={"num_predict": 2, "temperature": 0}, messages=[
        {"role": "user", "content": words, "images": [png(20, 20, (9, 9, 9))]},
        {"role": "assistant", "content": words},
        {"role": "user", "content": words + " and this?", "images": [png(21, 21)]}])
    assert fitted.prompt_eval_count <= 2048


def test_a_text_only_model_refuses_images(vision_daemon):
    url, _ = vision_daemon
    with pytest.raises(ollama.ResponseError) as refused:
        chat(url, [png()], model=TEXT_ONLY)
    assert refused.value.status_code == 400
    assert refused.value.error == "registry.ollama.ai/library/smollm2:135m does not support vision"


def test_bad_images_are_refused_by_the_real_engine_daemon(vision_daemon):
    url, _ = vision_daemon
    reply = requests.post(f"{url}/api/chat", json={"model": MODEL, "messages": [
        {"role": "user", "content": "x", "images": [base64.b64encode(png()[:30]).decode()]}]}, timeout=30)
    assert reply.status_code == 400 and reply.json()["error"].startswith("invalid image: ")


def test_create_takes_a_projector_from_a_second_from_line(vision_daemon, tmp_path):
    url, _ = vision_daemon
    model, projector = tiny_vlm.write(tmp_path / "files")
    (tmp_path / "Modelfile").write_text(f"FROM {model}\nFROM {projector}\nPARAMETER temperature 0\n")
    env = dict(os.environ, OLLAMA_HOST=url)
    made = subprocess.run([sys.executable, "-m", "rkollama", "create", "my-vlm", "-f", str(tmp_path / "Modelfile")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert made.returncode == 0, made.stderr
    assert "vision" in ollama.Client(url).show("my-vlm").capabilities
    assert chat(url, [png()], model="my-vlm").prompt_eval_count == chat(url, model="my-vlm").prompt_eval_count \
        + tiny_vlm.IMAGE_TOKENS
    # The same through the ollama client's own create (blobs uploaded, then `files`).
    client = ollama.Client(url)
    files = {path.name: client.create_blob(path) for path in (model, projector)}
    client.create(model="my-vlm-2", files=files)
    assert "vision" in client.show("my-vlm-2").capabilities
    client.create(model="my-vlm-3", from_="my-vlm-2", system="Be brief.")
    assert "vision" in client.show("my-vlm-3").capabilities  # a copy keeps its eyes


def test_the_repl_sends_an_image_path(vision_daemon, tmp_path):
    url, _ = vision_daemon
    picture = tmp_path / "pic.png"
    picture.write_bytes(png(20, 20))
    env = dict(os.environ, OLLAMA_HOST=url)

    def run(prompt):
        done = subprocess.run([sys.executable, "-m", "rkollama", "run", "--verbose", MODEL, prompt],
                              capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        count = next(line for line in done.stderr.splitlines() if line.startswith("prompt eval count:"))
        return int(count.split()[3]), done.stderr

    with_image, stderr = run(f"what is in {picture}")
    without, _ = run("what is in")
    assert f"Added image '{picture}'" in stderr
    assert with_image == without + tiny_vlm.IMAGE_TOKENS
