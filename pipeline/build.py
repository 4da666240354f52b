"""build_pipeline(p, cfg): the whole graph from one RunConfig, and the handler factory.

Why a separate builder: tests and the Dataflow dry run build the same graph as the
CLI, from the same config object, on a pipeline they provide.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional, Tuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import PredictionResult, RunInference
from apache_beam.options.pipeline_options import StandardOptions

from pipeline.config import RunConfig
from pipeline.local_runner import is_local
from transforms.decode import DecodeImage
from transforms.gpu_route import CPU_PATH, RouteForGpu
from transforms.handlers.keyed import KeyedBatchHandler
from transforms.handlers.model_handler import Loader, NumpyModelHandler
from transforms.io import WriteBundleMetrics, WriteDeadLetters, WritePredictions
from transforms.read_images import ReadImages
from transforms.metrics import BUNDLES, BundleMetrics
from transforms.postprocess import Postprocess
from transforms.preprocess import Preprocess
from transforms.records import (DEAD_LETTER, METRICS_NAMESPACE, Item, ItemKey,
                                dead_letter_record)
from transforms.runtime.errors import ItemFailure, SystemicError
from transforms.runtime.onnx import DEFAULT_MAX_BATCH, OnnxLoader
from transforms.runtime.onnx_gpu import OnnxDaliLoader
from transforms.runtime.tensorrt.gpu_runner import GPU_OK, TrtDaliLoader
from transforms.runtime.tensorrt.runner import TrtLoader


def onnx_loader(cfg: RunConfig, providers: Optional[Tuple[str, ...]] = None) -> OnnxLoader:
    spec = cfg.spec
    providers = providers or cfg.onnx_providers
    return OnnxLoader(cfg.model, providers=providers,
                      provider_options=tuple((p, o) for p, o in cfg.onnx_provider_options
                                             if p in providers),
                      input_name=spec.input_name, input_dtype=spec.input_dtype,
                      example_shape=spec.input_shape(1)[1:], device=cfg.gpu_device,
                      confine=may_narrow(cfg))


def may_narrow(cfg: RunConfig) -> bool:
    """Whether each SDK process may be narrowed to its copy's GPU (transforms/runtime/
    placement.place): it holds its own copy, and --no_gpu_narrowing is not set. With
    --model_copies Beam loads every copy in one shared process, which must keep every GPU
    in view."""
    return cfg.model_copies is None and cfg.narrow_gpus


def make_loader(cfg: RunConfig) -> Loader:
    """The runner's loader for the configured backend (GPU libraries load lazily, on the
    worker, inside the loader's call)."""
    if cfg.backend == "tensorrt":
        spec = cfg.spec
        return TrtLoader(
            engine_uri=cfg.engine, engine_cache=cfg.engine_cache,
            onnx_uri=cfg.model if cfg.engine_cache else None, precision=cfg.trt_precision,
            profile=cfg.trt_profile, optimization_level=cfg.trt_optimization_level,
            input_name=spec.input_name, input_dtype=spec.input_dtype,
            example_shape=spec.input_shape(1)[1:], device=cfg.gpu_device,
            confine=may_narrow(cfg))
    return onnx_loader(cfg)


def make_gpu_loader(cfg: RunConfig) -> Loader:
    """The GPU path's loader: the engine or session fed by DALI on the device."""
    if cfg.backend == "tensorrt":
        return TrtDaliLoader(make_loader(cfg), cfg.spec, cfg.dali)
    return OnnxDaliLoader(onnx_loader(cfg), cfg.spec, cfg.dali,
                          max_batch=cfg.max_batch_size or DEFAULT_MAX_BATCH,
                          device=cfg.gpu_device, confine=may_narrow(cfg))


def scoring_loader(cfg: RunConfig) -> Loader:
    """The loader of the handler that scores at setup: the GPU path's, or the CPU path's
    (with --preprocess gpu the CPU path's handler is lazy and loads on its first batch)."""
    return make_gpu_loader(cfg) if cfg.preprocess == "gpu" else make_loader(cfg)


def make_handler(cfg: RunConfig) -> NumpyModelHandler:
    """The unkeyed numpy handler: one class for every backend. With --preprocess gpu it
    serves the Pillow branches, which get no input on an all-JPEG corpus, so its model
    loads on the first batch instead of in every SDK process at setup."""
    return NumpyModelHandler(make_loader(cfg), min_batch_size=cfg.min_batch_size,
                             max_batch_size=cfg.max_batch_size, model_copies=cfg.model_copies,
                             lazy=cfg.preprocess == "gpu")


def _keyed(item: Item) -> tuple:
    return ItemKey(item.uri, item.timings), item.payload


class SystemicFailure(RuntimeError):
    """Inference failed for a reason that is not the images': the bundle fails with it."""


def exception_facts(exc: Any) -> Tuple[Optional[type], str, str]:
    """(type, type name, message) of what RunInference's dead-letter output carries: an
    exception, or Beam's ``(type, repr, formatted traceback)`` tuple."""
    if isinstance(exc, BaseException):
        return type(exc), type(exc).__name__, str(exc) or repr(exc)
    if isinstance(exc, tuple) and exc and isinstance(exc[0], type):
        kind = exc[0]
        lines = exc[2] if len(exc) > 2 and isinstance(exc[2], (list, tuple)) else []
        last = "".join(lines).rstrip().splitlines()[-1] if lines else str(exc[1])
        head, sep, tail = last.partition(": ")
        message = tail if sep and head.endswith(kind.__name__) else last
        return kind, kind.__name__, message
    return None, type(exc).__name__, str(exc)


class BatchFailures(beam.DoFn):
    """RunInference's DLQ gives (batch, exception): one dead letter per image in it, or,
    for a systemic error (CUDA, a dead shared-model process, an engine that cannot run),
    a failed bundle that names the cause instead of a run of dead letters."""

    def __init__(self) -> None:
        self._failed = Metrics.counter(METRICS_NAMESPACE, "images_failed")

    def process(self, element: tuple) -> Iterator[Dict[str, str]]:
        batch, exc = element
        kind, name, message = exception_facts(exc)
        if kind is not None and issubclass(kind, SystemicError):
            raise SystemicFailure(f"inference failed for a batch of {len(batch)} with a "
                                  f"systemic error, not the images' fault: {name}: {message}")
        for key, _ in batch:
            self._failed.inc()
            yield dead_letter_record(key.uri, "inference", name, message)


class SplitGpuResults(beam.DoFn):
    """GPU-path results: scored ones go on; a file DALI could not decode alone (GPU_OK
    False) goes back, as its bytes, to the Pillow path, so it is scored once or
    dead-lettered once there."""

    def __init__(self) -> None:
        self._retried = Metrics.counter(METRICS_NAMESPACE, "images_gpu_fallback")

    def process(self, element: Tuple[ItemKey, PredictionResult]) -> Iterator[Any]:
        key, result = element
        if isinstance(result.inference, ItemFailure):     # Postprocess dead-letters it
            yield key, result
            return
        outputs = dict(result.inference)
        ok = bool(outputs.pop(GPU_OK))
        if not ok:
            self._retried.inc()
            yield beam.pvalue.TaggedOutput(CPU_PATH, Item(key.uri, bytes(result.example),
                                                          key.timings))
            return
        inference = next(iter(outputs.values())) if len(outputs) == 1 else outputs
        yield key, PredictionResult(result.example, inference, result.model_id)


def _infer(pcoll: beam.PCollection, label: str, handler: NumpyModelHandler
           ) -> Tuple[beam.PCollection, beam.PCollection]:
    """Key -> RunInference -> (results, inference dead letters)."""
    inferred, dlq = (
        pcoll
        | f"Key{label}" >> beam.Map(_keyed)
        | f"RunInference{label}" >> RunInference(KeyedBatchHandler(handler))
        .with_exception_handling())
    failed = dlq.failed_inferences | f"InferenceDeadLetters{label}" >> beam.ParDo(BatchFailures())
    return inferred, failed


def _pillow_branch(pcoll: beam.PCollection, label: str, cfg: RunConfig,
                   handler: NumpyModelHandler) -> Tuple[beam.PCollection, List[beam.PCollection]]:
    """Pillow decode -> preprocess -> RunInference -> postprocess: (predictions, the
    branch's dead-letter outputs). ``label`` suffixes its transforms' names."""
    decoded = pcoll | f"DecodeImage{label}" >> beam.ParDo(
        DecodeImage(cfg.spec, cfg.limits)).with_outputs(DEAD_LETTER, main="images")
    tensors = decoded.images | f"Preprocess{label}" >> beam.ParDo(
        Preprocess(cfg.spec)).with_outputs(DEAD_LETTER, main="images")
    inferred, failed_inference = _infer(tensors.images, label, handler)
    post = inferred | f"Postprocess{label}" >> beam.ParDo(
        Postprocess(cfg.spec, cfg.backend, cfg.top_k, "cpu")).with_outputs(
            DEAD_LETTER, main="preds")
    return post.preds, [decoded[DEAD_LETTER], tensors[DEAD_LETTER], failed_inference,
                        post[DEAD_LETTER]]


def build_pipeline(p: beam.Pipeline, cfg: RunConfig,
                   handler: Optional[NumpyModelHandler] = None,
                   gpu_handler: Optional[NumpyModelHandler] = None) -> Dict[str, Any]:
    """Read -> (route) -> decode -> preprocess -> RunInference -> postprocess -> write.

    With ``cfg.preprocess == "gpu"`` plain JPEGs go as encoded bytes to a TensorRT runner
    fed by DALI; everything else, and any file DALI fails on alone, takes a Pillow branch
    to a second handler on the same plan (one branch for each, see below). ``handler`` and ``gpu_handler`` replace the
    configured ones (tests, profiling). Returns the main PCollections (lists of per-branch predictions and bundles, and errors).
    """
    handler = handler or make_handler(cfg)
    skip = (cfg.output,) + tuple(x for x in cfg.skip_scored if x != cfg.output)
    # Dataflow moves work between workers per shuffled key: there the admitted URIs are
    # reshuffled one by one; Beam's local runner deals out the buckets evenly as they are
    spread = not is_local(p.options.view_as(StandardOptions).runner or "DirectRunner")
    read = p | "ReadImages" >> ReadImages(cfg.inputs, cfg.input_list, cfg.limits, skip,
                                          spread)
    errors = [read[DEAD_LETTER]]
    predictions: List[Tuple[str, beam.PCollection]] = []
    if cfg.preprocess == "gpu":
        routed = read.images | "RouteForGpu" >> beam.ParDo(
            RouteForGpu(cfg.spec, cfg.limits, cfg.dali.max_megapixels,
                        cfg.dali.progressive_on_gpu)).with_outputs(
                DEAD_LETTER, CPU_PATH, main="gpu")
        gpu_handler = gpu_handler or NumpyModelHandler(
            scoring_loader(cfg), min_batch_size=cfg.min_batch_size,
            max_batch_size=cfg.max_batch_size, model_copies=cfg.model_copies)
        gpu_results, gpu_failed = _infer(routed.gpu, "Gpu", gpu_handler)
        split = gpu_results | "SplitGpuResults" >> beam.ParDo(
            SplitGpuResults()).with_outputs(CPU_PATH, main="scored")
        post_gpu = split.scored | "PostprocessGpu" >> beam.ParDo(
            Postprocess(cfg.spec, cfg.backend, cfg.top_k, "gpu")).with_outputs(
                DEAD_LETTER, main="preds")
        errors += [routed[DEAD_LETTER], gpu_failed, post_gpu[DEAD_LETTER]]
        predictions.append(("Gpu", post_gpu.preds))
        # Two Pillow branches, not one behind a Flatten: Beam's local runner does not fuse
        # a Flatten of two branches, so the Pillow side ran as a stage of its own after the
        # whole GPU stage (21.7 s of a 74 s uploads run on the H200, docs/benchmarks.md).
        # Each branch now runs inside the stage that feeds it, beside the GPU work.
        for label, pcoll in (("Cpu", routed[CPU_PATH]), ("Fallback", split[CPU_PATH])):
            preds, branch_errors = _pillow_branch(pcoll, label, cfg, handler)
            predictions.append((label, preds))
            errors += branch_errors
    else:
        preds, branch_errors = _pillow_branch(read.images, "", cfg, handler)
        predictions.append(("", preds))
        errors += branch_errors
    # One sink per branch rather than a Flatten before one sink: the DirectRunner does not
    # fuse a Flatten of two branches, so it would hold every prediction of a run in memory
    # until inference finished (measured: +230 MB per 100k images on the GPU path).
    # Readers match predictions-<run_id>-* and see every branch's files.
    outputs: Dict[str, Any] = {"predictions": [], "bundles": []}
    for label, preds in predictions:
        measured = preds | f"BundleMetrics{label}" >> beam.ParDo(BundleMetrics()).with_outputs(
            BUNDLES, main="records")
        measured.records | f"WritePredictions{label}" >> WritePredictions(
            cfg.output, cfg.run_id, cfg.output_format, label.lower())
        measured[BUNDLES] | f"WriteBundleMetrics{label}" >> WriteBundleMetrics(
            cfg.output, cfg.run_id, part=label.lower())
        outputs["predictions"].append(measured.records)
        outputs["bundles"].append(measured[BUNDLES])
    outputs["errors"] = tuple(errors) | "AllDeadLetters" >> beam.Flatten()
    outputs["errors"] | "WriteDeadLetters" >> WriteDeadLetters(cfg.output, cfg.run_id)
    return outputs
