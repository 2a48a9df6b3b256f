"""Fixed, seeded object splits: every mesh belongs to exactly one of train / val / test.

The split of an object is a pure function of its object id
(:func:`sam3d_ros.sim.mesh_sources.object_id`, e.g. ``ycb:apple``,
``pybullet:random_urdfs/042/042.obj``, ``procedural:torus_00042``): the first 8 bytes of
``sha256(SPLIT_SALT + ":" + object_id)`` read as a fraction ``u`` in [0, 1) give
``train`` for ``u < 0.70``, ``val`` for ``u < 0.90`` and ``test`` otherwise. Adding or
removing meshes never moves another object to a different split, and no object can be in
two splits, so validation objects are never used for training.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable

logger = logging.getLogger(__name__)

#: Split names.
SPLITS: tuple[str, ...] = ("train", "val", "test")
#: Salt of the split hash (changing it reshuffles every split; do not).
SPLIT_SALT = "sam3d-split-v1"
#: Cumulative upper bounds of the split fractions (train 70 %, val 20 %, test 10 %).
SPLIT_BOUNDS: tuple[float, float, float] = (0.70, 0.90, 1.0)


class SplitError(ValueError):
    """Raised for an unknown split name."""


def check_split(split: str) -> str:
    """Return ``split`` when it is a known split name, else raise SplitError."""
    if split not in SPLITS:
        raise SplitError(f"unknown split {split!r}; expected one of {SPLITS}")
    return split


def split_fraction(object_id: str) -> float:
    """The object's hash fraction ``u`` in [0, 1)."""
    digest = hashlib.sha256(f"{SPLIT_SALT}:{object_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_of(object_id: str) -> str:
    """``"train"``, ``"val"`` or ``"test"`` for ``object_id``."""
    u = split_fraction(object_id)
    for name, bound in zip(SPLITS, SPLIT_BOUNDS, strict=True):
        if u < bound:
            return name
    return SPLITS[-1]  # pragma: no cover - u < 1.0 always


def filter_split(object_ids: Iterable[str], split: str) -> list[str]:
    """The ids of ``object_ids`` that belong to ``split`` (order kept)."""
    check_split(split)
    return [o for o in object_ids if split_of(o) == split]
