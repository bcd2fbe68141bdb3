"""Ollama's account and cloud routes: Ollama's shapes and texts for a daemon without a cloud."""

import requests

from rkollama.models.catalog import Catalog


def test_status_says_the_cloud_is_disabled(fake_server):
    reply = requests.get(f"{fake_server.url}/api/status", timeout=10)
    assert reply.status_code == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    assert reply.json() == {"cloud": {"disabled": True, "source": "config"}}


def test_account_routes_answer_in_ollamas_shape(http):
    me = http.post("/api/me")
    assert me.status_code == 403
    assert me.get_json()["error"].startswith("ollama cloud is disabled: ")
    for response in (http.post("/api/signout"), http.delete("/api/user/keys/c3NoLWVkMjU1MTk")):
        assert response.status_code == 401
        assert response.get_json() == {"error": "you are not currently signed in"}


def test_web_search_and_fetch_check_the_body_then_refuse(http):
    for path, what in (("/api/experimental/web_search", "web search is unavailable"),
                       ("/api/experimental/web_fetch", "web fetch is unavailable")):
        empty = http.post(path, data=b"  ")
        assert (empty.status_code, empty.get_json()) == (400, {"error": "missing request body"})
        asked = http.post(path, json={"query": "rockchip npu"})
        assert (asked.status_code, asked.get_json()) == (403, {"error": f"ollama cloud is disabled: {what}"})


def test_model_recommendations_are_the_catalogue_for_this_machine(http):
    reply = http.get("/api/experimental/model-recommendations")
    assert reply.status_code == 200
    items = reply.get_json()["recommendations"]
    names = [item["model"] for item in items]
    expected = {f"{family.name}:{tag}" for family in Catalog().families()
                for tag in family.data["tags"] if family.entry(str(tag), "cpu") is not None}
    assert set(names) == expected and len(names) == len(expected)
    assert "smollm2:135m" in names
    assert all(item["description"] for item in items)
    assert all(isinstance(item.get("context_length", 1), int) for item in items)


def test_other_methods_stay_plain_404_or_405(http):
    assert http.get("/api/me").status_code == 405
    assert http.get("/api/experimental/nothing").status_code == 404
