"""Two builds of cortex, before and after a change, compared in interleaved rounds.

Each round runs, for each build in turn, the engine's decode benchmark (tg128 on the CPU:
SmolLM2 and Gemma 3 270M, and SmolLM2 after a 1024-token prompt), one streamed 128-token
decode through each build's `cortex serve` per model (`ignore_eos`, client-side rate, as
bench/vs-llama-cpp measures it) with the engine's tg128 after that request's chat-templated
prompt, and bench/mesh-hop (TTFT straight to the holder and through the mesh hop; `--no-hop`
leaves it out); it prints every round and then, per measure, the median of the rounds for each
build and their ratio (after / before), and each build's API decode ÷ its engine tg128. A build
is a folder holding `cortex`, `examples/tiny-model` and `engine-bench` (the
`neuron/benches/engine.rs` binary from `cargo bench --no-run`).

  python3 bench/ab.py BEFORE_DIR AFTER_DIR [--rounds 5] [--requests 200] [--no-hop]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vs_llama_cpp  # noqa: E402  (its server and streaming helpers)

REPO = Path(__file__).resolve().parents[1]
# The test models, as bench/vs-llama-cpp names them.
MODELS = {name: path for name, (path, _) in vs_llama_cpp.MODELS.items()}


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
    ap.add_argument("--no-hop", action="store_true", help="leave out bench/mesh-hop")
    args = ap.parse_args()
    builds = {"before": args.before.resolve(), "after": args.after.resolve()}
    seen: dict[str, dict[str, list[float]]] = {"before": {}, "after": {}}
    work = Path(tempfile.mkdtemp(prefix="cortex-ab-"))
    # One neuron per build and model, started once; each serves its model's API decode.
    servers = {}
    try:
        for side, build in builds.items():
            for name, path in MODELS.items():
                d = work / f"{side}-{name}"
                d.mkdir()
                model_id = vs_llama_cpp.MODELS[name][1]
                servers[side, name] = vs_llama_cpp.start_cortex(build / "cortex", path, model_id, os.cpu_count(), d)
        depths = {}
        for (side, name), (_, url, model_id) in servers.items():
            # A first request warms each server; it also gives the chat-templated prompt's length.
            depths[name] = vs_llama_cpp.api_decode_prompt(url, model_id, time.time_ns())[1]
        for r in range(args.rounds):
            # Alternate which build goes first, so neither always runs on a warmer machine.
            order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
            for side in order:
                figures = {f"tg128 {name} (tok/s)": decode(builds[side], path) for name, path in MODELS.items()}
                # Decode over a long cache: attention reads 1024 cached positions a step.
                figures["tg128 @1024 smollm2 (tok/s)"] = decode(builds[side], MODELS["smollm2"], 1024)
                for name, path in MODELS.items():
                    _, url, model_id = servers[side, name]
                    figures[f"api decode {name} (tok/s)"] = vs_llama_cpp.api_decode(url, model_id, time.time_ns())
                    figures[f"tg128 @{depths[name]} {name} (tok/s)"] = decode(builds[side], path, depths[name])
                if not args.no_hop:
                    figures.update(hop(builds[side], args.requests))
                for k, v in figures.items():
                    seen[side].setdefault(k, []).append(v)
                print(f"round {r + 1} {side}: " + ", ".join(f"{k} {v:.2f}" for k, v in figures.items()), flush=True)
    finally:
        for proc, _, _ in servers.values():
            proc.terminate()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n| measure | before (median of {args.rounds}) | after | after / before |")
    print("|---|---|---|---|")
    for k in seen["before"]:
        b, a = statistics.median(seen["before"][k]), statistics.median(seen["after"].get(k, [float("nan")]))
        print(f"| {k} | {b:.2f} | {a:.2f} | {a / b:.3f} |")
    for side in builds:
        med = {k: statistics.median(v) for k, v in seen[side].items()}
        ratios = ", ".join(
            f"{name} {med[f'api decode {name} (tok/s)'] / med[f'tg128 {name} (tok/s)']:.3f}× "
            f"(÷ tg128 @{depths[name]}: {med[f'api decode {name} (tok/s)'] / med[f'tg128 @{depths[name]} {name} (tok/s)']:.3f}×)"
            for name in MODELS
        )
        print(f"{side}: API decode ÷ engine tg128: {ratios}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
