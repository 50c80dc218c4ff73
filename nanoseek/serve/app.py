"""The FastAPI application: routes, error handlers, limits, auth, CORS, metrics, the chat page.

    from nanoseek.engine import Engine
    from nanoseek.serve import ServerConfig, create_app
    app = create_app(Engine.from_pretrained("runs/sft/model", max_slots=32), ServerConfig(model_name="sft"))
    uvicorn.run(app, host="127.0.0.1", port=8000)          # what `nanoseek serve` does

Routes: POST /v1/chat/completions (`chat_routes.py`), POST /v1/completions (`completions.py`),
GET /v1/models, GET /health, GET /metrics (Prometheus), GET / (the chat page, `static/`), and
FastAPI's /openapi.json and /docs. The /v1 routes need a Bearer key when keys are configured.
Every error, including FastAPI's validation errors and unknown paths, is an OpenAI error object
`{"error": {"message", "type", "param", "code"}}`; invalid parameters are 400s, not 422s.
Requests whose body exceeds `max_body_bytes` get 413 before anything parses them. A request whose
Host header is not one of the server's names gets 400 (`HostCheckMiddleware`: a DNS-rebinding page
cannot reach the API through the user's browser); the chat page is sent with a Content-Security-Policy
that lets it load and connect to nothing but this server. The engine's stepping thread starts with
the app and stops with it. Read deadlines and the connection cap live in the HTTP server
(`connections.py`).
"""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nanoseek import __version__
from nanoseek.engine import Engine
from nanoseek.serve import chat_routes, completions
from nanoseek.serve.auth import require_api_key
from nanoseek.serve.bridge import EngineBridge
from nanoseek.serve.config import LOCAL_HOSTS, ServerConfig
from nanoseek.serve.errors import APIError, clipped, error_body, validation_error
from nanoseek.serve.metrics import CONTENT_TYPE, MetricsMiddleware, ServerMetrics, engine_load

STATIC_DIR = Path(__file__).parent / "static"
log = logging.getLogger("nanoseek.serve")
# the chat page loads and connects to nothing but this server (as the arena's pages)
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def create_app(engine: Engine, config: ServerConfig | None = None) -> FastAPI:
    """An app serving `engine` (which needs a tokenizer). The engine's loop runs while the app does."""
    config = config or ServerConfig()
    metrics = ServerMetrics(engine)
    bridge = EngineBridge(engine, config, metrics)
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        already_running = getattr(engine, "_thread", None) is not None
        engine.start()
        try:
            yield
        finally:
            if not already_running:
                engine.stop()

    app = FastAPI(
        title="nanoseek",
        version=__version__,
        description="OpenAI- and DeepSeek-compatible API for a nanoseek model.",
        lifespan=lifespan,
        redoc_url=None,
    )
    app.state.config, app.state.bridge, app.state.metrics = config, bridge, metrics
    install_error_handlers(app)

    card = {
        "id": config.model_name,
        "object": "model",
        "created": created,
        "owned_by": "nanoseek",
        "max_model_len": bridge.context,
        "pricing": {
            "currency": "USD",
            "unit": "per million tokens",
            "input": config.prices.input,
            "cached_input": config.prices.cached_input,
            "output": config.prices.output,
        },
    }
    v1 = APIRouter(dependencies=[Depends(require_api_key)])
    v1.include_router(chat_routes.router)
    v1.include_router(completions.router)

    @v1.get("/v1/models")
    def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [card]}

    @v1.get("/v1/models/{model_id:path}")
    def get_model(model_id: str) -> dict[str, Any]:
        if model_id != config.model_name:
            raise APIError(
                404, f"The model '{clipped(model_id)}' does not exist.", param="model", code="model_not_found"
            )
        return card

    app.include_router(v1)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "model": config.model_name, **engine_load(engine)}

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/", include_in_schema=False)
    def chat_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    # outermost last: the Host check, CORS (so errors carry its headers too), metrics, the body limit
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_body_bytes, metrics=metrics)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    if config.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=config.cors_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(HostCheckMiddleware, allowed=config.allowed_hosts, metrics=metrics)
    return app


def install_error_handlers(
    app: FastAPI, routes: str = "see /docs for this server's routes.", server: str = "server"
) -> None:
    """Every error as {"error": {...}}: APIError, validation errors (invalid JSON included), Starlette's
    404 / 405 / unparsable body, and a 500 for anything unexpected (logged, never detailed). The arena
    installs the same handlers with its own `routes` hint."""

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        error = validation_error(exc.errors())
        return JSONResponse(error.body(), status_code=error.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        path = clipped(request.url.path)
        if exc.status_code == 404:
            message = f"Unknown path {path}: {routes}"
        elif exc.status_code == 405:
            message = f"Method {clipped(request.method, 20)} is not allowed on {path}."
        elif exc.status_code == 400:  # FastAPI could not read the body (not UTF-8, say)
            message = "We could not parse the JSON body of your request."
        else:
            message = clipped(str(exc.detail), 200)
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(
            error_body(message, kind), status_code=exc.status_code, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        message = f"The {server} had an error while processing your request."
        return JSONResponse(error_body(message, "server_error"), 500)


def host_name(header: str) -> str:
    """The name in a Host header, lowercased, without port or trailing dot: "[::1]:8000" -> "::1"."""
    host = header.strip().lower()
    if host.startswith("["):  # an IPv6 literal
        host = host[1 : host.find("]")] if "]" in host else host[1:]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


class HostCheckMiddleware:
    """400 unless the Host header names this server: LOCAL_HOSTS plus `allowed` ("*": any host)."""

    def __init__(self, app: ASGIApp, allowed: list[str], metrics: ServerMetrics | None = None):
        self.app = app
        self.any = "*" in allowed
        self.allowed = {host_name(h) for h in (*LOCAL_HOSTS, *allowed)}
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.any or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
        host = host_name(header)
        if host in self.allowed:
            await self.app(scope, receive, send)
            return
        if self.metrics is not None:
            self.metrics.rejected.labels("invalid_host").inc()
        shown = repr(clipped(host))
        message = (
            f"This server does not answer for the host {shown}: if that is one of its names, start it "
            "with --allowed-host NAME."
            if host
            else "The request has no Host header."
        )
        response = JSONResponse(error_body(message, "invalid_request_error", code="invalid_host"), 400)
        await response(scope, receive, send)


class BodyLimitMiddleware:
    """Reads a request body up to `max_bytes` before the app sees it; a larger one gets 413."""

    def __init__(self, app: ASGIApp, max_bytes: int, metrics: ServerMetrics | None = None):
        self.app = app
        self.max_bytes = max_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self.reject(send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self.reject(send)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect

        await self.app(scope, replay, send)

    async def reject(self, send: Send) -> None:
        if self.metrics is not None:
            self.metrics.rejected.labels("body_too_large").inc()
        response = JSONResponse(
            error_body(
                f"The request body is larger than this server's limit of {self.max_bytes} bytes.",
                "invalid_request_error",
                code="request_too_large",
            ),
            status_code=413,
        )
        await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
