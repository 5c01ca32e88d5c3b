#!/usr/bin/env python3
"""The load-and-faults run behind bench/load-faults (which builds cortex, makes the fleet CA and
the tiny models, then calls this).

Three neurons on 127.0.0.1: a holds tiny-a, b holds tiny-b, c holds nothing. Each client
thread loops until the time is up: a random node, model, dialect (OpenAI chat completions or
Anthropic messages, through the official SDKs, no retries), streaming or not, 16-400 tokens.
Meanwhile b is killed with SIGKILL and restarted on the same ports and directories, and later a
is paused with SIGSTOP for a few seconds.

Every request ends as one of:
  ok      a complete answer: a finish_reason (OpenAI) or message_stop (Anthropic) in a stream, a
          finish_reason / stop_reason in a body.
  failed  an error the client saw: an HTTP error status, an error event in the stream, a
          refused connection (the killed node's port while it is down), or a connection cut by
          the killed node itself (it cannot say goodbye). A connection cut by a node that was not
          killed is counted here too but fails the run: a live gateway owes its client an error
          event.
  lost    neither: a stream that ended without its final event and without an error, or no
          byte for TIMEOUT seconds (a hang).
"""

import argparse
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter, defaultdict

import anthropic
import httpx
import openai

# The openai SDK speaks through httpx, the anthropic SDK through its fork httpx2: a transport
# error is either's.
try:
    import httpx2

    HTTP_MODULES = (httpx, httpx2)
except ImportError:
    HTTP_MODULES = (httpx,)
CONNECT_ERRORS = tuple(m.ConnectError for m in HTTP_MODULES)
TRANSPORT_ERRORS = tuple(m.TransportError for m in HTTP_MODULES)
TIMEOUTS = tuple(m.TimeoutException for m in HTTP_MODULES) + (openai.APITimeoutError, anthropic.APITimeoutError)

TIMEOUT = 60.0  # seconds without a byte before a request counts as hung (lost)
PAUSE = 5.0  # how long a stays stopped
DOWN = 5.0  # how long b stays dead before its restart
MODELS = ["tiny-a", "tiny-b"]


def free_port(kind):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, timeout=5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


class Node:
    def __init__(self, name, args, seeds=()):
        self.name, self.args, self.seeds = name, args, list(seeds)
        self.http = free_port(socket.SOCK_STREAM)
        self.metrics = free_port(socket.SOCK_STREAM)
        self.mesh = free_port(socket.SOCK_DGRAM)
        self.log = os.path.join(args.work, f"{name}.log")
        self.proc = None
        self.url = f"http://127.0.0.1:{self.http}"

    def start(self):
        cmd = [self.args.bin, "serve", "--name", self.name, "--tls-dir", os.path.join(self.args.work, "tls"),
               "--models-dir", os.path.join(self.args.work, self.name),
               "--listen", f"127.0.0.1:{self.http}", "--metrics-listen", f"127.0.0.1:{self.metrics}",
               "--mesh-listen", f"127.0.0.1:{self.mesh}"]
        for s in self.seeds:
            cmd += ["--join", f"127.0.0.1:{s.mesh}"]
        env = dict(os.environ, RUST_LOG="info", NO_COLOR="1")
        with open(self.log, "a") as log:  # appended across restarts
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env)
        end = time.time() + 30
        while time.time() < end:
            try:
                get(self.url + "/health", 1)
                return
            except OSError:
                time.sleep(0.1)
        sys.exit(f"{self.name} did not start; see its log:\n{open(self.log).read()}")

    def rss_mib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def gauges(self):
        """In-flight and queued requests summed over models, from the Prometheus endpoint."""
        text = get(f"http://127.0.0.1:{self.metrics}/metrics")
        out = {"cortex_in_flight_requests": 0.0, "cortex_queue_depth": 0.0}
        for line in text.splitlines():
            name = line.split("{")[0].split(" ")[0]
            if name in out:
                out[name] += float(line.rsplit(" ", 1)[1])
        return out

    def peer_states(self):
        import json
        status = json.loads(get(self.url + "/cortex/v1/status"))
        return {p["name"]: p["state"] for p in status.get("peers", []) if p["name"] != self.name}


class Run:
    def __init__(self, nodes):
        self.nodes = nodes
        self.results = []  # (outcome, kind, latency_s, target, stream, model, t0, t1)
        self.lock = threading.Lock()
        self.killed = []  # (node, from, to): when a node was dead
        self.stop_at = 0.0
        self.crashed = []  # client threads that died
        self.relayed = set()  # streams a or c is relaying from b, first token received

    def record(self, outcome, kind, t0, t1, target, stream, model):
        with self.lock:
            self.results.append((outcome, kind, t1 - t0, target, stream, model, t0, t1))

    def was_killed(self, target, t0, t1):
        return any(n == target and t0 <= end and start <= t1 for n, start, end in self.killed)


def error_type(e):
    body = getattr(e, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("type"):
            return inner["type"]
    return type(e).__name__


def relaying(run, i, target, model):
    """Notes a stream that a gateway relays from b, so the kill can wait for one."""
    if target.name != "b" and model == "tiny-b":
        run.relayed.add(i)
    return True


def one(run, rng, clients, i):
    try:
        attempt(run, rng, clients, i)
    finally:
        run.relayed.discard(i)


def attempt(run, rng, clients, i):
    target = rng.choice(run.nodes)
    model = rng.choice(MODELS)
    dialect = rng.choice(["openai", "anthropic"])
    stream = rng.random() < 0.5
    max_tokens = rng.randint(16, 400)  # long enough that the faults catch streams under way
    messages = [{"role": "user", "content": f"Tell me a story, number {i}."}]
    t0 = time.time()
    started = False
    try:
        if dialect == "openai":
            c = clients[target.name]["openai"]
            if stream:
                done = False
                opts = {"include_usage": True} if rng.random() < 0.5 else None
                for chunk in c.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens,
                                                       stream=True, stream_options=opts):
                    started = relaying(run, i, target, model)
                    if chunk.choices and chunk.choices[0].finish_reason:
                        done = True
            else:
                r = c.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens)
                done = bool(r.choices and r.choices[0].finish_reason)
        else:
            c = clients[target.name]["anthropic"]
            if stream:
                done = False
                for ev in c.messages.create(model=model, messages=messages, max_tokens=max_tokens, stream=True):
                    started = relaying(run, i, target, model)
                    if ev.type == "message_stop":
                        done = True
            else:
                r = c.messages.create(model=model, messages=messages, max_tokens=max_tokens)
                done = r.stop_reason is not None
        t1 = time.time()
        if done:
            run.record("ok", "complete answer", t0, t1, target.name, stream, model)
        else:
            run.record("lost", "stream ended without its final event or an error", t0, t1, target.name, stream, model)
    except TIMEOUTS:
        run.record("lost", f"no answer within {TIMEOUT:.0f} s", t0, time.time(), target.name, stream, model)
    except Exception as e:  # noqa: BLE001 - every other ending is classified below
        t1 = time.time()
        cause = e.__cause__ if isinstance(e, (openai.APIConnectionError, anthropic.APIConnectionError)) else e
        if isinstance(cause, CONNECT_ERRORS):
            kind = "connection refused"
        elif isinstance(cause, TRANSPORT_ERRORS + (openai.APIConnectionError, anthropic.APIConnectionError)):
            killed = run.was_killed(target.name, t0, t1)
            who = "the killed node" if killed else "a LIVE node"
            kind = f"connection cut by {who} ({type(cause).__name__})"
        elif isinstance(e, (openai.APIError, anthropic.APIError)) and started:
            kind = f"error event in the stream: {error_type(e)}"
        elif isinstance(e, (openai.APIStatusError, anthropic.APIStatusError)):
            kind = f"HTTP {e.status_code} {error_type(e)}"
        else:
            kind = f"client exception {type(e).__name__}: {e}"
        run.record("failed", kind, t0, t1, target.name, stream, model)


def client_loop(run, seed):
    rng = random.Random(seed)
    clients = {
        n.name: {
            "openai": openai.OpenAI(base_url=n.url + "/v1", api_key="unused", max_retries=0, timeout=TIMEOUT),
            "anthropic": anthropic.Anthropic(base_url=n.url, api_key="unused", max_retries=0, timeout=TIMEOUT),
        }
        for n in run.nodes
    }
    i = 0
    while time.time() < run.stop_at:
        one(run, rng, clients, seed * 100000 + i)
        i += 1


def guarded(run, seed):
    # A client that dies would shrink the load silently: it fails the run instead.
    try:
        client_loop(run, seed)
    except Exception as e:  # noqa: BLE001
        run.crashed.append(f"client {seed}: {type(e).__name__}: {e}")


def wait_for(what, limit):
    end = time.time() + limit
    while time.time() < end:
        try:
            if what():
                return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] * 1000 if xs else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--profile", default="release")
    args = ap.parse_args()
    T = max(args.seconds, 30.0)

    a = Node("a", args)
    b = Node("b", args, seeds=[a])
    c = Node("c", args, seeds=[a])
    nodes = [a, b, c]
    for n in nodes:
        n.start()
    rss = {n.name: {"start": n.rss_mib()} for n in nodes}
    healed = lambda: all(set(n.peer_states().values()) == {"alive"} and len(n.peer_states()) == 2 for n in nodes)
    if not wait_for(lambda: healed() and all(m in get(c.url + "/v1/models") for m in MODELS), 60):
        sys.exit("the fleet did not form")

    run = Run(nodes)
    t_start = time.time()
    run.stop_at = t_start + T
    threads = [threading.Thread(target=guarded, args=(run, s + 1), daemon=True) for s in range(args.clients)]
    for t in threads:
        t.start()
    events = []

    def at(offset):
        time.sleep(max(0.0, t_start + offset - time.time()))

    warm = min(10.0, 0.15 * T)
    at(warm)
    for n in nodes:
        rss[n.name]["warm"] = n.rss_mib()
    at(0.25 * T)
    # Kill b while a gateway is relaying one of its streams (that path must end with a clean
    # error event), waiting a few seconds at most for one.
    wait_for(lambda: run.relayed, 10)
    rss["b"]["before kill"] = b.rss_mib()
    # Noted before the signal: a request cut at once must already count as cut by the killed node.
    killed_at = time.time()
    run.killed.append(("b", killed_at, float("inf")))
    b.proc.send_signal(signal.SIGKILL)
    b.proc.wait()
    events.append(f"{killed_at - t_start:5.1f} s  SIGKILL b")
    time.sleep(DOWN)
    b.start()
    run.killed[-1] = ("b", killed_at, time.time())
    events.append(f"{time.time() - t_start:5.1f} s  b restarted (same name, ports, directories), answering /health")
    rss["b"]["restarted"] = b.rss_mib()
    rejoined = wait_for(lambda: a.peer_states().get("b") == "alive" and c.peer_states().get("b") == "alive", 30)
    events.append(f"{time.time() - t_start:5.1f} s  " + ("a and c see b alive again" if rejoined else
                                                         "b NOT seen alive again within 30 s"))
    at(max(0.6 * T, time.time() - t_start + 2))
    for n in nodes:
        rss[n.name]["mid"] = n.rss_mib()
    a.proc.send_signal(signal.SIGSTOP)
    stopped_at = time.time()
    events.append(f"{stopped_at - t_start:5.1f} s  SIGSTOP a")
    time.sleep(PAUSE)
    a.proc.send_signal(signal.SIGCONT)
    resumed_at = time.time()
    events.append(f"{time.time() - t_start:5.1f} s  SIGCONT a")
    for t in threads:
        t.join()
    events.append(f"{time.time() - t_start:5.1f} s  last client request ended")

    # Invariants, after the fleet has had a moment to settle.
    checks = []
    zero = wait_for(lambda: all(sum(n.gauges().values()) == 0 for n in nodes), 30)
    gauges = {n.name: n.gauges() for n in nodes}
    checks.append(("in-flight and queue gauges back to zero on every neuron", zero,
                   "; ".join(f"{k}: in_flight {g['cortex_in_flight_requests']:.0f}, queue {g['cortex_queue_depth']:.0f}"
                             for k, g in gauges.items())))
    heal = wait_for(healed, 30)
    checks.append(("every neuron sees the other two alive at the end", heal,
                   "; ".join(f"{n.name}: {n.peer_states()}" for n in nodes)))
    for n in nodes:
        rss[n.name]["end"] = n.rss_mib()
    panics = [n.name for n in nodes if "panicked" in open(n.log).read()]
    checks.append(("no neuron log contains 'panicked'", not panics, ", ".join(panics) or "none"))
    # A leak grows with the requests served; allocator arenas and caches level off. The bound
    # flags gross growth in a short run: after warm-up, at most 32 MiB + 50 %.
    mem_ok, mem_notes = True, []
    for n in nodes:
        # b's new process is warm (its model loaded again) by mid-run.
        base = rss[n.name]["mid"] if n.name == "b" else rss[n.name]["warm"]
        grown = rss[n.name]["end"] - base
        ok = grown <= 32 + 0.5 * base
        mem_ok &= ok
        mem_notes.append(f"{n.name}: {grown:+.1f} MiB since {'mid-run' if n.name == 'b' else 'warm-up'}")
    checks.append(("memory bounded (growth after warm-up ≤ 32 MiB + 50 %)", mem_ok, "; ".join(mem_notes)))
    live_cuts = [r for r in run.results if "LIVE" in r[1]]
    checks.append(("no connection cut by a live node", not live_cuts,
                   "; ".join(f"{r[3]} at {r[7] - t_start:.1f} s ({r[5]}, {'stream' if r[4] else 'body'})"
                             for r in live_cuts) or "0"))
    checks.append(("every client ran to the end", not run.crashed, "; ".join(run.crashed) or f"{args.clients}"))
    ok = sum(r[0] == "ok" for r in run.results)
    checks.append(("most requests answered", ok > len(run.results) / 2, f"{ok} of {len(run.results)}"))
    lost = [r for r in run.results if r[0] == "lost"]
    checks.append(("no lost request", not lost,
                   "; ".join(f"{r[3]} at {r[7] - t_start:.1f} s ({r[5]}, {r[1]})" for r in lost) or "0"))
    with open(os.path.join(args.work, "requests.tsv"), "w") as f:
        for r in sorted(run.results, key=lambda r: r[6]):
            f.write(f"{r[6] - t_start:.3f}\t{r[7] - t_start:.3f}\t{r[3]}\t{r[5]}\t{r[4]}\t{r[0]}\t{r[1]}\n")

    for n in nodes:
        n.proc.send_signal(signal.SIGTERM)
    for n in nodes:
        try:
            n.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            n.proc.kill()

    # The report.
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"# {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(t_start))}  {cpu}, {os.cpu_count()} CPUs, "
          f"{args.profile} build; {args.clients} clients for {T:.0f} s")
    print("\n## Timeline\n")
    for e in events:
        print(f"    {e}")
    total = len(run.results)
    by = Counter((r[0], r[1]) for r in run.results)
    print(f"\n## Requests ({total})\n")
    print("| outcome | kind | requests |")
    print("|---|---|---|")
    for (outcome, kind), k in sorted(by.items(), key=lambda x: (["ok", "failed", "lost"].index(x[0][0]), -x[1])):
        print(f"| {outcome} | {kind} | {k} |")
    per_node = defaultdict(Counter)
    for r in run.results:
        per_node[r[3]][r[0]] += 1
    print("\nper node asked: " + "; ".join(f"{k}: {dict(v)}" for k, v in sorted(per_node.items())))
    # Whether the faults hit requests under way, and how those ended.
    def caught(label, pick):
        hit = Counter(f"{r[0]}: {r[1]}" for r in run.results if pick(r))
        print(f"\n{label}: {sum(hit.values())}" + "".join(f"\n    {k}: {v}" for k, v in hit.most_common()))

    caught("Streams forwarded to b (asked of a or c) under way at b's SIGKILL",
           lambda r: r[5] == "tiny-b" and r[3] != "b" and r[4] and r[6] < killed_at < r[7])
    caught("Requests sent straight to b under way at its SIGKILL", lambda r: r[3] == "b" and r[6] < killed_at < r[7])
    caught("Requests to or through a under way during its SIGSTOP",
           lambda r: (r[3] == "a" or r[5] == "tiny-a") and r[6] < resumed_at and r[7] > stopped_at)
    print("\n## Latency of complete answers\n")
    print("| | requests | p50 | p99 |")
    print("|---|---|---|---|")
    for label, pick in [("streamed", True), ("not streamed", False), ("all", None)]:
        xs = [r[2] for r in run.results if r[0] == "ok" and (pick is None or r[4] == pick)]
        print(f"| {label} | {len(xs)} | {pct(xs, 50):.1f} ms | {pct(xs, 99):.1f} ms |")
    print("\n## Memory (VmRSS, MiB)\n")
    print("| neuron | start | after warm-up | before kill | after restart | mid-run | end |")
    print("|---|---|---|---|---|---|---|")
    for n in nodes:
        r = rss[n.name]
        cell = lambda k: f"{r[k]:.1f}" if k in r else "–"
        print(f"| {n.name} | {cell('start')} | {cell('warm')} | {cell('before kill')} | {cell('restarted')} | "
              f"{cell('mid')} | {cell('end')} |")
    print("\n## Invariants\n")
    print("| check | result | detail |")
    print("|---|---|---|")
    for name, ok, detail in checks:
        print(f"| {name} | {'ok' if ok else 'FAILED'} | {detail} |")
    if not all(ok for _, ok, _ in checks):
        for n in nodes:
            print(f"\n---- {n.name}'s log (last 40 lines) ----", file=sys.stderr)
            print("".join(open(n.log).readlines()[-40:]), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
