"""Claude Code itself (the CLI from npm, pinned by .ci/run) against a real neuron.

`claude -p` runs one turn against `ANTHROPIC_BASE_URL`. The neuron serves SmolLM2 with a
models.toml that sets its temperature to 0 (Claude Code sends none, and Anthropic's default
of 1 makes a 135M model's answers a lottery) and sends every `claude-*` name to it. Claude
Code's own system prompt is replaced: under it, the 135M model does not end its turn, and
Claude Code fails an answer cut at `max_tokens`. The tool set is cut to none: its first request
with the default tools is 12 567 SmolLM2 tokens, over the model's 8192 (the last test shows
what a user then sees).

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
QUESTION = "What is the capital of France?"
TEMPLATE_TOKENS = re.compile(r"<\|im_start\|>|<\|im_end\|>|<start_of_turn>|<end_of_turn>|<\|endoftext\|>")
TIMEOUT_S = 600

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
        '[aliases]\n"claude-*" = "smollm2"\n'
    )
    n = _start("claude-neuron", tmp_path_factory, config=f'models_config = "{models}"\n')
    yield n
    _finish(n)


def claude(neuron, tmp_path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    full_env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": neuron.url,
        "ANTHROPIC_API_KEY": "unused",
        # No telemetry, update checks or other calls out of the machine.
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        # Bounds a run that would not end its turn (it then fails, as it should).
        "CLAUDE_CODE_MAX_OUTPUT_TOKENS": "256",
        **(env or {}),
    }
    return subprocess.run(
        [str(CLAUDE), "-p", *args],
        env=full_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )


def answer(neuron, tmp_path, fmt: str, model_args: list[str], env=None) -> str:
    small = ["--tools", "", "--system-prompt", "You are a helpful assistant.", "--max-turns", "1"]
    r = claude(neuron, tmp_path, QUESTION, *small, "--output-format", fmt, *model_args, env=env)
    assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    if fmt == "json":
        out = json.loads(r.stdout)
        assert out["is_error"] is False, out
        text = out["result"]
    else:
        text = r.stdout
    assert "Paris" in text and not TEMPLATE_TOKENS.search(text), text
    return text


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_claude_code_answers_with_the_models_named_by_its_environment(neuron_for_claude, tmp_path, fmt):
    env = {f"ANTHROPIC_DEFAULT_{tier}_MODEL": "smollm2" for tier in ("SONNET", "HAIKU", "OPUS")}
    answer(neuron_for_claude, tmp_path, fmt, ["--model", "sonnet"], env=env)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_claude_code_reaches_the_model_through_a_glob_alias(neuron_for_claude, tmp_path, fmt):
    answer(neuron_for_claude, tmp_path, fmt, ["--model", "claude-sonnet-4-5"])


def test_claude_code_shows_the_context_error_with_its_full_tool_set(neuron_for_claude, tmp_path):
    r = claude(neuron_for_claude, tmp_path, "Say hello", "--max-turns", "1", "--model", "smollm2")
    assert r.returncode != 0, r.stdout
    shown = (r.stdout + r.stderr).lower()
    assert "prompt is too long" in shown, f"stdout: {r.stdout}\nstderr: {r.stderr}"
