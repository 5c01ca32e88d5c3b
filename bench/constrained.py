"""Decode speed with a JSON-schema constraint against without, in one run, interleaved.

Starts a release `cortex serve` on the default model, then for each concurrency level runs
rounds that alternate free and constrained batches of requests (the same prompt, the same
sampling), and reports per request the engine's own decode tok/s (`timings.decode_tok_s`),
as medians of the rounds' medians, with their ratio. The grammar's cost comes from the
neuron's metrics: seconds spent in grammars per constrained token, and the share of tokens
whose first sample the grammar refused (the only ones that pay for a full mask).

  python3 bench/constrained.py [--rounds 5] [--levels 1,8] [--max-tokens 128]   (CORTEX_BIN: a prebuilt binary)
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT = [{"role": "user", "content": "List as many fruits as you can, with a short note on each."}]
SCHEMA = {
    "type": "object",
    "properties": {
        "fruits": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "note": {"type": "string"}},
                "required": ["name", "note"],
            },
        }
    },
    "required": ["fruits"],
}


def metric(text: str, name: str) -> float:
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--levels", default="1,8")
    ap.add_argument("--max-tokens", type=int, default=128)
    args = ap.parse_args()
    # CORTEX_BIN=path/to/cortex measures that build (another commit's) instead of building this one.
    binary = os.environ.get("CORTEX_BIN")
    if binary is None:
        subprocess.run(["cargo", "build", "-q", "--release"], cwd=REPO, check=True)
        binary = str(REPO / "target/release/cortex")
    work = Path(tempfile.mkdtemp())
    (work / "models").mkdir()
    os.symlink(MODEL, work / "models" / MODEL.name)
    log = open(work / "serve.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [binary, "serve", "--models-dir", str(work / "models"),
         "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        while not (m := re.search(r"neuron listening http=(\S+) metrics=(\S+)", (work / "serve.log").read_text())):
            time.sleep(0.1)
        base, metrics_url = f"http://{m.group(1)}", f"http://{m.group(2)}/metrics"
        client = httpx.Client(base_url=base, timeout=600)

        def one(kind: str, seed: int) -> float:
            body = {"model": "helexa/small", "messages": PROMPT, "max_tokens": args.max_tokens,
                    "temperature": 0.7, "seed": seed}
            if kind == "constrained":
                body["response_format"] = {"type": "json_schema", "json_schema": {"name": "fruits", "schema": SCHEMA}}
            r = client.post("/v1/chat/completions", json=body)
            r.raise_for_status()
            return r.json()["timings"]["decode_tok_s"]

        one("free", 0)  # load the model and warm up
        one("constrained", 0)
        cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"],
                             capture_output=True, text=True).stdout.strip()
        print(f"# {cpu}, {os.cpu_count()} CPUs; {args.rounds} interleaved rounds, max_tokens {args.max_tokens}")
        print(f"{'c':>3} {'free tok/s':>11} {'constrained':>12} {'ratio':>6}")
        for c in [int(x) for x in args.levels.split(",")]:
            medians: dict[str, list[float]] = {"free": [], "constrained": []}
            for r in range(args.rounds):
                for kind in ("free", "constrained") if r % 2 == 0 else ("constrained", "free"):
                    with ThreadPoolExecutor(max_workers=c) as pool:
                        rates = list(pool.map(lambda s: one(kind, s), range(r * c, r * c + c)))
                    medians[kind].append(statistics.median(rates))
            free, con = statistics.median(medians["free"]), statistics.median(medians["constrained"])
            print(f"{c:>3} {free:>11.1f} {con:>12.1f} {con / free:>6.2f}")
        text = httpx.get(metrics_url).text
        tokens = metric(text, "cortex_constrained_tokens_total")
        masks = metric(text, "cortex_grammar_masks_total")
        secs = metric(text, "cortex_grammar_seconds_total")
        print(f"grammar: {secs / tokens * 1e6:.1f} µs per constrained token over {int(tokens)} tokens; "
              f"{masks / tokens:.1%} of them needed a full mask")
    finally:
        proc.terminate()
        proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
