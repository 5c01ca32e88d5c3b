"""Raw HTTP: curl and httpx, malformed input, body limits and API keys."""

from __future__ import annotations

import json
import shutil
import subprocess

import httpx
import pytest
from conftest import (
    ALIAS,
    API_KEY,
    PARIS_ANSWER,
    PARIS_MESSAGES,
    QUESTION,
    REQUEST_TIMEOUT_S,
    SYSTEM,
    assert_anthropic_error,
    assert_healthy,
    assert_openai_error,
    openai_stream_text,
    sse_events,
)

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
JSON = {"content-type": "application/json"}

PARIS_CHAT = {"model": ALIAS, "messages": PARIS_MESSAGES, "temperature": 0, "max_tokens": 64}
ANTH_MESSAGE = {"model": ALIAS, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 5}


def curl(*args: str) -> tuple[int, str]:
    """Runs curl; returns (HTTP status, body). The status comes from -w on its own last line."""
    if shutil.which("curl") is None:
        pytest.fail("curl is not installed")
    p = subprocess.run(
        ["curl", "-sS", "--max-time", str(REQUEST_TIMEOUT_S), "-w", "\n%{http_code}", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=REQUEST_TIMEOUT_S + 10,
    )
    assert p.returncode == 0, f"curl exited {p.returncode}: {p.stderr}"
    body, _, status = p.stdout.rpartition("\n")
    return int(status), body


# ---------------------------------------------------------------------------------------------
# curl


def test_curl_chat(neuron):
    status, body = curl(f"{neuron}{CHAT}", "-H", "content-type: application/json", "-d", json.dumps(PARIS_CHAT))
    assert status == 200, body
    r = json.loads(body)
    assert r["choices"][0]["message"]["content"] == PARIS_ANSWER
    assert r["choices"][0]["finish_reason"] == "stop"
    assert r["usage"]["total_tokens"] == r["usage"]["prompt_tokens"] + r["usage"]["completion_tokens"]
    assert set(r["timings"]) >= {"ttft_ms", "prefill_tok_s", "decode_tok_s", "queue_ms"}


def test_curl_chat_stream(neuron):
    body = dict(PARIS_CHAT, stream=True)
    status, out = curl("-N", f"{neuron}{CHAT}", "-H", "content-type: application/json", "-d", json.dumps(body))
    assert status == 200, out
    events = sse_events(out.splitlines())
    assert events[-1] == (None, "[DONE]"), events[-3:]
    assert openai_stream_text(events) == PARIS_ANSWER
    chunks = [json.loads(d) for _, d in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_curl_messages(neuron):
    body = {
        "model": ALIAS,
        "system": SYSTEM,
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": 64,
        "temperature": 0,
    }
    status, out = curl(f"{neuron}{MESSAGES}", "-H", "content-type: application/json", "-d", json.dumps(body))
    assert status == 200, out
    r = json.loads(out)
    assert r["content"] == [{"type": "text", "text": PARIS_ANSWER}]
    assert r["stop_reason"] == "end_turn"


def test_health(http):
    r = http.get("/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"


def test_unknown_route_is_404_json(http, neuron):
    assert_openai_error(http.get("/v1/nope"), 404)
    assert_healthy(neuron)


# ---------------------------------------------------------------------------------------------
# Bad input: a 4xx in the route's dialect, and the neuron stays healthy.

BAD_BODIES = {
    "malformed-json": b'{"model": "helexa/small", "messages": [',
    "not-an-object": b"[1, 2, 3]",
    "empty-body": b"",
    "messages-wrong-type": json.dumps({"model": ALIAS, "messages": "x", "max_tokens": 5}).encode(),
    "model-wrong-type": json.dumps(
        {"model": 42, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    ).encode(),
    "unknown-role": json.dumps(
        {"model": ALIAS, "messages": [{"role": "wizard", "content": "hi"}], "max_tokens": 5}
    ).encode(),
    "invalid-utf8": b'{"model": "helexa/small", "max_tokens": 5, "messages": [{"role": "user", "content": "\xff\xfe\xc3"}]}',
    "content-not-text": json.dumps(
        {"model": ALIAS, "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]}
    ).encode(),
}


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_bad_chat_body_is_400_openai_shape(http, neuron, case):
    r = http.post(CHAT, content=BAD_BODIES[case], headers=JSON)
    assert_openai_error(r, 400, "invalid_request_error")
    assert_healthy(neuron)


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_bad_messages_body_is_400_anthropic_shape(http, neuron, case):
    r = http.post(MESSAGES, content=BAD_BODIES[case], headers=JSON)
    assert_anthropic_error(r, 400, "invalid_request_error")
    assert_healthy(neuron)


def test_unknown_role_names_the_role(http):
    err = assert_openai_error(http.post(CHAT, content=BAD_BODIES["unknown-role"], headers=JSON), 400)
    assert "wizard" in err["message"]
    err = assert_anthropic_error(http.post(MESSAGES, content=BAD_BODIES["unknown-role"], headers=JSON), 400)
    assert "wizard" in err["message"]


@pytest.mark.parametrize("bad", [{"temperature": 5}, {"top_p": 0}, {"n": 17}, {"max_tokens": -1}])
def test_bad_sampling_params_are_400(http, bad):
    assert_openai_error(http.post(CHAT, json=dict(PARIS_CHAT, **bad)), 400, "invalid_request_error")


def test_twenty_megabyte_body_is_413(http, neuron):
    big = json.dumps({"model": ALIAS, "max_tokens": 5, "messages": [{"role": "user", "content": "a" * (20 << 20)}]})
    assert_openai_error(http.post(CHAT, content=big, headers=JSON), 413)
    assert_anthropic_error(http.post(MESSAGES, content=big, headers=JSON), 413, "request_too_large")
    assert_healthy(neuron)
    # And the next ordinary request is served as usual.
    r = http.post(CHAT, json=PARIS_CHAT)
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"] == PARIS_ANSWER


def test_a_client_that_sends_its_whole_body_first_still_reads_its_413(neuron):
    """urllib writes the whole body before it reads a byte of the answer: the neuron must take
    the body in (bounded) before closing, or the client sees a broken pipe, not the 413."""
    import urllib.error
    import urllib.request

    big = json.dumps({"model": ALIAS, "max_tokens": 5, "messages": [{"role": "user", "content": "a" * (20 << 20)}]})
    for route, shape in ((CHAT, "openai"), (MESSAGES, "anthropic")):
        req = urllib.request.Request(f"{neuron}{route}", data=big.encode(), headers=JSON, method="POST")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S)
        assert e.value.code == 413
        body = json.loads(e.value.read())
        if shape == "openai":
            assert "larger than this server accepts" in body["error"]["message"]
        else:
            assert body["type"] == "error" and body["error"]["type"] == "request_too_large"
    assert_healthy(neuron)


def test_client_leaving_mid_stream_does_not_hurt(http, neuron):
    body = {
        "model": ALIAS,
        "messages": [{"role": "user", "content": "Tell me a long story."}],
        "max_tokens": 200,
        "stream": True,
    }
    with http.stream("POST", CHAT, json=body) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data:"):
                break  # leave after the first chunk
    assert_healthy(neuron)
    r = http.post(CHAT, json=PARIS_CHAT)
    assert r.json()["choices"][0]["message"]["content"] == PARIS_ANSWER


# ---------------------------------------------------------------------------------------------
# API keys (a neuron started with `[server] api_keys = ["secret-key"]`)


def test_no_key_is_401_in_both_shapes(keyed_neuron):
    r = httpx.post(f"{keyed_neuron}{CHAT}", json=PARIS_CHAT, timeout=REQUEST_TIMEOUT_S)
    assert_openai_error(r, 401)
    r = httpx.post(f"{keyed_neuron}{MESSAGES}", json=ANTH_MESSAGE, timeout=REQUEST_TIMEOUT_S)
    assert_anthropic_error(r, 401, "authentication_error")
    r = httpx.get(f"{keyed_neuron}/v1/models", timeout=REQUEST_TIMEOUT_S)
    assert_openai_error(r, 401)
    assert_healthy(keyed_neuron)


@pytest.mark.parametrize(
    "headers",
    [{"authorization": "Bearer wrong-key"}, {"x-api-key": "wrong-key"}, {"authorization": API_KEY}],
    ids=["bearer", "x-api-key", "no-bearer-prefix"],
)
def test_wrong_key_is_401(keyed_neuron, headers):
    r = httpx.post(f"{keyed_neuron}{CHAT}", json=PARIS_CHAT, headers=headers, timeout=REQUEST_TIMEOUT_S)
    assert_openai_error(r, 401)
    r = httpx.post(f"{keyed_neuron}{MESSAGES}", json=ANTH_MESSAGE, headers=headers, timeout=REQUEST_TIMEOUT_S)
    assert_anthropic_error(r, 401, "authentication_error")


@pytest.mark.parametrize(
    "headers",
    [{"authorization": f"Bearer {API_KEY}"}, {"x-api-key": API_KEY}],
    ids=["bearer", "x-api-key"],
)
def test_right_key_is_200(keyed_neuron, headers):
    r = httpx.post(f"{keyed_neuron}{CHAT}", json=PARIS_CHAT, headers=headers, timeout=REQUEST_TIMEOUT_S)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == PARIS_ANSWER
    r = httpx.post(f"{keyed_neuron}{MESSAGES}", json=ANTH_MESSAGE, headers=headers, timeout=REQUEST_TIMEOUT_S)
    assert r.status_code == 200, r.text
    assert r.json()["type"] == "message"
    r = httpx.get(f"{keyed_neuron}/v1/models", headers=headers, timeout=REQUEST_TIMEOUT_S)
    assert r.status_code == 200, r.text


def test_curl_with_key(keyed_neuron):
    status, body = curl(
        f"{keyed_neuron}{CHAT}",
        "-H",
        f"Authorization: Bearer {API_KEY}",
        "-H",
        "content-type: application/json",
        "-d",
        json.dumps(PARIS_CHAT),
    )
    assert status == 200, body
    assert json.loads(body)["choices"][0]["message"]["content"] == PARIS_ANSWER
    status, body = curl(f"{keyed_neuron}{CHAT}", "-H", "content-type: application/json", "-d", json.dumps(PARIS_CHAT))
    assert status == 401, body
    assert "API key" in json.loads(body)["error"]["message"]
