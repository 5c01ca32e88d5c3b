"""End-to-end fixtures: a real `cortex serve` process driven over HTTP.

Environment:
  CORTEX_BIN              the cortex binary (default: <repo>/target/debug/cortex)
  CORTEX_TEST_MODELS_DIR  a directory holding SmolLM2-135M-Instruct.Q4_1.gguf
                          (default: <repo>/models)

Each neuron listens on port 0 (the OS picks free ports); the fixture reads the chosen
address from the "neuron listening" log line, then waits for GET /health. Its stderr goes
to a file, which is attached to the report of any test that fails while it runs.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

REPO = Path(__file__).resolve().parents[2]
CORTEX_BIN = Path(os.environ.get("CORTEX_BIN", REPO / "target" / "debug" / "cortex"))
MODELS_DIR = Path(os.environ.get("CORTEX_TEST_MODELS_DIR", REPO / "models"))
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
ALIAS = "helexa/small"
API_KEY = "secret-key"

SYSTEM = "You are a helpful assistant."
QUESTION = "What is the capital of France?"
PARIS_ANSWER = "The capital of France is Paris."
PARIS_MESSAGES = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": QUESTION},
]

STARTUP_TIMEOUT_S = 60
SHUTDOWN_TIMEOUT_S = 60
# Generous: CI machines are small and the test binary is a debug build.
REQUEST_TIMEOUT_S = 300

_LISTENING = re.compile(r"neuron listening http=(\S+) metrics=(\S+)")


class Neuron:
    """One `cortex serve` child process."""

    def __init__(self, name: str, workdir: Path, config: str | None = None):
        self.name = name
        self.workdir = workdir
        self.log_path = workdir / "serve.log"
        args = [
            str(CORTEX_BIN),
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--models-dir",
            str(MODELS_DIR),
        ]
        if config is not None:
            cfg = workdir / "cortex.toml"
            cfg.write_text(config)
            args += ["--config", str(cfg)]
        env = dict(os.environ)
        # Settings from the developer's shell must not leak into the neuron under test.
        for var in ("CORTEX_CONFIG", "CORTEX_API_KEYS", "CORTEX_HOME"):
            env.pop(var, None)
        env["NO_COLOR"] = "1"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=workdir
        )
        self.url = ""
        self.metrics_url = ""

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError as e:
            return f"<cannot read {self.log_path}: {e}>"

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while not self.url:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name}: cortex serve exited with {self.proc.returncode}\n{self.log()}")
            m = _LISTENING.search(self.log())
            if m:
                self.url = f"http://{m.group(1)}"
                self.metrics_url = f"http://{m.group(2)}"
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: no 'neuron listening' line within {timeout}s\n{self.log()}")
            time.sleep(0.1)
        while True:
            try:
                if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name}: cortex serve exited with {self.proc.returncode}\n{self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: /health did not answer 200 within {timeout}s\n{self.log()}")
            time.sleep(0.1)

    def stop(self) -> int:
        """SIGTERM, then wait for the exit code (SIGKILL only if it hangs)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=SHUTDOWN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


# Neurons that are running now, so a failing test can show their logs.
_LIVE: list[Neuron] = []


def _start(name: str, tmp_path_factory: pytest.TempPathFactory, config: str | None = None):
    if not CORTEX_BIN.is_file():
        pytest.fail(f"cortex binary not found at {CORTEX_BIN} (build it, or set CORTEX_BIN)")
    if not (MODELS_DIR / MODEL_FILE).is_file():
        pytest.fail(f"{MODEL_FILE} not found in {MODELS_DIR} (set CORTEX_TEST_MODELS_DIR)")
    n = Neuron(name, tmp_path_factory.mktemp(name), config)
    _LIVE.append(n)
    try:
        n.wait_ready()
    except Exception:
        n.stop()
        _LIVE.remove(n)
        raise
    return n


def _finish(n: Neuron) -> None:
    _LIVE.remove(n)
    code = n.stop()
    assert code == 0, f"{n.name}: cortex serve exited with {code} after SIGTERM (expected 0)\n{n.log()}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the log of every live neuron to a failing test's report."""
    report = yield
    if report.failed:
        for n in _LIVE:
            report.sections.append((f"cortex serve log ({n.name}, {n.log_path})", n.log()))
    return report


@pytest.fixture(scope="session")
def neuron(tmp_path_factory):
    """A neuron with default settings serving the test model; yields its base URL."""
    n = _start("neuron", tmp_path_factory)
    yield n.url
    _finish(n)


@pytest.fixture(scope="session")
def keyed_neuron(tmp_path_factory):
    """A neuron that requires API key `secret-key`; yields its base URL."""
    n = _start("keyed-neuron", tmp_path_factory, config=f'[server]\napi_keys = ["{API_KEY}"]\n')
    yield n.url
    _finish(n)


@pytest.fixture(scope="session")
def oai(neuron) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{neuron}/v1", api_key="x", max_retries=0, timeout=REQUEST_TIMEOUT_S)


@pytest.fixture(scope="session")
def anth(neuron) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=neuron, api_key="x", max_retries=0, timeout=REQUEST_TIMEOUT_S)


@pytest.fixture(scope="session")
def http(neuron):
    with httpx.Client(base_url=neuron, timeout=REQUEST_TIMEOUT_S) as c:
        yield c


# ---------------------------------------------------------------------------------------------
# Helpers shared by the test modules.


def assert_healthy(base_url: str) -> None:
    """The neuron still answers /health after whatever the test threw at it."""
    r = httpx.get(f"{base_url}/health", timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "ok"


def assert_openai_error(resp: httpx.Response, status: int, err_type: str | None = None) -> dict:
    """`resp` is an OpenAI-shaped error {"error": {"message", "type", "param", "code"}}."""
    assert resp.status_code == status, f"{resp.status_code}: {resp.text}"
    assert resp.headers["content-type"].startswith("application/json"), resp.headers
    body = resp.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert {"message", "type", "param", "code"} <= set(err), body
    assert isinstance(err["message"], str) and err["message"], body
    if err_type is not None:
        assert err["type"] == err_type, body
    return err


def assert_anthropic_error(resp: httpx.Response, status: int, err_type: str | None = None) -> dict:
    """`resp` is an Anthropic-shaped error {"type": "error", "error": {"type", "message"}}."""
    assert resp.status_code == status, f"{resp.status_code}: {resp.text}"
    assert resp.headers["content-type"].startswith("application/json"), resp.headers
    body = resp.json()
    assert body.get("type") == "error", body
    err = body["error"]
    assert isinstance(err.get("type"), str) and err["type"], body
    assert isinstance(err.get("message"), str) and err["message"], body
    if err_type is not None:
        assert err["type"] == err_type, body
    return err


def sse_events(lines) -> list[tuple[str | None, str]]:
    """Parses SSE text lines into (event name or None, data) pairs."""
    events: list[tuple[str | None, str]] = []
    name: str | None = None
    data: list[str] = []
    for line in lines:
        line = line.rstrip("\r\n")
        if line == "":
            if data:
                events.append((name, "\n".join(data)))
            name, data = None, []
        elif line.startswith("event:"):
            name = line[len("event:") :].strip()
        elif line.startswith("data:"):
            data.append(line[len("data:") :].lstrip(" "))
    if data:
        events.append((name, "\n".join(data)))
    return events


def openai_stream_text(events) -> str:
    """Concatenates the content deltas of an OpenAI chat stream given as sse_events()."""
    out = []
    for _, data in events:
        if data == "[DONE]":
            break
        chunk = json.loads(data)
        for choice in chunk.get("choices", []):
            out.append(choice.get("delta", {}).get("content") or "")
    return "".join(out)


def prompt_tokens(usage) -> int:
    """An Anthropic usage's whole prompt: Anthropic counts cache reads and writes apart from
    `input_tokens`, and cortex's prefix cache serves a prompt sent before."""
    return usage.input_tokens + (usage.cache_read_input_tokens or 0) + (usage.cache_creation_input_tokens or 0)
