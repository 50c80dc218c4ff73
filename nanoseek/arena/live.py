"""Live battles for the web arena: pick the pair, issue the battle id, stream both answers, take the vote.

    live = LiveArena(contestants, ArenaStore("arena.db"))
    battle_id = live.start("What is 17 * 23?")      # picks two contestants, starts both answers
    events, done = live.log(battle_id).read(0)       # [{"type": "delta", "side": "a", "content": ...}, ...]
    battle = live.vote(battle_id, "model_a")         # identities revealed only now

`start` stores the battle (prompt only) under a new unguessable id and runs each side's `stream`
on its own thread; the deltas go into an append-only event log that any number of followers read
from the beginning (a page that connects late or reconnects misses nothing); readers poll it, so
a follower never holds a thread. Generation does not
depend on anyone following: when both sides finish, their answers (the `content` after the
thinking) are written to the store and the battle can be voted on. The logs of the last `keep`
battles stay in memory; an older battle is replayed from the store (its answers, no thinking).
The events never name a contestant, and a failing contestant's error is logged here, not sent (an
API error message could name the model).

At most `max_active` battles generate at once (two threads each, so the threads are bounded too);
`start` refuses one more with `ArenaBusy`, whose `retry_after` is a guess at when a battle ends
(the typical battle length, from the recent ones, minus the age of the oldest running battle).
Refusing, not queueing: a queued battle would hold a page open on nothing, and the caller can say
"busy, retry in N s" at once (the app answers 503 with `Retry-After`).

Events, in order per side: {"type": "delta", "side", "reasoning_content", "content"} ...,
{"type": "finish", "side", "finish_reason"} or {"type": "error", "side", "message"}; then once
{"type": "end", "complete": bool}: whether both answers arrived (if not, a vote is refused).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any

from nanoseek.arena.contestants import Contestant, pick_pair
from nanoseek.arena.store import ArenaStore, Battle, VoteRejected
from nanoseek.engine.protocol import Delta

log = logging.getLogger(__name__)
SIDES = ("a", "b")
MAX_ACTIVE = 8  # battles generating at once, by default


class BattleNotReady(Exception):
    """A vote on a battle whose answers are not both complete (still streaming, or a side failed)."""


class ArenaBusy(Exception):
    """A new battle refused because `max_active` battles are generating; retry after `retry_after` s."""

    def __init__(self, max_active: int, retry_after: float) -> None:
        super().__init__(f"the arena is busy: {max_active} battles are being answered; try again shortly")
        self.retry_after = retry_after


def has_answers(battle: Battle) -> bool:
    """Whether both conversations end with an assistant answer (the battle can be voted on)."""
    return all(c and c[-1]["role"] == "assistant" for c in (battle.conversation_a, battle.conversation_b))


class LiveBattle:
    """One battle's event log: written by the two generating threads, read by any number of followers."""

    def __init__(self, events: list[dict[str, Any]] | None = None, done: bool = False) -> None:
        self._events: list[dict[str, Any]] = list(events or [])
        self._done = done
        self._lock = threading.Lock()

    def add(self, event: dict[str, Any], done: bool = False) -> None:
        with self._lock:
            self._events.append(event)
            self._done = self._done or done

    def read(self, start: int) -> tuple[list[dict[str, Any]], bool]:
        """(the events from index `start` on, whether the log is finished)."""
        with self._lock:
            return self._events[start:], self._done

    @property
    def done(self) -> bool:
        return self._done


class LiveArena:
    """Battles between `contestants` (name -> Contestant, at least two), stored in `store`."""

    def __init__(
        self,
        contestants: Mapping[str, Contestant],
        store: ArenaStore,
        seed: int | None = None,
        keep: int = 256,
        max_active: int = MAX_ACTIVE,
    ) -> None:
        if len(contestants) < 2:
            raise ValueError(f"an arena needs at least two contestants, got {list(contestants)}")
        if max_active < 1:
            raise ValueError(f"max_active must be >= 1, got {max_active}")
        self.contestants, self.store = dict(contestants), store
        self.rng = random.Random(seed)
        self.keep = keep
        self.max_active = max_active
        self.logs: OrderedDict[str, LiveBattle] = OrderedDict()  # running and recent battles, oldest first
        self._running: dict[LiveBattle, float] = {}  # generating battles -> start time (monotonic)
        self._typical = 10.0  # seconds a battle takes: moving average of the finished ones
        self._lock = threading.Lock()

    def start(self, prompt: str) -> str:
        """Pick two contestants, store the battle and start both answers; returns the battle id.
        Raises ArenaBusy when `max_active` battles are generating."""
        battle = LiveBattle()
        with self._lock:
            if len(self._running) >= self.max_active:
                raise ArenaBusy(self.max_active, self._retry_after())
            self._running[battle] = time.monotonic()
            a, b = pick_pair(list(self.contestants), self.rng)
        messages = [{"role": "user", "content": prompt}]
        try:
            battle_id = self.store.create_battle(a, b, messages, messages)
            with self._lock:
                self.logs[battle_id] = battle
                self._evict()
            args = (battle_id, battle, (a, b), messages)
            threading.Thread(target=self._run, args=args, name="arena-battle", daemon=True).start()
        except BaseException:
            self._release(battle, ran=False)
            raise
        return battle_id

    @property
    def active(self) -> int:
        """Battles generating now."""
        with self._lock:
            return len(self._running)

    def _retry_after(self) -> float:  # called with the lock held
        oldest = min(self._running.values(), default=time.monotonic())
        return max(1.0, self._typical - (time.monotonic() - oldest))

    def _release(self, battle: LiveBattle, ran: bool = True) -> None:
        """The battle no longer generates; `ran`: it did generate (its length counts as typical)."""
        with self._lock:
            started = self._running.pop(battle, None)
            if started is not None and ran:
                self._typical = 0.8 * self._typical + 0.2 * (time.monotonic() - started)

    def _run(
        self, battle_id: str, battle: LiveBattle, pair: tuple[str, str], messages: list[dict[str, str]]
    ) -> None:
        """Generate both answers at the same time (side B on a helper thread), then store them."""
        answers: dict[str, str | None] = {}

        def side_b() -> None:
            answers["b"] = self._generate(battle, "b", self.contestants[pair[1]], messages)

        try:
            helper = threading.Thread(target=side_b, name="arena-side-b", daemon=True)
            helper.start()
            answers["a"] = self._generate(battle, "a", self.contestants[pair[0]], messages)
            helper.join()
        finally:  # the log always ends and the slot is always given back
            try:
                self._finish(battle_id, battle, messages, answers)
            finally:
                self._release(battle)

    def _generate(
        self, battle: LiveBattle, side: str, contestant: Contestant, messages: list[dict[str, str]]
    ) -> str | None:
        """Stream one side's answer into the log; its content, or None if the contestant failed."""
        content: list[str] = []
        finish_reason = None
        stream: Iterator[Delta] | None = None
        try:
            stream = contestant.stream(messages)
            for delta in stream:
                if delta.reasoning_content or delta.content:
                    content.append(delta.content)
                    battle.add(
                        {
                            "type": "delta",
                            "side": side,
                            "reasoning_content": delta.reasoning_content,
                            "content": delta.content,
                        }
                    )
                finish_reason = delta.finish_reason or finish_reason
        except Exception:
            log.exception("arena contestant %r failed", contestant.name)
            battle.add({"type": "error", "side": side, "message": "this model failed to answer"})
            return None
        finally:
            close = getattr(stream, "close", None)  # a generator: closing it stops the generation
            if callable(close):
                close()
        battle.add({"type": "finish", "side": side, "finish_reason": finish_reason or "stop"})
        return "".join(content).strip()

    def _finish(
        self,
        battle_id: str,
        battle: LiveBattle,
        messages: list[dict[str, str]],
        answers: dict[str, str | None],
    ) -> None:
        complete = all(answers.get(side) is not None for side in SIDES)
        try:
            if complete:
                conv_a, conv_b = ([*messages, {"role": "assistant", "content": answers[s]}] for s in SIDES)
                complete = self.store.set_conversations(battle_id, conv_a, conv_b)
        except Exception:
            log.exception("could not store the answers of battle %s", battle_id)
            complete = False
        finally:
            battle.add({"type": "end", "complete": complete}, done=True)
            with self._lock:
                self._evict()

    def _evict(self) -> None:  # called with the lock held: drop the oldest finished logs beyond `keep`
        for battle_id in [i for i, b in self.logs.items() if b.done][: max(0, len(self.logs) - self.keep)]:
            del self.logs[battle_id]

    def log(self, battle_id: str) -> LiveBattle:
        """The battle's event log (see the module docstring); KeyError for an unknown id."""
        with self._lock:
            battle = self.logs.get(battle_id)
        if battle is not None:
            return battle
        stored = self.store.get_battle(battle_id)
        if stored is None:
            raise KeyError(battle_id)
        return LiveBattle(replay(stored), done=True)

    def vote(self, battle_id: str, winner: str, ip: str | None = None) -> Battle:
        """Store the battle's one vote and return it revealed. Raises VoteRejected (unknown id, replay,
        bad winner) or BattleNotReady (answers incomplete)."""
        battle = self.store.get_battle(battle_id) if isinstance(battle_id, str) else None
        if battle is None:
            raise VoteRejected("unknown", "unknown battle id")
        if battle.state == "open" and not has_answers(battle):
            raise BattleNotReady("the answers of this battle are not complete")
        return self.store.record_vote(battle_id, winner, voter="web", ip=ip)


def replay(battle: Battle) -> list[dict[str, Any]]:
    """The events of a battle whose generation is over, from its stored answers."""
    if not has_answers(battle):
        return [{"type": "end", "complete": False}]
    events: list[dict[str, Any]] = []
    for side, conversation in zip(SIDES, (battle.conversation_a, battle.conversation_b)):
        content = conversation[-1]["content"]
        events.append({"type": "delta", "side": side, "reasoning_content": "", "content": content})
        events.append({"type": "finish", "side": side, "finish_reason": "stop"})
    return [*events, {"type": "end", "complete": True}]
