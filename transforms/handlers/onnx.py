"""ONNX Runtime ModelHandler: CPU, CUDA EP or TensorRT EP, numpy in and numpy out.

Why our own and not Beam's OnnxModelHandlerNumpy: it checks nothing about the
input, reports no per-batch timings, and silently runs on CPU when the CUDA EP
fails to load. This one validates the model against the spec when it loads and
fails with a message naming both sides.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from transforms.handlers.common import (BatchClock, DeclaredInput,
                                        ModelLoadError, check_declared_input, run_chunked,
                                        iter_outputs, read_bytes, resolve_uri, sha256_hex,
                                        split_rows, stack_batch, timed_ms)

LOG = logging.getLogger(__name__)

_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
}


def _dim(d: Any) -> Optional[int]:
    return d if isinstance(d, int) and d > 0 else None


@dataclass
class OnnxModel:
    """A loaded session plus what was checked about it when it loaded."""

    session: Any
    input_name: str
    dtype: np.dtype
    example_shape: Tuple[Optional[int], ...]
    fixed_batch: Optional[int]
    output_names: List[str]
    sha256: str
    providers: List[str] = field(default_factory=list)


def declared_inputs(inputs: Sequence[Any]) -> List[DeclaredInput]:
    """ONNX Runtime NodeArgs as DeclaredInputs."""
    return [DeclaredInput(i.name, np.dtype(_ORT_DTYPES[i.type]) if i.type in _ORT_DTYPES
                          else None, i.type, tuple(_dim(d) for d in i.shape)) for i in inputs]


def check_input(path: str, inputs: Sequence[Any], input_name: Optional[str],
                dtype: Optional[str], example_shape: Optional[Sequence[int]]) -> DeclaredInput:
    """Find the image input of an ONNX session and check it against the spec."""
    return check_declared_input(path, "model", declared_inputs(inputs), input_name, dtype,
                                example_shape)


class OnnxModelHandler(ModelHandler[np.ndarray, PredictionResult, OnnxModel]):
    """Runs an ONNX model on numpy batches with the execution providers asked for."""

    def __init__(
        self,
        model_uri: str,
        *,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        provider_options: Optional[Mapping[str, Mapping[str, Any]]] = None,
        input_name: Optional[str] = None,
        input_dtype: Optional[str] = None,
        example_shape: Optional[Sequence[int]] = None,
        min_batch_size: Optional[int] = None,
        max_batch_size: Optional[int] = None,
        large_model: bool = False,
        model_copies: Optional[int] = None,
        intra_op_num_threads: Optional[int] = None,
    ) -> None:
        super().__init__(min_batch_size=min_batch_size or 1,
                         max_batch_size=max_batch_size or 32,
                         large_model=large_model, model_copies=model_copies)
        self._model_uri = model_uri
        self._providers = tuple(providers)
        self._provider_options = dict(provider_options or {})
        self._input_name = input_name
        self._input_dtype = input_dtype
        self._example_shape = tuple(example_shape) if example_shape is not None else None
        self._threads = intra_op_num_threads
        self._clock: Optional[BatchClock] = None

    def _session_providers(self) -> List[Any]:
        import onnxruntime as ort

        available = ort.get_available_providers()
        missing = [p for p in self._providers if p not in available]
        if missing:
            hint = (" (install beam-trt-inference[gpu] for onnxruntime-gpu)"
                    if any(p != "CPUExecutionProvider" for p in missing) else "")
            raise ModelLoadError(
                f"onnx_providers: expected {missing} to be available, this onnxruntime "
                f"{ort.__version__} has {available}{hint}")
        return [(p, dict(self._provider_options.get(p, {}))) for p in self._providers]

    def load_model(self) -> OnnxModel:
        import onnxruntime as ort

        path = resolve_uri(self._model_uri)
        data = read_bytes(self._model_uri)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self._threads:
            opts.intra_op_num_threads = self._threads
        providers = self._session_providers()
        try:
            session = ort.InferenceSession(data, sess_options=opts, providers=providers)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own Fail/InvalidGraph types
            raise ModelLoadError(f"{path}: onnxruntime cannot load the model: {exc}") from exc
        got = session.get_providers()
        if got[0] != self._providers[0]:
            raise ModelLoadError(
                f"{path}: expected to run on {self._providers[0]}, onnxruntime fell back to "
                f"{got} (check the CUDA/TensorRT libraries on this machine)")
        node = check_input(path, session.get_inputs(), self._input_name, self._input_dtype,
                           self._example_shape)
        shape = list(node.shape)
        self._clock = BatchClock()
        LOG.info("loaded %s on %s", path, got)
        return OnnxModel(
            session=session, input_name=node.name,
            dtype=node.dtype if node.dtype is not None else np.dtype(np.float32),
            example_shape=tuple(shape[1:]), fixed_batch=shape[0],
            output_names=[o.name for o in session.get_outputs()],
            sha256=sha256_hex(data), providers=got)

    def run_inference(self, batch: Sequence[np.ndarray], model: OnnxModel,
                      inference_args: Optional[Dict[str, Any]] = None
                      ) -> Iterable[PredictionResult]:
        clock = self._clock or BatchClock()
        start = clock.now()
        stacked = stack_batch(batch, model.dtype, model.example_shape, model.input_name)
        n = len(batch)

        def run(feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
            chunk = feeds[model.input_name]
            rows = chunk.shape[0]
            pad = (model.fixed_batch or 0) - rows
            if pad > 0:  # a model with a fixed batch dimension: pad, then drop the padding
                chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
            result = model.session.run(model.output_names, {model.input_name: chunk})
            return {name: arr[:rows] for name, arr in zip(model.output_names, result)}

        merged = run_chunked({model.input_name: stacked}, model.fixed_batch or n, run)
        rows = split_rows(merged, n)
        ms = timed_ms(start)
        return [PredictionResult(ex, out, model.sha256) for ex, out in
                zip(batch, iter_outputs(rows, clock.next_id(), ms))]

    def get_num_bytes(self, batch: Sequence[np.ndarray]) -> int:
        return int(sum(np.asarray(x).nbytes for x in batch))

    def get_metrics_namespace(self) -> str:
        return "beam_trt_inference_onnx"

