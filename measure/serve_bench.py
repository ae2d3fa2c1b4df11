"""``gptedge bench --serve``: ``gptedge serve`` under 1, 4, 16 and 32 concurrent streaming clients.

Per variant, the server runs in its own process (as users run it) with as many slots as the most
clients, and every client streams requests of --prompt-tokens random token ids and exactly
--new-tokens new ones (gptedge's ``ignore_eos`` extra field), each client two in a row. Reported:

    aggregate_tokens_per_s   tokens all clients received / wall time of the round
    ttft_ms p50, p95         request sent -> first streamed token, over every request
    client_tokens_per_s      each request's own decode speed (first token -> last), median
    scaling                  aggregate / the one-client aggregate

after an untimed round with the most clients (steady state: every row of the server's cache
already written once), and the same request in-process through ``gptedge.runtime`` (a ``gptedge
bench`` worker: batch 1), so "a single client through the server loses at most N %" is a ratio
of one run. Clients are threads of this process speaking HTTP with the standard library; they cost
little next to the server, which has the cores to itself only when nothing else runs.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from gptedge.measure import tables
from gptedge.measure.bench import token_counts
from gptedge.measure.machine import describe
from gptedge.measure.pytorch import subprocess_json

CLIENTS = (1, 4, 16, 32)
ROUNDS = 2  # requests per client, one after the other


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(bundle: str, variant: str, threads: int, slots: int) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gptedge", "serve", bundle, "--variant", variant, "--port", str(port),
                             "--threads", str(threads), "--slots", str(slots), "--queue", "256"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gptedge serve exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).close()
            return proc, port
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("gptedge serve did not answer within 120 s")


def _request(port: int, prompt: list[int], new_tokens: int) -> dict[str, float]:
    """One streamed completion: when it was sent, its first and last token arrived, and tokens."""
    body = json.dumps({"prompt": prompt, "max_tokens": new_tokens, "temperature": 0, "stream": True,
                       "ignore_eos": True, "stream_options": {"include_usage": True}})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    sent = time.perf_counter()
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    if response.status != 200:
        raise RuntimeError(f"the server answered {response.status}: {response.read()[:300]!r}")
    first = last = 0.0
    tokens = 0
    for line in response:  # parsed only as far as needed: the clients share the cores with the server
        if not line.startswith(b"data: {"):
            continue
        if b'"usage"' in line:
            tokens = json.loads(line[6:])["usage"]["completion_tokens"]
            continue
        now = time.perf_counter()
        first = first or now
        last = now
    conn.close()
    return {"sent": sent, "first": first, "last": last, "tokens": tokens}


def _round(port: int, clients: int, prompt_tokens: int, new_tokens: int, vocab_size: int) -> dict[str, Any]:
    rng = np.random.default_rng(clients)
    done: list[dict[str, float]] = []
    errors: list[str] = []

    def client() -> None:
        for _ in range(ROUNDS):
            try:
                done.append(_request(port, rng.integers(0, vocab_size, prompt_tokens).tolist(), new_tokens))
            except Exception as e:  # noqa: BLE001 - counted and reported
                errors.append(repr(e))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ttft = sorted(1000 * (r["first"] - r["sent"]) for r in done)
    speeds = [(r["tokens"] - 1) / (r["last"] - r["first"]) for r in done if r["tokens"] > 1 and r["last"] > r["first"]]
    return {
        "clients": clients,
        "requests": len(done),
        "errors": errors,
        "aggregate_tokens_per_s": sum(r["tokens"] for r in done) / wall,
        "ttft_ms_p50": statistics.median(ttft) if ttft else None,
        "ttft_ms_p95": ttft[min(len(ttft) - 1, int(0.95 * len(ttft)))] if ttft else None,
        "client_tokens_per_s": statistics.median(speeds) if speeds else None,
    }


def measure_variant(bundle: str, variant: str, threads: int, prompt_tokens: int, new_tokens: int,
                    clients: list[int], vocab_size: int) -> dict[str, Any]:
    print(f"serving {variant} ...", file=sys.stderr, flush=True)
    proc, port = _start(bundle, variant, threads, max(clients))
    try:
        # Warm up, untimed, with the most clients: sessions and thread pools, and every row of the
        # batch cache written once. The first write to a row faults its pages in, a one-time cost
        # per server (large on a VM) that would otherwise fall on whichever round first uses that
        # many rows.
        _round(port, max(clients), prompt_tokens, new_tokens, vocab_size)
        rounds = []
        for c in clients:
            print(f"  {c} clients ...", file=sys.stderr, flush=True)
            rounds.append(_round(port, c, prompt_tokens, new_tokens, vocab_size))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    one = rounds[0]["aggregate_tokens_per_s"]
    for r in rounds:
        r["scaling"] = r["aggregate_tokens_per_s"] / one
    print(f"  {variant} in-process ...", file=sys.stderr, flush=True)
    alone = subprocess_json([sys.executable, "-m", "gptedge.measure.bench", bundle, "--variant", variant, "--provider",
                             "cpu", "--threads", str(threads), "--prompt-tokens", str(prompt_tokens), "--new-tokens",
                             str(new_tokens), "--repeat", "3"], f"in-process benchmark of {variant}")
    return {"variant": variant, "rounds": rounds, "in_process": {"decode_tokens_per_s": alone["decode_tokens_per_s"],
                                                                 "ttft_ms": alone["ttft_ms"]}}


def run_serve_bench(args: argparse.Namespace, variants: list[str], manifest: Any) -> int:
    prompt_tokens, new_tokens = token_counts(args, manifest.model.context_length)
    clients = sorted(set(args.clients or CLIENTS))
    if clients[0] != 1:
        clients = [1, *clients]  # the one-client figure every scaling ratio is taken against
    results = [measure_variant(str(args.bundle), v, args.threads, prompt_tokens, new_tokens, clients,
                               manifest.model.vocab_size) for v in variants]
    report = {"bundle": str(args.bundle), "machine": describe(), "threads": args.threads,
              "prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "results": results}
    tables.write_report(Path(args.out), "bench_serve", report, format_table(report), write_chart)
    return 0


def format_table(report: dict[str, Any]) -> str:
    rows = [("variant", "clients", "aggregate tok/s", "x one client", "client tok/s", "ttft p50 ms", "ttft p95 ms",
             "errors")]
    lines = []
    for result in report["results"]:
        for r in result["rounds"]:
            rows.append((result["variant"], str(r["clients"]), f"{r['aggregate_tokens_per_s']:.0f}",
                         f"{r['scaling']:.2f}", f"{r['client_tokens_per_s']:.0f}", f"{r['ttft_ms_p50']:.1f}",
                         f"{r['ttft_ms_p95']:.1f}", str(len(r["errors"]))))
        alone = tables.median(result["in_process"]["decode_tokens_per_s"])
        one = result["rounds"][0]["client_tokens_per_s"]
        lines.append(f"{result['variant']}: one client through the server {one:.0f} tok/s, in-process "
                     f"{alone:.0f} tok/s ({one / alone:.2f}x)")
    return "\n".join([tables.text_table(rows), *lines])


def write_chart(report: dict[str, Any], path: Path) -> Path | None:
    plt = tables.pyplot(required=False)
    if plt is None:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for result in report["results"]:
        clients = [r["clients"] for r in result["rounds"]]
        left.plot(clients, [r["aggregate_tokens_per_s"] for r in result["rounds"]], marker="o", label=result["variant"])
        right.plot(clients, [r["ttft_ms_p95"] for r in result["rounds"]], marker="o", label=result["variant"])
    left.set(xscale="log", xlabel="concurrent streaming clients", ylabel="tokens / s, all clients",
             title="throughput")
    right.set(xscale="log", xlabel="concurrent streaming clients", ylabel="ms", title="time to first token, p95")
    for ax in (left, right):
        ax.set_xticks(clients, [str(c) for c in clients])
        ax.legend()
    return tables.save_png(fig, path)
