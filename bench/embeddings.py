"""Embeddings per second: cortex's /v1/embeddings against sentence-transformers (PyTorch, CPU)
on all-MiniLM-L6-v2, for batches of 1, 32 and 256 short sentences, in interleaved rounds (the
order of the two alternates each round); prints every round and the medians with their ratio.

cortex is measured through its HTTP API (a real `cortex serve`, base64 vectors as the OpenAI
SDKs ask for them); sentence-transformers in-process with torch.set_num_threads(2). It needs
torch and sentence-transformers, which CI does not install (a few GB from PyPI):

    python3 -m venv /tmp/st-venv && /tmp/st-venv/bin/pip install torch sentence-transformers
    cargo build --release
    /tmp/st-venv/bin/python bench/embeddings.py [--rounds 5] [--cortex target/release/cortex]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SENTENCES = [
    "A man is playing a guitar.",
    "The cat sat on the mat.",
    "Stocks fell sharply on Tuesday.",
    "How do I reset my password?",
    "The train leaves at noon.",
    "She painted the fence blue.",
    "Rain is expected tomorrow.",
    "Two dogs are playing in the snow.",
]
BATCHES = {1: 40, 32: 4, 256: 1}  # batch size -> calls per measurement


def batch_of(n: int) -> list[str]:
    return [SENTENCES[i % len(SENTENCES)] + f" ({i})" for i in range(n)]


def start_cortex(binary: Path, model_dir: Path) -> tuple[subprocess.Popen, str, Path]:
    models = Path(tempfile.mkdtemp(prefix="bench-embed-"))
    (models / model_dir.name).symlink_to(model_dir.resolve())
    log = models / "serve.log"
    proc = subprocess.Popen(
        [str(binary), "serve", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--models-dir", str(models)],
        stderr=open(log, "w"),
        stdout=subprocess.DEVNULL,
        env={**os.environ, "RUST_LOG": "info", "NO_COLOR": "1"},
    )
    for _ in range(300):
        m = re.search(r"neuron listening http=(\S+)", log.read_text())
        if m:
            return proc, f"http://{m.group(1)}", models
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"cortex did not start:\n{log.read_text()}")


def cortex_embed(url: str, model: str, texts: list[str]) -> None:
    body = json.dumps({"model": model, "input": texts, "encoding_format": "base64"}).encode()
    req = urllib.request.Request(f"{url}/v1/embeddings", body, {"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        data = json.load(r)["data"]
    assert len(data) == len(texts) and len(base64.b64decode(data[0]["embedding"])) == 384 * 4


def rate(run, n: int, calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        run(batch_of(n))
    return n * calls / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cortex", type=Path, default=REPO / "target" / "release" / "cortex")
    ap.add_argument("--model-dir", type=Path, default=REPO / "models" / "all-MiniLM-L6-v2")
    args = ap.parse_args()

    import sentence_transformers
    import torch

    torch.set_num_threads(2)
    st = sentence_transformers.SentenceTransformer(str(args.model_dir), device="cpu")
    proc, url, tmp = start_cortex(args.cortex, args.model_dir)
    model = args.model_dir.name
    systems = {
        "cortex": lambda texts: cortex_embed(url, model, texts),
        "sentence-transformers": lambda texts: st.encode(texts, batch_size=len(texts), normalize_embeddings=False),
    }
    try:
        for run in systems.values():  # load, warm caches
            run(batch_of(32))
        results: dict[tuple[str, int], list[float]] = {}
        for r in range(args.rounds):
            order = list(systems) if r % 2 == 0 else list(reversed(systems))
            line = []
            for n, calls in BATCHES.items():
                for name in order:
                    v = rate(systems[name], n, calls)
                    results.setdefault((name, n), []).append(v)
                    line.append(f"{name} b{n} {v:.1f}/s")
            print(f"round {r + 1}: " + ", ".join(line), flush=True)
    finally:
        proc.terminate()
        proc.wait()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"\n{cpu}, {os.cpu_count()} CPUs; medians of {args.rounds} interleaved rounds (embeddings/s)")
    print("| batch | cortex (HTTP API) | sentence-transformers (torch, in-process) | cortex / ST |")
    print("|---|---|---|---|")
    for n in BATCHES:
        c = statistics.median(results[("cortex", n)])
        s = statistics.median(results[("sentence-transformers", n)])
        print(f"| {n} | {c:.1f} | {s:.1f} | {c / s:.2f} |")
    print(f"versions: torch {torch.__version__}, sentence-transformers {sentence_transformers.__version__}")


if __name__ == "__main__":
    main()
