"""Claude Code itself (the CLI from npm, pinned by .ci/run) against a real neuron.

`claude -p --max-turns 1` runs one turn against `ANTHROPIC_BASE_URL`, under Claude Code's own
system prompt and with its tools. One neuron serves both test models at temperature 0 (Claude
Code sends none, and Anthropic's default of 1 makes a small model's answers a lottery), each
also reached through a glob alias. The tool set is cut only as far as the model's context
needs: Gemma 3's 32k holds the default 12 tools (12 829 tokens); SmolLM2's 8192 holds 8 of them
(7 446 tokens with the four largest disallowed), and with all 12 (12 807 tokens) Claude Code
shows cortex's context error. With `--max-turns 1` a tool call would end the run as an error,
so exit 0 means the model answered in text and ended its turn.

Environment: CLAUDE_BIN (default .ci/claude-code/node_modules/.bin/claude); without it the
tests skip, unless CORTEX_REQUIRE_CLAUDE is set (CI), where they fail.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from conftest import MODEL_FILE, MODELS_DIR, REPO, _finish, _start

CLAUDE = Path(os.environ.get("CLAUDE_BIN", REPO / ".ci" / "claude-code" / "node_modules" / ".bin" / "claude"))
GEMMA_FILE = "gemma-3-270m.Q4_K_M.gguf"
QUESTION = "What is the capital of France?"
TEMPLATE_TOKENS = re.compile(r"<\|im_start\|>|<\|im_end\|>|<start_of_turn>|<end_of_turn>|<\|endoftext\|>|<eos>")
# A hang guard, not a speed bound: SmolLM2's 7.4k-token prompt takes about 2 minutes to its
# first token in CI's debug build on 2 cores, and several times that on a busy machine.
TIMEOUT_S = 1800

# Per model: a name only a glob alias resolves, and the tools its context cannot hold. The names
# are ones Claude Code does not know: for its own (claude-sonnet-4-5, …) it sends a system prompt
# four times as long, which no tool set fits into SmolLM2's context.
MODELS = {
    "smollm2": ("claude-small-1", ["--disallowedTools", "Agent,Workflow,ScheduleWakeup,ReportFindings"]),
    "gemma": ("claude-tiny-1", []),
}

if not CLAUDE.is_file():
    why = f"Claude Code not installed at {CLAUDE} (.ci/run installs it; or set CLAUDE_BIN)"
    if os.environ.get("CORTEX_REQUIRE_CLAUDE"):
        pytest.fail(why, pytrace=False)
    pytest.skip(why, allow_module_level=True)


@pytest.fixture(scope="module")
def neuron_for_claude(tmp_path_factory):
    models = tmp_path_factory.mktemp("claude-models") / "models.toml"
    models.write_text(
        f'[models."smollm2"]\npath = "{MODELS_DIR / MODEL_FILE}"\ntemperature = 0\n\n'
        f'[models."gemma"]\npath = "{MODELS_DIR / GEMMA_FILE}"\ntemperature = 0\n\n'
        '[aliases]\n"claude-small-*" = "smollm2"\n"claude-tiny-*" = "gemma"\n'
    )
    n = _start("claude-neuron", tmp_path_factory, config=f'models_config = "{models}"\n')
    # Claude Code writes its working directory and home into the system prompt, ahead of the
    # tools: the same two for every run let the prefix cache serve the repeats.
    n.claude_cwd = tmp_path_factory.mktemp("claude-cwd")
    n.claude_home = tmp_path_factory.mktemp("claude-home")
    yield n
    _finish(n)


def claude(neuron, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {
        "PATH": os.environ["PATH"],
        "HOME": str(neuron.claude_home),
        "ANTHROPIC_BASE_URL": neuron.url,
        "ANTHROPIC_API_KEY": "unused",
        # No telemetry, update checks or other calls out of the machine.
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        # Bounds a run that would not end its turn (it then fails, as it should).
        "CLAUDE_CODE_MAX_OUTPUT_TOKENS": "256",
        # Claude Code gives up on a request after 5 minutes and sends it again, which on a slow
        # machine starts the long prefill over (cortex stops the abandoned one).
        "API_TIMEOUT_MS": str(TIMEOUT_S * 1000),
        **(env or {}),
    }
    return subprocess.run(
        [str(CLAUDE), "-p", *args],
        env=full_env,
        cwd=neuron.claude_cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )


def generated_by(neuron) -> list[str]:
    """The model of every generation the neuron has logged, in order."""
    return re.findall(r"generating request=\S+ model=(\S+)", neuron.log())


def answer(neuron, model: str, fmt: str, args: list[str], env=None) -> str:
    before = len(generated_by(neuron))
    r = claude(neuron, QUESTION, "--max-turns", "1", "--output-format", fmt, *args, env=env)
    assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    if fmt == "json":
        out = json.loads(r.stdout)
        assert out["is_error"] is False and out["stop_reason"] == "end_turn", out
        text = out["result"]
    else:
        text = r.stdout
    assert text.strip() and not TEMPLATE_TOKENS.search(text), text
    served = generated_by(neuron)[before:]
    assert served and set(served) == {model}, f"Claude Code's requests went to {served}, not {model}"
    return text


# Grouped by model: a model idle past its keep-alive is unloaded with its prefix cache, and the
# runs of one model share their long prefill (SmolLM2's takes minutes in CI's debug build).
CASES = [(m, route, fmt) for m in MODELS for route in ("environment", "glob") for fmt in ("text", "json")]


@pytest.mark.parametrize("model, route, fmt", CASES)
def test_claude_code_answers_under_its_own_system_prompt(neuron_for_claude, model, route, fmt):
    glob_name, tools = MODELS[model]
    # The environment names the model by its glob name too: Claude Code writes the name into
    # its prompt, and the same name lets both routes share one prefill.
    env = {f"ANTHROPIC_DEFAULT_{tier}_MODEL": glob_name for tier in ("SONNET", "HAIKU", "OPUS")}
    name, env = ("sonnet", env) if route == "environment" else (glob_name, None)
    answer(neuron_for_claude, model, fmt, ["--model", name, *tools], env=env)


def test_claude_code_answers_right_under_a_short_system_prompt(neuron_for_claude):
    # Under Claude Code's own prompt a 135M model answers, but not well; a prompt its size
    # shows that the answer Claude Code prints is the model's (and that it is right).
    short = ["--tools", "", "--system-prompt", "You are a helpful assistant.", "--model", "smollm2"]
    assert "Paris" in answer(neuron_for_claude, "smollm2", "json", short)


def test_claude_code_shows_the_context_error_with_its_full_tool_set(neuron_for_claude):
    r = claude(neuron_for_claude, "Say hello", "--max-turns", "1", "--model", "smollm2")
    assert r.returncode != 0, r.stdout
    shown = (r.stdout + r.stderr).lower()
    assert "prompt is too long" in shown, f"stdout: {r.stdout}\nstderr: {r.stderr}"
