"""The web arena: a FastAPI app with the battle page, its JSON / SSE API and the leaderboard.

    app = create_app(LiveArena(contestants, ArenaStore("arena.db"), max_active=8), limits=ArenaLimits())
    uvicorn.run(app, host="127.0.0.1", port=8001, proxy_headers=False)   # or `nanoseek arena serve ...`

Pages (everything served by the app, no CDN):
    GET  /                          the battle page (static/index.html, arena.js, arena.css)
    GET  /leaderboard               the leaderboard page (static/leaderboard.html)
    GET  /leaderboard.png           the plot; ?style_control=1 for style-controlled ratings
API:
    POST /api/battles               {"prompt"} -> 201 {"battle_id"}: the server picks the anonymous pair
    GET  /api/battles/{id}/stream   SSE: `data: {event}` lines (see `live.py`), then `data: [DONE]`
    GET  /api/battles/{id}          the battle; model names only once it is voted
    POST /api/vote                  {"battle_id", "winner"} -> the revealed battle
    GET  /api/leaderboard           {"votes", "leaderboard"} (null before the first vote); ?style_control=1
    GET  /api/contestants           {"contestants": [names]}
    GET  /api/health                {"status": "ok", "active_battles", "max_active_battles"}

winner: "model_a" | "model_b" | "tie" | "tie (bothbad)" (or "a", "b", "bothbad"). Every error, unknown
paths and unparsable bodies included, is one JSON shape, the OpenAI one of `nanoseek serve`
(`nanoseek.serve.errors`): {"error": {"message", "type", "param", "code"}}: 404 unknown battle (a
forged id), 409 already voted (a replay) or answers not complete, 400 a bad body, prompt or winner
(text with a lone surrogate included), 413 a body over `max_body_bytes`, 429 a client over its rate
limit and 503 too many battles generating (both with `Retry-After`), 500 a bug (logged, never
detailed). Messages never echo more than ~100 characters of what the client sent.

Limits (`limits.py`): per-client token buckets on new battles and on votes, counted by one client
identity (the remote address; X-Forwarded-For only from `limits.trusted_proxies`), and the bound on
battles generating at once, which is `LiveArena(max_active=...)`. Run it with uvicorn's
`proxy_headers=False` (as `nanoseek arena serve` does): uvicorn otherwise believes X-Forwarded-For
from 127.0.0.1, which lets any local client choose its identity. What `nanoseek serve` has, the
arena shares: its pages go out with the chat page's headers (`PAGE_HEADERS`: a Content-Security-Policy
that allows nothing from elsewhere), a request for a host not in `limits.allowed_hosts` gets 400
(`HostCheckMiddleware`; only when allowed_hosts is set, as `nanoseek arena serve` always does), and
`nanoseek arena serve` runs uvicorn over `nanoseek.serve.connections` with the limits' read deadlines
and connection cap (`uvicorn_config(app, limits=limits, ...)`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import tempfile
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from nanoseek.arena.limits import ArenaLimits, RateLimiter, client_identity, retry_after
from nanoseek.arena.live import ArenaBusy, BattleNotReady, LiveArena, LiveBattle, has_answers
from nanoseek.arena.ratings import Leaderboard, compute_leaderboard
from nanoseek.arena.store import ArenaStore, Battle, VoteRejected
from nanoseek.serve.app import PAGE_HEADERS, BodyLimitMiddleware, HostCheckMiddleware, install_error_handlers
from nanoseek.serve.errors import APIError
from nanoseek.serve.openai_schema import Body, Text

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
WINNER_ALIASES = {"a": "model_a", "b": "model_b", "bothbad": "tie (bothbad)", "both_bad": "tie (bothbad)"}
# VoteRejected.reason -> (HTTP status, param, code)
REJECTIONS = {
    "unknown": (404, "battle_id", "unknown_battle"),  # a forged id
    "replay": (409, "battle_id", "already_voted"),
    "invalid_winner": (400, "winner", "invalid_winner"),
}
MAX_BODY_BYTES = 1024 * 1024  # a prompt is at most `max_prompt_chars`; nothing needs more


class BattleIn(Body):
    prompt: Text  # valid Unicode: a lone surrogate is a 400, not a 500 from the database


class VoteIn(Body):
    battle_id: Text
    winner: Text


def unknown_battle() -> APIError:
    status, param, code = REJECTIONS["unknown"]
    return APIError(status, "unknown battle id", param, code)


def battle_view(battle: Battle) -> dict[str, Any]:
    """What a client may see of a battle: the prompt and answers; the models only after the vote."""
    view: dict[str, Any] = {
        "battle_id": battle.id,
        "state": battle.state,
        "prompt": battle.conversation_a[0]["content"] if battle.conversation_a else "",
        "answer_a": battle.conversation_a[-1]["content"] if has_answers(battle) else None,
        "answer_b": battle.conversation_b[-1]["content"] if has_answers(battle) else None,
    }
    if battle.state == "voted":
        view.update(model_a=battle.model_a, model_b=battle.model_b, winner=battle.winner)
    return view


@dataclass
class _Board:
    votes: int
    board: Leaderboard | None  # None before the first vote
    png: bytes | None = None  # rendered on first request


class LeaderboardCache:
    """The leaderboard (and its plot) of the stored votes, recomputed only after new votes."""

    def __init__(self, store: ArenaStore, num_bootstrap: int) -> None:
        self.store, self.num_bootstrap = store, num_bootstrap
        self._boards: dict[bool, _Board] = {}
        self._lock = threading.Lock()

    def _current(self, style_control: bool) -> _Board:  # called with the lock held
        cached = self._boards.get(style_control)
        if cached is None or cached.votes != self.store.counts()["votes"]:
            battles = self.store.battles()
            board = None
            if battles:
                board = compute_leaderboard(
                    battles, style_control=style_control, num_bootstrap=self.num_bootstrap
                )
            cached = self._boards[style_control] = _Board(len(battles), board)
        return cached

    def board(self, style_control: bool) -> tuple[int, Leaderboard | None]:
        with self._lock:
            current = self._current(style_control)
            return current.votes, current.board

    def png(self, style_control: bool) -> bytes | None:
        with self._lock:
            current = self._current(style_control)
            if current.board is not None and current.png is None:
                from nanoseek.arena.plot import plot_leaderboard  # matplotlib: imported on first use

                with tempfile.TemporaryDirectory() as tmp:
                    current.png = plot_leaderboard(current.board, Path(tmp) / "leaderboard.png").read_bytes()
            return current.png


async def sse(log: LiveBattle, poll: float = 0.05, heartbeat: float = 15.0) -> AsyncIterator[str]:
    """Server-sent events of a battle's log: one `data:` line per event, `[DONE]` at the end, and a
    comment line as keep-alive. Polls the log (asleep in between), so a follower holds no thread."""
    seen, idle = 0, 0.0
    while True:
        events, done = log.read(seen)
        seen += len(events)
        for event in events:
            yield f"data: {json.dumps(event, ensure_ascii=False)}\n\n"
        if done and not events:
            break
        if events:
            idle = 0.0
            continue
        await asyncio.sleep(poll)
        idle += poll
        if idle >= heartbeat:
            yield ": keep-alive\n\n"
            idle = 0.0
    yield "data: [DONE]\n\n"


def create_app(
    live: LiveArena,
    *,
    num_bootstrap: int = 100,
    max_prompt_chars: int = 8000,
    limits: ArenaLimits | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> FastAPI:
    """The arena app over `live` (its contestants, store and bound on generating battles).
    `limits`: the per-client rate limits and trusted proxies (the defaults of `ArenaLimits`)."""
    limits = limits or ArenaLimits()
    app = FastAPI(title="nanoseek arena", docs_url=None, redoc_url=None, openapi_url=None)
    install_error_handlers(app, routes="the arena serves /, /leaderboard and /api/...", server="arena")
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    if limits.trusted_proxies:  # every layer sees the client the proxy named
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=list(limits.trusted_proxies))
    if limits.allowed_hosts is not None:  # outermost: a request for another host gets nothing else
        app.add_middleware(HostCheckMiddleware, allowed=list(limits.allowed_hosts))
    leaderboard = LeaderboardCache(live.store, num_bootstrap)
    battle_limiter = RateLimiter(limits.battles_per_minute, limits.max_clients)
    vote_limiter = RateLimiter(limits.votes_per_minute, limits.max_clients)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def admit(limiter: RateLimiter, request: Request, what: str) -> str:
        """The client's identity, or APIError 429 with Retry-After if it is over its `what` limit."""
        client = client_identity(request.client.host if request.client else None)
        wait = limiter.take(client)
        if wait > 0:
            raise APIError(
                429,
                f"Too many {what}: at most {limiter.capacity:g} a minute per client; "
                f"try again in {retry_after(wait)} s.",
                code="rate_limit_exceeded",
                headers={"Retry-After": retry_after(wait)},
            )
        return client

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    @app.get("/leaderboard", include_in_schema=False)
    def leaderboard_page() -> FileResponse:
        return FileResponse(STATIC / "leaderboard.html", headers=PAGE_HEADERS)

    @app.get("/leaderboard.png", include_in_schema=False)
    def leaderboard_png(style_control: bool = False) -> Response:
        png = leaderboard.png(style_control)
        if png is None:
            raise APIError(404, "no votes yet", code="no_votes")
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-cache"})

    @app.get("/api/leaderboard")
    def leaderboard_json(style_control: bool = False) -> dict[str, Any]:
        votes, board = leaderboard.board(style_control)
        return {"votes": votes, "leaderboard": board.as_dict() if board is not None else None}

    @app.get("/api/contestants")
    def contestants() -> dict[str, Any]:
        return {"contestants": sorted(live.contestants)}

    @app.get("/api/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "active_battles": live.active, "max_active_battles": live.max_active}

    # The two POST routes check and count the client on the event loop and take a worker thread
    # (SQLite, starting the battle) only once admitted: a flood refused with 429 holds none of the
    # thread pool that every other client's requests are served from.
    @app.post("/api/battles", status_code=201)
    async def start_battle(body: BattleIn, request: Request) -> dict[str, str]:
        prompt = body.prompt.strip()
        if not prompt:
            raise APIError(400, "the prompt is empty", "prompt")
        if len(prompt) > max_prompt_chars:
            raise APIError(400, f"the prompt is longer than {max_prompt_chars} characters", "prompt")
        admit(battle_limiter, request, "new battles")
        try:
            return {"battle_id": await anyio.to_thread.run_sync(live.start, prompt)}
        except ArenaBusy as err:
            raise APIError(
                503, str(err), code="arena_busy", headers={"Retry-After": retry_after(err.retry_after)}
            ) from err

    @app.get("/api/battles/{battle_id}/stream", response_model=None)
    def stream_battle(battle_id: str) -> StreamingResponse:
        try:
            log = live.log(battle_id)
        except KeyError:
            raise unknown_battle() from None
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(sse(log), media_type="text/event-stream", headers=headers)

    @app.get("/api/battles/{battle_id}")
    def get_battle(battle_id: str) -> dict[str, Any]:
        battle = live.store.get_battle(battle_id)
        if battle is None:
            raise unknown_battle()
        return battle_view(battle)

    @app.post("/api/vote")
    async def vote(body: VoteIn, request: Request) -> dict[str, Any]:
        client = admit(vote_limiter, request, "votes")
        winner = WINNER_ALIASES.get(body.winner, body.winner)
        try:
            vote = functools.partial(live.vote, body.battle_id, winner, ip=client)
            battle = await anyio.to_thread.run_sync(vote)
        except VoteRejected as err:
            status, param, code = REJECTIONS[err.reason]
            raise APIError(status, str(err), param, code) from err
        except BattleNotReady as err:
            raise APIError(409, str(err), "battle_id", "answers_incomplete") from err
        return battle_view(battle)

    return app
