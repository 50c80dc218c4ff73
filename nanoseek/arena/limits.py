"""What one client of the web arena may do: per-client rate limits on new battles and on votes,
the bound on battles generating at once, and the one notion of client identity both limits count by.

    limits = ArenaLimits(battles_per_minute=20, votes_per_minute=30)     # create_app(..., limits=limits)
    battles = RateLimiter(limits.battles_per_minute)
    wait = battles.take(client_identity("203.0.113.7"))   # 0.0: go ahead; else seconds until allowed

A limiter is a token bucket per client: it holds up to `per_minute` tokens (the burst a fresh client
may spend at once), refills at `per_minute` tokens a minute, and every request takes one; a request
that finds the bucket empty is refused with the seconds until the next token (the app answers
429 with that as `Retry-After`). A vote attempt counts whether or not it is stored, so guessing
battle ids costs as much as voting. Buckets live in an LRU dict: a bucket untouched for a minute is
full again and is dropped, and at most `max_clients` are kept (beyond that the least recently seen
client starts afresh), so memory stays bounded whatever the number of addresses.

Client identity: the address the request came from (`request.client.host`); an IPv6 address counts
by its /64 network, since one host usually owns a whole /64. Behind a reverse proxy every request
comes from the proxy: name it in `trusted_proxies` and the app takes the client from the
`X-Forwarded-For` header that proxy sets (uvicorn's `ProxyHeadersMiddleware`: the rightmost address
that is not a trusted proxy). Nothing else is trusted: uvicorn's own default, believing
X-Forwarded-For from 127.0.0.1, would let any local client pick a fresh identity per request, so
`nanoseek arena serve` runs uvicorn with `proxy_headers=False` (do the same when you run the app).

The same limits hold what `nanoseek serve` enforces at the connection level, with its defaults: read
deadlines for headers and bodies and a cap on open connections (`nanoseek.serve.connections`, which
`nanoseek arena serve` runs), and the Host-header allowlist against DNS rebinding (`allowed_hosts`).

The bound on battles generating at once, all clients together, is not here but where the threads
are, `LiveArena(max_active=...)` (see `live.py`): a battle holds two threads while its answers
generate, so at most 2 x max_active generating threads exist; one battle more is refused (503 with
`Retry-After`), not queued.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from nanoseek.serve.config import ServerConfig

_SERVE = ServerConfig()  # the connection limits default to `nanoseek serve`'s


@dataclass(frozen=True)
class ArenaLimits:
    """The web arena's limits; 0 turns a per-client limit off."""

    battles_per_minute: float = 20.0  # new battles per client
    votes_per_minute: float = 30.0  # vote attempts per client (refused ones included)
    trusted_proxies: tuple[str, ...] = ()  # proxies whose X-Forwarded-For names the client
    max_clients: int = 100_000  # clients whose buckets are remembered
    # the HTTP server's guard against slow clients (`nanoseek.serve.connections`, as `nanoseek serve`)
    header_timeout: float = _SERVE.header_timeout  # seconds for a request's headers
    body_timeout: float = _SERVE.body_timeout  # seconds for its body after the headers (408)
    max_connections: int = _SERVE.max_connections  # open connections; more get 503
    # Host-header names served besides 127.0.0.1, localhost and ::1 (DNS rebinding, as `nanoseek
    # serve`); None: no check (an app used in-process); `nanoseek arena serve` always sets it
    allowed_hosts: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("battles_per_minute", "votes_per_minute"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a number >= 0 (0: no limit), got {value!r}")
        for name in ("header_timeout", "body_timeout"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a number of seconds > 0, got {value!r}")
        if not isinstance(self.max_connections, int) or self.max_connections < 1:
            raise ValueError(f"max_connections must be an integer >= 1, got {self.max_connections!r}")
        if not isinstance(self.max_clients, int) or self.max_clients < 1:
            raise ValueError(f"max_clients must be an integer >= 1, got {self.max_clients!r}")
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(
                    f"trusted_proxies must be IP addresses or networks (127.0.0.1, 10.0.0.0/8), got {proxy!r}"
                ) from None


def client_identity(host: str | None) -> str:
    """The identity rate limits count by: the address, an IPv6 address as its /64 network."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host  # not an IP (a test client, a unix socket): the name itself
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class RateLimiter:
    """Token buckets per client: `per_minute` requests a minute, bursts of up to `per_minute`."""

    def __init__(
        self, per_minute: float, max_clients: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.capacity = float(per_minute)
        self.rate = self.capacity / 60.0  # tokens per second
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, time)
        self._lock = threading.Lock()

    def take(self, client: str) -> float:
        """Spend one of `client`'s tokens: 0.0 if it had one, else the seconds until it will."""
        if self.capacity <= 0:
            return 0.0  # no limit
        with self._lock:
            now = self.clock()
            self._forget_idle(now)
            tokens, then = self._buckets.pop(client, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - then) * self.rate)
            if tokens >= 1.0:
                tokens -= 1.0
                wait = 0.0
            else:
                wait = (1.0 - tokens) / self.rate
            self._buckets[client] = (tokens, now)  # most recently seen last
            return wait

    def _forget_idle(self, now: float) -> None:
        """Drop buckets that have refilled (untouched for a full minute), oldest first, and the
        oldest beyond `max_clients`; amortised O(1) per call."""
        full = self.capacity / self.rate  # seconds from empty to full
        while self._buckets:
            client, (_, then) = next(iter(self._buckets.items()))
            if now - then < full and len(self._buckets) < self.max_clients:
                break
            del self._buckets[client]

    def __len__(self) -> int:
        return len(self._buckets)


def retry_after(seconds: float) -> str:
    """A `Retry-After` header value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
