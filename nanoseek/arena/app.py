"""The web arena: a FastAPI app with the battle page, its JSON / SSE API and the leaderboard.

    app = create_app(LiveArena(contestants, ArenaStore("arena.db")))
    uvicorn.run(app, host="127.0.0.1", port=8001)      # or `nanoseek arena serve --contestants arena.toml`

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

winner: "model_a" | "model_b" | "tie" | "tie (bothbad)" (or "a", "b", "bothbad"). Errors follow the
OpenAI shape, {"error": {"message", "type", "param", "code"}}: 404 unknown battle (a forged id),
409 already voted (a replay) or answers not complete, 400 a bad body or winner.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from nanoseek.arena.live import BattleNotReady, LiveArena, LiveBattle, has_answers
from nanoseek.arena.ratings import Leaderboard, compute_leaderboard
from nanoseek.arena.store import ArenaStore, Battle, VoteRejected

STATIC = Path(__file__).parent / "static"
WINNER_ALIASES = {"a": "model_a", "b": "model_b", "bothbad": "tie (bothbad)", "both_bad": "tie (bothbad)"}
# VoteRejected.reason -> (HTTP status, error type, param, code)
REJECTIONS = {
    "unknown": (404, "not_found_error", "battle_id", "unknown_battle"),  # a forged id
    "replay": (409, "invalid_request_error", "battle_id", "already_voted"),
    "invalid_winner": (400, "invalid_request_error", "winner", "invalid_winner"),
}
# the pages load nothing from anywhere else
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'",
    "Cache-Control": "no-cache",
}


class BattleIn(BaseModel):
    prompt: str


class VoteIn(BaseModel):
    battle_id: str
    winner: str


def api_error(
    status: int, message: str, type: str, param: str | None = None, code: str | None = None
) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type, "param": param, "code": code}}, status)


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


def create_app(live: LiveArena, *, num_bootstrap: int = 100, max_prompt_chars: int = 8000) -> FastAPI:
    """The arena app over `live` (its contestants and store)."""
    app = FastAPI(title="nanoseek arena", docs_url=None, redoc_url=None, openapi_url=None)
    leaderboard = LeaderboardCache(live.store, num_bootstrap)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(RequestValidationError)
    def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return api_error(400, f"invalid request: {first.get('msg', exc)}", "invalid_request_error", param)

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
            return api_error(404, "no votes yet", "not_found_error", code="no_votes")
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-cache"})

    @app.get("/api/leaderboard")
    def leaderboard_json(style_control: bool = False) -> dict[str, Any]:
        votes, board = leaderboard.board(style_control)
        return {"votes": votes, "leaderboard": board.as_dict() if board is not None else None}

    @app.get("/api/contestants")
    def contestants() -> dict[str, Any]:
        return {"contestants": sorted(live.contestants)}

    @app.post("/api/battles", status_code=201, response_model=None)
    def start_battle(body: BattleIn) -> dict[str, str] | JSONResponse:
        prompt = body.prompt.strip()
        if not prompt:
            return api_error(400, "the prompt is empty", "invalid_request_error", "prompt")
        if len(prompt) > max_prompt_chars:
            return api_error(
                400,
                f"the prompt is longer than {max_prompt_chars} characters",
                "invalid_request_error",
                "prompt",
            )
        return {"battle_id": live.start(prompt)}

    @app.get("/api/battles/{battle_id}/stream", response_model=None)
    def stream_battle(battle_id: str) -> StreamingResponse | JSONResponse:
        try:
            log = live.log(battle_id)
        except KeyError:
            return api_error(404, "unknown battle id", *REJECTIONS["unknown"][1:])
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(sse(log), media_type="text/event-stream", headers=headers)

    @app.get("/api/battles/{battle_id}", response_model=None)
    def get_battle(battle_id: str) -> dict[str, Any] | JSONResponse:
        battle = live.store.get_battle(battle_id)
        if battle is None:
            return api_error(404, "unknown battle id", *REJECTIONS["unknown"][1:])
        return battle_view(battle)

    @app.post("/api/vote", response_model=None)
    def vote(body: VoteIn, request: Request) -> dict[str, Any] | JSONResponse:
        winner = WINNER_ALIASES.get(body.winner, body.winner)
        ip = request.client.host if request.client else None
        try:
            battle = live.vote(body.battle_id, winner, ip=ip)
        except VoteRejected as err:
            status, kind, param, code = REJECTIONS[err.reason]
            return api_error(status, str(err), kind, param, code)
        except BattleNotReady as err:
            return api_error(409, str(err), "invalid_request_error", "battle_id", "answers_incomplete")
        return battle_view(battle)

    return app
