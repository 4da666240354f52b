"""Beam alone, no code of this project: large elements handed from one stage to the next
on the multi-process local runner, counted where they arrive.

One stage makes N elements of SIZE random bytes on two outputs; a Flatten of both feeds
the next stage, which counts what it sees. Beam 2.77's FnApiRunner materializes that
Flatten and sends each part to an SDK process through a data stream a thread flushes
every second; writes made during a flush are cleared unsent (pipeline/runner_fix.py).

    python scripts/beam_runner_loss_minimal.py --count 600 --size 1000000 --workers 16
    python scripts/beam_runner_loss_minimal.py ... --fix      # with pipeline/runner_fix.py

Prints what was sent and what arrived; exits 1 when elements were lost. On the 2-core CI
machine (2026-11-30), 16 workers: 533-557 of 600 arrived in each of 4 runs as shipped,
600 of 600 in each of 4 with --fix (docs/upstream/beam-fnapirunner-flush-race.md).
"""

from __future__ import annotations

import argparse
import os
import sys

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions


class MakeLarge(beam.DoFn):
    """i -> ``size`` random bytes, odd i on a second output (so a Flatten joins two)."""

    def __init__(self, size: int) -> None:
        self._size = size

    def process(self, i: int):
        data = os.urandom(self._size)
        yield beam.pvalue.TaggedOutput("odd", data) if i % 2 else data


class CountArrivals(beam.DoFn):
    def __init__(self) -> None:
        self._seen = Metrics.counter("repro", "arrived")

    def process(self, data: bytes):
        self._seen.inc()
        yield len(data)


def hand_over(count: int, size: int, workers: int) -> int:
    """Runs the two stages; returns how many elements reached the second."""
    p = beam.Pipeline(options=PipelineOptions([f"--direct_num_workers={workers}",
                                               "--direct_running_mode=multi_processing"]))
    made = (p | beam.Create(range(count)) | "Spread" >> beam.Reshuffle()
            | beam.ParDo(MakeLarge(size)).with_outputs("odd", main="even"))
    (made.even, made.odd) | beam.Flatten() | beam.ParDo(CountArrivals())
    result = p.run()
    result.wait_until_finish()
    query = result.metrics().query(MetricsFilter().with_name("arrived"))
    return int(sum(c.result for c in query["counters"]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=600)
    ap.add_argument("--size", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--fix", action="store_true", help="apply pipeline/runner_fix.py first")
    a = ap.parse_args()
    if a.fix:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from pipeline import runner_fix

        runner_fix.apply()
    arrived = hand_over(a.count, a.size, a.workers)
    print(f"sent {a.count} elements of {a.size} bytes to the next stage; {arrived} arrived"
          + ("" if arrived == a.count else f"; LOST {a.count - arrived}"))
    return 0 if arrived == a.count else 1


if __name__ == "__main__":
    sys.exit(main())
