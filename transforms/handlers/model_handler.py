"""One numpy ModelHandler over any runner (ONNX Runtime or TensorRT).

Why one: batch splitting, the leftover-chunk rule, result order and ownership, error
classification and ``model_copies`` must not differ between backends. The handler
holds only its loader and batch bounds; everything per model (session or engine,
sha256, batch counter, lock) lives on the runner ``load_model`` returns, which Beam
shares between the DoFn threads of a process, or serves from one process per worker
through a MultiProcessShared proxy when ``model_copies`` is set. The handler touches
the runner only through methods, so the proxy works.

Usable in any Beam pipeline, like Beam's own handlers::

    handler = NumpyModelHandler(OnnxLoader("gs://bucket/model.onnx"))
    images | RunInference(handler)   # PredictionResult(example, inference, model_uri)

``inference`` is the model's output row for that example: an array, or a dict of
arrays for a model with several outputs. If a batch fails for a reason that is not
systemic, it is split and retried down to single examples; one that fails alone gets an
``ItemFailure`` (error type and message) as its inference, and the others are scored. Beam's own RunInference metrics
(``inference_batch_latency_micro_secs``, ``inference_request_batch_size``) count the
batches; ``run_batch`` also returns the batch's facts for callers that key by them.
"""

from __future__ import annotations

import logging
import multiprocessing.managers
import time
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from transforms.records import METRICS_NAMESPACE, BatchFacts
from transforms.runtime.batching import (ENCODED_DTYPE, batch_inputs, run_in_chunks,
                                         split_rows, stack_batch, stack_encoded)
from transforms.runtime.errors import (ItemFailure, SharedModelError, SystemicError,
                                       is_out_of_memory)
from transforms.runtime import prewarm, startup
from transforms.runtime.lazy import LazyRunner
from transforms.runtime.runner import Runner, RunnerInfo

LOG = logging.getLogger(__name__)
startup.record("imported")      # this process has Beam, numpy and the handler imported

# What a MultiProcessShared proxy raises when its server process is gone or broken,
# or when it lacks a method: a fault of the worker, never of one image.
_PROXY_ERRORS = (EOFError, ConnectionError, multiprocessing.managers.RemoteError,
                 AttributeError)


class Loader:
    """What the handler needs of a loader (OnnxLoader, TrtLoader): a picklable callable
    that returns a Runner, its backend name, and batch bounds known without loading."""

    backend: str

    def __call__(self) -> Runner: ...

    def batch_bounds(self) -> Tuple[int, int]: ...


def _stack(batch: Sequence[Any], info: RunnerInfo) -> Dict[str, np.ndarray]:
    if len(info.inputs) == 1 and info.inputs[0].dtype == ENCODED_DTYPE:
        return {info.inputs[0].name: stack_encoded(batch, info.inputs[0].name)}
    columns = batch_inputs(batch, [t.name for t in info.inputs])
    return {t.name: stack_batch(columns[t.name], np.dtype(t.dtype), t.example_shape, t.name)
            for t in info.inputs}


class NumpyModelHandler(ModelHandler[Any, PredictionResult, Runner]):
    """RunInference over a runner: examples are arrays, or {input name: array}."""

    def __init__(self, loader: Callable[[], Runner], *, min_batch_size: Optional[int] = None,
                 max_batch_size: Optional[int] = None, model_copies: Optional[int] = None,
                 large_model: bool = False, lazy: bool = False) -> None:
        """``lazy``: load on the first batch, not at DoFn setup (transforms/runtime/lazy.py),
        for a stage that often gets no input."""
        super().__init__(large_model=large_model, model_copies=model_copies)
        self._loader = loader
        self._lazy = lazy
        self._splits = Metrics.counter(METRICS_NAMESPACE, "inference_batch_splits")
        self._item_failures = Metrics.counter(METRICS_NAMESPACE, "inference_item_failures")
        self._oom = Metrics.counter(METRICS_NAMESPACE, "inference_oom_ceiling_lowered")
        self._min_batch = min_batch_size
        self._max_batch = max_batch_size

    def load_model(self) -> Runner:
        if self._lazy:
            return LazyRunner(self._loader)
        # loaded as this SDK process started, if the launcher arranged it (runtime/prewarm.py)
        early = prewarm.take(self._loader)
        return early if early is not None else startup.timed_load(self._loader)

    def batch_elements_kwargs(self) -> Mapping[str, Any]:
        """The loader's bounds (TensorRT: the profile's opt and max), unless overridden."""
        lo, hi = self._loader.batch_bounds()
        lo = lo if self._min_batch is None else self._min_batch
        hi = hi if self._max_batch is None else self._max_batch
        return {"min_batch_size": min(lo, hi), "max_batch_size": hi}

    def validate_inference_args(self, inference_args: Optional[Dict[str, Any]]) -> None:
        if inference_args:
            raise ValueError(f"inference_args: this handler takes none (the runner's options "
                             f"are set on its loader), got {sorted(inference_args)}")

    def run_batch(self, batch: Sequence[Any], model: Runner,
                  inference_args: Optional[Dict[str, Any]] = None
                  ) -> Tuple[List[PredictionResult], BatchFacts]:
        """Results in input order, each row a copy the caller owns, plus the batch's facts."""
        self.validate_inference_args(inference_args)
        if not batch:
            return [], BatchFacts("", 0, 0.0, "", "")
        start = time.perf_counter()
        try:
            info = model.info()
            rows = self._rows_split_on_failure(list(batch), model, info)
            batch_id = model.next_batch_id()
        except _PROXY_ERRORS as exc:
            raise SharedModelError(f"the model ({type(model).__name__}) failed outside the "
                                   f"batch: {type(exc).__name__}: {exc}") from exc
        ms = (time.perf_counter() - start) * 1000.0
        names = info.outputs
        results = [PredictionResult(
            ex, row if isinstance(row, ItemFailure) else
            row[names[0]] if len(names) == 1 else row, info.model_uri)
            for ex, row in zip(batch, rows, strict=True)]
        return results, BatchFacts(batch_id, len(batch), ms, info.sha256, info.device)

    def _rows_split_on_failure(self, batch: List[Any], model: Runner, info: RunnerInfo
                               ) -> List[Any]:
        """Per-example output rows. Out of device memory: the model's batch ceiling is
        halved for good and the batch retried in smaller chunks. Any other failure that is
        not systemic: the batch is split in halves and retried, recursively; an example
        that fails alone gets an ItemFailure with the real error, the rest are scored."""
        chunk = min(info.max_batch or len(batch), model.batch_ceiling() or len(batch))
        try:
            merged = run_in_chunks(_stack(batch, info), info.min_batch, chunk, model.infer)
            return split_rows(merged, len(batch))
        except Exception as exc:  # noqa: BLE001 - classified below
            if is_out_of_memory(exc):
                lowered = model.lower_batch_ceiling(min(chunk, len(batch)))
                if lowered is not None:
                    self._oom.inc()
                    LOG.warning("out of device memory at a batch of %d (%s); this model now "
                                "runs batches of at most %d", min(chunk, len(batch)),
                                str(exc)[:200], lowered)
                    return self._rows_split_on_failure(batch, model, info)
            if isinstance(exc, (SystemicError,) + _PROXY_ERRORS):
                raise
            return self._split(batch, model, info, exc)

    def _split(self, batch: List[Any], model: Runner, info: RunnerInfo, exc: Exception
               ) -> List[Any]:
        """One example's fault must not cost the batch: halves, down to single examples."""
        if len(batch) == 1:
            self._item_failures.inc()
            return [ItemFailure(type(exc).__name__, str(exc) or repr(exc))]
        self._splits.inc()
        mid = len(batch) // 2
        LOG.warning("a batch of %d failed (%s: %s); retrying it in halves", len(batch),
                    type(exc).__name__, str(exc)[:200])
        return (self._rows_split_on_failure(batch[:mid], model, info)
                + self._rows_split_on_failure(batch[mid:], model, info))

    def run_inference(self, batch: Sequence[Any], model: Runner,
                      inference_args: Optional[Dict[str, Any]] = None
                      ) -> Iterable[PredictionResult]:
        return self.run_batch(batch, model, inference_args)[0]

    def get_num_bytes(self, batch: Sequence[Any]) -> int:
        total = 0
        for ex in batch:
            arrays = ex.values() if isinstance(ex, Mapping) else [ex]
            total += sum(len(a) if isinstance(a, (bytes, bytearray)) else np.asarray(a).nbytes
                         for a in arrays)
        return int(total)

    def get_metrics_namespace(self) -> str:
        return f"beam_trt_inference_{self._loader.backend}"
