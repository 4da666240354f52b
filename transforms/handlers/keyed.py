"""KeyedModelHandler whose keys come back carrying their batch's facts.

Why: the per-bundle records need each image's batch id, size and time, but
``PredictionResult.inference`` stays the model's plain output so the handler is
usable in anyone's pipeline. The pipeline's key (ItemKey) is the other way through.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Optional, Sequence, Tuple

from apache_beam.ml.inference.base import KeyedModelHandler, PredictionResult

from transforms.handlers.model_handler import NumpyModelHandler
from transforms.records import ItemKey
from transforms.runtime.runner import Runner


class KeyedBatchHandler(KeyedModelHandler):
    """(ItemKey, example) -> (ItemKey with its BatchFacts, PredictionResult)."""

    def __init__(self, unkeyed: NumpyModelHandler) -> None:
        super().__init__(unkeyed)

    def run_inference(self, batch: Sequence[Tuple[ItemKey, Any]], model: Runner,
                      inference_args: Optional[Dict[str, Any]] = None
                      ) -> Iterable[Tuple[ItemKey, PredictionResult]]:
        keys = [k for k, _ in batch]
        results, facts = self._unkeyed.run_batch([e for _, e in batch], model, inference_args)
        # strict: a result short of its keys must fail the batch, never drop an image
        return [(k.with_batch(facts), r) for k, r in zip(keys, results, strict=True)]
