"""rosbag2 access with ``rosbags`` (no ROS graph needed): open bags, check topics, stream
messages, and register this package's message types for writing output bags."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sam3d_ros._paths import share_dir
from sam3d_ros.core import constants as C

logger = logging.getLogger(__name__)

IMAGE = "sensor_msgs/msg/Image"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"


class BagError(ValueError):
    """A bag that cannot be used (missing, unreadable, topics missing or of the wrong type)."""


@dataclass(frozen=True)
class InputTopics:
    """Input topics of a frame (defaults: the node's default topics)."""

    rgb: str = C.DEFAULT_RGB_TOPIC
    depth: str = C.DEFAULT_DEPTH_TOPIC
    info: str = C.DEFAULT_INFO_TOPIC
    mask: str = C.DEFAULT_MASK_TOPIC

    def expected_types(self) -> dict[str, str]:
        return {self.rgb: IMAGE, self.depth: IMAGE, self.info: CAMERA_INFO, self.mask: IMAGE}


def kilted_typestore() -> Any:
    """A rosbags typestore with the ROS 2 Kilted types and this package's messages."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    msg_dir = share_dir() / "msg"
    types: dict[str, Any] = {}
    for name in ("ObjectReconstruction", "ObjectReconstructionArray"):
        types.update(get_types_from_msg((msg_dir / f"{name}.msg").read_text(), f"sam3d_ros/msg/{name}"))
    store.register(types)
    return store


class BagReader:
    """Streams the input topics of a rosbag2 directory (sqlite3 or mcap) or a single
    ``.mcap`` file in log-time order, deserialised to rosbags dataclasses."""

    def __init__(self, path: Path, topics: InputTopics) -> None:
        from rosbags.highlevel import AnyReader

        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f"bag {str(self.path)!r} does not exist")
        self.topics = topics
        try:
            self._reader = AnyReader([self.path], default_typestore=kilted_typestore())
            self._reader.open()
        except Exception as err:
            raise BagError(f"cannot open bag {str(self.path)!r}: {type(err).__name__}: {err}") from err
        self._connections = self._check_topics()

    def _check_topics(self) -> list[Any]:
        present: dict[str, str] = {c.topic: c.msgtype for c in self._reader.connections}
        problems = []
        for topic, msgtype in self.topics.expected_types().items():
            if topic not in present:
                problems.append(f"missing {topic} ({msgtype})")
            elif present[topic] != msgtype:
                problems.append(f"{topic} has type {present[topic]}, expected {msgtype}")
        if problems:
            listing = "\n".join(f"  {t}: {m}" for t, m in sorted(present.items())) or "  (no topics)"
            raise BagError(
                f"bag {str(self.path)!r} cannot be replayed: {'; '.join(problems)}.\nTopics in the bag:\n{listing}\n"
                "Choose topics with --rgb-topic/--depth-topic/--info-topic/--mask-topic."
            )
        wanted = set(self.topics.expected_types())
        return [c for c in self._reader.connections if c.topic in wanted]

    def message_counts(self) -> Mapping[str, int]:
        """Messages per input topic."""
        counts: dict[str, int] = {}
        for c in self._connections:
            counts[c.topic] = counts.get(c.topic, 0) + int(c.msgcount)
        return counts

    def connections(self) -> list[Any]:
        """The rosbags connections of the input topics."""
        return list(self._connections)

    def raw_messages(self) -> Iterator[tuple[Any, int, bytes]]:
        """(connection, log time ns, raw CDR bytes) in log-time order; streams."""
        yield from self._reader.messages(connections=self._connections)

    def deserialize(self, raw: bytes, msgtype: str) -> Any:
        """One message from its CDR bytes.

        Raises:
            BagError: the bytes are not a valid ``msgtype`` (a corrupt or truncated message).
        """
        from rosbags.serde import SerdeError

        try:
            return self._reader.deserialize(raw, msgtype)
        except SerdeError as err:
            raise BagError(f"{len(raw)} bytes are not a valid {msgtype}: {err}") from err

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BagWriter:
    """Writes a rosbag2 (mcap or sqlite3) with raw CDR messages, typed by a typestore."""

    def __init__(self, path: Path, storage: str = "mcap") -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
        if storage not in plugins:
            raise BagError(f"unknown bag storage {storage!r}; valid: {sorted(plugins)}")
        if Path(path).exists():
            raise BagError(f"output bag {str(path)!r} already exists")
        self._store = kilted_typestore()
        self._writer = Writer(Path(path), version=9, storage_plugin=plugins[storage])
        self._writer.open()
        self._conns: dict[str, Any] = {}

    def write(self, topic: str, msgtype: str, time_ns: int, raw: bytes) -> None:
        conn = self._conns.get(topic)
        if conn is None:
            conn = self._writer.add_connection(topic, msgtype, typestore=self._store)
            self._conns[topic] = conn
        self._writer.write(conn, int(time_ns), bytes(raw))

    def close(self) -> None:
        self._writer.close()
