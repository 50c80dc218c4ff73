"""Fixtures shared by the test files (pytest finds them here; nothing imports this file). Plain helpers
(tiny configs and models, scripted contestants, error checks) are in helpers.py.

- `one_thread`: one intra-op torch thread for a module's tests. A module opts in with
  `pytestmark = pytest.mark.usefixtures("one_thread")`.
- The demo server: `demo_checkpoint` (the scripted model of `nanoseek.serve.demo`, built once), `engine`
  (4 slots on it), `server` (a BackgroundServer of `create_app(engine, server_config)`) and `http` (an
  httpx client of it). A module changes what it serves by defining its own `engine` or `server_config`.
- Built once for the session, read-only: `toy_teacher` (distillation's trained toy MoE),
  `toy_shards` (pretraining shards of 200 toy documents), `tiny_checkpoints` (two tiny random
  checkpoints with tokenizers, named by helpers.TINY, for the arena).

pytest loads this file for every test file, and most of them need neither torch nor a server: each
fixture imports what it builds with (torch alone takes seconds to import).

Run the tests with `OMP_NUM_THREADS=1 python -m pytest -q tests/test_x.py`.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from a second thread, and on a busy 2-core machine it costs a lot."""
    from helpers import torch_threads

    with torch_threads(1):
        yield


# ------------------------------------------------------------------------------------------ demo server


@pytest.fixture(scope="session")
def demo_checkpoint(tmp_path_factory) -> Path:
    """The scripted demo model directory: it thinks DEMO_REASONING, then answers DEMO_ANSWER; 256 positions."""
    from nanoseek.serve.demo import build_demo_checkpoint

    return build_demo_checkpoint(tmp_path_factory.mktemp("demo") / "model", max_len=256)


@pytest.fixture(scope="module")
def engine(demo_checkpoint):
    from nanoseek.engine import Engine

    return Engine.from_pretrained(demo_checkpoint, max_slots=4)


@pytest.fixture(scope="module")
def server_config():
    from nanoseek.serve import ServerConfig

    return ServerConfig(model_name="demo")


@pytest.fixture(scope="module")
def server(engine, server_config):
    from nanoseek.serve import create_app
    from nanoseek.serve.background import BackgroundServer

    with BackgroundServer(create_app(engine, server_config)) as server:
        yield server


@pytest.fixture()
def http(server):
    import httpx

    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


# ------------------------------------------------------------------------------------- built once, shared


@pytest.fixture(scope="session")
def toy_teacher(tmp_path_factory) -> Path:
    """A toy MoE trained to solve distillation's TOY_TASK (a minute on one thread)."""
    from helpers import torch_threads

    from nanoseek.distill.toy import build_toy_teacher

    with torch_threads(1):
        return build_toy_teacher(tmp_path_factory.getbasetemp() / "toy-teacher")


@pytest.fixture(scope="session")
def toy_shards(tmp_path_factory) -> Path:
    from nanoseek.train.toy_data import build_toy_shards

    return build_toy_shards(tmp_path_factory.mktemp("toy"), n_docs=200)[0]


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory) -> dict[str, Path]:
    from helpers import TINY, build_checkpoint

    root = tmp_path_factory.mktemp("checkpoints")
    return {name: build_checkpoint(root / name, seed) for seed, name in enumerate(TINY)}
