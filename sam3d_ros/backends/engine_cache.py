"""TensorRT engine cache with sidecars (pure Python: no TensorRT, no GPU needed).

An engine is only valid for one ONNX file, one TensorRT version, one GPU, one precision and
one input profile. Each cached engine ``<stem>.engine`` has a sidecar ``<stem>.json``
recording exactly that (:class:`EngineKey`) plus the engine's own sha256 and size. On
:meth:`EngineCache.load_or_build`:

* no engine, no sidecar, an unreadable sidecar, or a sidecar whose key differs from the
  requested one (other ONNX sha256, TensorRT version, GPU, precision or profile) -> rebuild;
  an engine whose sidecar does not match the shipped ONNX is therefore never loaded;
* an engine whose bytes do not match the sidecar's sha256/size (truncated, corrupted,
  replaced by a foreign file) -> rebuild;
* a build writes the engine and then the sidecar atomically (temporary file + rename), so
  a crash never leaves a valid-looking pair; the timing cache file is shared across builds.

The builder is injected (``Callable[[Path, EngineKey, Path], bytes]``), so the logic is
tested with a fake builder; :mod:`sam3d_ros.backends.tensorrt_backend` supplies the real one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

logger = logging.getLogger(__name__)

#: Version of the sidecar layout (bump when its fields change).
SIDECAR_VERSION: Final[int] = 1
TIMING_CACHE_NAME: Final[str] = "timing.cache"
PRECISIONS: Final[tuple[str, ...]] = ("fp16", "fp32")


class EngineCacheError(RuntimeError):
    """Raised when an engine cannot be built or the cache directory is unusable."""


@dataclass(frozen=True)
class EngineKey:
    """What an engine was built from.

    Attributes:
        onnx_sha256: sha256 of the ONNX file.
        tensorrt_version: e.g. "10.3.0".
        gpu_name: e.g. "NVIDIA H100 80GB HBM3" (plus compute capability if wanted).
        precision: "fp16" or "fp32".
        input_profile: input name -> {"min": shape, "opt": shape, "max": shape}.
    """

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    precision: str
    input_profile: dict[str, dict[str, list[int]]]

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise EngineCacheError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        return asdict(self)

    def digest(self) -> str:
        """Short stable hash of the key (part of the engine file name)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


#: (onnx_path, key, timing_cache_path) -> serialized engine bytes.
EngineBuilder = Callable[[Path, EngineKey, Path], bytes]


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


class EngineCache:
    """Engines for one model in ``directory`` (see the module docstring)."""

    def __init__(self, directory: Path, builder: EngineBuilder, stem: str = "geometry_layout") -> None:
        self.directory = Path(directory)
        self.builder = builder
        self.stem = stem
        self.builds = 0

    @property
    def timing_cache(self) -> Path:
        """The shared TensorRT timing cache file."""
        return self.directory / TIMING_CACHE_NAME

    def paths(self, key: EngineKey) -> tuple[Path, Path]:
        """(engine, sidecar) paths of ``key``: ``<stem>_<sha12>_<precision>_<digest>``."""
        base = f"{self.stem}_{key.onnx_sha256[:12]}_{key.precision}_{key.digest()}"
        return self.directory / f"{base}.engine", self.directory / f"{base}.json"

    def check(self, key: EngineKey) -> str | None:
        """None when the cached engine of ``key`` may be loaded, else why it may not."""
        engine, sidecar = self.paths(key)
        if not engine.is_file():
            return f"no engine at {engine}"
        if not sidecar.is_file():
            return f"engine {engine} has no sidecar (foreign or interrupted build)"
        try:
            meta = json.loads(sidecar.read_text())
        except (OSError, json.JSONDecodeError) as err:
            return f"sidecar {sidecar} is unreadable: {err}"
        if meta.get("version") != SIDECAR_VERSION:
            return f"sidecar {sidecar} has version {meta.get('version')!r}, expected {SIDECAR_VERSION}"
        recorded = meta.get("key")
        if recorded != key.to_dict():
            diff = sorted(
                k
                for k in key.to_dict()
                if not isinstance(recorded, dict) or recorded.get(k) != key.to_dict()[k]
            )
            return f"sidecar {sidecar} was built for other {', '.join(diff) or 'inputs'}"
        data = engine.read_bytes()
        if len(data) != meta.get("engine_size") or hashlib.sha256(data).hexdigest() != meta.get(
            "engine_sha256"
        ):
            return f"engine {engine} does not match its sidecar's size/sha256 (corrupted or replaced)"
        return None

    def load_or_build(self, onnx_path: Path, key: EngineKey) -> bytes:
        """The serialized engine of ``key``: the cached one when valid, else a new build."""
        self.directory.mkdir(parents=True, exist_ok=True)
        engine, _ = self.paths(key)
        reason = self.check(key)
        if reason is None:
            logger.info("TensorRT engine cache hit: %s", engine)
            return engine.read_bytes()
        logger.info("building TensorRT engine (%s)", reason)
        return self.rebuild(onnx_path, key)

    def rebuild(self, onnx_path: Path, key: EngineKey) -> bytes:
        """Build, store the engine, then its sidecar; returns the engine bytes.

        Raises:
            EngineCacheError: the builder failed or returned no bytes.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        engine, sidecar = self.paths(key)
        sidecar.unlink(missing_ok=True)  # never leave a sidecar that vouches for stale bytes
        try:
            data = self.builder(Path(onnx_path), key, self.timing_cache)
        except EngineCacheError:
            raise
        except Exception as err:
            raise EngineCacheError(f"building an engine from {onnx_path} failed: {err!r}") from err
        if not data:
            raise EngineCacheError(f"the engine builder returned no bytes for {onnx_path}")
        self.builds += 1
        _atomic_write(engine, bytes(data))
        meta = {
            "version": SIDECAR_VERSION,
            "key": key.to_dict(),
            "engine_sha256": hashlib.sha256(data).hexdigest(),
            "engine_size": len(data),
            "onnx_path": str(onnx_path),
        }
        _atomic_write(sidecar, json.dumps(meta, indent=2).encode())
        logger.info("TensorRT engine written: %s (%d bytes)", engine, len(data))
        return bytes(data)
