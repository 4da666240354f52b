"""Model output -> one prediction record per image: softmax if logits, top-k with labels.

Why records are flat: the same fields go to JSONL and Parquet, so downstream
queries do not depend on the output format chosen.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import PredictionResult

from transforms.records import (DEAD_LETTER, METRICS_NAMESPACE, ItemKey, dead_letter,
                                dead_letter_record)
from transforms.runtime.errors import ItemFailure
from transforms.spec import ConfigError, ModelSpec


def softmax(x: np.ndarray) -> np.ndarray:
    z = x.astype(np.float64) - np.max(x)
    e = np.exp(z)
    return e / e.sum()


def scores_from(row: np.ndarray, kind: str) -> np.ndarray:
    """Flatten one image's output row into class scores."""
    flat = np.asarray(row, dtype=np.float64).reshape(-1)
    return softmax(flat) if kind == "logits" else flat


def top_k(scores: np.ndarray, k: int, labels: Sequence[str]) -> List[Dict[str, Any]]:
    """The k best classes, highest first; ties keep class order."""
    if labels and len(labels) != scores.size:
        raise ConfigError(
            f"labels: the model spec has {len(labels)} labels, the model output has "
            f"{scores.size} classes")
    order = np.argsort(-scores, kind="stable")[: min(k, scores.size)]
    return [{"label": labels[i] if labels else str(int(i)), "score": float(scores[i])}
            for i in order]


@dataclass(frozen=True)
class Prediction:
    """One scored image with what produced it and what it cost."""

    uri: str
    top_k: Tuple[Mapping[str, Any], ...]
    model_name: str
    model_sha256: str
    backend: str
    preprocess: str
    batch_id: str
    batch_size: int
    decode_ms: float
    preprocess_ms: float
    inference_ms: float
    postprocess_ms: float
    device: str = ""
    read_ms: float = 0.0

    def to_record(self) -> Dict[str, Any]:
        return {
            "uri": self.uri,
            "top_k": [dict(t) for t in self.top_k],
            "model_name": self.model_name,
            "model_sha256": self.model_sha256,
            "backend": self.backend,
            "preprocess": self.preprocess,
            "batch_size": self.batch_size,
            "decode_ms": round(self.decode_ms, 3),
            "preprocess_ms": round(self.preprocess_ms, 3),
            "inference_ms": round(self.inference_ms, 3),
        }


def select_output(inference: Any, name: Optional[str]) -> np.ndarray:
    """The spec's output: the array itself for a one-output model, else by name (or first)."""
    if not isinstance(inference, Mapping):
        return np.asarray(inference)
    outputs = inference
    if name is None:
        return next(iter(outputs.values()))
    if name not in outputs:
        raise ConfigError(
            f"output_name: expected '{name}' among the model outputs {list(outputs)}")
    return outputs[name]


class Postprocess(beam.DoFn):
    """DoFn: (ItemKey, PredictionResult) -> Prediction; config errors fail the job."""

    def __init__(self, spec: ModelSpec, backend: str, top_k: int, preprocess: str = "cpu"
                 ) -> None:
        self._spec = spec
        self._backend = backend
        self._k = top_k
        self._preprocess = preprocess
        self._failed = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "images_failed")

    def process(self, element: Tuple[ItemKey, PredictionResult]) -> Iterator[Any]:
        key, result = element
        start = time.perf_counter()
        batch = key.batch
        if isinstance(result.inference, ItemFailure):   # failed alone after split-and-retry
            self._failed.inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter_record(
                key.uri, "inference", result.inference.error_type, result.inference.message))
            return
        try:
            row = select_output(result.inference, self._spec.output_name)
            best = top_k(scores_from(row, self._spec.output_kind), self._k, self._spec.labels)
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - one image's bad output is a dead letter
            self._failed.inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter(key.uri, "postprocess", exc))
            return
        yield Prediction(
            uri=key.uri, top_k=tuple(best), model_name=self._spec.name,
            model_sha256=batch.model_sha256 if batch else "", backend=self._backend,
            preprocess=self._preprocess,
            batch_id=batch.batch_id if batch else "", batch_size=batch.size if batch else 0,
            device=batch.device if batch else "",
            decode_ms=key.timings.get("decode", 0.0),
            preprocess_ms=key.timings.get("preprocess", 0.0),
            inference_ms=batch.ms if batch else 0.0,
            postprocess_ms=(time.perf_counter() - start) * 1000.0,
            read_ms=key.timings.get("read", 0.0))
