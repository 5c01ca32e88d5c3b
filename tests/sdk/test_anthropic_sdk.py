"""The official `anthropic` Python SDK against a real neuron."""

from __future__ import annotations

import json

import anthropic
import pytest
from conftest import (
    ALIAS,
    API_KEY,
    MODEL_ID,
    PARIS_ANSWER,
    QUESTION,
    REQUEST_TIMEOUT_S,
    SYSTEM,
    assert_anthropic_error,
    prompt_tokens,
    sse_events,
)

USER = [{"role": "user", "content": QUESTION}]
# anthropic>=2 no longer takes `temperature` as a keyword; the API still accepts the field.
GREEDY = {"extra_body": {"temperature": 0}}


def paris(anth: anthropic.Anthropic, system=SYSTEM, **kw):
    kw.setdefault("max_tokens", 64)
    return anth.messages.create(model=ALIAS, system=system, messages=USER, **GREEDY, **kw)


def text_of(msg) -> str:
    assert [b.type for b in msg.content] == ["text"], msg.content
    return msg.content[0].text


def test_messages_greedy_answers_paris(anth):
    m = paris(anth)
    assert "Paris" in text_of(m)
    assert text_of(m) == PARIS_ANSWER
    assert m.type == "message"
    assert m.role == "assistant"
    assert m.id.startswith("msg_")
    assert m.model == ALIAS
    assert m.stop_reason == "end_turn"
    assert m.stop_sequence is None
    assert m.usage.input_tokens > 0
    assert m.usage.output_tokens > 0


def test_messages_model_by_full_id(anth):
    m = anth.messages.create(model=MODEL_ID, system=SYSTEM, messages=USER, max_tokens=64, **GREEDY)
    assert m.model == MODEL_ID
    assert text_of(m) == PARIS_ANSWER


def test_system_as_text_blocks(anth):
    m = paris(anth, system=[{"type": "text", "text": SYSTEM}])
    assert text_of(m) == PARIS_ANSWER


def test_stop_sequence(anth):
    m = paris(anth, stop_sequences=["Paris"])
    assert m.stop_reason == "stop_sequence"
    assert m.stop_sequence == "Paris"
    assert "Paris" not in text_of(m)
    assert text_of(m) == PARIS_ANSWER.split("Paris")[0]


def test_max_tokens_reached(anth):
    m = paris(anth, max_tokens=3)
    assert m.stop_reason == "max_tokens"
    assert m.stop_sequence is None
    assert m.usage.output_tokens == 3


def test_stream_matches_non_stream(anth):
    expected = text_of(paris(anth))
    with anth.messages.stream(model=ALIAS, system=SYSTEM, messages=USER, max_tokens=64, **GREEDY) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == expected
    assert text_of(final) == expected
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0
    assert final.usage.input_tokens > 0


def test_stream_stop_sequence(anth):
    with anth.messages.stream(
        model=ALIAS, system=SYSTEM, messages=USER, max_tokens=64, stop_sequences=["Paris"], **GREEDY
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == PARIS_ANSWER.split("Paris")[0]
    assert final.stop_reason == "stop_sequence"
    assert final.stop_sequence == "Paris"


def test_raw_stream_event_order(http):
    body = {"model": ALIAS, "system": SYSTEM, "messages": USER, "max_tokens": 64, "temperature": 0, "stream": True}
    with http.stream("POST", "/v1/messages", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r.iter_lines())
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"], names
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"], names
    middle = names[3:-3]
    assert middle and set(middle) == {"content_block_delta"}, names
    payloads = [json.loads(data) for _, data in events]
    # Each event's data names itself, as in Anthropic's API.
    assert [p["type"] for p in payloads] == names
    assert "".join(p["delta"]["text"] for p in payloads[3:-3]) == PARIS_ANSWER
    start = payloads[0]["message"]
    assert start["usage"]["input_tokens"] > 0 and start["model"] == ALIAS
    delta = payloads[-2]
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert delta["usage"]["output_tokens"] > 0


def test_count_tokens_matches_usage(anth):
    counted = anth.messages.count_tokens(model=ALIAS, system=SYSTEM, messages=USER)
    assert counted.input_tokens > 0
    assert counted.input_tokens == prompt_tokens(paris(anth, max_tokens=1).usage)
    blocks = anth.messages.count_tokens(model=ALIAS, system=[{"type": "text", "text": SYSTEM}], messages=USER)
    assert blocks.input_tokens == counted.input_tokens


def test_unknown_model_is_not_found(anth):
    with pytest.raises(anthropic.NotFoundError) as e:
        anth.messages.create(model="no-such-model", messages=USER, max_tokens=5)
    assert "no-such-model" in e.value.message


def test_count_tokens_unknown_model_is_not_found(anth):
    with pytest.raises(anthropic.NotFoundError):
        anth.messages.count_tokens(model="no-such-model", messages=USER)


def test_empty_messages_is_bad_request(anth):
    with pytest.raises(anthropic.BadRequestError) as e:
        anth.messages.create(model=ALIAS, messages=[], max_tokens=5)
    assert "messages" in e.value.message


def test_missing_max_tokens_is_400_in_anthropic_shape(http):
    r = http.post("/v1/messages", json={"model": ALIAS, "messages": USER})
    err = assert_anthropic_error(r, 400, "invalid_request_error")
    assert "max_tokens" in err["message"]


def test_api_key_checked_by_keyed_neuron(keyed_neuron):
    def client(key):
        return anthropic.Anthropic(base_url=keyed_neuron, api_key=key, max_retries=0, timeout=REQUEST_TIMEOUT_S)

    with pytest.raises(anthropic.AuthenticationError):
        paris(client("wrong-key"), max_tokens=1)
    assert text_of(paris(client(API_KEY))) == PARIS_ANSWER
