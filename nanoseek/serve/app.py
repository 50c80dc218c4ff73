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
Requests whose body exceeds `max_body_bytes` get 413 before anything parses them. The engine's
stepping thread starts with the app and stops with it.
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
from nanoseek.serve.config import ServerConfig
from nanoseek.serve.errors import APIError, error_body, validation_error
from nanoseek.serve.metrics import CONTENT_TYPE, MetricsMiddleware, ServerMetrics, engine_load

STATIC_DIR = Path(__file__).parent / "static"
log = logging.getLogger("nanoseek.serve")


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
                404, f"The model '{model_id}' does not exist.", param="model", code="model_not_found"
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
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    # outermost last: CORS (so errors carry its headers too), metrics, then the body limit
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_body_bytes, metrics=metrics)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    if config.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=config.cors_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
        )
    return app


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        error = validation_error(exc.errors())
        return JSONResponse(error.body(), status_code=error.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = f"Unknown path {request.url.path}: see /docs for this server's routes."
        elif exc.status_code == 405:
            message = f"Method {request.method} is not allowed on {request.url.path}."
        else:
            message = str(exc.detail)
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(
            error_body(message, kind), status_code=exc.status_code, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return JSONResponse(
            error_body("The server had an error while processing your request.", "server_error"), 500
        )


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
