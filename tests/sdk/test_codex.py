"""Codex CLI itself (from npm, pinned by .ci/run) against a real neuron, over `/v1/responses`.

Codex speaks only the Responses API to a custom provider (`wire_api = "responses"`). Between
it and the neuron sits a recording proxy (plain HTTP, bytes passed through unchanged), so the
tests can check what Codex sent and what cortex answered.

Measured with Codex 0.171.0: its default first request (`codex exec "Say hello"`, its own
17 kB instructions, 8 function tools, a namespace of 6 more, `web_search`) is 9 509 SmolLM2
tokens (9 688 Gemma 3), over SmolLM2's 8 192. Described by a model catalog
(`model_catalog_json`: the model's context, short base instructions, `apply_patch` as a
free-form tool with a Lark grammar), it is 5 509 SmolLM2 tokens, which SmolLM2 holds. The
neuron's models.toml sets SmolLM2's temperature to 0 (Codex sends none).

Environment: CODEX_BIN (default .ci/codex/node_modules/.bin/codex); without it the tests skip,
unless CORTEX_REQUIRE_CODEX is set (CI), where they fail.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import pytest
from conftest import MODEL_FILE, MODELS_DIR, REPO, _finish, _start

CODEX = Path(os.environ.get("CODEX_BIN", REPO / ".ci" / "codex" / "node_modules" / ".bin" / "codex"))
TIMEOUT_S = 900
MODEL = "smollm2"

if not CODEX.is_file():
    why = f"Codex CLI not installed at {CODEX} (.ci/run installs it; or set CODEX_BIN)"
    if os.environ.get("CORTEX_REQUIRE_CODEX"):
        pytest.fail(why, pytrace=False)
    pytest.skip(why, allow_module_level=True)

# What Codex needs to know about a model it has no built-in metadata for, as the README ships it
# (deploy/codex/model-catalog.json, Codex's `model_catalog_json`): its context, instructions
# sized for it, and `apply_patch` as a free-form (Lark grammar) tool.
CATALOG = json.loads((REPO / "deploy" / "codex" / "model-catalog.json").read_text())
CATALOG["models"][0]["slug"] = MODEL


class Recorder:
    """A pass-through HTTP proxy that keeps each POST's JSON body, status and response text."""

    def __init__(self, upstream: str):
        self.exchanges: list[dict] = []
        target = urlparse(upstream)
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=TIMEOUT_S)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "accept-encoding")}
                conn.request("POST", self.path, body=body, headers=headers)
                resp = conn.getresponse()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(k, v)
                self.send_header("connection", "close")
                self.end_headers()
                seen = bytearray()
                while chunk := resp.read1(65536):
                    seen += chunk
                    self.wfile.write(chunk)
                    self.wfile.flush()
                conn.close()
                recorder.exchanges.append(
                    {"path": self.path, "request": json.loads(body), "status": resp.status, "response": seen.decode()}
                )

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture(scope="module")
def proxied(tmp_path_factory):
    models = tmp_path_factory.mktemp("codex-models") / "models.toml"
    models.write_text(f'[models."{MODEL}"]\npath = "{MODELS_DIR / MODEL_FILE}"\ntemperature = 0\n')
    n = _start("codex-neuron", tmp_path_factory, config=f'models_config = "{models}"\n')
    rec = Recorder(n.url)
    yield rec
    rec.close()
    _finish(n)


def codex(rec: Recorder, tmp_path: Path, prompt: str, catalog: bool) -> subprocess.CompletedProcess:
    home = tmp_path / "codex-home"
    home.mkdir()
    config = [
        f'model = "{MODEL}"',
        'model_provider = "cortex"',
        "[model_providers.cortex]",
        'name = "cortex"',
        f'base_url = "{rec.url}/v1"',
        'wire_api = "responses"',
    ]
    if catalog:
        (home / "catalog.json").write_text(json.dumps(CATALOG))
        config.insert(2, f'model_catalog_json = "{home / "catalog.json"}"')
    (home / "config.toml").write_text("\n".join(config) + "\n")
    work = tmp_path / "work"
    work.mkdir()
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "CODEX_HOME": str(home)}
    return subprocess.run(
        [str(CODEX), "exec", "--skip-git-repo-check", "-s", "workspace-write", prompt],
        env=env, cwd=work, capture_output=True, text=True, timeout=TIMEOUT_S, stdin=subprocess.DEVNULL,
    )


def completed(exchange: dict) -> dict:
    """The response of a `response.completed` event in a recorded SSE answer."""
    for line in exchange["response"].splitlines():
        if line.startswith("data: "):
            ev = json.loads(line[len("data: "):])
            if ev["type"] == "response.completed":
                return ev["response"]
    raise AssertionError(f"no response.completed in: {exchange['response'][-2000:]}")


def test_codex_exec_answers_and_its_function_and_free_form_tools_are_accepted(proxied, tmp_path):
    before = len(proxied.exchanges)
    r = codex(proxied, tmp_path, "Say hello", catalog=True)
    assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    turns = proxied.exchanges[before:]
    assert turns and all(t["path"] == "/v1/responses" and t["status"] == 200 for t in turns), turns
    sent = turns[0]["request"]
    kinds = {t["type"] for t in sent["tools"]}
    assert {"function", "custom", "namespace"} <= kinds, kinds
    patch = next(t for t in sent["tools"] if t["type"] == "custom")
    assert patch["name"] == "apply_patch" and patch["format"]["syntax"] == "lark"
    assert sent["stream"] is True and sent["store"] is False
    final = completed(turns[-1])
    text = "".join(
        part["text"] for item in final["output"] if item["type"] == "message" for part in item["content"]
    )
    assert text.strip(), final
    assert text.strip() in r.stdout, f"Codex did not print cortex's answer {text!r}:\n{r.stdout}"
    assert final["usage"]["input_tokens"] > 4000


def test_codex_default_request_over_the_context_is_a_context_error_codex_understands(proxied, tmp_path):
    before = len(proxied.exchanges)
    r = codex(proxied, tmp_path, "Say hello", catalog=False)
    assert r.returncode != 0, r.stdout
    refused = proxied.exchanges[before:]
    assert refused and all(t["status"] == 400 for t in refused), refused
    error = json.loads(refused[0]["response"])["error"]
    assert error["code"] == "context_length_exceeded" and "maximum context length is 8192" in error["message"]
    # Codex recognises OpenAI's code for it and says so in its own words, instead of retrying.
    assert "ran out of room in the model's context window" in r.stderr, r.stderr
