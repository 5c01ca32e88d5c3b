"""Agents through the official SDKs: forced tool calls, JSON-schema answers, an agent loop in
both dialects, several choices, log-probabilities, and the bad input agents send.

Both test models run: SmolLM2 (instruct) and Gemma 3 270M (a base model with no chat
template, which the grammar makes a valid tool caller all the same). Seeded cases run
concurrently, so the neuron batches them as it would a busy agent fleet.
"""

from __future__ import annotations

import json
import math
import subprocess
from concurrent.futures import ThreadPoolExecutor

import anthropic
import jsonschema
import pytest
from conftest import ALIAS, CORTEX_BIN, MODEL_FILE, MODELS_DIR, assert_anthropic_error, assert_healthy, assert_openai_error

GEMMA = "gemma-3-270m.Q4_K_M"
MODELS = [ALIAS, GEMMA]
MAX_TOKENS = 512

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "City name"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TIME = {
    "type": "object",
    "properties": {"timezone": {"type": "string"}},
    "required": ["timezone"],
    "additionalProperties": False,
}
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}
OAI_TOOLS = [
    {"type": "function", "function": {"name": n, "description": f"{n.replace('_', ' ')}", "parameters": s}}
    for n, s in SCHEMAS.items()
]
ANTH_TOOLS = [{"name": n, "description": f"{n.replace('_', ' ')}", "input_schema": s} for n, s in SCHEMAS.items()]
ASK = [{"role": "user", "content": "What is the weather in Paris right now?"}]


def concurrently(fn, cases, workers: int = 8):
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, cases))


def oai_call(oai, model: str, choice, seed: int, stream: bool):
    """A forced call through the OpenAI SDK: (finish_reason, [(name, arguments as parsed JSON)])."""
    # A named tool is one call; `required` leaves the model free to make several.
    kwargs = dict(
        model=model, messages=ASK, tools=OAI_TOOLS, tool_choice=choice, max_tokens=MAX_TOKENS, temperature=0.8, seed=seed,
        parallel_tool_calls=choice == "required",
    )
    if not stream:
        r = oai.chat.completions.create(**kwargs)
        c = r.choices[0]
        assert c.message.content is None, c.message
        return c.finish_reason, [(t.function.name, json.loads(t.function.arguments)) for t in c.message.tool_calls]
    calls: dict[int, list] = {}
    finish = None
    for chunk in oai.chat.completions.create(stream=True, **kwargs):
        for ch in chunk.choices:
            for d in ch.delta.tool_calls or []:
                if d.id is not None:
                    assert d.id.startswith("call_") and d.function.name, d
                    calls[d.index] = [d.function.name, ""]
                calls[d.index][1] += d.function.arguments or ""
            finish = ch.finish_reason or finish
    return finish, [(n, json.loads(a)) for _, (n, a) in sorted(calls.items())]


def anth_call(anth, model: str, choice, seed: int, stream: bool):
    """A forced call through the Anthropic SDK: (stop_reason, [(name, input)])."""
    # anthropic>=2 no longer takes `temperature` as a keyword; the API still accepts the field.
    # `seed` is cortex's extension: unseeded, a base model at 0.8 now and then loops inside a
    # string until max_tokens, and such a run could not be told apart or repeated.
    kwargs = dict(
        model=model, messages=ASK, tools=ANTH_TOOLS, tool_choice=choice, max_tokens=MAX_TOKENS,
        extra_body={"temperature": 0.8, "seed": seed},
    )
    if stream:
        with anth.messages.stream(**kwargs) as s:
            m = s.get_final_message()
    else:
        m = anth.messages.create(**kwargs)
    uses = [b for b in m.content if b.type == "tool_use"]
    assert all(u.id.startswith("toolu_") for u in uses), m
    return m.stop_reason, [(u.name, u.input) for u in uses]


@pytest.mark.parametrize("model", MODELS)
def test_forced_tool_calls_are_schema_valid_on_every_seeded_run(oai, anth, model):
    """20 runs per model, streamed and not: required / named (OpenAI), any / tool (Anthropic)."""
    named_oai = {"type": "function", "function": {"name": "get_weather"}}
    modes = [
        ("oai", "required"),
        ("oai", named_oai),
        ("anth", {"type": "any"}),
        ("anth", {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}),
    ]
    cases = [(mode, seed) for seed in range(5) for mode in modes]

    def run(case):
        (dialect, choice), seed = case
        stream = seed % 2 == 0
        if dialect == "oai":
            return oai_call(oai, model, choice, seed, stream)
        return anth_call(anth, model, choice, seed, stream)

    for ((dialect, choice), seed), (finish, calls) in zip(cases, concurrently(run, cases)):
        what = f"{dialect} {choice} seed {seed}"
        assert finish == ("tool_calls" if dialect == "oai" else "tool_use"), f"{what}: {finish} {calls}"
        assert calls, what
        for name, args in calls:
            jsonschema.validate(args, SCHEMAS[name])
            if choice == named_oai or (isinstance(choice, dict) and choice.get("type") == "tool"):
                assert name == "get_weather", what
        if choice == named_oai or (isinstance(choice, dict) and choice.get("type") == "tool"):
            assert len(calls) == 1, f"{what}: parallel calls were off: {calls}"


def test_json_schema_answers_parse_and_validate_on_every_seeded_run(oai):
    schema = {
        "type": "object",
        "properties": {
            "capital": {"type": "string"},
            "population_millions": {"type": "number"},
            "landmarks": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
        },
        "required": ["capital", "population_millions", "landmarks"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "city", "schema": schema, "strict": True}}

    def run(seed):
        r = oai.chat.completions.create(
            model=ALIAS,
            messages=[{"role": "user", "content": "Describe the capital of France as JSON."}],
            response_format=fmt,
            max_tokens=MAX_TOKENS,
            temperature=0.8,
            seed=seed,
        )
        return r.choices[0]

    for seed, c in zip(range(20), concurrently(run, range(20))):
        assert c.finish_reason == "stop", f"seed {seed}: {c.finish_reason}: {c.message.content}"
        jsonschema.validate(json.loads(c.message.content), schema)
    # json_object: any JSON object.
    r = oai.chat.completions.create(
        model=GEMMA,
        messages=[{"role": "user", "content": "Give me a JSON object."}],
        response_format={"type": "json_object"},
        max_tokens=MAX_TOKENS,
        temperature=0,
    )
    assert isinstance(json.loads(r.choices[0].message.content), dict)


def weather(args: dict) -> str:
    """The 'tool' the agent loops call."""
    return json.dumps({"city": args.get("city"), "temperature": 18, "unit": args.get("unit", "celsius")})


@pytest.mark.parametrize("model", MODELS)
def test_an_openai_agent_loop_of_three_rounds(oai, model):
    messages = [{"role": "system", "content": "You are a weather assistant."}, *ASK]
    for round_ in range(3):
        r = oai.chat.completions.create(
            model=model,
            messages=messages,
            tools=OAI_TOOLS,
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            parallel_tool_calls=False,
            max_tokens=MAX_TOKENS,
            temperature=0,
        )
        msg = r.choices[0].message
        assert r.choices[0].finish_reason == "tool_calls", f"round {round_}: {r}"
        assert len(msg.tool_calls) == 1
        call = msg.tool_calls[0]
        args = json.loads(call.function.arguments)
        jsonschema.validate(args, WEATHER)
        # The client replays the history: the assistant's call (content null) and the result.
        messages.append(msg.model_dump(exclude_none=True))
        messages.append({"role": "tool", "tool_call_id": call.id, "content": weather(args)})
        if round_ < 2:
            messages.append({"role": "user", "content": "And in Berlin?" if round_ == 0 else "And in Rome?"})
    final = oai.chat.completions.create(
        model=model, messages=messages, tools=OAI_TOOLS, tool_choice="none", max_tokens=48, temperature=0
    )
    c = final.choices[0]
    assert c.finish_reason in ("stop", "length") and not c.message.tool_calls, c
    assert c.message.content, c


@pytest.mark.parametrize("model", MODELS)
def test_an_anthropic_agent_loop_of_three_rounds(anth, model):
    messages = list(ASK)
    for round_ in range(3):
        m = anth.messages.create(
            model=model,
            messages=messages,
            tools=ANTH_TOOLS,
            tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
            max_tokens=MAX_TOKENS,
            extra_body={"temperature": 0},
        )
        assert m.stop_reason == "tool_use", f"round {round_}: {m}"
        uses = [b for b in m.content if b.type == "tool_use"]
        assert len(uses) == 1, m
        jsonschema.validate(uses[0].input, WEATHER)
        messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in m.content]})
        result = {"type": "tool_result", "tool_use_id": uses[0].id, "content": weather(uses[0].input)}
        follow = [{"type": "text", "text": "And in Berlin?" if round_ == 0 else "And in Rome?"}] if round_ < 2 else []
        messages.append({"role": "user", "content": [result, *follow]})
    final = anth.messages.create(
        model=model, messages=messages, tools=ANTH_TOOLS, tool_choice={"type": "none"}, max_tokens=48,
        extra_body={"temperature": 0},
    )
    assert final.stop_reason in ("end_turn", "max_tokens"), final
    assert all(b.type == "text" for b in final.content) and final.content[0].text, final


def test_n_returns_that_many_choices_streamed_and_not(oai):
    kwargs = dict(model=ALIAS, messages=ASK, max_tokens=8, temperature=0.9, seed=3, n=3)
    r = oai.chat.completions.create(**kwargs)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert all(c.message.content for c in r.choices)
    finished = set()
    for chunk in oai.chat.completions.create(stream=True, **kwargs):
        finished |= {c.index for c in chunk.choices if c.finish_reason}
    assert finished == {0, 1, 2}


def debug_logprobs(prompt: str) -> tuple[int, list[float]]:
    """`cortex debug logits` on a raw prompt: its token count and log-softmax."""
    out = subprocess.run(
        [str(CORTEX_BIN), "debug", "logits", "-m", str(MODELS_DIR / MODEL_FILE), "-p", prompt, "--json"],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    doc = json.loads(out.stdout)
    logits = doc["logits"]
    top = max(logits)
    lse = top + math.log(sum(math.exp(x - top) for x in logits))
    return len(doc["tokens"]), [x - lse for x in logits]


def test_logprobs_list_the_alternatives_and_match_the_engines_own_logits(oai):
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a colour."}]
    r = oai.chat.completions.create(
        model=ALIAS, messages=messages, max_tokens=6, temperature=0, logprobs=True, top_logprobs=5
    )
    content = r.choices[0].logprobs.content
    assert content and all(len(t.top_logprobs) == 5 for t in content), content
    for t in content:
        # Greedy: the chosen token is the most likely, and alternatives come most likely first.
        assert t.top_logprobs[0].logprob == pytest.approx(t.logprob, abs=1e-6)
        assert [a.logprob for a in t.top_logprobs] == sorted((a.logprob for a in t.top_logprobs), reverse=True)
        assert bytes(t.bytes).decode("utf-8", "replace") == t.token or t.token
    # SmolLM2's template renders these two messages as ChatML.
    rendered = (
        "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n"
    )
    n_tokens, reference = debug_logprobs(rendered)
    assert n_tokens == r.usage.prompt_tokens, "the rendered prompt differs from the server's"
    first = content[0]
    best = max(range(len(reference)), key=reference.__getitem__)
    assert first.logprob == pytest.approx(reference[best], abs=1e-3)
    # /v1/completions on the same text: the legacy logprobs shape, the same number.
    c = oai.completions.create(model=ALIAS, prompt=rendered, max_tokens=3, temperature=0, logprobs=5)
    lp = c.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset)
    assert lp.token_logprobs[0] == pytest.approx(reference[best], abs=1e-3)
    assert len(lp.top_logprobs[0]) == 5


BAD_OAI = {
    "tool without a name": {"tools": [{"type": "function", "function": {"parameters": {"type": "object"}}}]},
    "parameters not an object": {"tools": [{"type": "function", "function": {"name": "f", "parameters": "object"}}]},
    "schema that does not compile": {
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "strin"}}}],
        "tool_choice": "required",
    },
    "tool_choice naming a missing tool": {
        "tools": OAI_TOOLS,
        "tool_choice": {"type": "function", "function": {"name": "get_stock_price"}},
    },
    "n over 16": {"n": 17},
    "top_logprobs over 20": {"logprobs": True, "top_logprobs": 21},
}


@pytest.mark.parametrize("case", sorted(BAD_OAI))
def test_bad_tool_input_is_a_400_in_the_openai_shape(http, neuron, case):
    body = {"model": ALIAS, "messages": ASK, "max_tokens": 8, **BAD_OAI[case]}
    assert_openai_error(http.post("/v1/chat/completions", json=body), 400, "invalid_request_error")
    assert_healthy(neuron)


def test_a_tool_result_for_no_call_is_a_400_in_both_dialects(http, neuron):
    history = [*ASK, {"role": "tool", "tool_call_id": "call_nope", "content": "18 C"}]
    err = assert_openai_error(http.post("/v1/chat/completions", json={"model": ALIAS, "messages": history}), 400)
    assert "call_nope" in err["message"]
    result = {"type": "tool_result", "tool_use_id": "toolu_nope", "content": "18 C"}
    body = {"model": ALIAS, "max_tokens": 8, "messages": [*ASK, {"role": "user", "content": [result]}]}
    err = assert_anthropic_error(http.post("/v1/messages", json=body), 400)
    assert "toolu_nope" in err["message"]
    server_tool = {"type": "web_search_20250305", "name": "web_search"}
    body = {"model": ALIAS, "max_tokens": 8, "messages": ASK, "tools": [server_tool]}
    err = assert_anthropic_error(http.post("/v1/messages", json=body), 400)
    assert "web_search_20250305" in err["message"]
    assert_healthy(neuron)


def test_anthropic_sdk_reports_bad_tools_as_bad_requests(anth):
    with pytest.raises(anthropic.BadRequestError):
        anth.messages.create(
            model=ALIAS, messages=ASK, max_tokens=8, tools=ANTH_TOOLS, tool_choice={"type": "tool", "name": "nope"}
        )
