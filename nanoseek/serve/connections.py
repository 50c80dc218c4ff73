"""The HTTP server's connection guard: read deadlines and a connection cap, so slow clients cannot
hold `nanoseek serve`.

    config = uvicorn_config(app, host="127.0.0.1", port=8000)   # what `nanoseek serve` runs
    uvicorn.Server(config).run()

uvicorn closes idle keep-alive connections (`timeout_keep_alive`) but waits forever for a request
that arrives slowly: 1,000 clients sending their headers or bodies a byte at a time were all still
connected after 50 s, holding a file descriptor each (and, for a body, a task). `GuardedH11Protocol`
is uvicorn's HTTP/1.1 protocol (h11) with one timer per connection, armed while a request is due:

- headers: a request's headers must be complete `header_timeout` seconds after the connection opened
  or the previous response ended;
- body: its body must be complete `body_timeout` seconds after its headers, whether or not the route
  reads it.

A late request gets 408 (when any of it arrived; an idle connection is just closed) and its connection
is closed; a route still waiting for the body sees a disconnect. Connections beyond `max_connections`
are answered 503 and closed as they open. The limits are the app's `ServerConfig`
(`--header-timeout`, `--body-timeout`, `--max-connections`; `add_connection_flags` defines them for
both servers); `nanoseek arena serve` runs the same guard with its `ArenaLimits`. Behind a reverse
proxy, the proxy's own timeouts apply first (docs/serving.md).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
from typing import Any, Protocol

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from nanoseek.serve.config import ServerConfig
from nanoseek.serve.errors import error_body


def raw_error(status: int, reason: str, message: str, code: str) -> bytes:
    """A complete HTTP/1.1 error response (OpenAI's error body) that closes the connection."""
    kind = "server_error" if status >= 500 else "timeout_error" if status == 408 else "invalid_request_error"
    body = json.dumps(error_body(message, kind, code=code)).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class ConnectionLimits(Protocol):
    """What the guard reads: `ServerConfig` (`nanoseek serve`) and `ArenaLimits` (`nanoseek arena serve`)."""

    header_timeout: float
    body_timeout: float
    max_connections: int


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with header and body read deadlines and a cap on open connections."""

    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self._timer: asyncio.TimerHandle | None = None
        self._phase: str | None = None  # what the timer waits for: "headers", "body" or nothing

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            message = f"The server has {self.limits.max_connections} connections open; retry later."
            transport.write(raw_error(503, "Service Unavailable", message, "too_many_connections"))
            transport.close()
            return
        self._watch()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()  # keep-alive: the next request's headers are due

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _watch(self) -> None:
        """(Re)arm the timer when what the connection waits for changed."""
        if self.transport.is_closing():
            self._disarm()
            return
        state = self.conn.their_state
        phase = "headers" if state is h11.IDLE else "body" if state is h11.SEND_BODY else None
        if phase == self._phase:
            return
        self._disarm()
        self._phase = phase
        if phase is not None:
            seconds = self.limits.header_timeout if phase == "headers" else self.limits.body_timeout
            self._timer = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._phase = None, None

    def _expired(self) -> None:
        phase, self._timer = self._phase, None
        if self.transport.is_closing():
            return
        if phase == "headers":
            if self.conn.trailing_data[0]:  # part of a request arrived
                message = f"The request headers took longer than {self.limits.header_timeout:g} seconds."
                self.transport.write(raw_error(408, "Request Timeout", message, "request_timeout"))
        elif self.cycle is not None:
            if not self.cycle.response_started:
                message = f"The request body took longer than {self.limits.body_timeout:g} seconds."
                self.transport.write(raw_error(408, "Request Timeout", message, "request_timeout"))
            self.cycle.disconnected = True  # the route stops waiting for the body; its output is dropped
            self.cycle.message_event.set()
        self.transport.close()


def uvicorn_config(app: Any, limits: ConnectionLimits | None = None, **kwargs: Any) -> uvicorn.Config:
    """A uvicorn Config serving `app` over the guarded protocol, with `limits` (by default the app's
    ServerConfig, `app.state.config`, or the defaults for an app without one; the arena passes its
    ArenaLimits). kwargs go to uvicorn.Config."""
    if limits is None:
        limits = getattr(getattr(app, "state", None), "config", None) or ServerConfig()
    protocol = functools.partial(GuardedH11Protocol, limits=limits)
    return uvicorn.Config(app, http=protocol, **kwargs)  # type: ignore[arg-type]


def add_connection_flags(group: argparse._ActionsContainer) -> None:
    """The slow-client flags (`--header-timeout`, `--body-timeout`, `--max-connections`) with the
    defaults of ServerConfig, for `nanoseek serve` and `nanoseek arena serve` alike."""
    defaults = ServerConfig()
    for flag, kind, text in (
        ("--header-timeout", float, "seconds for a request's headers to arrive"),
        ("--body-timeout", float, "seconds for a request's body to arrive after its headers, 408 beyond"),
        ("--max-connections", int, "open connections; more are answered 503"),
    ):
        default = getattr(defaults, flag[2:].replace("-", "_"))
        group.add_argument(flag, type=kind, default=default, help=f"{text} (default: %(default)g)")
