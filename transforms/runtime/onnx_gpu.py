"""ONNX Runtime's CUDA EP fed by DALI: encoded JPEG bytes in, outputs out, pixels on the device.

The same contract as the TensorRT GPU path (tensorrt/gpu_runner.py): the runner's one input
is the batch of encoded files (``ENCODED``); DALI writes the preprocessed batch into a
device buffer this runner owns, and ONNX Runtime reads it there through IOBinding, so the
pixels never cross to the host. The outputs are bound to device buffers allocated once for
the largest batch, and come back as host copies the caller owns. A file DALI cannot decode
alone gets ``GPU_OK`` False and goes to the Pillow path (fill_bisecting).

Ordering: DALI's copy is enqueued on this runner's stream, which is synchronized before
``run_with_iobinding`` (ONNX Runtime runs on its own stream and synchronizes at the end of
the run), so ONNX Runtime never reads a half-written batch.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from transforms.runtime.batching import ENCODED_DTYPE
from transforms.runtime.errors import ModelLoadError, SystemicError
from transforms.runtime.gpu_preprocess import DaliOptions, DaliPreprocessor, fill_bisecting
from transforms.runtime.onnx import (_ORT_DTYPES, DEFAULT_MAX_BATCH, OnnxLoader, OnnxRunner,
                                     set_device_ids)
from transforms.runtime.runner import Feeds, Runner, RunnerInfo, TensorInfo
from transforms.runtime.tensorrt.gpu_runner import ENCODED, GPU_OK
from transforms.spec import ModelSpec

CUDA_EP = "CUDAExecutionProvider"


def with_device(loader: OnnxLoader, device: int) -> OnnxLoader:
    """The loader with its GPU providers' ``device_id`` set (other options kept)."""
    options = set_device_ids({name: dict(opts) for name, opts in loader.provider_options},
                             loader.providers, device)
    return replace(loader, provider_options=tuple(
        (name, tuple(sorted(opts.items()))) for name, opts in sorted(options.items())))


@dataclass(frozen=True)
class OnnxDaliLoader:
    """An OnnxLoader on the CUDA EP plus the spec DALI reproduces on the GPU.

    ``device`` pins the GPU (``--gpu_device``); by default the placement round-robin picks
    it, as for TensorRT engines. ``max_batch`` sizes the device buffers (BatchElements'
    ceiling): larger batches are split by the handler."""

    onnx: OnnxLoader
    spec: ModelSpec
    dali: DaliOptions = field(default_factory=DaliOptions)
    max_batch: int = DEFAULT_MAX_BATCH
    device: Optional[int] = None
    confine: bool = True      # narrow the SDK process to its GPU (placement.place)

    backend = "onnx"

    def batch_bounds(self) -> Tuple[int, int]:
        return 1, self.max_batch

    def __call__(self) -> "OnnxDaliRunner":
        from transforms.runtime.placement import place_current

        if not self.onnx.providers or self.onnx.providers[0] != CUDA_EP:
            raise ModelLoadError(f"--preprocess gpu with --backend onnx: expected "
                                 f"--onnx_providers {CUDA_EP} first, got "
                                 f"{list(self.onnx.providers)}")
        placed = place_current(self.device, confine=self.confine)
        device = placed.cuda_index
        runner = with_device(self.onnx, device)()
        try:
            pre = DaliPreprocessor(self.spec, self.max_batch, replace(self.dali, device_id=device))
            return OnnxDaliRunner(runner, pre, self.spec, device, self.max_batch,
                                  label=f"cuda:{placed.device}")
        except Exception:
            runner.close()
            raise


class OnnxDaliRunner(Runner):
    """One ONNX Runtime session on one GPU, one DALI pipeline, device buffers owned here."""

    def __init__(self, runner: OnnxRunner, pre: DaliPreprocessor, spec: ModelSpec,
                 device: int, max_batch: int, label: str) -> None:
        """``device``: the CUDA index in this process; ``label``: the GPU as the worker
        names it (they differ in a process narrowed to its GPU)."""
        from transforms.runtime import cuda

        super().__init__()
        self._onnx = runner
        self._pre = pre
        self._device = device
        self._lock = threading.Lock()
        base = runner.info()
        self._input = base.inputs[0]
        self._row_shape = tuple(spec.input_shape(1)[1:])
        self._in_dtype = np.dtype(spec.input_dtype)
        self._row_bytes = int(np.prod(self._row_shape)) * self._in_dtype.itemsize
        self._outputs = self._output_shapes(runner.session, base.model_uri)
        self._stream = cuda.Stream()
        self._in_buf = cuda.DeviceBuffer(self._row_bytes * max_batch)
        self._out_bufs: Dict[str, Any] = {}
        try:
            for name, (dtype, rest) in self._outputs.items():
                if rest is not None:
                    self._out_bufs[name] = cuda.DeviceBuffer(
                        int(np.prod(rest, dtype=np.int64)) * dtype.itemsize * max_batch)
        except Exception:
            self.close()
            raise
        self._info = RunnerInfo(
            backend="onnx", model_uri=base.model_uri, sha256=base.sha256,
            device=label, inputs=(TensorInfo(ENCODED, ENCODED_DTYPE, ()),),
            # a model with a fixed batch keeps it (the handler pads short batches up to it)
            outputs=base.outputs + (GPU_OK,), min_batch=base.min_batch,
            opt_batch=base.max_batch or max_batch, max_batch=min(base.max_batch or max_batch,
                                                                 max_batch), details=dict(base.details, preprocess="gpu",
                                              binding="iobinding"))

    @staticmethod
    def _output_shapes(session: Any, uri: str) -> Dict[str, Tuple[np.dtype, Optional[tuple]]]:
        """Each output's dtype and its shape after the batch dimension (None where a
        later dimension is dynamic: ONNX Runtime then allocates that output on the device
        per run)."""
        out: Dict[str, Tuple[np.dtype, Optional[tuple]]] = {}
        for o in session.get_outputs():
            if o.type not in _ORT_DTYPES:
                raise ModelLoadError(f"{uri}: output '{o.name}' has type {o.type}; expected "
                                     f"one of {sorted(_ORT_DTYPES)}")
            rest = tuple(o.shape[1:])
            fixed = all(isinstance(d, int) and d > 0 for d in rest)
            out[o.name] = (np.dtype(_ORT_DTYPES[o.type]), rest if fixed else None)
        return out

    def info(self) -> RunnerInfo:
        return self._info

    def infer(self, feeds: Feeds) -> Feeds:
        from transforms.runtime import cuda

        encoded: List[np.ndarray] = list(feeds[ENCODED])
        n = len(encoded)
        if not 0 < n <= self._info.max_batch:
            raise ValueError(f"batch of {n}; expected 1..{self._info.max_batch}")
        ok = np.ones(n, dtype=bool)
        with self._lock:
            session = self._onnx.session
            if session is None or self._in_buf is None:
                raise SystemicError(f"{self._info.model_uri}: the runner is closed")
            cuda.set_device(self._device)
            fill_bisecting(self._pre, encoded, self._in_buf.ptr, self._row_bytes,
                           self._stream.handle, ok)
            self._stream.synchronize()
            binding = session.io_binding()
            binding.bind_input(self._input.name, "cuda", self._device, self._in_dtype,
                               [n, *self._row_shape], self._in_buf.ptr)
            for name, (dtype, rest) in self._outputs.items():
                if rest is None:
                    binding.bind_output(name, "cuda", self._device)
                else:
                    binding.bind_output(name, "cuda", self._device, dtype, [n, *rest],
                                        self._out_bufs[name].ptr)
            session.run_with_iobinding(binding)
            values = binding.copy_outputs_to_cpu()
        outputs = {name: np.array(v, copy=True) for name, v in zip(self._outputs, values)}
        outputs[GPU_OK] = ok
        return outputs

    def close(self) -> None:
        with self._lock:
            for buf in [self._in_buf, *self._out_bufs.values()]:
                if buf is not None:
                    buf.free()
            self._in_buf, self._out_bufs = None, {}
            if self._stream is not None:
                self._stream.free()
                self._stream = None
            self._onnx.close()
            self._pre = None

    def __del__(self) -> None:      # Beam has no unload hook: free the device on collection
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown may have torn CUDA down
            pass

