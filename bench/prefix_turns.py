"""Multi-turn conversations with and without the prefix cache on one neuron: `cortex bench
--turns` (S sessions at once, each resending its whole conversation after a shared system
prompt) against a neuron whose prefix cache is off (`[engine] kv_cache_bytes = "0"`) and one
with it on, in interleaved rounds on the same machine. Prints every round, then per measure the
median of the rounds and the ratio (off / on: how many times faster the cache makes it).

    cargo build --release
    python3 bench/prefix_turns.py [--rounds 3] [--sessions 8] [--turns 10] [--system-tokens 1500]
        [--cortex target/release/cortex]

The mesh half (three neurons, load-based against cache-aware routing) is not scripted yet.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def start(binary: Path, cache: str) -> tuple[subprocess.Popen, str]:
    home = Path(tempfile.mkdtemp(prefix="bench-turns-"))
    (home / MODEL.name).symlink_to(MODEL)
    (home / "cortex.toml").write_text(f'[engine]\nkv_cache_bytes = "{cache}"\n' if cache else "")
    log = home / "serve.log"
    proc = subprocess.Popen(
        [str(binary), "serve", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
         "--models-dir", str(home), "--config", str(home / "cortex.toml")],
        stderr=open(log, "w"), stdout=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "info", "NO_COLOR": "1"})
    for _ in range(300):
        m = re.search(r"neuron listening http=(\S+)", log.read_text())
        if m:
            return proc, f"http://{m.group(1)}"
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"cortex did not start:\n{log.read_text()}")


def run(binary: Path, url: str, a: argparse.Namespace) -> dict:
    out = subprocess.run(
        [str(binary), "bench", "helexa/small", "--turns", str(a.turns), "--sessions", str(a.sessions),
         "--system-tokens", str(a.system_tokens), "--prompt-tokens", "32", "--max-tokens", str(a.max_tokens),
         "--json", "--quiet"],
        env={**os.environ, "CORTEX_ENDPOINT": url}, check=True, capture_output=True, text=True).stdout
    r = json.loads(out)
    last = r["per_turn"][-1]
    return {"turn_last_p50_ms": last["ttft_p50_ms"], "turn_last_p95_ms": last["ttft_p95_ms"],
            "turn1_p50_ms": r["per_turn"][0]["ttft_p50_ms"], "throughput_tok_s": r["throughput_tok_s"],
            "cached_share_last": last["cached_share"], "failed": sum(t["failed"] for t in r["per_turn"])}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--sessions", type=int, default=8)
    p.add_argument("--turns", type=int, default=10)
    p.add_argument("--system-tokens", type=int, default=1500)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--cortex", type=Path, default=REPO / "target" / "release" / "cortex")
    a = p.parse_args()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"{cpu}, {os.cpu_count()} CPUs; {a.sessions} sessions x {a.turns} turns, system ~{a.system_tokens} tokens")
    results: dict[str, list[dict]] = {"off": [], "on": []}
    for i in range(a.rounds):
        for name in (["off", "on"] if i % 2 == 0 else ["on", "off"]):
            proc, url = start(a.cortex, "0" if name == "off" else "")
            try:
                results[name].append(run(a.cortex, url, a))
            finally:
                proc.terminate()
                proc.wait()
            print(f"round {i + 1} cache {name:3}: {json.dumps(results[name][-1])}", flush=True)
    for key in ("turn_last_p50_ms", "turn_last_p95_ms", "turn1_p50_ms", "throughput_tok_s"):
        off = statistics.median(r[key] for r in results["off"])
        on = statistics.median(r[key] for r in results["on"])
        ratio = on / off if key == "throughput_tok_s" else off / on
        print(f"median {key:18}: off {off:9.1f}  on {on:9.1f}  improvement x{ratio:.2f}")


if __name__ == "__main__":
    main()
