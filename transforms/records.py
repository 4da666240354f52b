"""The records that flow between transforms, and the per-image dead-letter DoFn base.

Why one base: every stage that can fail for one image (read, decode, preprocess)
must turn that failure into the same dead-letter record instead of failing the
bundle, and count it, so the rule lives in one place.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, Mapping, Optional

import apache_beam as beam
from apache_beam.metrics import Metrics

DEAD_LETTER = "dead_letter"
METRICS_NAMESPACE = "beam_trt_inference"
MAX_MESSAGE_CHARS = 2000


@dataclass(frozen=True)
class Item:
    """One image on its way to the model: its URI, its current payload, its timings."""

    uri: str
    payload: Any
    timings: Mapping[str, float] = field(default_factory=dict)

    def next(self, payload: Any, stage: str, ms: float) -> "Item":
        timings: Dict[str, float] = dict(self.timings)
        timings[stage] = ms
        return Item(self.uri, payload, timings)


@dataclass(frozen=True)
class BatchFacts:
    """One RunInference batch: its id (from the model's counter), size, wall time and
    the sha256 of the model that ran it."""

    batch_id: str
    size: int
    ms: float
    model_sha256: str
    device: str = ""


@dataclass(frozen=True)
class ItemKey:
    """The key that travels through KeyedModelHandler, so timings survive inference and
    the image's batch facts come back with its result."""

    uri: str
    timings: Mapping[str, float]
    batch: Optional[BatchFacts] = None

    def with_batch(self, facts: BatchFacts) -> "ItemKey":
        return ItemKey(self.uri, self.timings, facts)


def dead_letter_record(uri: str, stage: str, error_type: str, message: str) -> Dict[str, str]:
    """The dead-letter record: {uri, stage, error_type, message}, the message capped."""
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[:MAX_MESSAGE_CHARS] + "..."
    return {"uri": uri, "stage": stage, "error_type": error_type, "message": message}


def dead_letter(uri: str, stage: str, exc: BaseException) -> Dict[str, str]:
    """The dead-letter record of an exception."""
    return dead_letter_record(uri, stage, type(exc).__name__, str(exc) or repr(exc))


class PerImageStageFn(beam.DoFn):
    """Applies ``fn(payload) -> payload`` per image; failures go to ``DEAD_LETTER``.

    Subclasses set ``stage`` and implement ``apply``. Timing of each call is carried
    on the item so the bundle metrics at the end of the fused chain can report it.
    """

    stage = "stage"

    def __init__(self) -> None:
        self._failed = Metrics.counter(METRICS_NAMESPACE, "images_failed")

    def apply(self, item: Item) -> Any:
        raise NotImplementedError

    def process(self, item: Item) -> Iterator[Any]:
        start = time.perf_counter()
        try:
            payload = self.apply(item)
        except Exception as exc:  # noqa: BLE001 - any per-image failure is a dead letter
            self._failed.inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter(item.uri, self.stage, exc))
            return
        yield item.next(payload, self.stage, (time.perf_counter() - start) * 1000.0)

