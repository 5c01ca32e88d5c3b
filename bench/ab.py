"""Two builds of cortex, before and after a change, compared in interleaved rounds.

Each round runs, for each build in turn, the engine's decode benchmark (tg128 on the CPU:
SmolLM2 and Gemma 3 270M, and SmolLM2 after a 1024-token prompt) and bench/mesh-hop (TTFT
straight to the holder and through the mesh hop); it prints every round and then, per measure,
the median of the rounds for each build and their ratio (after / before). A build is a folder
holding `cortex`, `examples/tiny-model` and `engine-bench` (the `neuron/benches/engine.rs`
binary from `cargo bench --no-run`).

  python3 bench/ab.py BEFORE_DIR AFTER_DIR [--rounds 5] [--requests 200]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODELS = {
    "smollm2": REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma3": REPO / "models" / "gemma-3-270m.Q4_K_M.gguf",
}


def decode(build: Path, model: Path, depth: int = 0) -> float:
    env = dict(os.environ, CORTEX_BENCH_MODEL=str(model), CORTEX_BENCH_ONLY="tg128", CORTEX_BENCH_DEPTH=str(depth))
    out = subprocess.run([build / "engine-bench", "--bench"], env=env, check=True, capture_output=True, text=True)
    return float(re.search(r"tg128[^:]*: ([\d.]+) tok/s", out.stdout).group(1))


def hop(build: Path, requests: int) -> dict[str, float]:
    env = dict(os.environ, CORTEX_BIN=str(build / "cortex"))
    out = subprocess.run(
        [REPO / "bench" / "mesh-hop", str(requests), "1,8"], env=env, check=True, capture_output=True, text=True
    ).stdout
    got = {}
    for m in re.finditer(r"^\s*(\w+): c=\s*(\d+)\s+ttft p50 ([\d.]+) ms", out, re.M):
        got[f"ttft p50 {m.group(1)} c={m.group(2)} (ms)"] = float(m.group(3))
    for c in ("1", "8"):
        a, b = got.get(f"ttft p50 A c={c} (ms)"), got.get(f"ttft p50 B c={c} (ms)")
        if a is not None and b is not None:
            got[f"mesh hop c={c} (ms, A-B)"] = a - b
    return got


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=200)
    args = ap.parse_args()
    builds = {"before": args.before.resolve(), "after": args.after.resolve()}
    seen: dict[str, dict[str, list[float]]] = {"before": {}, "after": {}}
    for r in range(args.rounds):
        # Alternate which build goes first, so neither always runs on a warmer machine.
        order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
        for side in order:
            figures = {f"tg128 {name} (tok/s)": decode(builds[side], path) for name, path in MODELS.items()}
            # Decode over a long cache: attention reads 1024 cached positions a step.
            figures["tg128 @1024 smollm2 (tok/s)"] = decode(builds[side], MODELS["smollm2"], 1024)
            figures.update(hop(builds[side], args.requests))
            for k, v in figures.items():
                seen[side].setdefault(k, []).append(v)
            print(f"round {r + 1} {side}: " + ", ".join(f"{k} {v:.2f}" for k, v in figures.items()), flush=True)
    print(f"\n| measure | before (median of {args.rounds}) | after | after / before |")
    print("|---|---|---|---|")
    for k in seen["before"]:
        b, a = statistics.median(seen["before"][k]), statistics.median(seen["after"].get(k, [float("nan")]))
        print(f"| {k} | {b:.2f} | {a:.2f} | {a / b:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
