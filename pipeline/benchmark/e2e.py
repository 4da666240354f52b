"""`pipeline` and `pipeline-report`: engine alone, DALI alone, end to end on both paths,
Beam's stock handler and the CPU pool ceiling over one corpus, with the issues' ratios."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
from typing import Any, Dict, Optional, Sequence

import numpy as np

from transforms.runtime.benchmark import bench_tensorrt, device_name
from pipeline.benchmark.common import _corpus_files, _corpus_glob, _fmt, _load_records, _main_command, _ratio, _unique_files, usable_cores
from pipeline.benchmark.cpu import pool_ceiling
from pipeline.benchmark.timed import _timed_child


ROWS = ("engine", "dali", "gpu", "cpu", "stock", "pool")


def cmd_pipeline(a: argparse.Namespace) -> int:
    """Engine alone, DALI alone, end to end (gpu and cpu preprocessing) and the stock-Beam
    baseline, over one corpus, one plan and one batch size, in one run."""
    from transforms.runtime.benchmark import bench_dali
    from transforms.spec import OPEN_NSFW_SPEC

    rows = set(a.rows.split(","))
    if not rows <= set(ROWS):
        raise SystemExit(f"--rows {a.rows!r}: expected a comma list of {ROWS}")
    files = _corpus_files(a)
    unique = _unique_files(a)
    gpu_name = device_name()
    record: Dict[str, Any] = {
        "corpus": a.corpus_name, "corpus_dir": a.corpus, "images": len(files),
        "unique_images": len(unique),
        "batch_size": a.batch, "plan": a.engine, "gpu": gpu_name, "cores": usable_cores(),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d"),
        "command": "python -m pipeline.benchmark " + " ".join(sys.argv[1:]),
        "rows": sorted(rows, key=ROWS.index),
    }
    if "engine" in rows:
        _, engine = bench_tensorrt(a.engine, [a.batch], 10, 50)
        record["engine"] = engine[0]
        record["engine_images_per_s"] = engine[0].get("images_per_s")
        gpu_ms = engine[0].get("gpu_med_ms")
        record["engine_gpu_only_images_per_s"] = a.batch / (gpu_ms / 1000) if gpu_ms else None
    if "dali" in rows:
        jpegs = [open(f, "rb").read() for f in unique if f.endswith((".jpg", ".jpeg"))]
        jpegs = jpegs[:a.dali_images] if a.dali_images else jpegs
        dali = bench_dali(jpegs, OPEN_NSFW_SPEC, a.batch)
        record["gpu_preprocess"] = dali
        record["gpu_preprocess_images_per_s"] = dali["images_per_s"]
    # the CPU-path and stock rows may run over a smaller corpus (--cpu_corpus): at their
    # ~1,800 images/s a multi-million-URI corpus would take most of an hour
    slow = argparse.Namespace(**{**vars(a), "corpus": a.cpu_corpus or a.corpus})
    if a.cpu_corpus:
        record["cpu_rows_corpus_dir"] = a.cpu_corpus
        record["cpu_rows_images"] = len(_corpus_files(slow))
    runs = {}
    for name, extra, corpus in (("e2e_gpu", ["--preprocess", "gpu", *a.gpu_pipeline_args.split()],
                                 a), ("e2e_cpu", ["--preprocess", "cpu"], slow)):
        if name[4:] not in rows:
            continue
        # a fresh output prefix each time: an earlier run's predictions would be skipped
        runs[name] = _timed_child(_main_command(
            corpus, *(a.pipeline_args or []), *extra, "--output",
            tempfile.mkdtemp(prefix=f"bench-{name}-")))
    if a.stock_engine and "stock" in rows:
        # the same corpus and runner flags as ours: only the handler differs
        runs["stock_beam"] = _timed_child([
            "-m", "pipeline.stock_baseline", "--input", _corpus_glob(slow), "--engine",
            a.stock_engine, "--batch", str(a.batch), "--output",
            tempfile.mkdtemp(prefix="bench-stock-"), *(a.pipeline_args or [])])
    record["runs"] = runs
    for name, key in (("e2e_gpu", "e2e_gpu"), ("e2e_cpu", "e2e_cpu"), ("stock_beam", "stock_beam")):
        if name in runs:
            record[f"{key}_images_per_s"] = runs[name]["images_per_s"]
            # the same runs without their start-up (shard growth between 10% and 90% written)
            record[f"{key}_steady_images_per_s"] = runs[name].get("steady_images_per_s")
            # and the scoring stage's own rate, from the runner's stage table
            record[f"{key}_main_stage_images_per_s"] = runs[name].get("main_stage_images_per_s")
    if "e2e_gpu" in runs:
        record["gpu_util_mean_gpu_path"] = runs["e2e_gpu"].get("gpu_util_mean")
    if a.pool_images and "pool" in rows:
        # the CPU path's ceiling on these cores: its own decode code in a plain pool
        record["cpu_pool_ceiling_images_per_s"] = pool_ceiling(
            unique[:a.pool_images], usable_cores())
    record.update(ratios(record))
    with open(a.json, "w") as f:
        json.dump(record, f, indent=2)
    if a.png:
        pipeline_chart([record], a.png)
    print(pipeline_table([record]))
    return 0 if all(r["returncode"] == 0 for r in runs.values()) else 3


def ratios(record: Dict[str, Any]) -> Dict[str, Optional[float]]:
    """The issues' bars as numbers, from one run's figures: end to end (with start-up, and
    steady) against the engine, DALI alone, the CPU path, the stock handler, the pool."""
    engine = record.get("engine_images_per_s")
    dali = record.get("gpu_preprocess_images_per_s")
    gpu_cap = min(x for x in (engine, dali) if x) if (engine or dali) else None
    out: Dict[str, Optional[float]] = {}
    for kind in ("", "steady_"):
        gpu = record.get(f"e2e_gpu_{kind}images_per_s")
        cpu = record.get(f"e2e_cpu_{kind}images_per_s")
        out[f"e2e_gpu_{kind}vs_engine"] = _ratio(gpu, engine)
        out[f"e2e_gpu_{kind}vs_min_engine_dali"] = _ratio(gpu, gpu_cap)
        out[f"e2e_gpu_{kind}vs_cpu"] = _ratio(gpu, cpu)
        out[f"e2e_gpu_{kind}vs_stock_beam"] = _ratio(
            gpu, record.get(f"stock_beam_{kind}images_per_s"))
        out[f"e2e_cpu_{kind}vs_pool_ceiling"] = _ratio(
            cpu, record.get("cpu_pool_ceiling_images_per_s"))
    # end to end against the others' steady rates: the strictest comparison, and the fair
    # one when the CPU-path and stock rows ran over a smaller corpus (--cpu_corpus)
    gpu = record.get("e2e_gpu_images_per_s")
    out["e2e_gpu_vs_cpu_steady"] = _ratio(gpu, record.get("e2e_cpu_steady_images_per_s"))
    out["e2e_gpu_vs_stock_beam_steady"] = _ratio(gpu, record.get("stock_beam_steady_images_per_s"))
    return out


PIPELINE_ROWS = (
    ("engine alone, host→host", "engine_images_per_s", None),
    ("engine alone, GPU only", "engine_gpu_only_images_per_s", None),
    ("DALI preprocessing alone", "gpu_preprocess_images_per_s", None),
    ("end to end, --preprocess gpu", "e2e_gpu_images_per_s", "e2e_gpu"),
    ("  the same, steady (no start-up)", "e2e_gpu_steady_images_per_s", "e2e_gpu"),
    ("  its scoring stage (runner's stage table)", "e2e_gpu_main_stage_images_per_s", "e2e_gpu"),
    ("end to end, --preprocess cpu", "e2e_cpu_images_per_s", "e2e_cpu"),
    ("  the same, steady (no start-up)", "e2e_cpu_steady_images_per_s", "e2e_cpu"),
    ("  its scoring stage (runner's stage table)", "e2e_cpu_main_stage_images_per_s", "e2e_cpu"),
    ("CPU pool ceiling (decode + preprocess only)", "cpu_pool_ceiling_images_per_s", None),
    ("Beam's stock TensorRTEngineHandlerNumPy", "stock_beam_images_per_s", "stock_beam"),
    ("  the same, steady (no start-up)", "stock_beam_steady_images_per_s", "stock_beam"),
)


def pipeline_table(records: Sequence[Dict[str, Any]]) -> str:
    """One markdown table, a column per corpus run: images/s, with GPU util and CPU % for
    the end-to-end rows, then the ratios the issues set bars on."""
    head = "| images/s | " + " | ".join(
        f"{r['corpus']} ({r['images']} images, batch {r['batch_size']}, {r['cores']} cores)"
        for r in records) + " |"
    lines = [head, "| --- |" + " --- |" * len(records)]
    for label, key, run in PIPELINE_ROWS:
        cells = []
        for r in records:
            cell = _fmt(r.get(key), digits=0)
            detail = r.get("runs", {}).get(run) if run else None
            if detail and detail.get("returncode"):
                cells.append(f"failed (exit {detail['returncode']})")
                continue
            if detail and detail.get("audit", {}).get("missing"):
                cell += f" LOST {detail['audit']['missing']} images"
            if detail and key == f"{run}_images_per_s" and r.get(key) is not None:
                cell += (f" (GPU {_fmt(detail.get('gpu_util_mean'), digits=0)}%, "
                         f"CPU {_fmt(detail.get('cpu_percent'), digits=0)}%)")
            if detail and "steady" in key and detail.get("first_prediction_s") is not None:
                cell += (f" (first prediction at {_fmt(detail['first_prediction_s'], digits=1)}"
                         f" s, tail {_fmt(detail.get('tail_s'), digits=1)} s)")
            cells.append(cell)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    bars = [ratios(r) for r in records]
    for key in sorted({k for b in bars for k in b}):
        lines.append(f"| {key} | " + " | ".join(_fmt(b.get(key), digits=2) for b in bars)
                     + " |")
    return "\n".join(lines)


def pipeline_chart(records: Sequence[Dict[str, Any]], path: str) -> None:
    """Grouped bars, one group per corpus run, one bar per PIPELINE_ROWS entry it has."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5))
    width = 0.8 / len(PIPELINE_ROWS)
    for i, (label, key, _) in enumerate(PIPELINE_ROWS):
        values = [r.get(key) or 0 for r in records]
        bars = ax.bar(np.arange(len(records)) + i * width, values, width, label=label.strip())
        ax.bar_label(bars, fmt="%.0f", fontsize=6, rotation=90, padding=2)
    ax.set_xticks(np.arange(len(records)) + width * (len(PIPELINE_ROWS) - 1) / 2)
    ax.set_xticklabels([f"{r['corpus']}, {r['images']} images" for r in records])
    ax.set_ylabel("images/s")
    gpus = sorted({r["gpu"] for r in records})
    ax.set_title(f"open_nsfw fp16, batch {records[0]['batch_size']}, {', '.join(gpus)}",
                 fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def cmd_pipeline_report(a: argparse.Namespace) -> int:
    records = _load_records(a.json_files)
    text = pipeline_table(records)
    print(text)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(text + "\n")
    if a.png:
        pipeline_chart(records, a.png)
    return 0

