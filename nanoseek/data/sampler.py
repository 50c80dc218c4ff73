"""EpochSampler: the deterministic, resumable, rank-disjoint order in which loaders visit items.

    sampler = EpochSampler(n_items, seed=0, rank=rank, world_size=world_size)
    i = sampler.next()                  # item index; None at the end when loop=False
    state = sampler.state_dict()        # {"epoch": .., "cursor": ..}; load_state_dict(state) resumes

Epoch e visits a permutation of range(n) drawn from (seed, e) (or range(n) itself when shuffle=False);
rank r takes positions r, r + world_size, r + 2*world_size, ... of it, so the ranks' items are disjoint
within every epoch and together cover it. With loop=True epochs follow each other forever.
"""

from __future__ import annotations

import numpy as np


class EpochSampler:
    def __init__(
        self,
        n: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        loop: bool = True,
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        if n < world_size:
            raise ValueError(f"{n} item(s) cannot be split over {world_size} ranks")
        self.n, self.seed, self.rank, self.world_size = n, seed, rank, world_size
        self.shuffle, self.loop = shuffle, loop
        self.epoch, self.cursor = 0, 0
        self._order_epoch, self._order = -1, np.empty(0, dtype=np.int64)

    def _rank_order(self) -> np.ndarray:
        if self._order_epoch != self.epoch:
            order = np.arange(self.n)
            if self.shuffle:
                order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
            self._order_epoch, self._order = self.epoch, order[self.rank :: self.world_size]
        return self._order

    def next(self) -> int | None:
        order = self._rank_order()
        if self.cursor >= len(order):
            if not self.loop:
                return None
            self.epoch, self.cursor = self.epoch + 1, 0
            order = self._rank_order()
        self.cursor += 1
        return int(order[self.cursor - 1])

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
