"""The official `openai` Python SDK against a real neuron."""

from __future__ import annotations

import openai
import pytest
from conftest import (
    ALIAS,
    API_KEY,
    MODEL_FILE,
    MODEL_ID,
    MODELS_DIR,
    PARIS_ANSWER,
    PARIS_MESSAGES,
    REQUEST_TIMEOUT_S,
)


def paris(oai: openai.OpenAI, model: str = ALIAS, **kw):
    return oai.chat.completions.create(model=model, messages=PARIS_MESSAGES, temperature=0, **kw)


# ---------------------------------------------------------------------------------------------
# Chat completions


def test_chat_greedy_answers_paris(oai):
    r = paris(oai, max_tokens=64)
    choice = r.choices[0]
    assert "Paris" in choice.message.content
    assert choice.message.content == PARIS_ANSWER
    assert choice.message.role == "assistant"
    assert choice.finish_reason == "stop"
    assert r.object == "chat.completion"
    assert r.id.startswith("chatcmpl-")
    assert r.usage.prompt_tokens > 0
    assert r.usage.completion_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_echoes_the_model_name_asked_for(oai):
    assert paris(oai, model=ALIAS, max_tokens=2).model == ALIAS
    assert paris(oai, model=MODEL_ID, max_tokens=2).model == MODEL_ID


def test_chat_reports_timings_extension(oai):
    timings = paris(oai, max_tokens=8).model_dump()["timings"]
    assert set(timings) >= {"ttft_ms", "prefill_tok_s", "decode_tok_s", "queue_ms"}
    assert timings["ttft_ms"] > 0
    assert timings["prefill_tok_s"] > 0


def test_chat_stream_matches_non_stream(oai):
    expected = paris(oai, max_tokens=64).choices[0].message.content
    chunks = list(paris(oai, max_tokens=64, stream=True, stream_options={"include_usage": True}))
    assert chunks, "no chunks"
    *content_chunks, last = chunks
    text = "".join(c.choices[0].delta.content or "" for c in content_chunks if c.choices)
    assert text == expected
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1, "every chunk carries the same id"
    assert all(c.model == ALIAS for c in chunks)
    finishes = [c.choices[0].finish_reason for c in content_chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    # include_usage: a final chunk with no choices and the totals.
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.prompt_tokens > 0
    assert last.usage.completion_tokens > 0
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert all(c.usage is None for c in content_chunks)


def test_chat_stream_without_include_usage_has_no_usage_chunk(oai):
    chunks = list(paris(oai, max_tokens=64, stream=True))
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == PARIS_ANSWER


def test_max_tokens_stops_at_length(oai):
    r = oai.chat.completions.create(
        model=ALIAS,
        messages=[{"role": "user", "content": "Tell me a long story about a dragon."}],
        temperature=0,
        max_tokens=5,
    )
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 5
    assert r.choices[0].message.content


def test_ignore_eos_generates_to_max_tokens_on_both_routes(oai):
    # The vLLM / llama.cpp extension that benchmarks of decode through the API rely on.
    ended = paris(oai, max_tokens=64)
    assert ended.choices[0].finish_reason == "stop"
    want = ended.usage.completion_tokens + 8
    r = paris(oai, max_tokens=want, extra_body={"ignore_eos": True})
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == want
    assert r.choices[0].message.content.startswith(PARIS_ANSWER)
    stream = oai.completions.create(
        model=ALIAS, prompt="The capital of France is", max_tokens=40, temperature=0,
        stream=True, stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
    )
    chunks = list(stream)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert chunks[-1].usage.completion_tokens == 40


def test_stop_string_is_not_emitted(oai):
    r = paris(oai, max_tokens=64, stop=["Paris"])
    content = r.choices[0].message.content
    assert "Paris" not in content
    assert content == PARIS_ANSWER.split("Paris")[0]
    assert r.choices[0].finish_reason == "stop"


def test_stop_string_in_stream(oai):
    chunks = list(paris(oai, max_tokens=64, stop="Paris", stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Paris" not in text
    assert text == PARIS_ANSWER.split("Paris")[0]
    assert chunks[-1].choices[0].finish_reason == "stop"


POEM = [{"role": "user", "content": "Write a short poem about the sea."}]


def sampled(oai, seed: int) -> str:
    r = oai.chat.completions.create(model=ALIAS, messages=POEM, temperature=1.0, max_tokens=16, seed=seed)
    return r.choices[0].message.content


def test_same_seed_same_text(oai):
    first = sampled(oai, 1234)
    assert first
    assert sampled(oai, 1234) == first


def test_different_seeds_differ(oai):
    # Any one pair could collide by chance; three all colliding means the seed is ignored.
    seen = []
    for a, b in [(1, 2), (3, 4), (5, 6)]:
        seen.append((sampled(oai, a), sampled(oai, b)))
        if seen[-1][0] != seen[-1][1]:
            return
    pytest.fail(f"every seed pair gave the same text: {seen}")


# ---------------------------------------------------------------------------------------------
# Legacy completions


COMPLETION_PROMPT = "The capital of France is"


def test_completion_non_stream(oai):
    r = oai.completions.create(model=ALIAS, prompt=COMPLETION_PROMPT, max_tokens=8, temperature=0)
    assert r.object == "text_completion"
    assert r.model == ALIAS
    assert r.choices[0].text.strip()
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0
    assert 0 < r.usage.completion_tokens <= 8
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_completion_stream_matches_non_stream(oai):
    expected = oai.completions.create(model=ALIAS, prompt=COMPLETION_PROMPT, max_tokens=8, temperature=0)
    chunks = list(
        oai.completions.create(
            model=ALIAS,
            prompt=COMPLETION_PROMPT,
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == expected.choices[0].text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [expected.choices[0].finish_reason]
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == expected.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == expected.usage.prompt_tokens


# ---------------------------------------------------------------------------------------------
# Models


def test_models_list_has_id_and_alias(oai):
    paris(oai, max_tokens=1)  # make sure the model is loaded
    models = {m.id: m.model_dump() for m in oai.models.list()}
    assert MODEL_ID in models and ALIAS in models, list(models)
    size = (MODELS_DIR / MODEL_FILE).stat().st_size
    for mid in (MODEL_ID, ALIAS):
        assert models[mid]["object"] == "model"
        assert models[mid]["loaded"] is True
        assert models[mid]["size_bytes"] == size
    assert models[ALIAS]["alias_of"] == MODEL_ID
    assert "alias_of" not in models[MODEL_ID]


def test_models_retrieve(oai):
    alias = oai.models.retrieve(ALIAS).model_dump()
    assert alias["id"] == ALIAS
    assert alias["alias_of"] == MODEL_ID
    assert isinstance(alias["loaded"], bool)
    full = oai.models.retrieve(MODEL_ID)
    assert full.id == MODEL_ID


def test_models_retrieve_unknown(oai):
    with pytest.raises(openai.NotFoundError):
        oai.models.retrieve("no-such/model")


# ---------------------------------------------------------------------------------------------
# Errors


def test_unknown_model_is_not_found(oai):
    with pytest.raises(openai.NotFoundError) as e:
        oai.chat.completions.create(model="no-such-model", messages=PARIS_MESSAGES, max_tokens=5)
    assert "no-such-model" in e.value.message


def test_empty_messages_is_bad_request(oai):
    with pytest.raises(openai.BadRequestError) as e:
        oai.chat.completions.create(model=ALIAS, messages=[], max_tokens=5)
    assert "messages" in e.value.message


def test_max_tokens_zero_is_bad_request(oai):
    with pytest.raises(openai.BadRequestError) as e:
        paris(oai, max_tokens=0)
    assert "max_tokens" in e.value.message


def test_prompt_over_context_is_bad_request(oai):
    long = "hello " * 10000  # > SmolLM2's 8192-token context
    with pytest.raises(openai.BadRequestError) as e:
        oai.chat.completions.create(model=ALIAS, messages=[{"role": "user", "content": long}], max_tokens=5)
    assert "context" in e.value.message


def test_prompt_over_context_is_bad_request_when_streaming(oai):
    long = "hello " * 10000
    with pytest.raises(openai.BadRequestError) as e:
        list(
            oai.chat.completions.create(
                model=ALIAS, messages=[{"role": "user", "content": long}], max_tokens=5, stream=True
            )
        )
    assert "context" in e.value.message


def test_api_key_checked_by_keyed_neuron(keyed_neuron):
    def client(key):
        return openai.OpenAI(base_url=f"{keyed_neuron}/v1", api_key=key, max_retries=0, timeout=REQUEST_TIMEOUT_S)

    with pytest.raises(openai.AuthenticationError):
        client("wrong-key").models.list()
    with pytest.raises(openai.AuthenticationError):
        paris(client("wrong-key"), max_tokens=1)
    assert paris(client(API_KEY), max_tokens=64).choices[0].message.content == PARIS_ANSWER
