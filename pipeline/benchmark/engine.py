"""`run` and `report`: the seed's latency table, one backend per process, on any ONNX model
or engine (host<->host and GPU-only medians, images/s), and several runs as markdown + PNG."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
from typing import Any, Dict, Sequence

import numpy as np

from transforms.runtime.benchmark import bench_onnx, bench_tensorrt, device_name
from pipeline.benchmark.common import _fmt, _load_records


def cmd_run(a: argparse.Namespace) -> int:
    batches = [int(b) for b in a.batch_sizes.split(",")]
    record: Dict[str, Any] = {
        "label": a.label or a.backend, "backend": a.backend,
        "model": a.engine if a.backend == "tensorrt" else a.model,
        "device": device_name(), "python": platform.python_version(),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d"),
        "warmup": a.warmup, "iterations": a.iterations,
    }
    try:
        if a.backend == "tensorrt":
            if not a.engine:
                raise RuntimeError("--engine is required for --backend tensorrt")
            info, results = bench_tensorrt(a.engine, batches, a.warmup, a.iterations)
        else:
            if not a.model:
                raise RuntimeError(f"--model is required for --backend {a.backend}")
            info, results = bench_onnx(a.model, a.backend, batches, a.warmup, a.iterations,
                                       a.fp16)
        record.update(info=info, results=results)
    except Exception as exc:  # noqa: BLE001 - an unavailable backend is reported, not hidden
        record.update(error=f"{type(exc).__name__}: {exc}", results=[])
    with open(a.json, "w") as f:
        json.dump(record, f, indent=2)
    print(markdown([record]))
    return 0 if "error" not in record else 3


def markdown(records: Sequence[Dict[str, Any]]) -> str:
    batches = sorted({r["batch"] for rec in records for r in rec.get("results", [])
                      if "error" not in r})
    head = "| backend | " + " | ".join(f"batch {b}: min / **med** / max s" for b in batches)
    head += " | " + " | ".join(f"batch {b}: images/s · GPU-only ms" for b in batches) + " |"
    lines = [head, "|" + "---|" * (1 + 2 * len(batches))]
    for rec in records:
        if "error" in rec:
            lines.append(f"| {rec['label']} | unavailable: {rec['error']} |"
                         + " |" * (2 * len(batches) - 1))
            continue
        by_b = {r["batch"]: r for r in rec["results"]}
        cells = []
        for b in batches:
            r = by_b.get(b)
            cells.append("–" if not r or "error" in r else
                         f"{_fmt(r['host_min_s'])} / **{_fmt(r['host_med_s'])}** / "
                         f"{_fmt(r['host_max_s'])}")
        for b in batches:
            r = by_b.get(b)
            cells.append("–" if not r or "error" in r else
                         f"{_fmt(r['images_per_s'], digits=0)} · {_fmt(r['gpu_med_ms'], digits=2)}")
        lines.append(f"| {rec['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def chart(records: Sequence[Dict[str, Any]], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in records if "error" not in r]
    batches = sorted({x["batch"] for r in ok for x in r["results"] if "error" not in x})
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / max(len(ok), 1)
    for i, rec in enumerate(ok):
        by_b = {x["batch"]: x for x in rec["results"] if "error" not in x}
        meds = [by_b[b]["host_med_s"] * 1000 if b in by_b else 0 for b in batches]
        bars = ax.bar(np.arange(len(batches)) + i * width, meds, width, label=rec["label"])
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks(np.arange(len(batches)) + width * (len(ok) - 1) / 2)
    ax.set_xticklabels([f"batch {b}" for b in batches])
    ax.set_ylabel("median ms per batch, host→host")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def cmd_report(a: argparse.Namespace) -> int:
    records = _load_records(a.json_files)
    table = markdown(records)
    devices = sorted({r["device"] for r in records})
    dates = sorted({r["date"] for r in records})
    text = (f"Measured {', '.join(dates)} on {', '.join(devices)}; "
            f"{records[0]['iterations']} timed iterations after {records[0]['warmup']} "
            f"warm-up per cell.\n\n{table}\n")
    print(text)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(text)
    if a.png:
        chart(records, a.png, a.title or f"{', '.join(devices)}")
    return 0

