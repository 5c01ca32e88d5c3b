"""Paired API decodes: small serve-path effects measured through the machine's drift.

Two `cortex serve`s of one build that differ only in environment (`A` and `B`: `NAME=VALUE`
settings joined by `+`, or `default` for none) each stream 128-token `ignore_eos` decodes
(bench/vs-llama-cpp's client and measure) in alternating order, pair after pair; or, with
`--engine`, one server's API decode beside the engine bench's tg128 from position 0 (or, with
`--depth N`, after an N-token prompt). Each pair's two runs are seconds apart, so the median of
the pairs' ratios (B ÷ A, API ÷ engine) holds where medians of rounds minutes apart swing by more
than the effect.

  python3 bench/api_pairs.py smollm2 CORTEX_STREAM_INTERVAL_MS=0 default [--pairs 30]
  python3 bench/api_pairs.py gemma3 default --engine [--pairs 20] [--depth 39]

The build is target/release's `cortex` (`cargo build --release`) and, for `--engine`, the engine
bench (`cargo bench -p cortex-neuron --bench engine --no-run`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vs_llama_cpp  # noqa: E402  (its server, client and engine helpers)


def settings(spec: str) -> dict[str, str]:
    return dict(kv.split("=", 1) for kv in spec.split("+") if kv != "default")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", choices=sorted(vs_llama_cpp.MODELS))
    ap.add_argument("a", help="the first server's environment (NAME=VALUE+…, or default)")
    ap.add_argument("b", nargs="?", help="the second server's (left out with --engine)")
    ap.add_argument("--engine", action="store_true", help="pair A's API decode with the engine's tg128")
    ap.add_argument("--pairs", type=int, default=30)
    ap.add_argument("--depth", type=int, default=0,
                    help="with --engine, the engine's tg128 after this many prompt tokens (the API prompt's length "
                         "puts both at the same positions)")
    args = ap.parse_args()
    if (args.b is None) != args.engine:
        ap.error("give B, or --engine, not both")
    cortex, engine = vs_llama_cpp.cortex_binaries() if args.engine else (vs_llama_cpp.REPO / "target/release/cortex", None)
    path, model_id = vs_llama_cpp.MODELS[args.model]
    threads = os.cpu_count()
    work = Path(tempfile.mkdtemp(prefix="cortex-pairs-"))
    sides = {"A": args.a} if args.engine else {"A": args.a, "B": args.b}
    servers = {}
    saved = dict(os.environ)
    try:
        for side, spec in sides.items():
            os.environ.update(settings(spec))  # start_cortex hands the server this environment
            (work / side).mkdir()
            servers[side] = vs_llama_cpp.start_cortex(cortex, path, model_id, threads, work / side)
            os.environ.clear()
            os.environ.update(saved)
        runs = {side: (lambda u=url, m=mid: vs_llama_cpp.api_decode(u, m, time.time_ns()))
                for side, (_, url, mid) in servers.items()}
        for run in runs.values():
            run()  # warm-up
        if args.engine:
            runs = {"A": runs["A"], "engine": lambda: vs_llama_cpp.engine_decode_at(engine, path, threads, args.depth)}
        first, second = runs
        seen: dict[str, list[float]] = {first: [], second: []}
        for i in range(args.pairs):
            for side in (first, second) if i % 2 == 0 else (second, first):
                seen[side].append(runs[side]())
            print(f"pair {i + 1}: {first} {seen[first][-1]:.1f}  {second} {seen[second][-1]:.1f}", flush=True)
        ratios = [b / a for a, b in zip(seen[first], seen[second])]
        if args.engine:
            ratios = [1 / r for r in ratios]
        md = statistics.median
        at = f" @ {args.depth}" if args.depth else ""
        label = f"API ÷ engine tg128{at}" if args.engine else "B ÷ A"
        print(f"\n{args.model}: {first} ({args.a}) {md(seen[first]):.1f} tok/s, {second}"
              f"{'' if args.engine else f' ({args.b})'} {md(seen[second]):.1f} tok/s; {label}: median of "
              f"{args.pairs} pairs {md(ratios):.3f}, ahead in {sum(r > 1 for r in ratios)}")
    finally:
        for proc, _, _ in servers.values():
            proc.terminate()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
