"""Multi-turn conversations with and without the prefix cache on one neuron: `cortex bench
--turns` (S sessions at once, each resending its whole conversation after a shared system
prompt) against a neuron whose prefix cache is off (`[engine] kv_cache_bytes = "0"`) and one
with it on, in interleaved rounds on the same machine. Prints every round, then per measure the
median of the rounds and the ratio (off / on: how many times faster the cache makes it).

    cargo build --release
    python3 bench/prefix_turns.py [--rounds 3] [--sessions 8] [--turns 10] [--system-tokens 1500]
        [--cortex target/release/cortex] [--neurons 3] [--off-rounds N]

With --neurons 3 it starts a fleet of three on this machine (they share its cores), the model
loaded on each, and compares (a) no cache, load-based routing, (b) cache, load-based routing
(`[mesh] cache_aware = false`) and (c) cache with cache-aware routing, every run through the
first neuron as gateway.
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
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def serve(binary: Path, home: Path, config: str, extra: list[str]) -> tuple[subprocess.Popen, str, str]:
    """Starts a neuron in `home` (the model linked there); returns it, its HTTP URL and mesh address."""
    home.mkdir(parents=True, exist_ok=True)
    (home / MODEL.name).symlink_to(MODEL)
    (home / "cortex.toml").write_text(config)
    log = home / "serve.log"
    proc = subprocess.Popen(
        [str(binary), "serve", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
         "--models-dir", str(home), "--config", str(home / "cortex.toml"), *extra],
        stderr=open(log, "w"), stdout=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "info", "NO_COLOR": "1"})
    for _ in range(300):
        text = log.read_text()
        m = re.search(r"neuron listening http=(\S+)", text)
        mesh = re.search(r"advertised=(\S+)", text)
        if m and (mesh or "--mesh-listen" not in extra):
            return proc, f"http://{m.group(1)}", mesh.group(1) if mesh else ""
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"cortex did not start:\n{log.read_text()}")


CONFIGS = {
    "off": '[engine]\nkv_cache_bytes = "0"\n[mesh]\ncache_aware = false\n',
    "on": "[mesh]\ncache_aware = false\n",
    "aware": "",
}


def start(binary: Path, name: str, neurons: int) -> tuple[list[subprocess.Popen], str]:
    """One neuron, or a fleet of `neurons` joined through the first, each with the model loaded."""
    work = Path(tempfile.mkdtemp(prefix="bench-turns-"))
    if neurons == 1:
        proc, url, _ = serve(binary, work / "n0", CONFIGS[name], [])
        return [proc], url
    tls = work / "tls"
    subprocess.run([str(binary), "init", "--dir", str(tls)], check=True, capture_output=True)
    procs, urls, seed = [], [], None
    for i in range(neurons):
        subprocess.run([str(binary), "cert", "issue", f"n{i}", "--dir", str(tls), "--ip", "127.0.0.1"],
                       check=True, capture_output=True)
        extra = ["--name", f"n{i}", "--tls-dir", str(tls), "--mesh-listen", "127.0.0.1:0"]
        if seed:
            extra += ["--join", seed]
        proc, url, mesh = serve(binary, work / f"n{i}", CONFIGS[name], extra)
        seed = seed or mesh
        procs.append(proc)
        urls.append(url)
    for url in urls:
        req = urllib.request.Request(f"{url}/cortex/v1/load", json.dumps({"model": "helexa/small"}).encode(),
                                     {"content-type": "application/json"})
        urllib.request.urlopen(req, timeout=600).read()
    # Wait until the gateway sees the model ready on every neuron.
    for _ in range(300):
        status = json.load(urllib.request.urlopen(f"{urls[0]}/cortex/v1/status", timeout=10))
        if sum(1 for p in status.get("peers", []) if p.get("loaded")) >= neurons - 1:
            break
        time.sleep(0.2)
    return procs, urls[0]


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
            "cached_share_last": last["cached_share"], "failed": sum(t["failed"] for t in r["per_turn"]),
            "per_turn": [(t["ttft_p50_ms"], t["ttft_p95_ms"]) for t in r["per_turn"]]}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--sessions", type=int, default=8)
    p.add_argument("--turns", type=int, default=10)
    p.add_argument("--system-tokens", type=int, default=1500)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--cortex", type=Path, default=REPO / "target" / "release" / "cortex")
    p.add_argument("--neurons", type=int, default=1)
    # The cache-off run is the long one (every turn recomputes the whole conversation): this
    # many rounds include it, the rest compare the cached configurations alone.
    p.add_argument("--off-rounds", type=int, default=None)
    a = p.parse_args()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"{cpu}, {os.cpu_count()} CPUs; {a.neurons} neuron(s); {a.sessions} sessions x {a.turns} turns, "
          f"system ~{a.system_tokens} tokens")
    names = ["off", "on"] + (["aware"] if a.neurons > 1 else [])
    results: dict[str, list[dict]] = {n: [] for n in names}
    for i in range(a.rounds):
        order = names if i % 2 == 0 else names[::-1]
        if a.off_rounds is not None and i >= a.off_rounds:
            order = [n for n in order if n != "off"]
        for name in order:
            procs, url = start(a.cortex, name, a.neurons)
            try:
                results[name].append(run(a.cortex, url, a))
            finally:
                for proc in procs:
                    proc.terminate()
                    proc.wait()
            shown = {k: v for k, v in results[name][-1].items() if k != "per_turn"}
            print(f"round {i + 1} {name:5}: {json.dumps(shown)}", flush=True)
    base = "off"
    for key in ("turn_last_p50_ms", "turn_last_p95_ms", "turn1_p50_ms", "throughput_tok_s"):
        med = {n: statistics.median(r[key] for r in results[n]) for n in names}
        # Against no cache, and (on a fleet) cache-aware routing against load routing.
        pairs = [(n, base) for n in names[1:]] + ([("aware", "on")] if "aware" in names else [])
        ratios = "  ".join(
            f"{n}/{b} x{(med[n] / med[b]) if key == 'throughput_tok_s' else (med[b] / med[n]):.2f}"
            for n, b in pairs)
        print(f"median {key:18}: " + "  ".join(f"{n} {med[n]:9.1f}" for n in names) + f"   ({ratios}; higher is better)")
    # TTFT p50 / p95 per turn (medians over the rounds), in seconds.
    print("turn  " + "  ".join(f"{n + ' p50/p95 s':>18}" for n in names))
    for t in range(a.turns):
        cells = []
        for n in names:
            p50 = statistics.median(r["per_turn"][t][0] for r in results[n]) / 1000
            p95 = statistics.median(r["per_turn"][t][1] for r in results[n]) / 1000
            cells.append(f"{p50:8.2f} / {p95:7.2f}")
        print(f"{t + 1:>4}  " + "  ".join(f"{c:>18}" for c in cells))
    share = {n: statistics.median(r["cached_share_last"] for r in results[n]) for n in names}
    print("median cached share of the last turn's prompts: " + "  ".join(f"{n} {share[n]:.2f}" for n in names))


if __name__ == "__main__":
    main()
