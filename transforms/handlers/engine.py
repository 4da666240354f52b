"""TensorRT engine wrapper (named-tensor API, TensorRT 8.5+ through 10/11) and the
plan's sidecar JSON.

Why a sidecar: a plan only runs on the TensorRT version and GPU it was built for, and
deserializing a mismatched plan fails with an opaque error or not at all. The sidecar
records both, plus the plan's sha256, and is checked before the plan is touched.

The engine follows Polygraphy's runner shape (load, check inputs against the engine's
metadata, infer, close) and TensorRT's common_runtime.py (owner objects, checked calls):
device buffers sized for the profile maximum, allocated once, pinned host staging,
one stream, one synchronize per batch, and copies of only the rows in the batch.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

LOG = logging.getLogger(__name__)

SIDECAR_VERSION = 1


class EngineMismatch(RuntimeError):
    """The plan was built for another TensorRT, GPU or file than the one at hand."""


class EngineLoadError(RuntimeError):
    """The plan cannot be deserialized or used."""


@dataclass(frozen=True)
class TensorSpec:
    """One I/O tensor as the engine declares it; -1 marks a dynamic dimension."""

    name: str
    mode: str  # "input" | "output"
    dtype: str  # numpy dtype name
    shape: Tuple[int, ...]
    profile_min: Optional[Tuple[int, ...]] = None
    profile_opt: Optional[Tuple[int, ...]] = None
    profile_max: Optional[Tuple[int, ...]] = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TensorSpec":
        tup = lambda v: None if v is None else tuple(int(x) for x in v)  # noqa: E731
        return cls(name=d["name"], mode=d["mode"], dtype=d["dtype"], shape=tup(d["shape"]),
                   profile_min=tup(d.get("profile_min")), profile_opt=tup(d.get("profile_opt")),
                   profile_max=tup(d.get("profile_max")))


def profile_batches(inputs: Sequence[TensorSpec]) -> Tuple[int, int, int]:
    """(min, opt, max) batch that every input's profile admits: the largest minimum,
    the smallest opt and the smallest maximum of dim 0; (1, max, 1) without profiles."""
    mins = [t.profile_min[0] for t in inputs if t.profile_min]
    opts = [t.profile_opt[0] for t in inputs if t.profile_opt]
    maxes = [t.profile_max[0] for t in inputs if t.profile_max]
    top = min(maxes) if maxes else 1
    return (max(mins) if mins else 1, min(opts) if opts else top, top)


@dataclass(frozen=True)
class Sidecar:
    """What a plan was built from and for; written by pipeline.build_engine."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    tensors: Tuple[TensorSpec, ...]
    precision: str
    onnx_sha256: str
    plan_sha256: str
    builder: Mapping[str, Any] = field(default_factory=dict)
    version: int = SIDECAR_VERSION

    @property
    def inputs(self) -> List[TensorSpec]:
        return [t for t in self.tensors if t.mode == "input"]

    @property
    def outputs(self) -> List[TensorSpec]:
        return [t for t in self.tensors if t.mode == "output"]

    @property
    def min_batch(self) -> int:
        return profile_batches(self.inputs)[0]

    @property
    def opt_batch(self) -> int:
        return profile_batches(self.inputs)[1]

    @property
    def max_batch(self) -> int:
        return profile_batches(self.inputs)[2]

    def to_json(self) -> str:
        d = asdict(self)
        d["tensors"] = [asdict(t) for t in self.tensors]
        return json.dumps(d, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "<sidecar>") -> "Sidecar":
        try:
            d = json.loads(text)
            return cls(
                tensorrt_version=str(d["tensorrt_version"]), gpu_name=str(d["gpu_name"]),
                compute_capability=str(d["compute_capability"]),
                tensors=tuple(TensorSpec.from_dict(t) for t in d["tensors"]),
                precision=str(d["precision"]), onnx_sha256=str(d["onnx_sha256"]),
                plan_sha256=str(d["plan_sha256"]), builder=dict(d.get("builder", {})),
                version=int(d.get("version", SIDECAR_VERSION)))
        except (ValueError, KeyError, TypeError) as exc:
            raise EngineLoadError(f"{source}: not a valid engine sidecar ({exc!r})") from exc

    def check_runtime(self, tensorrt_version: str, gpu_name: str, compute_capability: str,
                      source: str = "<sidecar>") -> None:
        """Refuse a plan built for another TensorRT or GPU, naming both sides."""
        diffs = []
        if self.tensorrt_version != tensorrt_version:
            diffs.append(f"TensorRT {self.tensorrt_version} (running {tensorrt_version})")
        if self.compute_capability != compute_capability:
            diffs.append(f"compute capability {self.compute_capability} "
                         f"(this GPU has {compute_capability})")
        if self.gpu_name != gpu_name:
            diffs.append(f"GPU '{self.gpu_name}' (this GPU is '{gpu_name}')")
        if diffs:
            raise EngineMismatch(
                f"{source}: the plan was built for " + "; ".join(diffs)
                + ". Rebuild it on this machine with python -m pipeline.build_engine.")

    def check_plan(self, plan_sha256: str, source: str = "<plan>") -> None:
        if plan_sha256 != self.plan_sha256:
            raise EngineMismatch(
                f"{source}: plan sha256 {plan_sha256[:16]}... does not match its sidecar "
                f"({self.plan_sha256[:16]}...); the plan is corrupt or the sidecar belongs "
                "to another plan")


def trt_module() -> Any:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise EngineLoadError(
            "the tensorrt package is not installed; expected it for --backend tensorrt "
            "(NVIDIA's TensorRT container, or pip install 'beam-trt-inference[tensorrt]')"
        ) from exc
    return trt


class CollectingLogger:
    """A TensorRT ILogger that keeps errors so exceptions can quote them."""

    def __new__(cls, min_severity: Any = None) -> Any:
        trt = trt_module()

        class _Logger(trt.ILogger):  # type: ignore[misc, valid-type]
            def __init__(self) -> None:
                trt.ILogger.__init__(self)
                self.errors: List[str] = []
                self.min_severity = (min_severity if min_severity is not None
                                     else trt.ILogger.WARNING)

            def log(self, severity: Any, msg: str) -> None:
                if int(severity) <= int(trt.ILogger.ERROR):
                    self.errors.append(msg)
                if int(severity) <= int(self.min_severity):
                    level = (logging.ERROR if int(severity) <= int(trt.ILogger.ERROR)
                             else logging.WARNING if int(severity) <= int(trt.ILogger.WARNING)
                             else logging.INFO)
                    LOG.log(level, "TensorRT: %s", msg)

        return _Logger()


def tensor_specs(engine: Any) -> Tuple[TensorSpec, ...]:
    """I/O tensors of a deserialized engine through the named-tensor API."""
    trt = trt_module()
    out = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name))).name
        shape = tuple(int(d) for d in engine.get_tensor_shape(name))
        pmin = popt = pmax = None
        if is_input:
            pmin, popt, pmax = (tuple(int(d) for d in s)
                                for s in engine.get_tensor_profile_shape(name, 0))
        out.append(TensorSpec(name, "input" if is_input else "output", dtype, shape,
                              pmin, popt, pmax))
    return tuple(out)


@dataclass
class _Binding:
    spec: TensorSpec
    device: Any
    host: Any
    row_bytes: int


class TrtEngine:
    """A deserialized engine with its context, buffers and stream.

    ``run`` is serialized by a lock made once here: Beam shares one loaded model between
    the DoFn threads of a process, and a context, its stream and its staging buffers
    serve one batch at a time.
    """

    def __init__(self, plan: bytes, source: str = "<plan>") -> None:
        from transforms.handlers import cuda

        self._cuda = cuda
        trt = trt_module()
        self.source = source
        self._lock = threading.Lock()
        self._bindings: Dict[str, _Binding] = {}
        self._stream = None
        self._events: List[Any] = []
        self._logger = CollectingLogger()
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            detail = "; ".join(self._logger.errors[-3:]) or "no detail from TensorRT"
            raise EngineLoadError(f"{source}: TensorRT {trt.__version__} cannot deserialize "
                                  f"the plan ({detail})")
        self.tensors = tensor_specs(self._engine)
        self.inputs = [t for t in self.tensors if t.mode == "input"]
        self.outputs = [t for t in self.tensors if t.mode == "output"]
        self.min_batch, _, self.max_batch = profile_batches(self.inputs)
        try:
            self._context = self._engine.create_execution_context()
            if self._context is None:
                raise EngineLoadError(f"{source}: cannot create an execution context "
                                      "(out of GPU memory?)")
            self._allocate()
        except Exception:
            self.close()
            raise

    def _allocate(self) -> None:
        """Buffers for the profile maximum, allocated once; addresses bound once."""
        cuda = self._cuda
        self._stream = cuda.Stream()
        self._events = [cuda.Event(), cuda.Event()]
        for t in self.inputs:
            self._context.set_input_shape(t.name, t.profile_max)
        for t in self.tensors:
            shape = t.profile_max if t.mode == "input" else tuple(
                self._context.get_tensor_shape(t.name))
            if any(d < 0 for d in shape):
                raise EngineLoadError(f"{self.source}: output '{t.name}' has a data-dependent "
                                      f"shape {list(shape)}; expected static dims per batch")
            itemsize = np.dtype(t.dtype).itemsize
            row_bytes = int(np.prod(shape[1:])) * itemsize
            nbytes = row_bytes * shape[0]
            binding = _Binding(t, None, None, row_bytes)
            self._bindings[t.name] = binding  # registered first so close() frees partials
            binding.device = cuda.DeviceBuffer(nbytes)
            binding.host = cuda.PinnedBuffer(nbytes)
            if not self._context.set_tensor_address(t.name, binding.device.ptr):
                raise EngineLoadError(f"{self.source}: set_tensor_address('{t.name}') failed")

    def _check_inputs(self, feeds: Mapping[str, np.ndarray]) -> None:
        names = sorted(t.name for t in self.inputs)
        if sorted(feeds) != names:
            raise ValueError(f"{self.source}: expected inputs {names}, got {sorted(feeds)}")
        batch = {a.shape[0] for a in feeds.values()}
        if len(batch) != 1:
            raise ValueError(f"{self.source}: inputs disagree on batch size: "
                             f"{ {k: v.shape[0] for k, v in feeds.items()} }")
        for t in self.inputs:
            arr = feeds[t.name]
            if arr.dtype != np.dtype(t.dtype):
                raise ValueError(f"{self.source}: input '{t.name}' expected dtype {t.dtype}, "
                                 f"got {arr.dtype.name}")
            lo, hi = t.profile_min, t.profile_max
            if len(arr.shape) != len(hi) or any(
                    not (a <= s <= b) for a, s, b in zip(lo, arr.shape, hi)):
                raise ValueError(f"{self.source}: input '{t.name}' shape {list(arr.shape)} is "
                                 f"outside the profile {list(lo)}..{list(hi)}")

    def run(self, feeds: Mapping[str, np.ndarray], gpu_ms: Optional[List[float]] = None
            ) -> Dict[str, np.ndarray]:
        """One batch (at most max_batch rows) host -> device -> host; returns owned copies.

        If ``gpu_ms`` is given, the GPU time of the engine alone (CUDA events around
        execute_async_v3, host copies excluded) is appended to it.
        """
        cuda = self._cuda
        with self._lock:
            if self._stream is None:
                raise EngineLoadError(f"{self.source}: engine is closed")
            self._check_inputs(feeds)
            start, end = self._events
            for t in self.inputs:
                arr = np.ascontiguousarray(feeds[t.name])
                b = self._bindings[t.name]
                staged = b.host.view(arr.dtype, arr.shape)
                np.copyto(staged, arr)
                cuda.memcpy_htod_async(b.device, staged, self._stream)
                if not self._context.set_input_shape(t.name, tuple(arr.shape)):
                    raise ValueError(f"{self.source}: set_input_shape('{t.name}', "
                                     f"{list(arr.shape)}) refused")
            start.record(self._stream)
            if not self._context.execute_async_v3(self._stream.handle):
                raise EngineLoadError(f"{self.source}: execute_async_v3 failed: "
                                      + "; ".join(self._logger.errors[-3:]))
            end.record(self._stream)
            staged_out = {}
            for t in self.outputs:
                shape = tuple(self._context.get_tensor_shape(t.name))
                b = self._bindings[t.name]
                staged_out[t.name] = b.host.view(np.dtype(t.dtype), shape)
                cuda.memcpy_dtoh_async(staged_out[t.name], b.device, self._stream)
            self._stream.synchronize()
            if gpu_ms is not None:
                gpu_ms.append(end.elapsed_ms(start))
            return {name: np.array(v, copy=True) for name, v in staged_out.items()}

    def close(self) -> None:
        """Free buffers, stream, events, context and engine; safe to call twice."""
        with self._lock:
            for b in self._bindings.values():
                for buf in (b.device, b.host):
                    if buf is not None:
                        buf.free()
            self._bindings = {}
            for ev in self._events:
                ev.free()
            self._events = []
            if self._stream is not None:
                self._stream.free()
                self._stream = None
            self._context = None
            self._engine = None
            self._runtime = None

    def __del__(self) -> None:  # Beam has no unload hook; free on garbage collection
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown may have unloaded CUDA
            pass

    def __enter__(self) -> "TrtEngine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def batch_inputs(batch: Sequence[Any], input_names: Sequence[str]) -> Dict[str, List[np.ndarray]]:
    """Examples are arrays (single-input engines) or {name: array} (multi-input)."""
    if len(input_names) == 1 and batch and isinstance(batch[0], np.ndarray):
        return {input_names[0]: list(batch)}
    out: Dict[str, List[np.ndarray]] = {n: [] for n in input_names}
    for i, ex in enumerate(batch):
        if not isinstance(ex, Mapping) or sorted(ex) != sorted(input_names):
            raise ValueError(f"example {i}: expected a dict with keys {sorted(input_names)}, "
                             f"got {type(ex).__name__}")
        for n in input_names:
            out[n].append(ex[n])
    return out
