"""Serving benchmark: aggregate tokens/s and time to first token for 1, 8 and 32 concurrent clients,
and a soak test (64 streaming clients, some hanging up) that checks errors, leaked slots and memory.

    python bench/serve_bench.py                        # demo checkpoint of depth 4, 1/8/32 clients
    python bench/serve_bench.py --model runs/sft/model --clients 1 8 32 --max-tokens 128
    python bench/serve_bench.py --soak 60              # the 60 s load acceptance run

The server runs as a separate process (`nanoseek serve`, so client and server do not share a GIL),
with --max-slots 32 and one torch thread by default (on 2 cores: one for the model, one for HTTP).
Each client streams chat completions back to back with `ignore_eos`, so every request generates
exactly --max-tokens tokens. For each concurrency the run is repeated --repeats times; the table shows
the median aggregate tokens/s, pooled p50 / p99 time to first token, and the speed-up over one
client. The goal is >= 6x at 32 clients (continuous batching: one forward serves all of them).
Without --model it builds the scripted demo checkpoint (`nanoseek.serve.demo`) at --depth: real
DeepSeek-V3 compute per token, scripted weights.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from nanoseek.serve.demo import build_demo_checkpoint
from nanoseek.serve.loadgen import LoadResult, run_load


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, port: int, max_slots: int, threads: int) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "nanoseek.serve.cli",
        "--model",
        str(model),
        "--port",
        str(port),
        "--max-slots",
        str(max_slots),
        "--threads",
        str(threads),
        "--max-queue",
        "1024",
        "--log-level",
        "warning",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    server = subprocess.Popen(command, env=env)
    return wait_until_up(server, f"http://127.0.0.1:{port}/health")


def wait_until_up(server: subprocess.Popen, url: str, timeout: float = 120) -> subprocess.Popen:
    """Wait until GET `url` answers 200 (the server process is up); kill it if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.2)
        if server.poll() is not None:
            raise RuntimeError(f"the server exited during start-up (status {server.returncode})")
    server.kill()
    raise RuntimeError(f"the server did not start within {timeout:g} s")


def metrics(url: str) -> dict[str, float]:
    out = {}
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def throughput(url: str, clients: list[int], repeats: int, requests: int, max_tokens: int) -> list[dict]:
    asyncio.run(run_load(url, clients=max(clients), requests_per_client=1, max_tokens=8))  # warm-up
    rows = []
    for c in clients:
        runs: list[LoadResult] = []
        for r in range(repeats):
            per_client = requests if c == 1 else max(1, requests // 2)
            result = asyncio.run(
                run_load(url, clients=c, requests_per_client=per_client, max_tokens=max_tokens, seed=r)
            )
            if result.errors:
                raise RuntimeError(f"{c} clients: {result.errors[:3]}")
            runs.append(result)
            print("  " + result.summary(), flush=True)
        pooled = LoadResult(c, ttft=[t for run in runs for t in run.ttft])
        rows.append(
            {
                "clients": c,
                "tokens_per_s": statistics.median(run.tokens_per_second for run in runs),
                "ttft_p50_ms": pooled.ttft_quantile(0.5) * 1000,
                "ttft_p99_ms": pooled.ttft_quantile(0.99) * 1000,
                "requests": sum(run.requests for run in runs),
            }
        )
    base = rows[0]["tokens_per_s"]
    for row in rows:
        row["speedup"] = row["tokens_per_s"] / base
    return rows


async def soak(url: str, seconds: float, clients: int, max_tokens: int) -> dict:
    rss: list[tuple[float, float]] = []
    start = time.perf_counter()

    async def sample_memory() -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            while True:
                text = (await http.get(url + "/metrics")).text
                for line in text.splitlines():
                    if line.startswith("process_resident_memory_bytes"):
                        rss.append((time.perf_counter() - start, float(line.split()[-1]) / 2**20))
                await asyncio.sleep(5)

    sampler = asyncio.ensure_future(sample_memory())
    result = await run_load(
        url, clients=clients, duration=seconds, max_tokens=max_tokens, disconnect_fraction=0.25, seed=7
    )
    sampler.cancel()
    deadline = time.monotonic() + 30
    while True:
        m = metrics(url)
        keys = ("nanoseek_active_slots", "nanoseek_queue_depth", "nanoseek_requests_in_flight")
        if all(m[k] == 0 for k in keys) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    return {"result": result, "rss": rss, "after": {k: m[k] for k in keys}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model directory (default: the demo checkpoint)")
    p.add_argument("--depth", type=int, default=4, help="depth of the demo checkpoint")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--max-tokens", type=int, default=128, help="tokens per request")
    p.add_argument(
        "--requests", type=int, default=4, help="requests per client at 1 client (half that above)"
    )
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-slots", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    p.add_argument("--soak", type=float, default=0.0, help="instead: SECONDS of 64 clients with hang-ups")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        model = (
            Path(args.model) if args.model else build_demo_checkpoint(Path(tmp) / "demo", depth=args.depth)
        )
        port = free_port()
        server = start_server(model, port, args.max_slots, args.threads)
        url = f"http://127.0.0.1:{port}"
        try:
            if args.soak:
                print(f"soak: 64 streaming clients for {args.soak:g} s, a quarter hanging up mid-stream")
                out = asyncio.run(soak(url, args.soak, 64, args.max_tokens))
                result, rss = out["result"], out["rss"]
                print(result.summary())
                print("RSS (MiB) every 5 s: " + " ".join(f"{mib:.0f}" for _, mib in rss))
                print("after the run: " + ", ".join(f"{k} = {v:g}" for k, v in out["after"].items()))
                ok = not result.errors and not any(out["after"].values())
                summary = {
                    "soak_seconds": args.soak,
                    "requests": result.requests,
                    "completed": result.completed,
                    "hung_up": result.disconnected,
                    "errors": result.errors[:10],
                    "rss_mib": [round(m, 1) for _, m in rss],
                    "after": out["after"],
                    "ok": ok,
                }
            else:
                print(
                    f"model {model} (max_slots {args.max_slots}, {args.threads} torch thread(s)), {args.max_tokens} tokens per request"
                )
                rows = throughput(url, args.clients, args.repeats, args.requests, args.max_tokens)
                print(f"\n{'clients':>7} {'tokens/s':>9} {'speed-up':>8} {'TTFT p50':>9} {'TTFT p99':>9}")
                for r in rows:
                    print(
                        f"{r['clients']:7d} {r['tokens_per_s']:9.1f} {r['speedup']:7.2f}x "
                        f"{r['ttft_p50_ms']:7.0f}ms {r['ttft_p99_ms']:7.0f}ms"
                    )
                summary = {"rows": rows, "max_tokens": args.max_tokens, "max_slots": args.max_slots}
                ok = True
        finally:
            server.terminate()
            server.wait(timeout=30)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
