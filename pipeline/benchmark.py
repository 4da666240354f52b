"""`python -m pipeline.benchmark`: the seed's latency table, on any ONNX model or engine.

Two subcommands:

    run     one backend in this process -> JSON (run each backend in its own process:
            TensorRT 8.6 lives in Python 3.10 here, onnxruntime-gpu in Python 3.12)
    report  several JSON files -> one markdown table + a PNG bar chart

Host<->host time is what the seed measured: numpy batch in, numpy result out, with
every copy included. GPU-only time excludes the host copies: CUDA events around
execute_async_v3 for TensorRT, and ONNX Runtime's I/O binding with device-resident
input and output for the CUDA EP. Medians are the headline; min and max show spread.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
from typing import Any, Dict, Optional, Sequence

import numpy as np

from transforms.runtime.benchmark import BACKENDS, bench_onnx, bench_tensorrt, device_name

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


def _fmt(x: Optional[float], scale: float = 1.0, digits: int = 4) -> str:
    return "–" if x is None else f"{x * scale:.{digits}f}"


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
    records = []
    for path in a.json_files:
        with open(path) as f:
            records.append(json.load(f))
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
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    a = make_parser().parse_args(argv)
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
