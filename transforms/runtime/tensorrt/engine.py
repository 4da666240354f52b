"""TensorRT engine wrapper (named-tensor API, TensorRT 8.5+ through 10/11).

The engine follows Polygraphy's runner shape (load, check inputs against the engine's
metadata, infer, close) and TensorRT's common_runtime.py (owner objects, checked calls):
device buffers sized for the profile maximum, allocated once, pinned host staging,
one stream, one synchronize per batch, and copies of only the rows in the batch.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np

from transforms.runtime.errors import InputMismatch
from transforms.runtime.tensorrt.sidecar import (EngineLoadError, TensorSpec,
                                                 profile_batches)

LOG = logging.getLogger(__name__)

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

    def __init__(self, plan: bytes, source: str = "<plan>", device: int = 0) -> None:
        from transforms.runtime import cuda

        self._cuda = cuda
        self.device = device
        cuda.set_device(device)
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
            raise InputMismatch(f"{self.source}: expected inputs {names}, got {sorted(feeds)}")
        batch = {a.shape[0] for a in feeds.values()}
        if len(batch) != 1:
            raise InputMismatch(f"{self.source}: inputs disagree on batch size: "
                             f"{ {k: v.shape[0] for k, v in feeds.items()} }")
        for t in self.inputs:
            arr = feeds[t.name]
            if arr.dtype != np.dtype(t.dtype):
                raise InputMismatch(f"{self.source}: input '{t.name}' expected dtype {t.dtype}, "
                                 f"got {arr.dtype.name}")
            lo, hi = t.profile_min, t.profile_max
            if len(arr.shape) != len(hi) or any(
                    not (a <= s <= b) for a, s, b in zip(lo, arr.shape, hi)):
                raise InputMismatch(f"{self.source}: input '{t.name}' shape {list(arr.shape)} is "
                                 f"outside the profile {list(lo)}..{list(hi)}")

    def run(self, feeds: Mapping[str, np.ndarray], gpu_ms: Optional[List[float]] = None
            ) -> Dict[str, np.ndarray]:
        """One batch (at most max_batch rows) host -> device -> host; returns owned copies.

        If ``gpu_ms`` is given, the GPU time of the engine alone (CUDA events around
        execute_async_v3, host copies excluded) is appended to it.
        """
        cuda = self._cuda
        with self._lock:
            self._check_open()
            cuda.set_device(self.device)     # the calling thread's current device
            self._check_inputs(feeds)
            for t in self.inputs:
                arr = np.ascontiguousarray(feeds[t.name])
                b = self._bindings[t.name]
                staged = b.host.view(arr.dtype, arr.shape)
                np.copyto(staged, arr)
                cuda.memcpy_htod_async(b.device, staged, self._stream)
                self._set_shape(t.name, tuple(arr.shape))
            return self._execute_and_fetch(gpu_ms)

    def run_filled(self, name: str, rows: int, fill: Callable[[int, int], None],
                   gpu_ms: Optional[List[float]] = None) -> Dict[str, np.ndarray]:
        """One batch whose only input ``name`` is written on the device by
        ``fill(device_ptr, stream_handle)`` (GPU preprocessing): no host staging at all."""
        with self._lock:
            self._check_open()
            self._cuda.set_device(self.device)
            if [t.name for t in self.inputs] != [name]:
                raise InputMismatch(f"{self.source}: run_filled needs a single-input engine "
                                    f"with input '{name}', it has {[t.name for t in self.inputs]}")
            t = self.inputs[0]
            if not t.profile_min[0] <= rows <= t.profile_max[0]:
                raise InputMismatch(f"{self.source}: batch {rows} is outside the profile "
                                    f"{t.profile_min[0]}..{t.profile_max[0]}")
            fill(self._bindings[name].device.ptr, self._stream.handle)
            self._set_shape(name, (rows,) + tuple(t.profile_max[1:]))
            return self._execute_and_fetch(gpu_ms)

    def row_bytes(self, name: str) -> int:
        """Bytes of one example of tensor ``name`` (offsets into its device buffer)."""
        return self._bindings[name].row_bytes

    def _check_open(self) -> None:
        if self._stream is None:
            raise EngineLoadError(f"{self.source}: engine is closed")

    def _set_shape(self, name: str, shape: Tuple[int, ...]) -> None:
        if not self._context.set_input_shape(name, shape):
            raise EngineLoadError(f"{self.source}: set_input_shape('{name}', "
                                  f"{list(shape)}) refused")

    def _execute_and_fetch(self, gpu_ms: Optional[List[float]]) -> Dict[str, np.ndarray]:
        """Enqueue the engine and the output copies on the stream, synchronize once."""
        cuda = self._cuda
        start, end = self._events
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
            if self._bindings or self._stream is not None:
                self._cuda.set_device(self.device)
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
