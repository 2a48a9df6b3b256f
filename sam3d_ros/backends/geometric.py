"""The non-learned geometric backend: extrusion to the support plane, symmetry and
free-space carving (see :mod:`sam3d_ros.core.completion`). Pure numpy/scipy; no GPU."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sam3d_ros.core.backend import Backend
from sam3d_ros.core.completion import complete_shape
from sam3d_ros.core.types import ObjectObservation, SceneContext, VoxelShape

logger = logging.getLogger(__name__)


class GeometricBackend(Backend):
    """Amodal completion by geometric priors; one object at a time, no runtime resources."""

    name = "geometric"

    def reconstruct(
        self, scene: SceneContext, observations: Sequence[ObjectObservation]
    ) -> list[VoxelShape | None]:
        """One :class:`VoxelShape` (or None) per observation, in the same order.

        An object whose completion fails (bad input, numerical trouble) yields None and a
        logged warning; it never aborts the other objects of the frame.
        """
        shapes: list[VoxelShape | None] = []
        for obs in observations:
            try:
                shapes.append(complete_shape(scene, obs, self.config))
            except Exception as err:  # noqa: BLE001 - one bad object must not fail the frame
                logger.warning("geometric completion of object %d failed: %r", obs.instance_id, err)
                shapes.append(None)
        return shapes

    def describe(self) -> str:
        """One line naming the backend."""
        return "geometric (non-learned: extrusion to support plane + symmetry + free-space carving)"
