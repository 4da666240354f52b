"""TensorRT ModelHandler for Beam RunInference: a plan + sidecar, numpy in, numpy out.

Why not Beam's TensorRTEngineHandlerNumPy: it handles fixed shapes and one input only,
stages through pageable host memory, never frees device memory and copies the full
max-batch buffer for a short batch. This handler uses the named-tensor API (TensorRT
8.5+, including 10/11), any number of inputs and outputs, dynamic batch within the
optimization profile (larger batches are split), pinned staging, one stream, one
synchronize per batch, and checks the plan against this TensorRT and GPU first.

Sharing: Beam keeps one loaded model per SDK process (shared by its DoFn threads;
TrtEngine serializes them with a lock). With ``model_copies=N`` Beam instead loads N
copies per worker VM in a separate process and every SDK process sends its batches
there (apache_beam.utils.multi_process_shared): use it when several SDK processes
share one GPU, so the GPU holds N engines instead of one per process.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence, Tuple

import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from transforms.handlers.common import (BatchClock, DeclaredInput, InputMismatch,
                                        check_declared_input,
                                        iter_outputs, read_bytes, run_chunked,
                                        sha256_hex, split_rows, stack_batch, timed_ms)
from transforms.handlers.engine import EngineMismatch, Sidecar, TrtEngine, batch_inputs, trt_module
from transforms.handlers.engine_cache import BuildFn, EngineCache, Identity, tensorrt_build


def sidecar_uri(engine_uri: str) -> str:
    return engine_uri + ".json"


def load_sidecar(engine_uri: str) -> Sidecar:
    uri = sidecar_uri(engine_uri)
    return Sidecar.from_json(read_bytes(uri, "engine sidecar").decode("utf-8"), source=uri)


def check_spec(sidecar: Sidecar, source: str, input_name: Optional[str],
               input_dtype: Optional[str], example_shape: Optional[Sequence[int]]) -> str:
    """The image input of the engine, checked against the model spec; returns its name."""
    inputs = [DeclaredInput(t.name, np.dtype(t.dtype), t.dtype,
                            tuple(None if d < 0 else d for d in t.shape)) for t in sidecar.inputs]
    return check_declared_input(source, "engine", inputs, input_name, input_dtype,
                                example_shape).name


def runtime_identity() -> tuple:
    """(TensorRT version, GPU name, compute capability) of this process's GPU 0."""
    from transforms.handlers.cuda import device_info

    trt = trt_module()
    name, cc = device_info(0)
    return trt.__version__, name, cc


class TensorRTEngineHandler(ModelHandler[Any, PredictionResult, TrtEngine]):
    """Runs a TensorRT plan built by pipeline.build_engine (sidecar at <plan>.json)."""

    def __init__(
        self,
        engine_uri: Optional[str] = None,
        *,
        engine_cache: Optional[str] = None,
        onnx_uri: Optional[str] = None,
        precision: str = "tf32",
        profile: Tuple[int, int, int] = (1, 16, 32),
        optimization_level: Optional[int] = None,
        build_fn: Optional[BuildFn] = None,
        identity_fn: Optional[Callable[[], Identity]] = None,
        input_name: Optional[str] = None,
        input_dtype: Optional[str] = None,
        example_shape: Optional[Sequence[int]] = None,
        min_batch_size: Optional[int] = None,
        max_batch_size: Optional[int] = None,
        large_model: bool = False,
        model_copies: Optional[int] = None,
    ) -> None:
        super().__init__(large_model=large_model, model_copies=model_copies)
        if not engine_uri and not (engine_cache and onnx_uri):
            raise ValueError("TensorRTEngineHandler: expected engine_uri, or engine_cache "
                             "with onnx_uri; got neither")
        self._engine_uri = engine_uri
        self._cache_root = engine_cache
        self._onnx_uri = onnx_uri
        self._precision = precision
        self._profile = tuple(profile)
        self._opt_level = optimization_level
        self._build_fn = build_fn
        self._identity_fn = identity_fn
        self._input_name = input_name
        self._input_dtype = input_dtype
        self._example_shape = tuple(example_shape) if example_shape is not None else None
        self._min_batch = min_batch_size
        self._max_batch = max_batch_size
        self._sha256 = ""
        self._clock: Optional[BatchClock] = None

    def batch_elements_kwargs(self) -> Mapping[str, Any]:
        """Batches follow the engine profile unless overridden: at most its max, and at
        least its opt batch, because BatchElements' adaptive sizing otherwise starts at 1
        and leaves the GPU waiting on many tiny batches."""
        min_batch, max_batch = self._min_batch, self._max_batch
        if min_batch is None or max_batch is None:
            if self._cache_root:
                opt, top = self._profile[1], self._profile[2]
            else:
                sidecar = load_sidecar(self._engine_uri)
                opt, top = sidecar.opt_batch, sidecar.max_batch
            min_batch = opt if min_batch is None else min_batch
            max_batch = top if max_batch is None else max_batch
        return {"min_batch_size": min(min_batch, max_batch), "max_batch_size": max_batch}

    def _from_cache(self) -> Tuple[bytes, Sidecar, str]:
        # The cache only returns plans whose sidecar matches this worker's TensorRT, GPU
        # and compute capability (EngineKey.mismatch), so no second runtime check here.
        cache = EngineCache(self._cache_root, self._build_fn or tensorrt_build(
            optimization_level=self._opt_level), self._identity_fn or runtime_identity)
        got = cache.get_or_build(self._onnx_uri, self._precision, *self._profile)
        check_spec(got.sidecar, got.uri, self._input_name, self._input_dtype,
                   self._example_shape)
        return got.plan, got.sidecar, got.uri

    def _from_uri(self) -> Tuple[bytes, Sidecar, str]:
        sidecar = load_sidecar(self._engine_uri)
        version, gpu, cc = runtime_identity()
        sidecar.check_runtime(version, gpu, cc, source=sidecar_uri(self._engine_uri))
        check_spec(sidecar, self._engine_uri, self._input_name, self._input_dtype,
                   self._example_shape)
        plan = read_bytes(self._engine_uri, "TensorRT plan")
        sidecar.check_plan(sha256_hex(plan), source=self._engine_uri)
        return plan, sidecar, self._engine_uri

    def load_model(self) -> TrtEngine:
        plan, sidecar, source = self._from_cache() if self._cache_root else self._from_uri()
        self._sha256 = sha256_hex(plan)
        engine = TrtEngine(plan, source=source)
        declared = sorted((t.name, t.dtype) for t in sidecar.tensors)
        actual = sorted((t.name, t.dtype) for t in engine.tensors)
        if declared != actual:
            engine.close()
            raise EngineMismatch(f"{source}: the engine's tensors {actual} differ "
                                 f"from its sidecar's {declared}")
        self._clock = BatchClock()
        return engine

    def run_inference(self, batch: Sequence[Any], model: TrtEngine,
                      inference_args: Optional[Dict[str, Any]] = None
                      ) -> Iterable[PredictionResult]:
        clock = self._clock or BatchClock()
        start = clock.now()
        names = [t.name for t in model.inputs]
        columns = batch_inputs(batch, names)
        stacked = {}
        for t in model.inputs:
            stacked[t.name] = stack_batch(columns[t.name], np.dtype(t.dtype),
                                          [None if d < 0 else d for d in t.shape[1:]], t.name)
        n = len(batch)
        if n % model.max_batch and n % model.max_batch < model.min_batch:
            raise InputMismatch(f"{model.source}: the last chunk of {n % model.max_batch} is "
                                f"below the profile minimum {model.min_batch}")
        merged = run_chunked(stacked, model.max_batch, model.run)
        rows = split_rows(merged, n)
        ms = timed_ms(start)
        return [PredictionResult(ex, out, self._sha256) for ex, out in
                zip(batch, iter_outputs(rows, clock.next_id(), ms))]

    def get_num_bytes(self, batch: Sequence[Any]) -> int:
        total = 0
        for ex in batch:
            arrays = ex.values() if isinstance(ex, Mapping) else [ex]
            total += sum(np.asarray(a).nbytes for a in arrays)
        return int(total)

    def get_metrics_namespace(self) -> str:
        return "beam_trt_inference_tensorrt"
