"""`python -m pipeline.main`: options -> config -> preflight -> build_pipeline -> summary.

Why a preflight: a wrong model path or a spec that does not fit the model should
fail on the launcher in a second, not on a GPU worker after minutes of start-up.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions, StandardOptions

from pipeline.accounting import (EXIT_UNACCOUNTED, ImagesUnaccounted, check_accounting,
                                 check_written, count_written)
from pipeline.budget import FailureBudgetExceeded, check_failure_budget
from pipeline.build import build_pipeline, scoring_loader
from pipeline.config import RunConfig
from pipeline.options import (InferenceOptions, apply_folded_engine, config_from_options,
                              help_text, unknown_flags)
from pipeline.preflight import preflight
from pipeline import local_runner
from pipeline.local_runner import is_local
from transforms.io import BUNDLES, ERRORS, file_prefix, read_jsonl
from transforms.metrics import percentile
from transforms.records import METRICS_NAMESPACE
from transforms.runtime import prewarm, startup
from transforms.runtime.errors import InputMismatch, ModelLoadError
from transforms.spec import ConfigError

LOG = logging.getLogger("pipeline.main")


@dataclass(frozen=True)
class RunSummary:
    """What a local run prints at the end."""

    ok: int
    failed: int
    skipped: int
    wall_s: float
    batch_p50_ms: float
    batch_p95_ms: float
    batches: int
    preprocess: str = "cpu"
    admitted: int = 0       # images that entered the run (after the anti-join)

    @property
    def images_per_s(self) -> float:
        return self.ok / self.wall_s if self.wall_s > 0 else 0.0

    def line(self) -> str:
        return (f"summary: ok={self.ok} failed={self.failed} skipped={self.skipped} "
                f"wall={self.wall_s:.2f}s "
                f"images/s={self.images_per_s:.1f} batches={self.batches} "
                f"batch_latency_ms p50={self.batch_p50_ms:.1f} p95={self.batch_p95_ms:.1f} "
                f"preprocess={self.preprocess}")


def _metric(result: beam.runners.runner.PipelineResult, name: str) -> int:
    query = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE)
                                   .with_name(name))
    return int(sum(c.result for c in query["counters"]))


def stage_counters(result: beam.runners.runner.PipelineResult) -> Dict[str, int]:
    """Every counter of the run's namespace: where images went, stage by stage."""
    query = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))
    counts: Dict[str, int] = {}
    for c in query["counters"]:
        counts[c.key.metric.name] = counts.get(c.key.metric.name, 0) + int(c.result)
    return dict(sorted(counts.items()))


def summarize(result: beam.runners.runner.PipelineResult, cfg: RunConfig,
              wall_s: float) -> RunSummary:
    batch_ms: List[float] = []
    for record in read_jsonl(file_prefix(cfg.output, BUNDLES, cfg.run_id) + "-*.jsonl"):
        batch_ms.extend(record["batch_ms"])
    return RunSummary(ok=_metric(result, "images_ok"), failed=_metric(result, "images_failed"),
                      skipped=_metric(result, "images_skipped"),
                      wall_s=wall_s, batch_p50_ms=percentile(batch_ms, 50),
                      batch_p95_ms=percentile(batch_ms, 95), batches=len(batch_ms),
                      preprocess=cfg.preprocess, admitted=_metric(result, "images_admitted"))


def configure(argv: Sequence[str]) -> Tuple[PipelineOptions, RunConfig]:
    """Options -> validated RunConfig -> preflight; everything before the graph."""
    unknown = unknown_flags(argv)
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown}; see python -m pipeline.main --help")
    options = PipelineOptions(list(argv))
    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    cfg = config_from_options(options.view_as(InferenceOptions), remote=not is_local(runner))
    preflight(options, cfg)
    cfg = apply_folded_engine(cfg)
    return options, cfg


def arrange_prewarm(options: PipelineOptions, cfg: RunConfig) -> bool:
    """Have each SDK process start loading the scoring model as it starts: Beam imports
    the modules in --beam_plugins there first, and transforms/runtime/prewarm.py starts the
    loader it finds in the options. Not with --model_copies (one shared copy is loaded in
    Beam's shared-model process) or --no_prewarm."""
    if not cfg.prewarm or cfg.model_copies:
        return False
    setup = options.view_as(SetupOptions)
    plugins = list(setup.beam_plugins or [])
    if prewarm.MODULE not in plugins:
        setup.beam_plugins = plugins + [prewarm.MODULE]
    options.view_as(InferenceOptions).prewarm_loader = prewarm.encode(scoring_loader(cfg))
    return True


def waits(runner: object, wait_until_finish: bool, test_pipeline: bool = False) -> bool:
    """Local runs always block; a remote job only with --wait_until_finish."""
    return is_local(runner) or test_pipeline or wait_until_finish


def run(argv: Optional[Sequence[str]] = None,
        test_pipeline: Optional[beam.Pipeline] = None) -> Optional[RunSummary]:
    """Run the pipeline; a local run blocks and returns its summary."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--help" in argv or "-h" in argv:
        print(help_text())
        return None
    startup.record("launch")
    options, cfg = configure(argv)
    arrange_prewarm(options, cfg)     # before the Pipeline takes its copy of the options
    p = test_pipeline or beam.Pipeline(options=options)
    build_pipeline(p, cfg)
    startup.record("graph_built")
    local_runner.prepare()
    start = time.perf_counter()
    result = p.run()
    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    if not waits(runner, cfg.wait_until_finish, test_pipeline is not None):
        LOG.info("submitted to %s; not waiting (--wait_until_finish to wait and apply the "
                 "failure budget)", runner)
        return None
    result.wait_until_finish()   # Dataflow: raises if the job failed or was cancelled
    startup.record("run_done")
    summary = summarize(result, cfg, time.perf_counter() - start)
    print(summary.line(), flush=True)
    try:
        check_accounting(summary.admitted, summary.ok, summary.failed, cfg.inputs,
                         cfg.input_list, cfg.output, cfg.run_id)
    except ImagesUnaccounted as exc:
        raise ImagesUnaccounted(f"{exc} Counters by stage: {stage_counters(result)}") from None
    if is_local(runner) or test_pipeline is not None:
        # Beam's local runner is where records went missing; a Dataflow job's outputs can
        # be gigabytes, so there the by-URI check is pipeline.audit, run when wanted
        check_written(summary.ok, summary.failed, count_written(cfg.output, cfg.run_id),
                      cfg.inputs, cfg.input_list, cfg.output, cfg.run_id)
    check_failure_budget(summary.ok, summary.failed, cfg.max_failed_fraction, cfg.max_failed,
                         file_prefix(cfg.output, ERRORS, cfg.run_id) + "-*.jsonl")
    return summary


class _DropBeamResourceWarning(logging.Filter):
    """Beam 2.77's RunInference logs this per batch when torch is absent (its memory
    probe imports torch); it says nothing about our run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Resource module is not available" not in record.getMessage()


INTERRUPTED = ("interrupted: this run's outputs may be unfinished; run the same command again "
               "with the same --output: images already in a finished predictions file are "
               "skipped, the rest are scored")


def _on_sigint(signum: int, frame: object) -> None:
    """Ctrl-C ends the run now, with one line. A KeyboardInterrupt raised into Beam's
    runner can be caught there: on a loaded machine a run once ended 0 after SIGINT,
    without the message. So the launcher does not rely on it. What was not finalized is
    scored by a rerun, exactly as after a killed run (tests/test_crash_rerun.py)."""
    print(INTERRUPTED, file=sys.stderr, flush=True)
    os._exit(130)


def main() -> int:
    signal.signal(signal.SIGINT, _on_sigint)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_DropBeamResourceWarning())
    try:
        run()
    except (ConfigError, ModelLoadError, InputMismatch) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except FailureBudgetExceeded as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except ImagesUnaccounted as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNACCOUNTED
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
