"""Per-bundle timing records and Beam Metrics, aggregated at the end of the fused chain.

Why per bundle: a bundle is the unit a worker processes end to end, so its wall
time against its images is the honest throughput figure; aggregating in
start_bundle/finish_bundle needs no state shared across threads or processes.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections import Counter
from typing import Any, Dict, Iterator, List

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from transforms.postprocess import Prediction
from transforms.records import METRICS_NAMESPACE
from transforms.runtime import startup

BUNDLES = "bundles"


def percentile(values: List[float], q: float) -> float:
    """Nearest-rank percentile; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, int(-(-q * len(ordered) // 100)))  # ceil(q/100 * n)
    return ordered[min(rank, len(ordered)) - 1]


class BundleMetrics(beam.DoFn):
    """Prediction -> its output record; one bundle record per bundle on ``BUNDLES``."""

    def __init__(self) -> None:
        # Batch latency and size are Beam's own RunInference distributions
        # (inference_batch_latency_micro_secs, inference_request_batch_size); only the
        # per-image outcome is counted here.
        self._ok = Metrics.counter(METRICS_NAMESPACE, "images_ok")
        self._reset()

    def _reset(self) -> None:
        self._start = time.perf_counter()
        self._images = 0
        self._batches: Dict[str, tuple] = {}
        self._sums = {"read_ms": 0.0, "decode_ms": 0.0, "preprocess_ms": 0.0,
                      "postprocess_ms": 0.0}
        self._paths: Counter = Counter()
        self._devices: Counter = Counter()

    def start_bundle(self) -> None:
        startup.record("first_bundle")
        self._reset()

    def process(self, p: Prediction) -> Iterator[Dict[str, Any]]:
        startup.record("first_prediction")
        self._images += 1
        self._ok.inc()
        if p.batch_id not in self._batches:
            self._batches[p.batch_id] = (p.batch_size, p.inference_ms)
        self._paths[p.preprocess] += 1
        if p.device:
            self._devices[p.device] += 1
        self._sums["read_ms"] += p.read_ms
        self._sums["decode_ms"] += p.decode_ms
        self._sums["preprocess_ms"] += p.preprocess_ms
        self._sums["postprocess_ms"] += p.postprocess_ms
        yield p.to_record()

    def finish_bundle(self) -> Iterator[Any]:
        if not self._images:
            return
        startup.record("bundle_done", once=False, images=self._images)
        wall_ms = (time.perf_counter() - self._start) * 1000.0
        batch_ms = [ms for _, ms in self._batches.values()]
        record = {
            "bundle_id": uuid.uuid4().hex,
            "worker": socket.gethostname(),
            "pid": os.getpid(),
            "images": self._images,
            "images_gpu_preprocess": self._paths["gpu"],
            "images_cpu_preprocess": self._paths["cpu"],
            "images_by_device": dict(sorted(self._devices.items())),
            "batches": len(self._batches),
            "batch_sizes": [size for size, _ in self._batches.values()],
            "batch_ms": [round(ms, 3) for ms in batch_ms],
            "read_ms": round(self._sums["read_ms"], 3),
            "decode_ms": round(self._sums["decode_ms"], 3),
            "preprocess_ms": round(self._sums["preprocess_ms"], 3),
            "inference_ms": round(sum(batch_ms), 3),
            "postprocess_ms": round(self._sums["postprocess_ms"], 3),
            "wall_ms": round(wall_ms, 3),
            "images_per_s": round(self._images / (wall_ms / 1000.0), 3) if wall_ms > 0 else 0.0,
        }
        yield beam.pvalue.TaggedOutput(
            BUNDLES, WindowedValue(record, GlobalWindow().max_timestamp(), [GlobalWindow()]))
