"""Nearest pool members by array operations: a pool search's lookup, per proposal.

A search with a pool (`--pool FILE`) maps each proposal to the nearest pool member, in the
space's encoding (`tnas.predictors.encode`), that is not taken (evaluated or in flight). The
pool is encoded once into an (N, F) array; each lookup is then a matrix-vector product over
the members not taken, and an exact distance for the few that come within rounding error of
the least. It returns what the plain loop returns, ties included:

    candidates = [c for c in pool if c.hash not in taken]
    distances = [float(np.sum((encode(space, c) - target) ** 2)) for c in candidates]
    candidates[int(np.argmin(distances))]  # the first in pool order of the nearest

>>> from tnas.space import load_space
>>> space = load_space("primer")
>>> pool = [space.sample(np.random.default_rng(seed)) for seed in range(50)]
>>> index = PoolIndex(space, pool)
>>> index.nearest(encode(space, pool[7]), taken=set()) is pool[7]
True
>>> index.nearest(encode(space, pool[7]), taken={pool[7].hash}) is pool[7]
False
>>> index.nearest(encode(space, pool[7]), taken={c.hash for c in pool}) is None
True
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tnas.predictors import encode
from tnas.space import ArchConfig, DesignSpace

# Rounding error allowed per summed term, in units of the float64 epsilon, generously: a sum
# of F products is off by at most about F epsilons of its magnitude, in any order of summing.
ROUNDING_SLACK = 16.0


class PoolIndex:
    """A pool of configs encoded once, for `nearest` lookups by array operations.

    `taken` is tracked as a mask over the pool: each lookup marks only the hashes that joined
    or left the taken set since the last one (hash -> rows of the pool).
    """

    def __init__(self, space: DesignSpace, pool: Sequence[ArchConfig]):
        self.pool = list(pool)
        width = len(encode(space, self.pool[0])) if self.pool else 0
        encoded = np.empty((len(self.pool), width))  # (N, F)
        for row, config in enumerate(self.pool):
            encoded[row] = encode(space, config)
        self.encoded = encoded
        self.norms = np.einsum("nf,nf->n", encoded, encoded)  # (N,) squared norms
        self.largest_norm = float(self.norms.max()) if len(self.pool) else 0.0
        self.rows: dict[str, list[int]] = {}
        for row, config in enumerate(self.pool):
            self.rows.setdefault(config.hash, []).append(row)
        self.taken_rows = np.zeros(len(self.pool), dtype=bool)
        self.taken: set[str] = set()  # the hashes `taken_rows` marks

    def mark(self, taken: set[str]) -> None:
        """Make `taken_rows` mark the members whose hash is in `taken`."""
        added, freed = taken - self.taken, self.taken - taken
        for digest in added:
            for row in self.rows.get(digest, ()):
                self.taken_rows[row] = True
        for digest in freed:
            for row in self.rows.get(digest, ()):
                self.taken_rows[row] = False
        self.taken -= freed
        self.taken |= added

    def nearest(self, target: np.ndarray, taken: set[str]) -> ArchConfig | None:
        """The first member in pool order of those nearest to `target` (an encoding), among
        the members whose hash is not in `taken`; None when every member is taken."""
        self.mark(taken)
        if not len(self.pool) or self.taken_rows.all():
            return None
        target = np.asarray(target, dtype=float)
        # |x - t|^2 - |t|^2 for every member: one matrix-vector product
        approx = self.norms - 2.0 * (self.encoded @ target)
        approx[self.taken_rows] = np.inf
        least = approx.min()
        # Rounding moves each entry of `approx`, and each distance the loop computes, by less
        # than `slack` (a bound on (|x| + |t|)^2 times the error per term): every member the
        # loop could find nearest is within 2 * slack of the least entry.
        target_norm = float(target @ target)
        magnitude = self.largest_norm + 2.0 * np.sqrt(self.largest_norm * target_norm) + target_norm
        slack = ROUNDING_SLACK * (len(target) + 2) * np.finfo(float).eps * (magnitude + 1.0)
        near = np.flatnonzero(approx <= least + 2.0 * slack)  # ascending: pool order
        exact = ((self.encoded[near] - target) ** 2).sum(axis=1)  # as the plain loop sums
        return self.pool[int(near[int(np.argmin(exact))])]
