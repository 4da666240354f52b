"""`python -m pipeline.benchmark`: the seed's latency table, on any ONNX model or engine.

Subcommands:

    run       one backend in this process -> JSON (run each backend in its own process:
              TensorRT 8.6 lives in Python 3.10 here, onnxruntime-gpu in Python 3.12)
    report    several JSON files -> one markdown table + a PNG bar chart
    pipeline  engine, DALI, end to end (gpu and cpu paths) and stock Beam over one corpus
    sharing   the CPU path on every core: threads, processes, a shared engine, pool ceiling
    gpus      one GPU against every visible GPU, with per-GPU images, utilisation, memory
    stages    per-stage ms per image of a finished run, per process (its bundle records)

Host<->host time is what the seed measured: numpy batch in, numpy result out, with
every copy included. GPU-only time excludes the host copies: CUDA events around
execute_async_v3 for TensorRT, and ONNX Runtime's I/O binding with device-resident
input and output for the CUDA EP. Medians are the headline; min and max show spread.

One module per family of subcommands: engine (run, report), e2e (pipeline,
pipeline-report), cpu (sharing), gpus, timed (one timed run; stages); this one is the CLI.
"""

from __future__ import annotations

import argparse
from typing import Optional, Sequence

from transforms.runtime.benchmark import BACKENDS
from pipeline.benchmark.cpu import cmd_sharing
from pipeline.benchmark.e2e import ROWS, cmd_pipeline, cmd_pipeline_report
from pipeline.benchmark.engine import cmd_report, cmd_run
from pipeline.benchmark.gpus import cmd_gpus
from pipeline.benchmark.timed import cmd_stages
# what tests and scripts import from here
from pipeline.benchmark.common import _main_command
from pipeline.benchmark.e2e import ratios
from pipeline.benchmark.gpus import gpu_runs, visible_gpus
from pipeline.benchmark.timed import _timed_child, images_by_device, stage_costs

__all__ = ["main", "make_parser", "_main_command", "ratios", "gpu_runs", "visible_gpus",
           "_timed_child", "images_by_device", "stage_costs"]


def _corpus_args(sub: argparse.ArgumentParser, help_engine: str = "TensorRT plan") -> None:
    """The arguments every end-to-end subcommand shares: one plan, one corpus, one batch."""
    sub.add_argument("--engine", required=True, help=help_engine)
    sub.add_argument("--corpus", required=True, help="folder from scripts/make_corpus.py")
    sub.add_argument("--corpus_name", required=True)
    sub.add_argument("--batch", type=int, default=32)


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline.benchmark", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="time one backend, write JSON")
    r.add_argument("--backend", required=True, choices=BACKENDS)
    r.add_argument("--model", help="ONNX model for the onnx-* backends")
    r.add_argument("--engine", help="TensorRT plan (sidecar beside it) for tensorrt")
    r.add_argument("--batch_sizes", default="10,32")
    r.add_argument("--warmup", type=int, default=10)
    r.add_argument("--iterations", type=int, default=50)
    r.add_argument("--fp16", action="store_true", help="onnx-tensorrt: trt_fp16_enable")
    r.add_argument("--label", help="row name in the table")
    r.add_argument("--json", required=True, help="where to write the result")
    r.set_defaults(fn=cmd_run)
    rep = sub.add_parser("report", help="combine JSON results into markdown + PNG")
    rep.add_argument("json_files", nargs="+")
    rep.add_argument("--markdown")
    rep.add_argument("--png")
    rep.add_argument("--title")
    rep.set_defaults(fn=cmd_report)
    pl = sub.add_parser("pipeline", help="engine, DALI, end to end (gpu, cpu) and stock Beam "
                                         "over one corpus -> table + JSON")
    _corpus_args(pl, "TensorRT plan (dynamic batch)")
    pl.add_argument("--stock_engine", help="the same model with a fixed batch of --batch, "
                                           "for Beam's stock TensorRTEngineHandlerNumPy")
    pl.add_argument("--json", required=True)
    pl.add_argument("--png", help="bar chart of the run (needs matplotlib)")
    pl.add_argument("--dali_images", type=int, default=3000,
                    help="JPEGs for DALI alone, 3 passes (0: all; on uploads all 9,400 took "
                         "over 2 minutes)")
    pl.add_argument("--pool_images", type=int, default=2000,
                    help="images for the CPU pool ceiling on this run's cores (0: skip)")
    pl.add_argument("--rows", default=",".join(ROWS),
                    help=f"which rows to run, a comma list of {','.join(ROWS)} (default all)")
    pl.add_argument("--gpu_pipeline_args", default="",
                    help="flags for the --preprocess gpu run only, after --pipeline_args "
                         "(one string; e.g. another --direct_num_workers)")
    pl.add_argument("--manifest", action="store_true",
                    help="our end-to-end runs read the corpus from a manifest "
                         "(--input_list <corpus>/manifest.txt, written once) instead of "
                         "matching its glob in one worker")
    pl.add_argument("--cpu_corpus", default=None,
                    help="a smaller corpus (same --corpus_name) for the --preprocess cpu and "
                         "stock rows; the ratios then also use their steady rates")
    pl.add_argument("--pipeline_args", nargs=argparse.REMAINDER,
                    help="extra flags for both end-to-end runs (e.g. --direct_num_workers=16 "
                         "--direct_running_mode=multi_processing)")
    pl.set_defaults(fn=cmd_pipeline)
    pr = sub.add_parser("pipeline-report", help="several `pipeline` JSON files -> one "
                                                "markdown table + a PNG")
    pr.add_argument("json_files", nargs="+")
    pr.add_argument("--markdown")
    pr.add_argument("--png")
    pr.set_defaults(fn=cmd_pipeline_report)
    sh = sub.add_parser("sharing", help="the CPU path on every core: threads, processes, "
                                        "a shared engine, and the pool ceiling")
    _corpus_args(sh)
    sh.add_argument("--workers", type=int, default=16)
    sh.add_argument("--json", required=True)
    sh.set_defaults(fn=cmd_sharing)
    gp = sub.add_parser("gpus", help="one GPU against every visible GPU: images/s, and per "
                                     "GPU the images scored, utilisation and memory")
    _corpus_args(gp)
    gp.add_argument("--preprocess", choices=("gpu", "cpu"), default="gpu")
    gp.add_argument("--workers_per_gpu", type=int, default=8,
                    help="SDK processes per GPU used (DirectRunner multi_processing)")
    gp.add_argument("--cores_per_gpu", type=int, default=None,
                    help="pin each run to this many cores per GPU it uses (Dataflow's GPU "
                         "machine types scale vCPUs with GPUs); default: every core")
    gp.add_argument("--manifest", action="store_true",
                    help="the runs read the corpus as an --input_list (see pipeline --manifest)")
    gp.add_argument("--runs", default=None,
                    help="which runs: a comma list of one_gpu, all_gpus, one_gpu_all_cores "
                         "(default all), so each run of a long corpus can take its own call")
    gp.add_argument("--merge", default=None,
                    help="an earlier --json of this command, same corpus and layout: its "
                         "runs are kept beside this call's and the ratios use both")
    gp.add_argument("--json", required=True)
    gp.set_defaults(fn=cmd_gpus)
    st = sub.add_parser("stages", help="per-stage ms per image of a finished run, per "
                                       "process, from its bundle records")
    st.add_argument("--output", required=True, help="the run's --output")
    st.add_argument("--json")
    st.set_defaults(fn=cmd_stages)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    a = make_parser().parse_args(argv)
    return a.fn(a)

