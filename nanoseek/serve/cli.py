"""`nanoseek serve`: a model directory behind an OpenAI/DeepSeek-compatible HTTP API and a chat page.

    nanoseek serve --model runs/sft/model                       # http://127.0.0.1:8000
    nanoseek serve --model PATH --port 8080 --max-slots 32 --api-key sk-local
    nanoseek serve --model PATH --host 0.0.0.0 --allowed-host gpu-box.lan --api-key-file keys.txt
    python -m nanoseek.serve.cli --model PATH                   # the same without the dispatcher

Then point any OpenAI client at http://127.0.0.1:8000/v1, open http://127.0.0.1:8000/ for the chat
page, and scrape http://127.0.0.1:8000/metrics. See docs/serving.md. Binding an address other than
loopback without an API key prints a warning; a bad key file is a one-line error (exit status 2).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys

from nanoseek.engine.cli import add_prefix_cache_args, prefix_cache_kwargs
from nanoseek.serve.auth import load_api_keys
from nanoseek.serve.config import (
    R1_PRICE_CACHED_INPUT,
    R1_PRICE_INPUT,
    R1_PRICE_OUTPUT,
    Prices,
    ServerConfig,
)
from nanoseek.serve.connections import add_connection_flags

WILDCARD_HOSTS = ("0.0.0.0", "::", "")
DEFAULTS = ServerConfig()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nanoseek serve",
        description="Serve a model with an OpenAI/DeepSeek-compatible API, Prometheus metrics and a web chat page.",
    )
    p.add_argument("--model", required=True, help="model directory (config.json, weights, tokenizer.json)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: localhost only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--served-model-name", default=None, help="model id in the API (default: the directory name)"
    )
    g = p.add_argument_group("engine")
    g.add_argument("--max-slots", type=int, default=32, help="samples decoded together (continuous batching)")
    g.add_argument("--max-len", type=int, default=None, help="context per sample (default: the model's)")
    g.add_argument(
        "--token-budget", type=int, default=None, help="tokens per engine step (default: 16 x slots)"
    )
    g.add_argument("--int8", action="store_true", help="int8 weight-only quantization")
    g.add_argument(
        "--speculative",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="MTP speculative decoding on / off (default: on where a startup probe shows that it pays)",
    )
    g.add_argument("--device", default=None, help="cpu, cuda, ... (default: cpu)")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    add_prefix_cache_args(
        p.add_argument_group("prefix cache (context caching, billed at the cache-hit price)")
    )
    g = p.add_argument_group("limits")
    g.add_argument(
        "--max-queue",
        type=int,
        default=DEFAULTS.max_queue,
        help=f"samples (prompts x n) waiting for a slot; a request that would exceed it gets 429, one "
        f"larger than it 400 (default: {DEFAULTS.max_queue})",
    )
    g.add_argument(
        "--max-prompts",
        type=int,
        default=DEFAULTS.max_prompts,
        help=f"prompts in one /v1/completions request (default: {DEFAULTS.max_prompts})",
    )
    g.add_argument(
        "--max-body-bytes", type=int, default=DEFAULTS.max_body_bytes, help="request body limit (413 beyond)"
    )
    g.add_argument(
        "--request-timeout",
        type=float,
        default=DEFAULTS.request_timeout,
        help="seconds per request (408 beyond)",
    )
    add_connection_flags(g)
    g.add_argument(
        "--max-reasoning-tokens",
        type=int,
        default=None,
        help="thinking budget when a chat request sets only max_tokens (default: the context)",
    )
    g = p.add_argument_group("access")
    g.add_argument("--api-key", action="append", default=[], help="accepted Bearer key (repeatable)")
    g.add_argument(
        "--api-key-file", default=None, help="file of accepted keys, one per line ('#' starts a comment line)"
    )
    add_allowed_host_flag(g)
    g.add_argument(
        "--cors-origin", action="append", default=[], help="allowed CORS origin (repeatable; '*' for any)"
    )
    g = p.add_argument_group("prices (US $ per million tokens, for usage.cost and /metrics)")
    g.add_argument("--price-input", type=float, default=R1_PRICE_INPUT)
    g.add_argument("--price-cached-input", type=float, default=R1_PRICE_CACHED_INPUT)
    g.add_argument("--price-output", type=float, default=R1_PRICE_OUTPUT)
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    return p


def add_allowed_host_flag(group: argparse._ActionsContainer) -> None:
    """`--allowed-host`, for `nanoseek serve` and `nanoseek arena serve` (see `allowed_hosts`)."""
    group.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        help="a name clients reach the server by, accepted in the Host header besides --host and "
        "127.0.0.1, localhost, ::1 (repeatable; '*' for any: turns off the DNS-rebinding check)",
    )


def allowed_hosts(host: str, extra: list[str]) -> list[str]:
    """The Host-header names to serve besides LOCAL_HOSTS: the bound --host (unless a wildcard) and
    each --allowed-host."""
    return [h for h in (host, *extra) if h not in WILDCARD_HOSTS]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def access_warnings(host: str, config: ServerConfig) -> list[str]:
    """What `nanoseek serve` warns about before serving on `host` with `config`."""
    out = []
    if not is_loopback(host) and not config.api_keys:
        out.append(
            f"nanoseek serve: warning: listening on {host or 'every interface'} with no API key: anyone "
            "who can reach this port can use the model (pass --api-key or --api-key-file)"
        )
    if host in WILDCARD_HOSTS and not [h for h in config.allowed_hosts if h not in WILDCARD_HOSTS]:
        out.append(
            "nanoseek serve: note: only requests addressed to 127.0.0.1, localhost or ::1 are answered "
            "(Host header); add --allowed-host NAME for each name or address clients use"
        )
    return out


def run_server(app, host: str, port: int, log_level: str) -> None:
    """uvicorn with the read deadlines and connection cap of the app's config."""
    import uvicorn

    from nanoseek.serve.connections import uvicorn_config

    config = uvicorn_config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
    uvicorn.Server(config).run()


def serve_main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        api_keys = load_api_keys(args.api_key, args.api_key_file)
    except ValueError as exc:
        print(f"nanoseek serve: error: {exc}", file=sys.stderr)
        return 2

    import torch

    from nanoseek.engine import Engine
    from nanoseek.engine.speculative import auto_speculation, has_mtp
    from nanoseek.serve.app import create_app

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {
        "api_keys": api_keys,
        "cors_origins": args.cors_origin,
        "allowed_hosts": allowed_hosts(args.host, args.allowed_host),
        "max_queue": args.max_queue,
        "max_prompts": args.max_prompts,
        "max_body_bytes": args.max_body_bytes,
        "request_timeout": args.request_timeout,
        "header_timeout": args.header_timeout,
        "body_timeout": args.body_timeout,
        "max_connections": args.max_connections,
        "max_reasoning_tokens": args.max_reasoning_tokens,
        "prices": Prices(args.price_input, args.price_cached_input, args.price_output),
    }
    if args.served_model_name:
        overrides["model_name"] = args.served_model_name
    config = ServerConfig.for_model(args.model, **overrides)
    engine = Engine.from_pretrained(
        args.model,
        int8=args.int8,
        device=args.device,
        max_slots=args.max_slots,
        max_len=args.max_len,
        token_budget=args.token_budget or max(512, 16 * args.max_slots),
        speculative=args.speculative if args.speculative is not None else has_mtp(args.model),
        **prefix_cache_kwargs(args),
    )
    choice = auto_speculation(engine, args.speculative)
    print(f"MTP speculation {'on' if choice.on else 'off'}: {choice.reason}", flush=True)
    app = create_app(engine, config)
    auth = f"{len(config.api_keys)} API key(s)" if config.api_keys else "no auth"
    for line in access_warnings(args.host, config):
        print(line, file=sys.stderr, flush=True)
    print(
        f"serving {config.model_name} on http://{args.host}:{args.port}  ({args.max_slots} slots, "
        f"context {engine.max_len}, {auth}); chat page at /, API at /v1, metrics at /metrics",
        flush=True,
    )
    run_server(app, args.host, args.port, args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(serve_main())
