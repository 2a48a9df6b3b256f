"""The non-learned geometric backend: extrusion to the support plane, symmetry and
free-space carving (see :mod:`sam3d_ros.core.completion`). Pure numpy/scipy; no GPU."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from sam3d_ros.core.backend import Backend
from sam3d_ros.core.completion import CompletionError, complete_shape
from sam3d_ros.core.config import PipelineConfig
from sam3d_ros.core.types import ObjectObservation, SceneContext, VoxelShape

logger = logging.getLogger(__name__)


class GeometricBackend(Backend):
    """Amodal completion by geometric priors; one object at a time, no runtime resources."""

    name = "geometric"

    def __init__(self, config: PipelineConfig) -> None:
        super().__init__(config)
        self._failures: dict[int, str] = {}

    def reconstruct(
        self, scene: SceneContext, observations: Sequence[ObjectObservation]
    ) -> list[VoxelShape | None]:
        """One :class:`VoxelShape` (or None) per observation, in the same order.

        An object that gives no shape (:class:`~sam3d_ros.core.completion.CompletionError`:
        too few points, too large, everything carved) yields None, with the reason in
        :meth:`failure_details`; it never aborts the other objects of the frame. Any other
        exception is a bug and propagates.
        """
        self._failures = {}
        shapes: list[VoxelShape | None] = []
        for obs in observations:
            try:
                shapes.append(complete_shape(scene, obs, self.config))
            except CompletionError as err:
                logger.debug("geometric completion of object %d gave no shape: %s", obs.instance_id, err)
                self._failures[obs.instance_id] = f"{type(err).__name__}: {err}"
                shapes.append(None)
        return shapes

    def failure_details(self) -> Mapping[int, str]:
        """Why objects of the last :meth:`reconstruct` call got None (the completion error)."""
        return dict(self._failures)

    def describe(self) -> str:
        """One line naming the backend."""
        return "geometric (non-learned: extrusion to support plane + symmetry + free-space carving)"
