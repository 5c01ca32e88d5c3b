"""`/v1/responses` through the official `openai` SDK and plain HTTP: text answers streamed and
not, forced function calls, a free-form tool held to a Lark grammar, two-turn exchanges by
`previous_response_id` and by replaying items with `store: false`, and bad input.

Both test models run where a tool is forced: SmolLM2 (instruct) and Gemma 3 270M (base)."""

from __future__ import annotations

import json
import re

import jsonschema
import openai
import pytest
from conftest import ALIAS, PARIS_ANSWER, QUESTION, SYSTEM, assert_openai_error, sse_events
from test_agents import GEMMA, WEATHER

MODELS = [ALIAS, GEMMA]

WEATHER_TOOL = {"type": "function", "name": "get_weather", "description": "Current weather", "parameters": WEATHER,
                "strict": True}

# A patch in the shape Codex's `apply_patch` takes, small enough to check with a regex too (and
# bounded, so that a small model reaches its end within max_output_tokens).
PATCH_LARK = r"""
start: "*** Begin Patch\n" "*** Add File: " NAME "\n" line~1..3 "*** End Patch"
line: "+" TEXT "\n"
NAME: /[a-z]{1,12}\.txt/
TEXT: /[a-zA-Z ,.!]{0,40}/
"""
PATCH_RE = re.compile(r"\*\*\* Begin Patch\n\*\*\* Add File: [a-z]{1,12}\.txt\n(\+[a-zA-Z ,.!]{0,40}\n){1,3}\*\*\* End Patch")
PATCH_TOOL = {"type": "custom", "name": "apply_patch", "description": "Apply a patch to the workspace",
              "format": {"type": "grammar", "syntax": "lark", "definition": PATCH_LARK}}

DOCUMENTED_ORDER = ["response.created", "response.in_progress", "response.output_item.added"]


def stream_events(oai, **kwargs) -> list:
    events = list(oai.responses.create(stream=True, **kwargs))
    assert [e.sequence_number for e in events] == list(range(len(events))), "sequence numbers must count up from 0"
    assert [e.type for e in events[:3]] == DOCUMENTED_ORDER
    return events


def test_a_text_answer_streamed_and_not_is_the_same_answer(oai):
    ask = dict(model=ALIAS, instructions=SYSTEM, input=QUESTION, temperature=0)
    r = oai.responses.create(**ask)
    assert r.status == "completed" and r.object == "response" and r.id.startswith("resp_")
    assert r.output_text == PARIS_ANSWER
    assert r.model == ALIAS and r.instructions == SYSTEM
    assert r.usage.input_tokens > 10 and r.usage.output_tokens > 3
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    assert 0 <= r.usage.input_tokens_details.cached_tokens < r.usage.input_tokens

    events = stream_events(oai, **ask)
    kinds = [e.type for e in events]
    assert kinds[3] == "response.content_part.added" and kinds[-1] == "response.completed"
    assert kinds[-4:-1] == ["response.output_text.done", "response.content_part.done", "response.output_item.done"]
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    done = events[-1].response
    assert deltas == done.output_text == PARIS_ANSWER
    assert done.usage.input_tokens == r.usage.input_tokens
    # The same prompt a second time: its prefix comes from the neuron's prefix cache.
    assert done.usage.input_tokens_details.cached_tokens >= r.usage.input_tokens - 16


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_forced_function_tool_is_one_schema_valid_call(oai, model, stream):
    ask = dict(model=model, input="What is the weather in Paris right now?", tools=[WEATHER_TOOL],
               tool_choice={"type": "function", "name": "get_weather"}, parallel_tool_calls=False, temperature=0.8,
               max_output_tokens=256)
    if stream:
        events = stream_events(oai, **ask)
        deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
        done = [e for e in events if e.type == "response.function_call_arguments.done"]
        assert len(done) == 1 and done[0].arguments == deltas
        r = events[-1].response
    else:
        r = oai.responses.create(**ask)
    calls = [o for o in r.output if o.type == "function_call"]
    assert r.status == "completed" and len(calls) == 1, r.output
    assert calls[0].name == "get_weather" and calls[0].call_id.startswith("call_")
    jsonschema.validate(json.loads(calls[0].arguments), WEATHER)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_free_form_tool_with_a_lark_grammar_gets_input_the_grammar_accepts(oai, model, stream):
    ask = dict(model=model, input="Create hello.txt saying Hello, world.", tools=[PATCH_TOOL],
               tool_choice={"type": "custom", "name": "apply_patch"}, parallel_tool_calls=False, temperature=0.8,
               max_output_tokens=256)
    if stream:
        events = stream_events(oai, **ask)
        deltas = "".join(e.delta for e in events if e.type == "response.custom_tool_call_input.delta")
        done = [e for e in events if e.type == "response.custom_tool_call_input.done"]
        assert len(done) == 1 and done[0].input == deltas
        r = events[-1].response
    else:
        r = oai.responses.create(**ask)
    calls = [o for o in r.output if o.type == "custom_tool_call"]
    assert len(calls) == 1 and calls[0].name == "apply_patch", r.output
    assert PATCH_RE.fullmatch(calls[0].input), calls[0].input


def test_two_turns_by_previous_response_id_equal_the_same_turns_replayed_with_store_false(oai):
    first = oai.responses.create(model=ALIAS, instructions=SYSTEM, input="My name is Ada. Say hi to me.", temperature=0,
                                 max_output_tokens=40)
    assert first.status in ("completed", "incomplete") and first.output_text
    second = oai.responses.create(model=ALIAS, instructions=SYSTEM, previous_response_id=first.id,
                                  input="What is my name?", temperature=0, max_output_tokens=40)
    # The stored turn was replayed: the prompt holds the first exchange.
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    assert second.previous_response_id == first.id

    replayed = oai.responses.create(
        model=ALIAS, instructions=SYSTEM, store=False, temperature=0, max_output_tokens=40,
        input=[
            {"role": "user", "content": "My name is Ada. Say hi to me."},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": first.output_text}]},
            {"role": "user", "content": "What is my name?"},
        ],
    )
    assert replayed.usage.input_tokens == second.usage.input_tokens
    assert replayed.output_text == second.output_text

    # `store: false` keeps nothing to continue from.
    with pytest.raises(openai.NotFoundError) as e:
        oai.responses.create(model=ALIAS, previous_response_id=replayed.id, input="And again?")
    assert "not found" in str(e.value)


def test_an_agent_loop_by_previous_response_id_sends_only_the_tool_output(oai):
    call = oai.responses.create(model=ALIAS, input="What is the weather in Paris right now?", tools=[WEATHER_TOOL],
                                tool_choice="required", temperature=0, max_output_tokens=256)
    fc = [o for o in call.output if o.type == "function_call"][0]
    answer = oai.responses.create(
        model=ALIAS, previous_response_id=call.id, tools=[WEATHER_TOOL], temperature=0, max_output_tokens=60,
        input=[{"type": "function_call_output", "call_id": fc.call_id, "output": "Sunny, 24 degrees celsius"}],
    )
    assert answer.status in ("completed", "incomplete")
    # The stored call and this output were both replayed: the prompt holds the whole loop.
    assert answer.usage.input_tokens > call.usage.input_tokens + call.usage.output_tokens


def test_max_output_tokens_ends_an_incomplete_response(oai):
    r = oai.responses.create(model=ALIAS, input="Count from one to one hundred in words.", max_output_tokens=5,
                             temperature=0)
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.usage.output_tokens == 5


def test_codex_style_requests_are_accepted(http):
    """What Codex CLI sends besides the basics: developer messages, reasoning settings and items,
    hosted tools (left out), a namespace of functions, `include`, `prompt_cache_key`."""
    body = {
        "model": ALIAS, "stream": False, "store": False, "max_output_tokens": 8,
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Be brief."}]},
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "opaque"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Say hello"}]},
        ],
        "tools": [
            WEATHER_TOOL,
            PATCH_TOOL,
            {"type": "namespace", "name": "agents", "description": "sub-agents", "tools": [
                {"type": "function", "name": "spawn_agent", "parameters": {"type": "object", "properties": {}}}]},
            {"type": "web_search", "external_web_access": False},
        ],
        "tool_choice": "auto", "parallel_tool_calls": True, "reasoning": {"summary": "auto"},
        "include": ["reasoning.encrypted_content"], "prompt_cache_key": "session-1", "client_metadata": {"a": "b"},
    }
    r = http.post("/v1/responses", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["status"] in ("completed", "incomplete")


@pytest.mark.parametrize(
    "body, status, words",
    [
        ({"input": []}, 400, "empty"),
        ({"input": [{"type": "web_search_call", "id": "x"}]}, 400, "input[0]: items of type `web_search_call`"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, 400, "input[0].content[0]"),
        ({"input": 7}, 400, "`input` must be"),
        ({"input": "x", "tool_choice": "required"}, 400, "no tools"),
        ({"input": "x", "tools": [{"type": "teleport", "name": "t"}]}, 400, "tools[0]"),
        ({"input": "x", "tools": [{"type": "custom", "name": "p", "format": {"type": "grammar", "syntax": "lark",
                                                                              "definition": "start: ("}}],
          "tool_choice": {"type": "custom", "name": "p"}}, 400, "grammar"),
        ({"input": "x", "previous_response_id": "resp_gone"}, 404, "Previous response with id 'resp_gone' not found"),
        ({"input": "x " * 9000}, 400, "context"),
        ({"model": "no-such-model", "input": "x"}, 404, "no-such-model"),
    ],
    ids=["empty", "unknown-item", "image", "not-a-list", "required-no-tools", "unknown-tool", "bad-grammar",
         "unknown-previous", "over-context", "unknown-model"],
)
def test_bad_input_is_refused_in_the_openai_shape(http, body, status, words):
    r = http.post("/v1/responses", json={"model": ALIAS, **body})
    err = assert_openai_error(r, status)
    assert words in err["message"], err


def test_a_streamed_refusal_before_the_first_token_is_an_http_error_not_an_empty_stream(http):
    with http.stream("POST", "/v1/responses", json={"model": ALIAS, "input": [], "stream": True}) as r:
        assert r.status_code == 400
        assert r.headers["content-type"].startswith("application/json")
    with http.stream("POST", "/v1/responses", json={"model": ALIAS, "input": "hi", "stream": True,
                                                   "max_output_tokens": 2}) as r:
        events = sse_events(r.iter_lines())
    assert [e for e, _ in events][-1] == "response.incomplete"
