"""Images in every dialect on the fake backend: where they land in the prompt (Ollama's `[img-N]`
tags), which ones are refused before any engine work (each a 400 in the dialect's own error
shape), a model without a projector refusing them, and the rules that keep an image whole when
a prompt is cut (core.media, core.fitting)."""

import base64
import io

import pytest
from helpers import image_bodies, png, png_b64, png_header

from rkollama.core import media
from rkollama.core.fitting import PromptFitter
from rkollama.core.prompt import ChatTemplate
from rkollama.core.types import Generation, Message, SamplingOptions


def _animated(kind: str) -> bytes:
    from PIL import Image

    frames = [Image.new("RGB", (8, 8), colour) for colour in ((0, 0, 0), (255, 0, 0))]
    out = io.BytesIO()
    frames[0].save(out, kind, save_all=True, append_images=frames[1:])
    return out.getvalue()


BAD = {
    "not an image": b"hello, this is text",
    "truncated": png(64, 64)[:40],
    "0x0": png_header(0, 0),
    "20000x20000": png_header(20000, 20000),
    "animated png": _animated("PNG"),
    "animated webp": _animated("WEBP"),
    "a gif": png(8, 8, kind="GIF"),
}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _message(path: str, reply) -> str:
    body = reply.get_json()
    if path.startswith("/api/"):
        return body["error"]
    if path == "/v1/messages":
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
        return body["error"]["message"]
    assert body["error"]["type"] == "invalid_request_error"
    return body["error"]["message"]


@pytest.mark.parametrize("path", list(image_bodies("x")))
def test_every_dialect_brings_the_image_to_the_engine(http, script, seer, path):
    picture = png_b64(30, 20)
    reply = http.post(path, json=image_bodies(picture)[path])
    assert reply.status_code == 200, reply.get_data(as_text=True)
    gen = script.history[-1]
    sent = gen.images + [i for m in gen.messages or [] for i in m.images]
    assert sent == [picture]


@pytest.mark.parametrize("path", list(image_bodies("x")))
@pytest.mark.parametrize("kind", list(BAD))
def test_a_bad_image_is_a_400_before_any_engine_work(http, script, seer, path, kind):
    reply = http.post(path, json=image_bodies(_b64(BAD[kind]))[path])
    assert reply.status_code == 400
    message = _message(path, reply)
    assert message.startswith("invalid image") or message == "invalid image input", message
    assert script.history == []


@pytest.mark.parametrize("path", list(image_bodies("x")))
def test_an_image_whose_declared_type_is_not_its_own_is_refused(http, script, seer, path):
    if path.startswith("/api/"):  # Ollama's fields carry bare base64: a data URI there says its type
        body = image_bodies(f"data:image/jpeg;base64,{png_b64()}")[path]
    else:
        body = image_bodies(png_b64(), uri_type="jpeg")[path]
    reply = http.post(path, json=body)
    assert reply.status_code == 400 and script.history == []
    assert "invalid image" in _message(path, reply)


@pytest.mark.parametrize("path", list(image_bodies("x")))
def test_a_model_without_a_projector_refuses_images(http, script, path):
    body = dict(image_bodies(png_b64())[path], model="tiny")
    reply = http.post(path, json=body)
    assert reply.status_code == 400 and script.history == []
    assert _message(path, reply) == "registry.ollama.ai/library/tiny:latest does not support vision"


def test_ollama_places_each_image_as_a_tag_before_its_text_or_at_img(http, seer):
    one, two = png_b64(5, 5), png_b64(6, 6)
    reply = http.post("/api/chat", json={"model": "seer", "_debug_render_only": True, "messages": [
        {"role": "user", "content": "first", "images": [one]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "compare [img] with this", "images": [one, two]}]})
    info = reply.get_json()["_debug_info"]
    assert info["image_count"] == 3
    rendered = info["rendered_template"]
    assert "<user>[img-0]first\n" in rendered
    assert "<user>[img-2]compare [img-1] with this\n" in rendered  # the first image at [img]


def test_a_text_only_model_still_renders_images_for_debugging(http):
    reply = http.post("/api/chat", json={"model": "tiny", "_debug_render_only": True, "messages": [
        {"role": "user", "content": "what", "images": [png_b64()]}]})
    assert reply.status_code == 200 and reply.get_json()["_debug_info"]["image_count"] == 1


def test_a_model_and_its_copy_without_the_projector_do_not_share_an_engine(http, script, store, seer):
    """Same weights, one with eyes and one without: a loaded engine is not shared between them
    (the one without would get pictures it cannot read)."""
    from rkollama.models.names import ModelName

    digest = seer.model_path.name.removeprefix("sha256-")
    store.register(ModelName.parse("blind"), seer.modelfile.changed(name="blind"), digest, seer.size)
    for model in ("blind", "seer"):
        assert http.post("/api/generate", json={"model": model, "prompt": "x", "stream": False}).status_code == 200
    assert len(script.loads) == 2
    reply = http.post("/api/chat", json={"model": "seer", "stream": False, "messages": [
        {"role": "user", "content": "x", "images": [png_b64()]}]})
    assert reply.status_code == 200 and len(script.loads) == 2


def test_a_camera_jpeg_with_a_second_picture_in_it_is_its_first_picture(http, script, seer):
    """Some cameras write MPO: a JPEG with a depth or preview image after the photo. Not an
    animation: the photo is taken."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(out, "MPO", save_all=True,
                                               append_images=[Image.new("RGB", (8, 8), (0, 0, 255))])
    reply = http.post("/api/chat", json={"model": "seer", "stream": False, "messages": [
        {"role": "user", "content": "x", "images": [base64.b64encode(out.getvalue()).decode()]}]})
    assert reply.status_code == 200


# -- the stand-in ids (core.media) and the cuts that keep an image whole -----------------------------
def test_an_image_is_a_run_of_stand_ins_whose_edges_every_cut_respects():
    run = media.image_tokens(media.key_of(b"picture"), 4)
    tokens = [1, 2] + run + [3, 4]
    assert [media.is_image(t) for t in tokens] == [False, False, True, True, True, True, False, False]
    assert {media.image_key(t) for t in run} == {media.key_of(b"picture")}
    assert list(media.image_starts(tokens)) == [(2, media.key_of(b"picture"))]
    assert [media.back_to_edge(tokens, k) for k in range(9)] == [0, 1, 2, 2, 2, 2, 6, 7, 8]
    assert [media.on_to_edge(tokens, k) for k in range(9)] == [0, 1, 2, 6, 6, 6, 6, 7, 8]
    other = media.image_tokens(media.key_of(b"other"), 4)
    assert not set(other) & set(run)  # two pictures never share a prefix by accident


def test_split_reads_only_the_tags_of_images_that_were_sent():
    assert list(media.split("[img-0]a [img-1] b [img-7]", 2)) == [0, "a ", 1, " b [img-7]"]


def test_a_fitted_prompt_drops_an_image_whole_never_half():
    picture = png_b64()
    key = media.key_of(base64.b64decode(picture))

    def tokenize(text, bos):
        return [ord(c) for c in text]

    def with_images(text, bos, images):
        out = []
        for piece in media.split(text, len(images)):
            out += tokenize(piece, bos) if isinstance(piece, str) else media.image_tokens(key, 10)
        return out

    template = ChatTemplate("{% for m in messages %}{{ m.content }}{% endfor %}")
    fitter = PromptFitter(16, template, tokenize, 1, tokenize_images=with_images)
    gen = Generation(prompt="ab[img-0]cdefghij", images=[picture],
                     options=SamplingOptions(num_keep=4))
    tokens = fitter.prompt_tokens(gen)
    # num_keep 4 would keep "ab" and half the image: the whole image goes instead, and the cut
    # at the end never starts inside it.
    assert tokens == [ord("a"), ord("b")] + [ord(c) for c in "cdefghij"]
    gen = Generation(prompt="ab[img-0]cdefghij", images=[picture], options=SamplingOptions(num_keep=0))
    assert fitter.prompt_tokens(gen) == [ord(c) for c in "cdefghij"]
    roomy = PromptFitter(64, template, tokenize, 1, tokenize_images=with_images)
    assert len(roomy.prompt_tokens(gen)) == 2 + 10 + 8


def test_an_engine_that_cannot_see_refuses_a_prompt_with_images():
    from rkollama.errors import BadRequest

    fitter = PromptFitter(64, ChatTemplate("{{ messages[0].content }}"), lambda t, b: [1], 1)
    with pytest.raises(BadRequest, match="cannot read images"):
        fitter.prompt_tokens(Generation(messages=[Message("user", "x", images=[png_b64()])]))
