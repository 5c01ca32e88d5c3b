"""cortex against llama.cpp on the same GGUF files, CPU and thread count, in one run.

    python3 bench/vs_llama_cpp.py [--rounds 5] [--models smollm2,gemma3] [--threads N] [--depth N]

llama.cpp is built here, once, from the llama.cpp that llama-cpp-python's sdist vendors (PyPI),
twice: `native` (GGML_NATIVE=ON: -march=native, its repacked layouts for this CPU, AMX where the
CPU has it) and `generic` (GGML_NATIVE=OFF with the ISA extensions this CPU reports switched on
by name, AMX left off). cmake comes from PyPI when the host has none. Builds live under
target/llama.cpp/ and are reused.

Each round runs, per model and in an order that rotates between rounds: llama-bench of both
builds (pp64, pp512, tg128), cortex's engine bench (the same three, and pp2048), streamed
128-token decodes through each server's OpenAI API (`ignore_eos`; rate from the first to the last
streamed token, client side; the median of three requests) and, for cortex, the time to the
first token of a ~2k-token prompt, and a pair: the engine's tg128 (from position 0 and after the
API's prompt) right beside cortex's API decode, whose ratios cancel the machine's drift between
the round's steps. With `--depth N`, also each one's tg128 after N tokens of context (llama-bench
`-d N`, the engine bench's CORTEX_BENCH_DEPTH): decode deep in an agent's conversation. It
prints every round, then the medians and the ratios the issue asks for.
Nothing else should run on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "target" / "llama.cpp"
LLAMA_CPP_PYTHON = "0.3.36"
# The test models: file, and the name cortex's catalogue gives it.
MODELS = {
    "smollm2": (REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf", "HuggingFaceTB/SmolLM2-135M-Instruct"),
    "gemma3": (REPO / "models" / "gemma-3-270m.Q4_K_M.gguf", "gemma-3-270m.Q4_K_M"),
}
# GGML options for the ISA extensions /proc/cpuinfo names; the generic build switches on those
# the CPU has (AMX never: that is the native build's to find).
ISA_OPTIONS = {
    "avx512f": "GGML_AVX512", "avx512vbmi": "GGML_AVX512_VBMI", "avx512_vnni": "GGML_AVX512_VNNI",
    "avx512_bf16": "GGML_AVX512_BF16", "avx_vnni": "GGML_AVX_VNNI",
}


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kw)


def cpu_flags() -> set[str]:
    for line in open("/proc/cpuinfo"):
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_name() -> str:
    return next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")


def fetch_source() -> Path:
    """The sdist from PyPI's simple index (its sha256 checked), unpacked once."""
    src = WORK / f"src-{LLAMA_CPP_PYTHON}"
    if (src / "vendor" / "llama.cpp" / "CMakeLists.txt").exists():
        return src / "vendor" / "llama.cpp"
    WORK.mkdir(parents=True, exist_ok=True)
    name = f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"
    tarball = WORK / name
    if not tarball.exists():
        index = urllib.request.urlopen("https://pypi.org/simple/llama-cpp-python/", timeout=60).read().decode()
        m = re.search(r'href="([^"]*/' + re.escape(name) + r')#sha256=([0-9a-f]+)"', index)
        if not m:
            raise SystemExit(f"{name} is not on PyPI's index")
        data = urllib.request.urlopen(m.group(1), timeout=600).read()
        if hashlib.sha256(data).hexdigest() != m.group(2):
            raise SystemExit(f"{name}: sha256 does not match PyPI's")
        tarball.write_bytes(data)
    tmp = Path(tempfile.mkdtemp(dir=WORK))
    sh(["tar", "xzf", str(tarball), "-C", str(tmp)])
    (tmp / f"llama_cpp_python-{LLAMA_CPP_PYTHON}").rename(src)
    tmp.rmdir()
    return src / "vendor" / "llama.cpp"


def cmake() -> tuple[str, list[str]]:
    """cmake (and ninja when there is one), from PyPI into a venv when the host lacks cmake."""
    if shutil.which("cmake"):
        return "cmake", ["-G", "Ninja"] if shutil.which("ninja") else []
    venv = WORK / "venv"
    if not (venv / "bin" / "cmake").exists():
        sh([sys.executable, "-m", "venv", str(venv)])
        sh([str(venv / "bin" / "pip"), "install", "-q", "cmake", "ninja"])
    os.environ["PATH"] = f"{venv / 'bin'}:{os.environ['PATH']}"
    return str(venv / "bin" / "cmake"), ["-G", "Ninja"]


def build(kind: str) -> Path:
    src = fetch_source()
    out = WORK / kind
    bench, server = out / "bin" / "llama-bench", out / "bin" / "llama-server"
    if bench.exists() and server.exists():
        return out / "bin"
    cm, gen = cmake()
    opts = ["-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DBUILD_SHARED_LIBS=OFF",
            "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF"]
    if kind == "native":
        opts.append("-DGGML_NATIVE=ON")
    else:
        flags = cpu_flags()
        opts += ["-DGGML_NATIVE=OFF"] + [f"-D{o}={'ON' if f in flags else 'OFF'}" for f, o in ISA_OPTIONS.items()]
    print(f"building llama.cpp ({kind}) in {out} ...", flush=True)
    t = time.time()
    with open(WORK / f"{kind}.build.log", "w") as log:
        sh([cm, "-S", str(src), "-B", str(out), *gen, *opts], stdout=log, stderr=log)
        sh([cm, "--build", str(out), "-j", str(os.cpu_count()), "--target", "llama-bench", "llama-server"],
           stdout=log, stderr=log)
    print(f"  built in {time.time() - t:.0f} s", flush=True)
    return out / "bin"


def cortex_binaries() -> tuple[Path, Path]:
    """The release `cortex` and the engine bench (built by cargo, path from its JSON messages)."""
    sh(["cargo", "build", "-q", "--release", "--bin", "cortex"], cwd=REPO)
    out = subprocess.run(["cargo", "bench", "-q", "-p", "cortex-neuron", "--bench", "engine", "--no-run",
                          "--message-format", "json"], cwd=REPO, check=True, capture_output=True, text=True).stdout
    engine = None
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg.get("target", {}).get("name") == "engine":
            engine = msg.get("executable")
    if not engine:
        raise SystemExit("could not find the engine bench binary")
    return REPO / "target" / "release" / "cortex", Path(engine)


def llama_bench(bin_dir: Path, model: Path, threads: int) -> dict[str, float]:
    out = subprocess.run([str(bin_dir / "llama-bench"), "-m", str(model), "-t", str(threads), "-p", "64,512",
                          "-n", "128", "-r", "1", "-o", "json"], check=True, capture_output=True, text=True).stdout
    rates = {}
    for r in json.loads(out):
        key = f"pp{r['n_prompt']}" if r["n_gen"] == 0 else f"tg{r['n_gen']}"
        rates[key] = r["avg_ts"]
    return rates


def llama_bench_at(bin_dir: Path, model: Path, threads: int, depth: int) -> float:
    """llama-bench's tg128 after a `depth`-token context (`-d`)."""
    out = subprocess.run([str(bin_dir / "llama-bench"), "-m", str(model), "-t", str(threads), "-p", "0", "-n", "128",
                          "-d", str(depth), "-r", "1", "-o", "json"], check=True, capture_output=True, text=True).stdout
    return json.loads(out)[0]["avg_ts"]


def engine_bench(engine: Path, model: Path, threads: int) -> dict[str, float]:
    env = {**os.environ, "CORTEX_BENCH_MODEL": str(model), "CORTEX_BENCH_ONLY": "pp64,pp512,pp2048,tg128",
           "CORTEX_BENCH_REPS": "1", "CANDLE_NUM_THREADS": str(threads), "RAYON_NUM_THREADS": str(threads)}
    out = subprocess.run([str(engine)], env=env, check=True, capture_output=True, text=True).stdout
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(pp\d+|tg128): ([\d.]+) tok/s", out, re.M)}


def engine_decode_at(engine: Path, model: Path, threads: int, depth: int) -> float:
    """The engine's tg128 after a `depth`-token prompt (0: from the start); at the API prompt's
    length, the positions the API decode runs at."""
    env = {**os.environ, "CORTEX_BENCH_MODEL": str(model), "CORTEX_BENCH_ONLY": "tg128", "CORTEX_BENCH_DEPTH": str(depth),
           "CORTEX_BENCH_REPS": "1", "CANDLE_NUM_THREADS": str(threads), "RAYON_NUM_THREADS": str(threads)}
    out = subprocess.run([str(engine)], env=env, check=True, capture_output=True, text=True).stdout
    return float(re.search(r"^tg128(?: @ \d+)?: ([\d.]+) tok/s", out, re.M).group(1))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, log: Path) -> None:
    for _ in range(600):
        if proc.poll() is not None:
            break
        try:
            urllib.request.urlopen(f"{url}/v1/models", timeout=2).read()
            return
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"server did not start:\n{log.read_text()[-3000:]}")


def start_cortex(binary: Path, model: Path, model_id: str, threads: int, work: Path) -> tuple[subprocess.Popen, str, str]:
    home = work / "cortex"
    home.mkdir(parents=True, exist_ok=True)
    (home / model.name).symlink_to(model)
    port = free_port()
    log = work / "cortex.log"
    proc = subprocess.Popen([str(binary), "serve", "--listen", f"127.0.0.1:{port}", "--metrics-listen", "127.0.0.1:0",
                             "--models-dir", str(home)], stdout=subprocess.DEVNULL, stderr=open(log, "w"),
                            env={**os.environ, "CANDLE_NUM_THREADS": str(threads), "RUST_LOG": "warn"})
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc, log)
    return proc, url, model_id


def start_llama_server(bin_dir: Path, model: Path, threads: int, work: Path, kind: str) -> tuple[subprocess.Popen, str, str]:
    port = free_port()
    log = work / f"llama-{kind}.log"
    proc = subprocess.Popen([str(bin_dir / "llama-server"), "-m", str(model), "-t", str(threads), "-c", "4096",
                             "-np", "1", "--host", "127.0.0.1", "--port", str(port), "--no-webui"],
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc, log)
    return proc, url, model.stem


def stream(url: str, model: str, prompt: str, max_tokens: int) -> tuple[list[float], int, int, float]:
    """One streamed chat completion: the arrival time of every chunk that carries text, the
    completion and prompt tokens the server counted, and the time the request was sent."""
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}, "ignore_eos": True}
    req = urllib.request.Request(f"{url}/v1/chat/completions", json.dumps(body).encode(),
                                 {"content-type": "application/json"})
    t0 = time.perf_counter()
    times, completion, prompt_tokens = [], 0, 0
    try:
        resp = urllib.request.urlopen(req, timeout=600)
    except urllib.error.HTTPError as e:
        raise SystemExit(f"{url}: {e.code} {e.read().decode(errors='replace')}") from None
    with resp:
        for raw in resp:
            line = raw.decode().strip()
            if not line.startswith("data:") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[5:])
            if chunk.get("usage"):
                completion = chunk["usage"].get("completion_tokens", completion)
                prompt_tokens = chunk["usage"].get("prompt_tokens", prompt_tokens)
            for choice in chunk.get("choices", []):
                if choice.get("delta", {}).get("content"):
                    times.append(time.perf_counter())
    return times, completion or len(times), prompt_tokens, t0


def api_decode(url: str, model: str, nonce: int, requests: int = 1) -> float:
    """Tokens per second between the first and the last streamed token of a 128-token answer;
    the median of `requests` such answers."""
    return statistics.median(api_decode_prompt(url, model, nonce + i)[0] for i in range(requests))


def api_decode_prompt(url: str, model: str, nonce: int) -> tuple[float, int]:
    """`api_decode`, and the prompt's length in tokens (chat template included)."""
    times, n, prompt_tokens, _ = stream(url, model, f"({nonce}) Write a long story about a lighthouse keeper.", 128)
    return (n - 1) / (times[-1] - times[0]), prompt_tokens


def long_prompt(nonce: int) -> str:
    words = ("river stone lantern orchard copper meadow harbor violet engine quiet winter signal garden "
             "marble falcon ribbon canyon thunder silver pepper").split()
    body = " ".join(words[(i * 7 + nonce) % len(words)] for i in range(1900))
    return f"Note {nonce}. {body}\nSummarise the note above in one line."


def api_prefill(url: str, model: str, nonce: int) -> tuple[float, int]:
    """Prompt tokens per second to the first streamed token of a ~2k-token prompt (the nonce
    at its start keeps any prefix cache out of it)."""
    times, _, prompt_tokens, t0 = stream(url, model, long_prompt(nonce), 1)
    return prompt_tokens / (times[0] - t0), prompt_tokens


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--models", default="smollm2,gemma3")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--depth", type=int, default=0,
                   help="also decode after this many tokens of context (an agent's long conversation), "
                        "cortex's engine against both llama-bench builds (-d)")
    a = p.parse_args()
    models = {k: MODELS[k][0] for k in a.models.split(",")}
    builds = {kind: build(kind) for kind in ("native", "generic")}
    cortex, engine = cortex_binaries()
    flags = cpu_flags()
    isa = " ".join(f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile",
                               "amx_int8", "amx_bf16") if f in flags)
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  {cpu_name()}  {os.cpu_count()} CPUs "
          f"({isa}); threads={a.threads}; llama.cpp from llama-cpp-python {LLAMA_CPP_PYTHON}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="vs-llama-"))
    # rows[model][(who, measure)] = [per round]
    rows: dict[str, dict[tuple[str, str], list[float]]] = {m: {} for m in models}
    depths: dict[str, int] = {}
    try:
        for name, model in models.items():
            mwork = work / name
            mwork.mkdir()
            servers = {"cortex": start_cortex(cortex, model, MODELS[name][1], a.threads, mwork)}
            for kind, bin_dir in builds.items():
                servers[f"llama.cpp {kind}"] = start_llama_server(bin_dir, model, a.threads, mwork, kind)
            try:
                for _, url, mid in servers.values():  # warm each server once
                    api_decode(url, mid, 0)
                # The API decode runs after its chat-templated prompt; the engine's tg128 at that
                # depth tells the serve path's own cost from attention over the prompt.
                depth = depths[name] = api_decode_prompt(servers["cortex"][1], servers["cortex"][2], time.time_ns())[1]
                steps = [("llama.cpp native", lambda: llama_bench(builds["native"], model, a.threads)),
                         ("llama.cpp generic", lambda: llama_bench(builds["generic"], model, a.threads)),
                         ("cortex", lambda: engine_bench(engine, model, a.threads)),
                         ("cortex", lambda: {"tg128 at api depth": engine_decode_at(engine, model, a.threads, depth)})]
                steps += [(who, (lambda u=url, m=mid: {"api tg128": api_decode(u, m, time.time_ns(), 3)}))
                          for who, (_, url, mid) in servers.items()]
                if a.depth:
                    long = f"tg128 @ {a.depth}"
                    steps += [(f"llama.cpp {kind}", (lambda b=b: {long: llama_bench_at(b, model, a.threads, a.depth)}))
                              for kind, b in builds.items()]
                    steps.append(("cortex", lambda: {long: engine_decode_at(engine, model, a.threads, a.depth)}))

                def pair() -> dict[str, float]:
                    _, url, mid = servers["cortex"]
                    at0 = engine_decode_at(engine, model, a.threads, 0)
                    api = api_decode(url, mid, time.time_ns(), 3)
                    at = engine_decode_at(engine, model, a.threads, depth)
                    return {"paired api ÷ tg128": api / at0, "paired api ÷ tg128 at api depth": api / at}

                steps.append(("cortex", pair))
                steps.append(("cortex", lambda: dict(zip(("api pp2k", "api pp2k tokens"),
                                                         api_prefill(servers["cortex"][1], servers["cortex"][2],
                                                                     time.time_ns())))))
                for r in range(a.rounds):
                    k = r % len(steps)
                    for who, step in steps[k:] + steps[:k]:
                        for measure, v in step().items():
                            rows[name].setdefault((who, measure), []).append(v)
                    shown = ", ".join(f"{w} {m} {v[-1]:.2f}" if "÷" in m else f"{w} {m} {v[-1]:.1f}"
                                      for (w, m), v in sorted(rows[name].items()))
                    print(f"{name} round {r + 1}: {shown}", flush=True)
            finally:
                for proc, _, _ in servers.values():
                    proc.terminate()
                    proc.wait()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print("\n## medians (tok/s)")
    for name, rs in rows.items():
        med = {k: statistics.median(v) for k, v in rs.items()}
        print(f"\n{name} ({models[name].name})")
        print("| measure | cortex | llama.cpp native | llama.cpp generic | ÷ native | ÷ generic |")
        print("|---|---|---|---|---|---|")
        for measure in ("tg128", "pp64", "pp512", "api tg128") + ((f"tg128 @ {a.depth}",) if a.depth else ()):
            c = med.get(("cortex", measure))
            n = med.get(("llama.cpp native", measure))
            g = med.get(("llama.cpp generic", measure))
            print(f"| {measure} | {c:.1f} | {n:.1f} | {g:.1f} | {c / n:.2f}× | {c / g:.2f}× |")
        tokens = int(med.get(("cortex", "api pp2k tokens"), 0))
        print(f"cortex API decode ÷ engine tg128: {med[('cortex', 'api tg128')] / med[('cortex', 'tg128')]:.2f}× "
              f"(medians'); the rounds' pairs, median: {med[('cortex', 'paired api ÷ tg128')]:.2f}×")
        at = med[("cortex", "tg128 at api depth")]
        print(f"cortex API decode ÷ engine tg128 after the API's {depths[name]}-token prompt: "
              f"{med[('cortex', 'api tg128')]:.1f} / {at:.1f} = {med[('cortex', 'api tg128')] / at:.2f}×; "
              f"the rounds' pairs, median: {med[('cortex', 'paired api ÷ tg128 at api depth')]:.2f}×")
        print(f"cortex API prefill of a {tokens}-token prompt ÷ engine pp2048: "
              f"{med[('cortex', 'api pp2k')]:.1f} / {med[('cortex', 'pp2048')]:.1f} = "
              f"{med[('cortex', 'api pp2k')] / med[('cortex', 'pp2048')]:.2f}×")


if __name__ == "__main__":
    main()
