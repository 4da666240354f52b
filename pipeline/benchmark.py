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
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

BACKENDS = ("tensorrt", "onnx-cuda", "onnx-tensorrt", "onnx-cpu")
ORT_PROVIDERS = {
    "onnx-cuda": ["CUDAExecutionProvider"],
    "onnx-tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider"],
    "onnx-cpu": ["CPUExecutionProvider"],
}


def summarize(host_s: Sequence[float], gpu_ms: Sequence[float], batch: int) -> Dict[str, Any]:
    med = statistics.median(host_s)
    return {
        "batch": batch, "iterations": len(host_s),
        "host_min_s": min(host_s), "host_med_s": med, "host_max_s": max(host_s),
        "gpu_med_ms": statistics.median(gpu_ms) if gpu_ms else None,
        "images_per_s": batch / med if med > 0 else None,
    }


def time_loop(fn: Callable[[], Optional[float]], warmup: int, iterations: int
              ) -> Tuple[List[float], List[float]]:
    """Call fn warmup + iterations times; fn may return a GPU-only time in ms."""
    for _ in range(warmup):
        fn()
    host, gpu = [], []
    for _ in range(iterations):
        start = time.perf_counter()
        g = fn()
        host.append(time.perf_counter() - start)
        if g is not None:
            gpu.append(g)
    return host, gpu


def _random(shape: Sequence[int], dtype: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind in "iu":
        return rng.integers(0, 255, size=shape).astype(dtype)
    return rng.uniform(-1, 1, size=shape).astype(dtype)


def bench_tensorrt(engine_path: str, batches: Sequence[int], warmup: int, iterations: int
                   ) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    from transforms.handlers.common import read_bytes
    from transforms.handlers.engine import TrtEngine
    from transforms.handlers.tensorrt import load_sidecar

    sidecar = load_sidecar(engine_path)
    results = []
    with TrtEngine(read_bytes(engine_path, "TensorRT plan"), engine_path) as engine:
        for b in batches:
            if b > engine.max_batch:
                results.append({"batch": b, "error": f"above the profile max {engine.max_batch}"})
                continue
            feeds = {t.name: _random((b,) + t.profile_max[1:], t.dtype, b) for t in engine.inputs}
            gpu_once: List[float] = []

            def once() -> float:
                gpu_once.clear()
                engine.run(feeds, gpu_ms=gpu_once)
                return gpu_once[0]

            host, gpu = time_loop(once, warmup, iterations)
            results.append(summarize(host, gpu, b))
    info = {"precision": sidecar.precision, "tensorrt_version": sidecar.tensorrt_version,
            "builder": dict(sidecar.builder), "gpu_name": sidecar.gpu_name}
    return info, results


def bench_onnx(model_path: str, backend: str, batches: Sequence[int], warmup: int,
               iterations: int, fp16: bool) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    import onnxruntime as ort

    from transforms.handlers.common import read_bytes

    wanted = ORT_PROVIDERS[backend]
    missing = [p for p in wanted if p not in ort.get_available_providers()]
    if missing:
        raise RuntimeError(f"onnxruntime {ort.__version__} lacks {missing}")
    providers: List[Any] = list(wanted)
    if backend == "onnx-tensorrt":
        providers[0] = ("TensorrtExecutionProvider", {"trt_fp16_enable": fp16})
    session = ort.InferenceSession(read_bytes(model_path), providers=providers)
    if session.get_providers()[0] != wanted[0]:
        raise RuntimeError(f"{wanted[0]} did not load; onnxruntime fell back to "
                           f"{session.get_providers()}")
    inp = session.get_inputs()[0]
    dtype = {"tensor(float)": "float32", "tensor(float16)": "float16",
             "tensor(uint8)": "uint8"}[inp.type]
    example = [d if isinstance(d, int) and d > 0 else None for d in inp.shape[1:]]
    if None in example:
        raise RuntimeError(f"input {inp.name} has dynamic non-batch dims {inp.shape}")
    outputs = [o.name for o in session.get_outputs()]
    results = []
    for b in batches:
        x = _random([b] + example, dtype, b)
        host, _ = time_loop(lambda: session.run(outputs, {inp.name: x}) and None,
                            warmup, iterations)
        gpu: List[float] = []
        if backend != "onnx-cpu":
            binding = session.io_binding()
            binding.bind_ortvalue_input(inp.name, ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
            for name in outputs:
                binding.bind_output(name, "cuda")

            def device_only() -> float:
                start = time.perf_counter()
                session.run_with_iobinding(binding)
                return (time.perf_counter() - start) * 1000.0

            _, gpu = time_loop(device_only, warmup, iterations)
        results.append(summarize(host, gpu, b))
    info = {"onnxruntime_version": ort.__version__, "providers": session.get_providers(),
            "precision": "fp16" if fp16 and backend == "onnx-tensorrt" else "fp32"}
    return info, results


def device_name() -> str:
    try:
        from transforms.handlers.cuda import device_info

        name, cc = device_info(0)
        return f"{name} (sm_{cc.replace('.', '')})"
    except Exception:  # noqa: BLE001 - CPU-only machines
        return f"CPU: {platform.processor() or platform.machine()}"


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
