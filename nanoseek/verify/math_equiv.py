"""Math answer equivalence with math-verify, checked in a pool of worker processes.

    from nanoseek.verify import verify_math, verify_math_batch
    verify_math("\\frac{1}{2}", "0.5")                      # True  (gold first, then the answer)
    verify_math_batch([("3", "3.0"), ("x+1", "1+x"), ("2", "3")])  # [True, True, False]

Both sides are answers (LaTeX or plain text, as `nanoseek.verify.extract_answer` returns them), not
whole completions. Obvious cases are settled here without math-verify: equal normalized strings are
equal, and two different integers are different. Everything else goes to math-verify.

Why processes: math-verify bounds its own work with `signal.alarm`, which works only in a main thread,
and a pathological expression can still wedge sympy inside C code where no signal gets through. So
each check runs in a worker process (`math_worker.py`, math-verify in its main thread), and the parent
gives every item a wall-clock deadline: an item that misses it counts as not equivalent, and its worker
is killed and replaced. The workers are plain subprocesses talking JSON lines over pipes, so they are
safe to start from threaded programs and never re-import the caller's `__main__`.

The module functions share one lazily started pool (closed at exit); make a `MathVerifier` for another
worker count or timeout.
"""

import atexit
import contextlib
import json
import os
import select
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence

from nanoseek.verify.extract import normalize_answer, normalize_number

WORKER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "math_worker.py")
STARTUP_TIMEOUT = 120.0  # seconds for a worker to import math-verify (slow disks, cold caches)


def quick_verdict(gold: str, answer: str) -> bool | None:
    """True/False when the answer is settled without math-verify, None when it needs math-verify."""
    if normalize_answer(gold) == normalize_answer(answer):
        return True
    g, a = normalize_number(gold), normalize_number(answer)
    if g is not None and a is not None:
        if g == a:
            return True
        if "." not in g and "." not in a:  # different integers; decimals may still agree after rounding
            return False
    return None


class _Worker:
    """One math_worker.py process with one item in flight at a time."""

    def __init__(self, parse_timeout: int, verify_timeout: int):
        self.proc = subprocess.Popen(
            [sys.executable, WORKER_SCRIPT, str(parse_timeout), str(verify_timeout)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.item: int | None = None  # index of the item in flight
        self.deadline = 0.0

    def wait_ready(self) -> None:
        ready, _, _ = select.select([self.proc.stdout], [], [], STARTUP_TIMEOUT)
        line = self.proc.stdout.readline() if ready else ""
        if line.strip() != "ready":
            self.kill()
            raise RuntimeError("math-verify worker failed to start (is math-verify installed?)")

    def send(self, index: int, gold: str, answer: str, timeout: float) -> None:
        self.item = index
        self.deadline = time.monotonic() + timeout
        self.proc.stdin.write(json.dumps([index, gold, answer]) + "\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):  # a pipe to a killed worker may fail to flush
                stream.close()


class MathVerifier:
    """A pool of math-verify worker processes. `timeout` is the wall-clock budget for one item."""

    def __init__(self, workers: int | None = None, timeout: float = 5.0):
        self.num_workers = workers or min(4, os.cpu_count() or 1)
        self.timeout = timeout
        # math-verify's own alarms (whole seconds) for parsing and comparing, inside the item's budget
        self.inner_timeout = max(1, int(timeout / 3))
        self.workers: list[_Worker] = []
        self.lock = threading.Lock()
        self.pid = os.getpid()

    def _start(self, n: int) -> list[_Worker]:
        fresh = [_Worker(self.inner_timeout, self.inner_timeout) for _ in range(n)]
        for worker in fresh:  # started together, so they import math-verify in parallel
            worker.wait_ready()
        return fresh

    def verify_batch(self, pairs: Sequence[tuple[str | None, str | None]]) -> list[bool]:
        """For each (gold, answer), whether the answer equals the gold. A None answer is not equivalent."""
        results = [False] * len(pairs)
        todo: deque[int] = deque()
        for i, (gold, answer) in enumerate(pairs):
            if gold is None or answer is None:
                continue
            verdict = quick_verdict(gold, answer)
            if verdict is None:
                todo.append(i)
            else:
                results[i] = verdict
        if not todo:
            return results
        with self.lock:
            if self.pid != os.getpid():  # a forked copy: the workers' pipes belong to the parent
                self.workers, self.pid = [], os.getpid()
            if not self.workers:
                self.workers = self._start(self.num_workers)
            self._run(pairs, todo, results)
        return results

    def _replace(self, worker: _Worker) -> _Worker:
        worker.kill()
        fresh = self._start(1)[0]
        self.workers[self.workers.index(worker)] = fresh
        return fresh

    def _run(self, pairs: Sequence[tuple[str, str]], todo: deque[int], results: list[bool]) -> None:
        while True:
            for worker in self.workers:
                if worker.item is None and todo:
                    i = todo.popleft()
                    try:
                        worker.send(i, pairs[i][0], pairs[i][1], self.timeout)
                    except OSError:  # it died while idle; the item is not to blame
                        self._replace(worker).send(i, pairs[i][0], pairs[i][1], self.timeout)
            busy = [w for w in self.workers if w.item is not None]
            if not busy:
                return
            wait = max(0.0, min(w.deadline for w in busy) - time.monotonic())
            ready, _, _ = select.select([w.proc.stdout for w in busy], [], [], wait)
            for worker in busy:
                if worker.proc.stdout in ready:
                    line = worker.proc.stdout.readline()
                    if line:
                        index, ok = json.loads(line)
                        results[index] = bool(ok)
                        worker.item = None
                        continue
                elif time.monotonic() < worker.deadline:
                    continue
                # the worker died on this item (EOF) or missed its deadline: not equivalent, replace it
                results[worker.item] = False
                self._replace(worker)

    def verify(self, gold: str, answer: str) -> bool:
        """Whether `answer` equals `gold` (gold first, as in math-verify)."""
        return self.verify_batch([(gold, answer)])[0]

    def close(self) -> None:
        with self.lock:
            for worker in self.workers:
                worker.kill()
            self.workers = []

    def __enter__(self) -> "MathVerifier":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_default: MathVerifier | None = None
_default_lock = threading.Lock()


def default_verifier() -> MathVerifier:
    """The shared pool behind `verify_math` and `verify_math_batch`, started on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = MathVerifier()
            atexit.register(_default.close)
    return _default


def verify_math_batch(pairs: Sequence[tuple[str | None, str | None]]) -> list[bool]:
    """For each (gold, answer) pair of answer strings, whether they are mathematically equal."""
    return default_verifier().verify_batch(pairs)


def verify_math(gold: str, answer: str | None) -> bool:
    """Whether the answer string equals the gold answer string (gold first)."""
    return default_verifier().verify_batch([(gold, answer)])[0]
