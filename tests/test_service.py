"""The daemon as a service: /metrics, the /v1 management aliases, API keys and the rate limit,
through real HTTP and the official clients on the fake backend."""

import anthropic
import ollama
import openai
import pytest
import requests
from helpers import ThreadServer
from prometheus_client.parser import text_string_to_metric_families

from rkollama.config import Settings
from rkollama.models.catalog import Catalog
from rkollama.server.app import create_app
from rkollama.server.metrics import Metrics


def samples(url: str, **kwargs) -> dict:
    reply = requests.get(f"{url}/metrics", timeout=10, **kwargs)
    assert reply.status_code == 200
    assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    out = {}
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_count_requests_tokens_and_first_token_times(fake_server, script):
    script.enqueue(["a", "b", "c"])
    ollama.Client(host=fake_server.url).chat(model="tiny", messages=[{"role": "user", "content": "x"}])
    got = samples(fake_server.url)
    model = (("model", "tiny:latest"),)
    assert got[("rkollama_generated_tokens_total", model)] == 3
    assert got[("rkollama_prompt_tokens_total", model)] == 1
    assert got[("rkollama_time_to_first_token_seconds_count", model)] == 1
    assert got[("rkollama_token_latency_seconds_count", model)] == 1
    # the fake's counters: 30 ms of decode for 3 tokens
    assert got[("rkollama_token_latency_seconds_sum", model)] == pytest.approx(0.01)
    assert got[("rkollama_http_requests_total",
                (("method", "POST"), ("route", "/api/chat"), ("status", "200")))] == 1
    assert got[("rkollama_loaded_models", ())] == 1
    assert got[("rkollama_model_memory_bytes", model)] > 0
    assert got[("rkollama_queue_depth", ())] == 0
    requests.get(f"{fake_server.url}/nowhere", timeout=10)
    got = samples(fake_server.url)
    assert got[("rkollama_http_requests_total",
                (("method", "GET"), ("route", "unmatched"), ("status", "404")))] == 1


def test_metrics_read_the_board_where_it_exposes_it(tmp_path, scheduler):
    root = tmp_path / "sys-root"
    (root / "sys/kernel/debug/rknpu").mkdir(parents=True)
    (root / "sys/kernel/debug/rknpu/load").write_text("NPU load:  Core0: 37%, Core1:  0%, Core2: 100%,\n")
    zone = root / "sys/class/thermal/thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "type").write_text("soc-thermal\n")
    (zone / "temp").write_text("48125\n")
    cpu = root / "sys/devices/system/cpu/cpu4/cpufreq"
    cpu.mkdir(parents=True)
    (cpu / "scaling_cur_freq").write_text("2352000\n")
    npu = root / "sys/class/devfreq/fdab0000.npu"
    npu.mkdir(parents=True)
    (npu / "cur_freq").write_text("1000000000\n")
    text = Metrics(scheduler, sysfs_root=root).render().decode()
    assert 'rkollama_npu_load_percent{core="0"} 37.0' in text
    assert 'rkollama_npu_load_percent{core="2"} 100.0' in text
    assert 'rkollama_temperature_celsius{zone="soc-thermal"} 48.125' in text
    assert 'rkollama_cpu_frequency_hertz{cpu="4"} 2.352e+09' in text
    assert "rkollama_npu_frequency_hertz 1e+09" in text
    bare = Metrics(scheduler, sysfs_root=tmp_path / "empty").render().decode()
    assert "rkollama_npu_load_percent" not in bare and "rkollama_queue_depth 0.0" in bare


def test_runner_deaths_and_pulls_are_counted(scheduler, settings, store, fake_server, script):
    from rkollama.core.types import LoadOptions

    spec = store.resolve("tiny")
    scheduler.load(spec, LoadOptions())
    next(iter(scheduler._runners.values())).backend.dead = True
    scheduler.load(spec, LoadOptions())  # notices the dead runner and loads again
    reply = requests.post(f"{fake_server.url}/api/pull", json={"model": "nosuchmodel"}, timeout=10)
    assert reply.status_code == 404
    got = samples(fake_server.url)
    assert got[("rkollama_runner_crashes_total", (("model", "tiny:latest"),))] == 1
    assert got[("rkollama_pulls_total", (("outcome", "failed"),))] == 1


def test_v1_management_aliases(fake_server, script):
    url = fake_server.url
    assert requests.get(f"{url}/v1/health", timeout=10).json()["status"] == "ok"
    loaded = requests.post(f"{url}/v1/models/load", json={"model": "tiny"}, timeout=10)
    assert loaded.status_code == 200 and loaded.json()["model"] == "tiny:latest" and loaded.json()["loaded"]
    listed = requests.get(f"{url}/v1/models/loaded", timeout=10).json()
    assert [m["id"] for m in listed["data"]] == ["tiny:latest"] and listed["data"][0]["context_length"] > 0
    assert requests.get(f"{url}/api/ps", timeout=10).json()["models"][0]["name"] == "tiny:latest"
    gone = requests.post(f"{url}/v1/models/unload", json={"model": "tiny"}, timeout=10)
    assert gone.json() == {"model": "tiny:latest", "unloaded": True}
    assert requests.get(f"{url}/v1/models/loaded", timeout=10).json()["data"] == []
    available = requests.get(f"{url}/v1/models/available", timeout=10).json()["data"]
    downloaded = {m["id"] for m in available if m["downloaded"]}
    assert "tiny:latest" in downloaded and any(m["id"] == "smollm2:135m" and not m["downloaded"]
                                                for m in available)
    missing = requests.post(f"{url}/v1/models/load", json={"model": "absent"}, timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    empty = requests.post(f"{url}/v1/models/load", json={}, timeout=10)
    assert empty.status_code == 400 and empty.json()["error"]["message"] == "model is required"
    # the model named by the path stays reachable beside the aliases
    assert requests.get(f"{url}/v1/models/tiny", timeout=10).json()["id"] == "tiny"


@pytest.fixture
def keyed(tmp_path, scheduler, store, clock):
    settings = Settings.from_env(models=tmp_path / "models", api_key=("k-one", "k-two"), rate_limit=3)
    server = ThreadServer(create_app(settings, scheduler, store, Catalog(), "cpu", clock=clock))
    yield server
    server.close()


def test_api_keys_guard_every_route_but_health_in_each_dialect(keyed, script):
    url = keyed.url
    assert requests.get(f"{url}/", timeout=10).status_code == 200
    assert requests.get(f"{url}/v1/health", timeout=10).status_code == 200
    plain = requests.get(f"{url}/api/tags", timeout=10)
    assert plain.status_code == 401 and plain.headers["WWW-Authenticate"] == "Bearer"
    assert plain.json() == {"error": "unauthorized: this server needs an API key (Authorization: Bearer KEY)"}
    assert requests.get(f"{url}/metrics", timeout=10).status_code == 401
    with pytest.raises(ollama.ResponseError) as caught:
        ollama.Client(host=url, headers={"Authorization": "Bearer wrong"}).list()
    assert caught.value.status_code == 401 and "not valid" in caught.value.error
    assert ollama.Client(host=url, headers={"Authorization": "Bearer k-one"}).list().models
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{url}/v1", api_key="nope", max_retries=0).models.list()
    assert openai.OpenAI(base_url=f"{url}/v1", api_key="k-two", max_retries=0).models.list().data
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=url, api_key="nope", max_retries=0).messages.create(
            model="tiny", max_tokens=5, messages=[{"role": "user", "content": "x"}])


def test_rate_limit_per_key_with_retry_after(keyed, clock):
    url = keyed.url
    one = {"Authorization": "Bearer k-one"}
    assert [requests.get(f"{url}/api/tags", headers=one, timeout=10).status_code for _ in range(3)] == [200] * 3
    limited = requests.get(f"{url}/api/tags", headers=one, timeout=10)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "20"  # 3/min: one per 20 s
    assert "rate limit exceeded: 3 requests per minute" in limited.json()["error"]
    openai_shape = requests.get(f"{url}/v1/models", headers=one, timeout=10)
    assert openai_shape.status_code == 429 and openai_shape.json()["error"]["type"] == "rate_limit_error"
    other = {"Authorization": "Bearer k-two"}
    assert requests.get(f"{url}/api/tags", headers=other, timeout=10).status_code == 200  # its own bucket
    clock.advance(20)
    assert requests.get(f"{url}/api/tags", headers=one, timeout=10).status_code == 200
    assert requests.get(f"{url}/api/tags", headers=one, timeout=10).status_code == 429


def test_the_cli_sends_the_configured_key(keyed):
    from test_cli import rk

    listed = rk(["list"], url=keyed.url, env={"RKOLLAMA_API_KEY": "k-two"})
    assert listed.returncode == 0 and "tiny:latest" in listed.stdout, listed.stderr
    refused = rk(["list"], url=keyed.url, env={"RKOLLAMA_NO_AUTOSTART": "1"})
    assert refused.returncode == 1 and "unauthorized" in refused.stderr
