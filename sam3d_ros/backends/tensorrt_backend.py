"""The network on TensorRT (NVIDIA GPU; needs ``tensorrt`` and ``cuda-python``).

One engine per stage graph is built from the verified ONNX (the ``trt_precision`` parameter,
fp16 or fp32; one optimisation profile for batch 1..max_objects) and cached in the
``engine_cache_dir`` parameter's directory (empty: ``$SAM3D_ENGINE_CACHE``, else
``~/.cache/sam3d_ros/engines``) with a sidecar; see
:mod:`sam3d_ros.backends.engine_cache` for when a cached engine is reused or rebuilt. An
engine that TensorRT cannot deserialize is rebuilt once.

Frames with more objects than the profile's maximum batch are run in chunks.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from sam3d_ros.backends.engine_cache import EngineCache, EngineCacheError, EngineKey
from sam3d_ros.backends.learned import (
    ENGINE_CACHE_ENV,
    GRAPHS,
    LearnedBackend,
    NetworkOutputs,
    network_outputs,
    sha256_file,
    verified_file,
)
from sam3d_ros.core.backend import BackendError
from sam3d_ros.core.config import PipelineConfig
from sam3d_ros.core.encoding import GRID_SIZE, NUM_CHANNELS

logger = logging.getLogger(__name__)

INPUT_NAME: Final[str] = "observation"
#: Batch size the profile is tuned for and its upper bound.
OPT_BATCH: Final[int] = 8
MAX_BATCH_CAP: Final[int] = 64
WORKSPACE_BYTES: Final[int] = 1 << 30


def default_engine_dir(configured: str = "") -> Path:
    """``configured`` (the ``engine_cache_dir`` parameter) when set, else
    ``$SAM3D_ENGINE_CACHE``, else ``~/.cache/sam3d_ros/engines``."""
    if configured:
        return Path(configured).expanduser()
    env = os.environ.get(ENGINE_CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "sam3d_ros" / "engines"


def input_profile(max_batch: int) -> dict[str, dict[str, list[int]]]:
    """The optimisation profile: batch 1..max_batch (opt min(OPT_BATCH, max_batch))."""
    shape = [NUM_CHANNELS, GRID_SIZE, GRID_SIZE, GRID_SIZE]
    return {
        INPUT_NAME: {
            "min": [1, *shape],
            "opt": [min(OPT_BATCH, max_batch), *shape],
            "max": [max_batch, *shape],
        }
    }


def _import_cudart() -> Any:
    """cuda-python's runtime module (``cuda.bindings.runtime`` >= 12.6, else ``cuda.cudart``)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        from cuda import cudart as runtime  # type: ignore[no-redef]
    return runtime


def _cuda_check(result: Any, what: str) -> Any:
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise BackendError(f"CUDA error {err} in {what}")
    return rest[0] if len(rest) == 1 else rest


def build_engine(onnx_path: Path, key: EngineKey, timing_cache: Path) -> bytes:
    """Build a serialized engine with TensorRT (the real :data:`EngineBuilder`).

    fp16 sets ``BuilderFlag.FP16`` (TensorRT 10; TensorRT 11 has no such flag and is refused
    with a message); fp32 clears ``BuilderFlag.TF32`` so that the engine computes in fp32.

    Raises:
        EngineCacheError: the ONNX does not parse, fp16 is asked of TensorRT >= 11, or no
            engine could be built.
    """
    import tensorrt as trt

    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    flags = 0
    if int(str(trt.__version__).split(".")[0]) < 10:  # TensorRT 8.x needs explicit batch
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineCacheError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if key.precision == "fp16":
        fp16 = getattr(trt.BuilderFlag, "FP16", None)
        if fp16 is None:
            raise EngineCacheError(
                f"TensorRT {trt.__version__} has no BuilderFlag.FP16 (TensorRT 11 removed the weakly "
                "typed precision flags): use trt_precision fp32, or TensorRT 10 for fp16 engines"
            )
        config.set_flag(fp16)
    else:
        # fp32 means fp32: TensorRT enables TF32 by default, which rounds the inputs of every
        # convolution to 10-bit mantissas on Ampere and newer GPUs
        tf32 = getattr(trt.BuilderFlag, "TF32", None)
        if tf32 is not None:
            config.clear_flag(tf32)
    _use_timing_cache(config, timing_cache)
    profile = builder.create_optimization_profile()
    for name, p in key.input_profile.items():
        profile.set_shape(name, tuple(p["min"]), tuple(p["opt"]), tuple(p["max"]))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineCacheError(f"TensorRT failed to build an engine from {onnx_path}")
    updated = config.get_timing_cache()
    if updated is not None:
        timing_cache.write_bytes(bytes(memoryview(updated.serialize())))
    return bytes(memoryview(serialized))


def _use_timing_cache(config: Any, path: Path) -> None:
    """Give the builder the shared timing cache of ``path``; a cache that TensorRT refuses
    (written by another TensorRT version or GPU, which the engines' sidecar rules allow in
    one cache directory) is replaced by an empty one instead of failing the build."""
    blob = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(blob)
    if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False) is not False:
        return
    logger.warning("timing cache %s does not fit this TensorRT/GPU; starting an empty one", path)
    config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)


def _output_names(trt: Any, engine: Any) -> tuple[str, ...]:
    """The output tensor names of ``engine`` (a layout-only stage-1 graph has no
    ``occupancy_logits``)."""
    names = (engine.get_tensor_name(i) for i in range(engine.num_io_tensors))
    return tuple(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)


class TensorRTBackend(LearnedBackend):
    """One cached TensorRT engine per stage graph, executed with cuda-python device buffers
    (shared by the stages, which run one after the other on one stream)."""

    name = "tensorrt"

    def __init__(
        self,
        config: PipelineConfig,
        directory: Path | None = None,
        precision: str | None = None,
        engine_dir: Path | None = None,
    ) -> None:
        super().__init__(config, directory)
        try:
            import tensorrt as trt

            cudart = _import_cudart()
        except ImportError as err:
            raise BackendError(f"the tensorrt backend needs tensorrt and cuda-python: {err}") from err
        self._trt, self._cudart = trt, cudart
        precision = precision or config.trt_precision
        props = _cuda_check(cudart.cudaGetDeviceProperties(0), "cudaGetDeviceProperties")
        gpu = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
        gpu = f"{gpu.strip(chr(0))} sm_{props.major}{props.minor}"
        self.max_batch = int(min(max(config.max_objects, 1), MAX_BATCH_CAP))
        self.cache = EngineCache(engine_dir or default_engine_dir(config.engine_cache_dir), build_engine)
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        #: per stage: the engine's cache key, the engine and its execution context
        self.keys: dict[str, EngineKey] = {}
        self.engines: dict[str, Any] = {}
        self.contexts: dict[str, Any] = {}
        self.outputs: dict[str, tuple[str, ...]] = {}  # the engine's output tensors
        for stage in self.stages:
            onnx_path = verified_file(self.model_dir, self.manifest, GRAPHS[stage][0])
            try:
                key = EngineKey(
                    onnx_sha256=sha256_file(onnx_path),
                    tensorrt_version=str(trt.__version__),
                    gpu_name=gpu,
                    precision=precision,
                    input_profile=input_profile(self.max_batch),
                )
                engine = self._runtime.deserialize_cuda_engine(self.cache.load_or_build(onnx_path, key))
                if engine is None:
                    logger.warning("cached TensorRT engine of %s does not deserialize; rebuilding", onnx_path)
                    engine = self._runtime.deserialize_cuda_engine(self.cache.rebuild(onnx_path, key))
            except EngineCacheError as err:
                raise BackendError(str(err)) from err
            if engine is None:
                raise BackendError(f"TensorRT cannot deserialize a freshly built engine for {onnx_path}")
            self.keys[stage], self.engines[stage] = key, engine
            self.contexts[stage] = engine.create_execution_context()
            self.outputs[stage] = _output_names(trt, engine)
        #: the shape stage's key, engine and context (the one graph of a one-stage model)
        self.key, self.engine, self.context = (
            self.keys["shape"],
            self.engines["shape"],
            self.contexts["shape"],
        )
        self.stream = _cuda_check(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)
        logger.info("TensorRT engine ready: %s (%s)", gpu, precision)

    def _device_buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                _cuda_check(self._cudart.cudaFree(ptr), "cudaFree")
            ptr = int(_cuda_check(self._cudart.cudaMalloc(nbytes), "cudaMalloc"))
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def _run_chunk(
        self, x: NDArray[np.float32], context: Any, outputs: tuple[str, ...]
    ) -> dict[str, NDArray[np.float32]]:
        cudart = self._cudart
        kind_h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        kind_d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        b = x.shape[0]
        context.set_input_shape(INPUT_NAME, tuple(x.shape))
        ptr = self._device_buffer(INPUT_NAME, x.nbytes)
        _cuda_check(cudart.cudaMemcpyAsync(ptr, x.ctypes.data, x.nbytes, kind_h2d, self.stream), "memcpy h2d")
        context.set_tensor_address(INPUT_NAME, ptr)
        outs: dict[str, NDArray[np.float32]] = {}
        for name in outputs:
            shape = tuple(context.get_tensor_shape(name))
            arr = np.empty(shape, dtype=np.float32)
            optr = self._device_buffer(name, max(arr.nbytes, 4))
            context.set_tensor_address(name, optr)
            outs[name] = arr
        if not context.execute_async_v3(self.stream):
            raise BackendError(f"TensorRT execution failed on a batch of {b}")
        for name, arr in outs.items():
            ptr_o = self._buffers[name][0]
            _cuda_check(
                cudart.cudaMemcpyAsync(arr.ctypes.data, ptr_o, arr.nbytes, kind_d2h, self.stream),
                "memcpy d2h",
            )
        _cuda_check(cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        return outs

    def infer(self, inputs: NDArray[np.float32], stage: str = "shape") -> NetworkOutputs:
        """Run the batch through ``stage``'s engine (in chunks of at most ``max_batch`` rows)."""
        x = np.ascontiguousarray(inputs, dtype=np.float32)
        context, outputs = self.contexts[stage], self.outputs[stage]
        parts = [
            self._run_chunk(np.ascontiguousarray(x[i : i + self.max_batch]), context, outputs)
            for i in range(0, len(x), self.max_batch)
        ]
        named = {name: np.concatenate([p[name] for p in parts]) for name in outputs}
        return network_outputs(named, len(x))

    def close(self) -> None:
        """Free device buffers and the stream."""
        for ptr, _ in self._buffers.values():
            self._cudart.cudaFree(ptr)
        self._buffers.clear()
        if getattr(self, "stream", None) is not None:
            self._cudart.cudaStreamDestroy(self.stream)
            self.stream = None

    def describe(self) -> str:
        """Backend, GPU, precision and model."""
        return f"tensorrt {self.key.tensorrt_version} {self.key.gpu_name} {self.key.precision}: {self.model_summary()}"
