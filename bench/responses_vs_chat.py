"""`/v1/responses` against `/v1/chat/completions` for the same prompt on the same neuron: both
routes share one generation path, so the difference is the dialect's own cost (parsing,
translation, the response.* events). Interleaved rounds, the order alternating each round;
each round times N requests per route, streamed (as Codex sends them) and not, at
temperature 0 so both routes generate the same tokens. Prints every round and the medians
with the ratio responses/chat (1.00 = the same; the goal is within 5%).

    cargo build --release
    python3 bench/responses_vs_chat.py [--rounds 5] [--requests 8] [--cortex target/release/cortex]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import urllib.request
from pathlib import Path

from embeddings import start_cortex

REPO = Path(__file__).resolve().parents[1]
MODEL = "helexa/small"
SYSTEM = "You are a helpful assistant."
QUESTION = "Write three sentences about the sea."
MAX_TOKENS = 64


def post(url: str, body: dict) -> tuple[bytes, int]:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return r.read(), r.status


def chat(base: str, stream: bool) -> int:
    body = {"model": MODEL, "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}],
            "max_tokens": MAX_TOKENS, "temperature": 0, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    raw, _ = post(f"{base}/v1/chat/completions", body)
    if not stream:
        return json.loads(raw)["usage"]["completion_tokens"]
    last = [json.loads(line[6:]) for line in raw.decode().splitlines() if line.startswith("data: {")][-1]
    return last["usage"]["completion_tokens"]


def responses(base: str, stream: bool) -> int:
    body = {"model": MODEL, "instructions": SYSTEM, "input": QUESTION, "max_output_tokens": MAX_TOKENS,
            "temperature": 0, "stream": stream}
    raw, _ = post(f"{base}/v1/responses", body)
    if not stream:
        return json.loads(raw)["usage"]["output_tokens"]
    last = [json.loads(line[6:]) for line in raw.decode().splitlines() if line.startswith("data: {")][-1]
    return last["response"]["usage"]["output_tokens"]


def timed(fn, base: str, stream: bool, n: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    tokens = [fn(base, stream) for _ in range(n)]
    assert len(set(tokens)) == 1, tokens
    return (time.perf_counter() - t0) / n * 1e3, tokens[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--cortex", type=Path, default=REPO / "target" / "release" / "cortex")
    ap.add_argument("--model", type=Path, default=REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf")
    args = ap.parse_args()
    proc, base, _ = start_cortex(args.cortex, args.model)
    try:
        for stream in (False, True):
            chat(base, stream)  # load the model, warm the caches
            responses(base, stream)
        results = {(r, s): [] for r in ("chat", "responses") for s in (False, True)}
        for i in range(args.rounds):
            order = [("chat", chat), ("responses", responses)]
            if i % 2:
                order.reverse()
            line = []
            for stream in (False, True):
                for name, fn in order:
                    ms, tokens = timed(fn, base, stream, args.requests)
                    results[(name, stream)].append(ms)
                    line.append(f"{name}{'/stream' if stream else ''} {ms:7.1f} ms ({tokens} tok)")
            print(f"round {i + 1}: " + "  ".join(line), flush=True)
        for stream in (False, True):
            c = statistics.median(results[("chat", stream)])
            r = statistics.median(results[("responses", stream)])
            kind = "streamed" if stream else "whole"
            print(f"median {kind:8}: chat {c:7.1f} ms  responses {r:7.1f} ms  responses/chat {r / c:.3f}")
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
