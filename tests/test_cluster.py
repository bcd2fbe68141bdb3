"""Several daemons behind a real nginx with the shipped configuration (deploy/nginx): every
request answered, streams intact, a model's pool reached by its path prefix, and a killed daemon
taken out of rotation while the others serve."""

import re
import shutil
import signal
import subprocess
from pathlib import Path

import ollama
import openai
import pytest
import requests
from helpers import free_port, register_fake, start_daemon, wait_for_http

from rkollama.models.store import ModelStore

CONFIG = Path(__file__).resolve().parents[1] / "deploy" / "nginx" / "rkollama.conf"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (Debian package: nginx)")


def answered(url: str) -> int:
    """Chat and generate requests a daemon has answered (from its /metrics)."""
    text = requests.get(f"{url}/metrics", timeout=10).text
    return sum(int(float(n)) for n in re.findall(
        r'rkollama_http_requests_total\{method="POST",route="/api/(?:chat|generate)",status="200"\} (\S+)',
        text))


@pytest.fixture
def cluster(tmp_path):
    daemons = []
    for index in range(3):
        models = tmp_path / f"models{index}"
        register_fake(ModelStore(models), "tiny")
        process, url = start_daemon({"RKOLLAMA_BACKEND": "fake", "RKOLLAMA_MODELS": str(models),
                                     "RKOLLAMA_ISOLATION": "false"}, tmp_path / f"daemon{index}.log")
        daemons.append((process, url))
    port = free_port()
    conf = CONFIG.read_text().replace("listen 11434;", f"listen 127.0.0.1:{port};")
    for index, (_, url) in enumerate(daemons):
        conf = conf.replace(f"board{index + 1}:11434", url.removeprefix("http://"))
    (tmp_path / "rkollama.conf").write_text(conf)
    (tmp_path / "nginx.conf").write_text(f"""
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log;
daemon off;
events {{ worker_connections 256; }}
http {{
    access_log {tmp_path}/access.log;
    client_body_temp_path {tmp_path}/body;
    proxy_temp_path {tmp_path}/proxy;
    fastcgi_temp_path {tmp_path}/fastcgi;
    uwsgi_temp_path {tmp_path}/uwsgi;
    scgi_temp_path {tmp_path}/scgi;
    include {tmp_path}/rkollama.conf;
}}
""")
    nginx = subprocess.Popen([NGINX, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lb = f"http://127.0.0.1:{port}"
    wait_for_http(f"{lb}/", nginx, timeout=30)
    yield lb, daemons
    nginx.send_signal(signal.SIGQUIT)
    nginx.wait(timeout=30)
    for process, _ in daemons:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


def test_requests_spread_over_the_boards_and_streams_arrive_whole(cluster):
    lb, daemons = cluster
    client = ollama.Client(host=lb)
    assert [m.model for m in client.list().models] == ["tiny:latest"]
    for index in range(12):
        words = [f"w{index}-{k}" for k in range(40)]
        parts = [c.message.content for c in client.chat(
            model="tiny", messages=[{"role": "user", "content": " ".join(words)}], stream=True)]
        assert len(parts) > 40 and "".join(parts) == " ".join(words)  # token by token, in order
    served = [answered(url) for _, url in daemons]
    assert sum(served) == 12 and all(count > 0 for count in served), served
    oai = openai.OpenAI(base_url=f"{lb}/v1", api_key="unused")
    events = list(oai.chat.completions.create(model="tiny", stream=True,
                                              messages=[{"role": "user", "content": "a b c"}]))
    assert "".join(e.choices[0].delta.content or "" for e in events if e.choices) == "a b c"


def test_a_model_pool_is_reached_by_its_path_prefix(cluster):
    lb, daemons = cluster
    client = ollama.Client(host=f"{lb}/pool/qwen3")
    for _ in range(6):
        assert client.generate(model="tiny", prompt="x y").response == "x y"
    assert answered(daemons[2][1]) == 0  # board3 is not in the pool
    assert requests.post(f"{lb}/pool/qwen3/api/generate", timeout=10,
                         json={"model": "tiny", "prompt": "p", "stream": False}).json()["response"] == "p"


def test_a_killed_board_leaves_the_rotation(cluster):
    lb, daemons = cluster
    client = ollama.Client(host=lb)
    client.generate(model="tiny", prompt="warm")
    victim, _ = daemons[0]
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    answers = [client.generate(model="tiny", prompt=f"after {i}").response for i in range(12)]
    assert answers == [f"after {i}" for i in range(12)]  # none lost to the dead board
    assert answered(daemons[1][1]) > 0 and answered(daemons[2][1]) > 0
