"""The baseline a user would otherwise pick: Beam's stock TensorRTEngineHandlerNumPy,
fed by this project's own read, decode and CPU preprocessing, on a fixed-batch plan.

    python -m pipeline.stock_baseline --input 'corpus/*' --engine fixed32.plan --batch 32

Two concessions, both stated beside every figure: Beam 2.77 refuses TensorRT 8.6 ("requires
TensorRT 10 or later"), so its version check is switched off and nothing else; and it
cannot size buffers for a dynamic-batch plan, so it gets a plan whose batch is fixed.
Batches are exactly ``--batch`` (min = max), because the stock handler copies the whole
input buffer whatever the batch size; the last partial batch is padded with copies of its
last image and the padding is not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import List, Optional, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.ml.inference import tensorrt_inference
from apache_beam.ml.inference.base import RunInference

from pipeline import local_runner
from transforms.decode import DecodeImage
from transforms.read_images import ReadImages
from transforms.preprocess import Preprocess
from transforms.records import DEAD_LETTER
from transforms.spec import OPEN_NSFW_SPEC, DecodeLimits


class _PadToBatch(beam.DoFn):
    """Batches of exactly ``size`` (the stock handler's requirement), padding the last one."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._scored = Metrics.counter("stock_baseline", "images_ok")

    def process(self, batch: List[np.ndarray]):
        self._scored.inc(len(batch))
        while len(batch) < self._size:
            batch = batch + [batch[-1]]
        yield np.stack(batch)


class StockHandlerOnTrt86(tensorrt_inference.TensorRTEngineHandlerNumPy):
    """Beam's stock handler with its TensorRT version check switched off, and nothing else.

    The switch happens in ``load_model``, on the SDK worker that loads the engine: setting
    it on the launcher alone did not reach the worker processes of a multi-process run
    (each imports Beam afresh), so every stock run with ``--direct_num_workers`` failed
    with "RunInference requires TensorRT 10 or later" (H200, 2026-11-30)."""

    def load_model(self):
        tensorrt_inference._check_trt_version = lambda: None   # the one concession
        return super().load_model()


def _rows(result) -> List[str]:
    """One line per image row of a stock PredictionResult, for a benchmark to count.

    Each element we give the stock handler is a whole batch (its example, shape (batch,
    ...)), and Beam 2.77's handler returns only row 0 of each output for it (it indexes
    its output buffers by the element's position in the request), so the lines carry the
    row number, not per-row scores. The last batch's padding rows are counted too: at
    most batch - 1 extra lines."""
    return [json.dumps({"row": i}) for i in range(len(result.example))]


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True)
    p.add_argument("--engine", required=True, help="a plan with a fixed batch of --batch")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--output", help="also write a line per scored row here "
                                    "(predictions-*.jsonl), so a benchmark can watch the "
                                    "stock run's steady rate as it watches ours")
    a, beam_args = p.parse_known_args(argv)
    handler = StockHandlerOnTrt86(min_batch_size=1, max_batch_size=1, engine_path=a.engine)
    limits, spec = DecodeLimits(), OPEN_NSFW_SPEC
    local_runner.prepare()   # the same runner as ours
    start = time.perf_counter()
    with beam.Pipeline(argv=beam_args) as pipe:
        read = pipe | ReadImages((a.input,), None, limits, ())
        decoded = read.images | beam.ParDo(DecodeImage(spec, limits)).with_outputs(
            DEAD_LETTER, main="ok")
        tensors = decoded.ok | beam.ParDo(Preprocess(spec)).with_outputs(DEAD_LETTER, main="ok")
        tensors = (tensors.ok
                   | beam.Map(lambda item: item.payload)
                   | beam.BatchElements(min_batch_size=a.batch, max_batch_size=a.batch)
                   | beam.ParDo(_PadToBatch(a.batch)))
        results = tensors | RunInference(handler)
        if a.output:
            _ = (results
                 | beam.FlatMap(_rows)
                 | beam.io.WriteToText(os.path.join(a.output, "predictions"),
                                       file_name_suffix=".jsonl"))
    wall = time.perf_counter() - start
    result = pipe.result
    ok = sum(c.result for c in result.metrics().query(
        MetricsFilter().with_namespace("stock_baseline"))["counters"])
    print(f"summary: ok={ok} wall={wall:.2f}s images/s={ok / wall:.1f} handler=stock "
          f"TensorRTEngineHandlerNumPy batch={a.batch}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
