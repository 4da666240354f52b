"""The TensorRT loader (a plan + sidecar, or the engine cache) and the runner it builds.

Why not Beam's TensorRTEngineHandlerNumPy: it handles fixed shapes and one input only,
stages through pageable host memory, never frees device memory and copies the full
max-batch buffer for a short batch. TrtEngine uses the named-tensor API (TensorRT 8.5+,
10 and 11 alike), any number of inputs and outputs, dynamic batch within the profile,
pinned staging and one synchronize per batch; the loader checks the plan against this
TensorRT and GPU before deserializing it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from transforms.runtime import startup
from transforms.runtime.batching import DeclaredInput, check_declared_input
from transforms.runtime.errors import SystemicError
from transforms.runtime.runner import Feeds, Runner, RunnerInfo, TensorInfo
from transforms.runtime.storage import read_bytes, sha256_hex
from transforms.runtime.tensorrt.sidecar import (DEFAULT_PROFILE, EngineMismatch, Sidecar)


def sidecar_uri(engine_uri: str) -> str:
    return engine_uri + ".json"


def load_sidecar(engine_uri: str) -> Sidecar:
    uri = sidecar_uri(engine_uri)
    return Sidecar.from_json(read_bytes(uri, "engine sidecar").decode("utf-8"), source=uri)


def check_spec(sidecar: Sidecar, source: str, input_name: Optional[str],
               input_dtype: Optional[str], example_shape: Optional[Tuple[int, ...]]) -> str:
    """The image input of the engine, checked against the model spec; returns its name."""
    inputs = [DeclaredInput(t.name, np.dtype(t.dtype), t.dtype,
                            tuple(None if d < 0 else d for d in t.shape)) for t in sidecar.inputs]
    return check_declared_input(source, "engine", inputs, input_name, input_dtype,
                                example_shape).name


def runtime_identity(device: int = 0) -> Tuple[str, str, str]:
    """(TensorRT version, GPU name, compute capability) of this process's GPU."""
    from transforms.runtime.cuda import device_info
    from transforms.runtime.tensorrt.engine import trt_module

    version = trt_module().__version__     # first: "tensorrt is not installed" says most
    name, cc = device_info(device)
    return version, name, cc


@dataclass(frozen=True)
class TrtLoader:
    """A plan at ``engine_uri`` (sidecar at ``<engine_uri>.json``), or a plan from the
    engine cache at ``engine_cache`` built from ``onnx_uri`` for this GPU."""

    engine_uri: Optional[str] = None
    engine_cache: Optional[str] = None
    onnx_uri: Optional[str] = None
    precision: str = "tf32"
    profile: Tuple[int, int, int] = DEFAULT_PROFILE
    optimization_level: Optional[int] = None
    input_name: Optional[str] = None
    input_dtype: Optional[str] = None
    example_shape: Optional[Tuple[int, ...]] = None
    device: Optional[int] = None     # None: round-robin over the visible GPUs (placement.py)
    # narrow the SDK process to its GPU (placement.place); False where one process holds
    # several copies (Beam's model_copies)
    confine: bool = True

    backend = "tensorrt"

    def __post_init__(self) -> None:
        if not self.engine_uri and not (self.engine_cache and self.onnx_uri):
            raise ValueError("TrtLoader: expected engine_uri, or engine_cache with onnx_uri; "
                             "got neither")

    def batch_bounds(self) -> Tuple[int, int]:
        """(opt, max) of the profile: BatchElements then forms batches the engine was tuned
        for, instead of its adaptive sizing starting at 1 and starving the GPU."""
        if self.engine_cache:
            return self.profile[1], self.profile[2]
        sidecar = load_sidecar(self.engine_uri)
        return sidecar.opt_batch, sidecar.max_batch

    def _from_cache(self, device: int) -> Tuple[bytes, Sidecar, str]:
        from transforms.runtime.tensorrt.cache import EngineCache, tensorrt_build

        # The cache only returns plans whose sidecar matches this device's TensorRT, GPU
        # and compute capability (EngineKey.mismatch), so no second runtime check here.
        cache = EngineCache(self.engine_cache,
                            tensorrt_build(optimization_level=self.optimization_level),
                            lambda: runtime_identity(device))
        got = cache.get_or_build(self.onnx_uri, self.precision, *self.profile)
        check_spec(got.sidecar, got.uri, self.input_name, self.input_dtype, self.example_shape)
        return got.plan, got.sidecar, got.uri

    def _from_uri(self, device: int) -> Tuple[bytes, Sidecar, str]:
        sidecar = load_sidecar(self.engine_uri)
        version, gpu, cc = runtime_identity(device)
        sidecar.check_runtime(version, gpu, cc,
                              source=f"{sidecar_uri(self.engine_uri)} on cuda:{device}")
        check_spec(sidecar, self.engine_uri, self.input_name, self.input_dtype,
                   self.example_shape)
        plan = read_bytes(self.engine_uri, "TensorRT plan")
        sidecar.check_plan(sha256_hex(plan), source=self.engine_uri)
        return plan, sidecar, self.engine_uri

    def __call__(self) -> "TrtRunner":
        from transforms.runtime.placement import place_current
        from transforms.runtime.tensorrt.engine import trt_module, TrtEngine

        with startup.timed_part("import_tensorrt"):
            trt_module()                  # "tensorrt is not installed" before any CUDA call
        with startup.timed_part("cuda_init"):
            placed = place_current(self.device, confine=self.confine)
            device = placed.cuda_index
        with startup.timed_part("plan_read_check"):
            plan, sidecar, source = (self._from_cache(device) if self.engine_cache
                                     else self._from_uri(device))
        with startup.timed_part("engine_deserialize_allocate"):
            engine = TrtEngine(plan, source=f"{source} on cuda:{placed.device}", device=device)
        declared = sorted((t.name, t.dtype) for t in sidecar.tensors)
        actual = sorted((t.name, t.dtype) for t in engine.tensors)
        if declared != actual:
            engine.close()
            raise EngineMismatch(f"{source}: the engine's tensors {actual} differ "
                                 f"from its sidecar's {declared}")
        return TrtRunner(engine, source, sha256_hex(plan), sidecar, label=f"cuda:{placed.device}")


class TrtRunner(Runner):
    """One engine, its context, buffers and stream; TrtEngine's lock serializes batches."""

    def __init__(self, engine: object, source: str, sha256: str, sidecar: Sidecar,
                 label: str) -> None:
        """``label``: the GPU as the worker names it (``cuda:N`` among its GPUs), which
        differs from the engine's CUDA index in a process narrowed to that GPU."""
        super().__init__()
        self._engine = engine
        inputs = tuple(TensorInfo(t.name, t.dtype, tuple(None if d < 0 else d
                                                         for d in t.shape[1:]))
                       for t in sidecar.inputs)
        lo, opt, hi = sidecar.min_batch, sidecar.opt_batch, sidecar.max_batch
        self._info = RunnerInfo(
            backend="tensorrt", model_uri=source, sha256=sha256,
            device=label,
            inputs=inputs, outputs=tuple(t.name for t in sidecar.outputs),
            min_batch=lo, opt_batch=opt, max_batch=hi,
            details={"precision": sidecar.precision, "tensorrt": sidecar.tensorrt_version,
                     "gpu": sidecar.gpu_name})

    def info(self) -> RunnerInfo:
        return self._info

    @property
    def engine(self):
        """The TrtEngine, for runners in this package that feed it from the device."""
        if self._engine is None:
            raise SystemicError(f"{self._info.model_uri}: the runner is closed")
        return self._engine

    def infer(self, feeds: Feeds) -> Feeds:
        if self._engine is None:
            raise SystemicError(f"{self._info.model_uri}: the runner is closed")
        return self._engine.run(feeds)

    def close(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()
