"""The camera -> planning-frame transform of each frame: tf2 when available, else static.

:class:`PlanningFrameSource` gives the pipeline ``planning_T_camera`` (a 4x4 homogeneous
transform mapping points in the image's ``frame_id``, the camera optical frame, to
``planning_frame``; metres) for each frame:

* ``planning_frame`` empty: ``None``, i.e. the pipeline's static
  ``camera_to_planning_transform`` as before (identity by default) and no tf lookup;
* tf2 in use (``use_tf`` and ``tf2_ros`` importable): ``planning_frame`` equal to the
  image ``frame_id`` gives the identity; otherwise ``planning_frame <- frame_id`` is looked
  up in a ``tf2_ros.Buffer`` fed by a ``tf2_ros.TransformListener`` on the node, at the
  image header stamp, waiting at most ``tf_timeout`` seconds. When the lookup fails the
  frame is skipped (:class:`TfUnavailableError`, reason ``tf_unavailable``). There is
  deliberately **no** fallback to the static transform then: a wrist camera moves, and a
  stale or made-up camera pose would put collision objects at wrong places in the planning
  scene, which is worse than a skipped frame;
* tf2 not in use (``use_tf`` false or ``tf2_ros`` not importable, logged once at
  configure): ``None``, the static ``camera_to_planning_transform``.

The lookup blocks for up to ``tf_timeout``: call :meth:`PlanningFrameSource.fixed_T_camera`
from the worker thread, never from the executor thread that feeds the tf buffer.
"""

from __future__ import annotations

import importlib
import logging
import math
from types import ModuleType
from typing import Any

import numpy as np
from numpy.typing import NDArray
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.time import Time

from sam3d_ros.core.config import NodeConfig
from sam3d_ros.core.frames import FrameError, make_transform, matrix_from_quaternion
from sam3d_ros.core.types import InputError, SkipReason

logger = logging.getLogger(__name__)


class TfUnavailableError(InputError):
    """No usable ``planning_frame <- camera`` transform for a frame (the frame is skipped
    with reason ``tf_unavailable``)."""

    def __init__(self, detail: str) -> None:
        super().__init__(SkipReason.TF_UNAVAILABLE, detail)


def load_tf2_ros() -> tuple[ModuleType | None, str]:
    """The ``tf2_ros`` module (imported now, lazily) and "", or None and why not."""
    try:
        return importlib.import_module("tf2_ros"), ""
    except ImportError as err:
        return None, f"{type(err).__name__}: {err}"


def transform_to_matrix(msg: Any) -> NDArray[np.float64]:
    """4x4 homogeneous transform of a ``geometry_msgs/TransformStamped`` or ``Transform``.

    For a TransformStamped from ``lookup_transform(target, source, ...)`` the result is
    ``target_T_source``: it maps points expressed in ``source`` (``child_frame_id``) to
    ``target`` (``header.frame_id``). Translation in metres, rotation quaternion (x, y, z, w)
    (normalised here).

    Raises:
        FrameError: for non-finite values or a zero quaternion.
    """
    tf = getattr(msg, "transform", msg)
    t, q = tf.translation, tf.rotation
    trans = (float(t.x), float(t.y), float(t.z))
    quat = (float(q.x), float(q.y), float(q.z), float(q.w))
    if not all(math.isfinite(v) for v in (*trans, *quat)):
        raise FrameError(f"transform has non-finite values: translation {trans}, rotation xyzw {quat}")
    return make_transform(matrix_from_quaternion(np.array(quat)), np.array(trans))


class PlanningFrameSource:
    """Per-frame ``planning_T_camera`` for the pipeline (see the module docstring).

    Created by the node at configure (with the tf listener's subscriptions on the node) and
    closed at cleanup/shutdown.

    Args:
        node: the node whose executor receives ``/tf`` and ``/tf_static``.
        config: the configuration at configure time (``use_tf`` is read here; it is a
            read-only parameter).
    """

    def __init__(self, node: Node, config: NodeConfig) -> None:
        self._buffer: Any = None
        self._listener: Any = None
        self._error: type[BaseException] = Exception
        if not config.use_tf:
            node.get_logger().info(
                "use_tf is false: camera poses in the planning frame come from the static "
                f"camera_to_planning_transform {config.pipeline.camera_to_planning_transform!r}"
            )
            return
        tf2_ros, why = load_tf2_ros()
        if tf2_ros is None:
            node.get_logger().info(
                f"tf2_ros is not importable ({why}): camera poses in the planning frame come "
                f"from the static camera_to_planning_transform {config.pipeline.camera_to_planning_transform!r}"
            )
            return
        # the base of LookupException, ConnectivityException, ExtrapolationException, ...
        self._error = getattr(tf2_ros, "TransformException", Exception)
        self._buffer = tf2_ros.Buffer()
        self._listener = tf2_ros.TransformListener(self._buffer, node)
        target = config.pipeline.planning_frame or "<camera frame: no lookup>"
        node.get_logger().info(
            f"camera poses in the planning frame {target!r} from tf2 at each image stamp "
            f"(tf_timeout {config.tf_timeout} s; frames without a transform are skipped)"
        )

    @property
    def uses_tf(self) -> bool:
        """True when transforms come from tf2 (else the static transform is used)."""
        return self._buffer is not None

    def fixed_T_camera(self, config: NodeConfig, frame_id: str, stamp_ns: int) -> NDArray[np.float64] | None:
        """``planning_T_camera`` (4x4, metres) for a frame, or None for the static
        ``camera_to_planning_transform`` (tf2 not in use, or no ``planning_frame``).

        Blocks for up to ``config.tf_timeout`` seconds while tf2 has no transform yet: call it
        from the worker thread.

        Args:
            config: the current configuration (``tf_timeout``; ``planning_frame`` from its
                ``pipeline``).
            frame_id: the image header's frame_id (the camera optical frame).
            stamp_ns: the image header stamp (ns); the transform is looked up at this time.

        Raises:
            TfUnavailableError: tf2 is in use and has no valid transform for this frame
                (never replaced by the static transform).
        """
        planning = config.pipeline.planning_frame
        buffer = self._buffer
        if buffer is None or not planning:
            return None
        if planning == frame_id:
            return np.eye(4)
        timeout = config.tf_timeout
        try:
            msg = buffer.lookup_transform(
                planning, frame_id, Time(nanoseconds=stamp_ns), timeout=Duration(seconds=timeout)
            )
        except self._error as err:
            raise TfUnavailableError(
                f"no transform {planning!r} <- {frame_id!r} at stamp {stamp_ns} ns within "
                f"tf_timeout={timeout} s: {type(err).__name__}: {err}"
            ) from err
        try:
            matrix = transform_to_matrix(msg)
        except FrameError as err:
            raise TfUnavailableError(
                f"invalid transform {planning!r} <- {frame_id!r} from tf: {err}"
            ) from err
        logger.debug("planning_T_camera %s <- %s at %d:\n%s", planning, frame_id, stamp_ns, matrix)
        return matrix

    def clear(self) -> None:
        """Forget buffered dynamic transforms (the input source restarted, e.g. a bag loop);
        static transforms are kept by tf2."""
        if self._buffer is not None and hasattr(self._buffer, "clear"):
            self._buffer.clear()

    def close(self) -> None:
        """Destroy the tf listener's subscriptions and drop the buffer."""
        listener, self._listener = self._listener, None
        self._buffer = None
        if listener is not None and hasattr(listener, "unregister"):
            listener.unregister()
