"""build_pipeline(p, cfg): the whole graph from one RunConfig, and the handler factory.

Why a separate builder: tests and the Dataflow dry run build the same graph as the
CLI, from the same config object, on a pipeline they provide.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, RunInference

from pipeline.config import RunConfig
from transforms.decode import DecodeImage
from transforms.io import ReadImages, WriteBundleMetrics, WriteDeadLetters, WritePredictions
from transforms.metrics import BUNDLES, BundleMetrics
from transforms.postprocess import Postprocess
from transforms.preprocess import Preprocess
from transforms.records import DEAD_LETTER, METRICS_NAMESPACE, Item, ItemKey, dead_letter


def make_handler(cfg: RunConfig) -> ModelHandler:
    """The unkeyed numpy handler for the configured backend (GPU libraries load lazily)."""
    example_shape = cfg.spec.input_shape(1)[1:]
    if cfg.backend == "tensorrt":
        from transforms.handlers.tensorrt import TensorRTEngineHandler

        return TensorRTEngineHandler(
            cfg.engine, engine_cache=cfg.engine_cache,
            onnx_uri=cfg.model if cfg.engine_cache else None, precision=cfg.trt_precision,
            profile=cfg.trt_profile, optimization_level=cfg.trt_optimization_level,
            input_name=cfg.spec.input_name, input_dtype=cfg.spec.input_dtype,
            example_shape=example_shape, min_batch_size=cfg.min_batch_size,
            max_batch_size=cfg.max_batch_size, model_copies=cfg.model_copies)
    from transforms.handlers.onnx import OnnxModelHandler

    return OnnxModelHandler(
        cfg.model, providers=cfg.onnx_providers, input_name=cfg.spec.input_name,
        input_dtype=cfg.spec.input_dtype, example_shape=example_shape,
        min_batch_size=cfg.min_batch_size, max_batch_size=cfg.max_batch_size,
        model_copies=cfg.model_copies)


def _keyed(item: Item) -> tuple:
    return ItemKey(item.uri, item.timings), item.payload


class BatchFailures(beam.DoFn):
    """RunInference's DLQ gives (batch, exception): one dead letter per image in it."""

    def __init__(self) -> None:
        self._failed = Metrics.counter(METRICS_NAMESPACE, "images_failed")

    def process(self, element: tuple) -> Iterator[Dict[str, str]]:
        batch, exc = element
        for key, _ in batch:
            self._failed.inc()
            yield dead_letter(key.uri, "inference", exc)


def build_pipeline(p: beam.Pipeline, cfg: RunConfig,
                   handler: ModelHandler | None = None) -> Dict[str, Any]:
    """Read -> decode -> preprocess -> RunInference -> postprocess -> write.

    Returns the main PCollections so tests can assert on them.
    """
    handler = handler or make_handler(cfg)
    skip = (cfg.output,) + tuple(x for x in cfg.skip_scored if x != cfg.output)
    read = p | "ReadImages" >> ReadImages(cfg.inputs, cfg.input_list, cfg.limits, skip)
    decoded = read.images | "DecodeImage" >> beam.ParDo(
        DecodeImage(cfg.spec, cfg.limits)).with_outputs(DEAD_LETTER, main="images")
    tensors = decoded.images | "Preprocess" >> beam.ParDo(
        Preprocess(cfg.spec)).with_outputs(DEAD_LETTER, main="images")
    inferred, dlq = (
        tensors.images
        | "Key" >> beam.Map(_keyed)
        | "RunInference" >> RunInference(KeyedModelHandler(handler)).with_exception_handling())
    post = inferred | "Postprocess" >> beam.ParDo(
        Postprocess(cfg.spec, cfg.backend, cfg.top_k)).with_outputs(DEAD_LETTER, main="preds")
    measured = post.preds | "BundleMetrics" >> beam.ParDo(BundleMetrics()).with_outputs(
        BUNDLES, main="records")
    failed_inference = dlq.failed_inferences | "InferenceDeadLetters" >> beam.ParDo(
        BatchFailures())
    errors = ((read[DEAD_LETTER], decoded[DEAD_LETTER], tensors[DEAD_LETTER],
               failed_inference, post[DEAD_LETTER])
              | "AllDeadLetters" >> beam.Flatten())
    measured.records | "WritePredictions" >> WritePredictions(cfg.output, cfg.run_id,
                                                               cfg.output_format)
    errors | "WriteDeadLetters" >> WriteDeadLetters(cfg.output, cfg.run_id)
    measured[BUNDLES] | "WriteBundleMetrics" >> WriteBundleMetrics(cfg.output, cfg.run_id)
    return {"predictions": measured.records, "errors": errors, "bundles": measured[BUNDLES]}


