"""Per-bundle aggregation: one record per bundle, batches counted once, Beam counters."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.metrics import BUNDLES, BundleMetrics, percentile
from transforms.postprocess import Prediction
from transforms.records import METRICS_NAMESPACE


def _pred(i: int, batch: str, size: int, ms: float) -> Prediction:
    return Prediction(f"u{i}", ({"label": "a", "score": 1.0},), "m", "s", "onnx",
                      "gpu" if i == 2 else "cpu", batch, size, 1.0, 2.0, ms, 0.5, read_ms=0.25)


def test_percentile_nearest_rank():
    assert percentile([], 50) == 0.0
    assert percentile([5.0], 95) == 5.0
    assert percentile([1, 2, 3, 4], 50) == 2
    assert percentile(list(range(1, 101)), 95) == 95


def test_bundle_records_and_counters():
    preds = [_pred(0, "b1", 2, 10.0), _pred(1, "b1", 2, 10.0), _pred(2, "b2", 1, 4.0)]

    def check(bundles):
        assert sum(b["images"] for b in bundles) == 3
        assert sum(b["batches"] for b in bundles) == 2
        sizes = sorted(s for b in bundles for s in b["batch_sizes"])
        assert sizes == [1, 2]
        assert sum(b["images_gpu_preprocess"] for b in bundles) == 1
        assert sum(b["images_cpu_preprocess"] for b in bundles) == 2
        for b in bundles:
            assert b["wall_ms"] > 0 and b["images_per_s"] > 0
            assert b["decode_ms"] == b["images"] * 1.0
            assert b["read_ms"] == b["images"] * 0.25
            assert set(b) >= {"bundle_id", "worker", "pid", "preprocess_ms", "inference_ms",
                              "postprocess_ms", "batch_ms"}

    p = TestPipeline()
    out = (p | beam.Create(preds, reshuffle=False)
           | beam.ParDo(BundleMetrics()).with_outputs(BUNDLES, main="records"))
    assert_that(out.records | beam.Map(lambda r: r["uri"]), equal_to(["u0", "u1", "u2"]),
                label="records")
    assert_that(out[BUNDLES], check, label="bundles")
    result = p.run()
    result.wait_until_finish()
    q = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))
    counters = {c.key.metric.name: c.result for c in q["counters"]}
    assert counters["images_ok"] == 3
    # batch latency and size are Beam's own RunInference distributions, not duplicated here
    assert not q["distributions"]
