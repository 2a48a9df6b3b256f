"""The one small interface every reconstruction backend implements (a core type: the
pipeline, the backends and the tools depend on it, it depends on nothing above core)."""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence

from sam3d_ros.core.config import PipelineConfig
from sam3d_ros.core.types import ObjectObservation, SceneContext, VoxelShape


class BackendError(RuntimeError):
    """Raised when a backend cannot be created or fails on an input."""


class Backend(abc.ABC):
    """Turns the observations of a frame's objects into amodal voxel shapes.

    Implementations receive all objects of a frame in one call (so learned backends can
    batch them) and return one :class:`VoxelShape` per observation, in the same order, or
    ``None`` for an object they could not reconstruct (why, when they know, is given by
    :meth:`failure_details`). Meshing, pose, extents and collision shapes are computed from
    the voxel shapes by the shared pipeline.
    """

    #: Registry name of the backend.
    name: str = ""

    def __init__(self, config: PipelineConfig) -> None:
        self.config = config

    @abc.abstractmethod
    def reconstruct(
        self, scene: SceneContext, observations: Sequence[ObjectObservation]
    ) -> list[VoxelShape | None]:
        """Estimate the amodal shape of every observed object of one frame."""

    def failure_details(self) -> Mapping[int, str]:
        """Why objects of the last :meth:`reconstruct` call got ``None``: instance id ->
        a human-readable detail (the pipeline puts it in the skipped object). The default
        knows nothing (the pipeline then says "backend returned no shape")."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release runtime resources (GPU memory, sessions)."""

    def describe(self) -> str:
        """One line naming the backend and its runtime (for logs and diagnostics)."""
        return self.name
