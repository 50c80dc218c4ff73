"""Run an app with uvicorn on a background thread: for tests, notebooks and benchmarks.

    from nanoseek.serve.background import BackgroundServer
    with BackgroundServer(create_app(engine)) as server:
        client = OpenAI(base_url=server.url + "/v1", api_key="-")
        ...

The server listens on 127.0.0.1 at a free port (or the one given), starts before `__enter__`
returns, and shuts down (the engine loop with it) on exit. It is the server `nanoseek serve` runs
(`connections.uvicorn_config`: read deadlines and a connection cap from the app's ServerConfig, or
from `limits`, an arena's ArenaLimits say).
"""

from __future__ import annotations

import socket
import threading
import time

import uvicorn
from fastapi import FastAPI

from nanoseek.serve.connections import ConnectionLimits, uvicorn_config


class BackgroundServer:
    def __init__(
        self,
        app: FastAPI,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
        limits: ConnectionLimits | None = None,
    ):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.host, self.port = self.sock.getsockname()[:2]
        config = uvicorn_config(app, limits, log_level=log_level, timeout_graceful_shutdown=2, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
