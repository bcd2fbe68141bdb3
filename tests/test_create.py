"""Creating models: /api/create and /api/blobs through the official `ollama` client, and the
errors a bad request gets, by text and status."""

import hashlib

import ollama
import pytest
import requests
from helpers import write_gguf

from rkollama.errors import ModelNotFound


@pytest.fixture
def client(fake_server):
    return ollama.Client(host=fake_server.url)


def test_create_from_an_existing_model_overrides_system_template_and_parameters(client, store):
    lines = list(client.create(model="mine:v1", from_="tiny", system="You are terse.", stream=True,
                               parameters={"temperature": 0.1, "stop": ["END"]},
                               template="{% for m in messages %}{{ m.content }}{% endfor %}"))
    assert [line.status for line in lines][-2:] == ["writing manifest", "success"]
    spec = store.resolve("mine:v1")
    assert spec.modelfile.system == "You are terse." and spec.modelfile.parameters["temperature"] == 0.1
    assert spec.modelfile.parameters["stop"] == ["END"]
    assert spec.model_path == store.resolve("tiny").model_path  # the same weights, no copy
    shown = client.show("mine:v1")
    assert 'SYSTEM You are terse.' in shown.modelfile and "temperature" in shown.parameters


def test_create_from_an_uploaded_file(client, store, tmp_path):
    weights = tmp_path / "model.gguf"
    write_gguf(weights)
    digest = client.create_blob(weights)
    assert digest == "sha256:" + hashlib.sha256(weights.read_bytes()).hexdigest()
    response = client.create(model="uploaded", files={"model.gguf": digest})
    assert response.status == "success"
    spec = store.resolve("uploaded")
    assert spec.format == "gguf" and spec.model_path.read_bytes() == weights.read_bytes()
    # what its header says, as a pull would read it: its template renders tools
    assert spec.capabilities == ["completion", "tools"] and spec.modelfile.details.family == "llama"
    plain = client.create(model="plain", from_="uploaded", template="{% for m in messages %}{{ m.content }}{% endfor %}")
    assert plain.status == "success" and store.resolve("plain").capabilities == ["completion"]
    pooled = tmp_path / "embed.gguf"
    write_gguf(pooled, fill=3, pooling=True)
    assert client.create(model="embedder", files={"embed.gguf": client.create_blob(pooled)}).status == "success"
    assert store.resolve("embedder").capabilities == ["embedding", "tools"]  # as Ollama reads it
    assert client.show("embedder").capabilities == ["embedding", "tools"]
    with pytest.raises(ollama.ResponseError, match='"embedder" does not support chat'):
        client.chat(model="embedder", messages=[{"role": "user", "content": "hi"}])
    retemplated = client.create(model="embedder2", from_="embedder", template="{{ prompt }}")
    assert retemplated.status == "success" and store.resolve("embedder2").capabilities == ["embedding"]
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    with pytest.raises(ollama.ResponseError, match="junk.gguf is not a valid GGUF file"):
        client.create(model="junk", files={"junk.gguf": client.create_blob(junk)})


def test_blob_upload_is_verified_and_head_tells_whether_it_is_there(fake_server, store):
    data = b"some weights"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert requests.head(f"{fake_server.url}/api/blobs/{digest}").status_code == 404
    bad = requests.post(f"{fake_server.url}/api/blobs/{digest}", data=b"other bytes")
    assert bad.status_code == 400 and bad.json()["error"].startswith("digest mismatch, expected")
    assert requests.head(f"{fake_server.url}/api/blobs/{digest}").status_code == 404
    assert requests.post(f"{fake_server.url}/api/blobs/{digest}", data=data).status_code == 201
    assert requests.post(f"{fake_server.url}/api/blobs/{digest}", data=data).status_code == 200
    assert requests.head(f"{fake_server.url}/api/blobs/{digest}").status_code == 200


@pytest.mark.parametrize("body,status,message", [
    ({"model": "x"}, 400, "neither 'from' or 'files' was specified"),
    ({"model": "x", "from": "nope"}, 404, "model 'nope' not found"),
    ({"model": "bad name!", "from": "tiny"}, 400, "invalid model name"),
    ({"model": "x", "from": "tiny", "parameters": {"warp": 9}}, 400, "unknown parameter 'warp'"),
    ({"model": "x", "from": "tiny", "parameters": ["temperature", 1]}, 400, "parameters must be an object"),
    ({"model": "x", "from": "tiny", "quantize": "q4_K_M"}, 400, "quantization is not supported"),
    ({"model": "x", "from": "tiny", "template": "{{ .System }} {{ .Prompt }}"}, 400, "Jinja"),
    ({"model": "x", "files": {"model.gguf": "sha256:" + "0" * 64}}, 400, "was not uploaded"),
])
def test_bad_create_requests_get_clear_errors_and_write_nothing(fake_server, store, body, status, message):
    reply = requests.post(f"{fake_server.url}/api/create", json=body)
    assert reply.status_code == status and message in reply.json()["error"]
    assert [s.name.display() for s in store.list() if s.name.model == "x"] == []


def test_push_is_a_clear_error(client):
    with pytest.raises(ollama.ResponseError) as error:
        client.push("tiny")
    assert error.value.status_code == 400 and "no registry" in error.value.error


# -- `rkollama create -f Modelfile` ---------------------------------------------------------------
def run_create(fake_server, tmp_path, text: str, name: str = "mine"):
    from test_cli import rk

    modelfile = tmp_path / "Modelfile"
    modelfile.write_text(text)
    return rk(["create", name, "-f", str(modelfile)], url=fake_server.url)


def test_cli_create_from_a_model_with_every_instruction(fake_server, store, tmp_path):
    result = run_create(fake_server, tmp_path, """
# a comment
FROM tiny
PARAMETER temperature 0.2
PARAMETER stop "<|end|>"
PARAMETER stop "<|user|>"
SYSTEM \"\"\"You are
a pirate.\"\"\"
TEMPLATE "{% for m in messages %}{{ m.content }}{% endfor %}"
MESSAGE user Ahoy?
MESSAGE assistant Arr!
LICENSE MIT
""")
    assert result.returncode == 0, result.stderr
    assert "success" in result.stderr
    mf = store.resolve("mine").modelfile
    assert mf.parameters["temperature"] == 0.2 and mf.parameters["stop"] == ["<|end|>", "<|user|>"]
    assert mf.system == "You are\na pirate." and mf.license == "MIT"
    assert [(m.role, m.content) for m in mf.messages] == [("user", "Ahoy?"), ("assistant", "Arr!")]
    assert mf.template.startswith("{% for m in messages %}")


def test_cli_create_from_a_local_gguf_uploads_it(fake_server, store, tmp_path):
    weights = write_gguf(tmp_path / "weights.gguf", fill=1)
    result = run_create(fake_server, tmp_path, "FROM ./weights.gguf\nSYSTEM hi\n", name="local")
    assert result.returncode == 0, result.stderr
    spec = store.resolve("local")
    assert spec.format == "gguf" and spec.model_path.read_bytes() == weights


@pytest.mark.parametrize("text,message", [
    ("FORM tiny\n", '(line 1): command must be one of "from", "license", "template", "system", '
                    '"adapter", "draft", "renderer", "parser", "parameter", "message", or "requires"'),
    ("FROM tiny\nREQUIRES 0.14\nREQUIRES fourteen\n", "requires must be a valid semver (e.g. 0.14.0)"),
    ("FROM tiny\nREQUIRES 0.14.0.1\n", "requires must be a valid semver (e.g. 0.14.0)"),
    ("FROM tiny\nREQUIRES 01.2.3\n", "requires must be a valid semver (e.g. 0.14.0)"),
    ("FROM tiny\nDRAFT ./small.gguf\n", "(line 2): DRAFT is not supported here: rkollama has no speculative"),
    ("FROM tiny\nRENDERER qwen 3\n", "renderer must be a name of letters, digits"),
    ("SYSTEM hi\n", "no FROM line"),
    ("FROM tiny\nPARAMETER warp 9\n", "unknown parameter 'warp'"),
    ("FROM tiny\nTEMPLATE {{ .Prompt }}\n", "Jinja"),
    ("FROM nothing-like-this\n", "file does not exist"),
])
def test_cli_create_errors_say_what_is_wrong_and_write_nothing(fake_server, store, tmp_path, text, message):
    result = run_create(fake_server, tmp_path, text)
    assert result.returncode == 1 and "Error: " in result.stderr and message in result.stderr
    with pytest.raises(ModelNotFound):
        store.resolve("mine")


def test_renderer_parser_and_requires_are_kept_shown_and_carried_over_as_ollama_does(
        fake_server, client, store, tmp_path):
    # What `ollama show --modelfile` writes for a model made with Ollama's built-ins.
    result = run_create(fake_server, tmp_path, 'FROM tiny\nRENDERER qwen3-coder\nPARSER "qwen3-coder"\n'
                                               "REQUIRES v0.12.10-rc.1+build.7\nSYSTEM hi\n")
    assert result.returncode == 0, result.stderr
    assert "SYSTEM hi\nRENDERER qwen3-coder\nPARSER qwen3-coder\n" in client.show("mine").modelfile
    raw = requests.post(f"{fake_server.url}/api/show", json={"model": "mine"}).json()
    assert (raw["renderer"], raw["parser"], raw["requires"]) == ("qwen3-coder", "qwen3-coder", "0.12.10-rc.1+build.7")
    keys = list(raw)
    assert keys.index("system") < keys.index("renderer") < keys.index("parser") < keys.index("details")
    assert keys[-1] == "requires"  # Ollama's ShowResponse order
    from test_cli import rk

    model_rows = rk(["show", "mine"], url=fake_server.url).stdout.split("Capabilities")[0]
    assert "    requires            0.12.10-rc.1+build.7\n" in model_rows  # the Model section's last row
    assert client.create(model="copy", from_="mine", system="other").status == "success"
    copied = store.resolve("copy").modelfile
    assert (copied.renderer, copied.parser, copied.requires) == ("qwen3-coder", "qwen3-coder", "0.12.10-rc.1+build.7")
    plain = requests.post(f"{fake_server.url}/api/show", json={"model": "tiny"}).json()
    assert not {"renderer", "parser", "requires"} & set(plain)  # omitted when empty


@pytest.mark.parametrize("field,value,message", [
    ("renderer", 7, "renderer must be a name"), ("renderer", 0, "renderer must be a name"),
    ("requires", False, "requires must be a valid semver"), ("parser", "x" * 65, "parser must be a name"),
    ("parser", "a\nb", "parser must be a name"), ("requires", "latest", "requires must be a valid semver"),
    ("requires", ["0.1.0"], "requires must be a valid semver"),
    ("draft_files", {"small.gguf": "sha256:" + "0" * 64}, "draft models are not supported")])
def test_bad_renderer_parser_requires_and_draft_files_are_a_400(fake_server, store, field, value, message):
    response = requests.post(f"{fake_server.url}/api/create", json={"model": "mine", "from": "tiny", field: value})
    assert response.status_code == 400 and message in response.json()["error"]
    with pytest.raises(ModelNotFound):
        store.resolve("mine")


def test_cli_create_from_a_yaml_modelfile_with_a_local_file(fake_server, store, tmp_path):
    from test_cli import rk

    weights = write_gguf(tmp_path / "w.gguf", fill=2)
    (tmp_path / "pet.yaml").write_text("""
name: pet
description: a local model
system: You are a cat.
parameters: {temperature: 0.3, stop: ["<end>"]}
parser: qwen3
requires: 0.14.0
tags:
  small:
    default: true
    sources: {cpu: {path: w.gguf}}
  big:
    sources: {cpu: {url: https://example.invalid/big.gguf}}
""")
    done = rk(["create", "pet:small", "-f", str(tmp_path / "pet.yaml")], url=fake_server.url)
    assert done.returncode == 0, done.stderr
    spec = store.resolve("pet:small")
    assert spec.model_path.read_bytes() == weights
    assert spec.modelfile.system == "You are a cat."
    assert spec.modelfile.parameters == {"temperature": 0.3, "stop": ["<end>"]}
    assert (spec.modelfile.parser, spec.modelfile.requires) == ("qwen3", "0.14.0")
    refused = rk(["create", "pet:big", "-f", str(tmp_path / "pet.yaml")], url=fake_server.url)
    assert refused.returncode == 1
    assert "tag big has no local `path` source" in refused.stderr and "RKOLLAMA_MODELFILES" in refused.stderr
    with pytest.raises(ModelNotFound):
        store.resolve("pet:big")
    (tmp_path / "bad.yaml").write_text("name: bad\ntags: 3\n")
    broken = rk(["create", "bad", "-f", str(tmp_path / "bad.yaml")], url=fake_server.url)
    assert broken.returncode == 1 and "bad.yaml" in broken.stderr
    for line, words in (("parser: qwen 3", "parser must be a name"), ("requires: '01.2'", "requires must be a valid semver")):
        (tmp_path / "named.yaml").write_text(f"name: named\n{line}\ntags: {{x: {{sources: {{cpu: {{path: w.gguf}}}}}}}}\n")
        named = rk(["create", "named:x", "-f", str(tmp_path / "named.yaml")], url=fake_server.url)
        assert named.returncode == 1 and words in named.stderr, named.stderr


@pytest.mark.parametrize("text,valid", [
    ("0.14.0", "0.14.0"), ("v0.14.0", "0.14.0"), ("1", "1"), ("v1.2", "1.2"), ("1.2.3-alpha.1", "1.2.3-alpha.1"),
    ("1.2.3-0a.x-y", "1.2.3-0a.x-y"), ("1.2.3+meta.01", "1.2.3+meta.01"), ("1.2-rc1", None), ("1.2.3-01", None),
    ("01.2.3", None), ("1.2.3.4", None), ("1.2.3-", None), ("1.2.3+", None), ("", None), ("v", None),
    ("1." + "9" * 70, None)])
def test_requires_takes_what_gos_semver_takes(text, valid):
    # golang.org/x/mod/semver, as Ollama's client checks REQUIRES (a "v" before it allowed)
    from rkollama.core.create_fields import requires_version
    from rkollama.errors import BadRequest

    if valid is None:
        with pytest.raises(BadRequest, match=r"requires must be a valid semver \(e\.g\. 0\.14\.0\)"):
            requires_version(text)
    else:
        assert requires_version(text) == valid


def test_draft_num_predict_is_a_known_option_that_changes_nothing_here(fake_server, client, store, tmp_path):
    # Ollama's option for a draft model's tokens per step: a Modelfile from Ollama may set it.
    result = run_create(fake_server, tmp_path, "FROM tiny\nPARAMETER draft_num_predict 8\n")
    assert result.returncode == 0, result.stderr
    assert store.resolve("mine").modelfile.parameters["draft_num_predict"] == 8
    assert "draft_num_predict              8" in client.show("mine").parameters
    answer = client.chat(model="mine", messages=[{"role": "user", "content": "hi"}],
                         options={"draft_num_predict": 2})
    assert answer.done
    bad = requests.post(f"{fake_server.url}/api/chat", json={
        "model": "mine", "messages": [{"role": "user", "content": "hi"}], "options": {"draft_num_predict": "x"}})
    assert bad.status_code == 400 and bad.json()["error"] == 'option "draft_num_predict" must be of type integer'
