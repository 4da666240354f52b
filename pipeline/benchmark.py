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
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import json
import os
import platform
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from transforms.runtime.benchmark import BACKENDS, bench_onnx, bench_tensorrt, device_name


def affinity() -> List[int]:
    """The cores this process may run on (taskset, a cgroup), not the machine's: a run
    pinned to 16 of 32 cores must say 16."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))       # not Linux


def usable_cores() -> int:
    return len(affinity())


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


def _load_records(paths: Sequence[str]) -> List[Dict[str, Any]]:
    """The JSON records a report combines, in the order given."""
    records = []
    for path in paths:
        with open(path) as f:
            records.append(json.load(f))
    return records


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


def _output_of(args: Sequence[str]) -> Optional[str]:
    return args[args.index("--output") + 1] if "--output" in args else None


def start_and_tail(summary: Dict[str, Any], wall_s: float) -> Dict[str, Optional[float]]:
    """The run's two fixed costs from its start-up summary: seconds from launch to the last
    process's first prediction, and from the last bundle's end to the process's exit."""
    first = summary.get("first_prediction_since_launch_s", {}).get("max")
    last = summary.get("last_bundle_done_since_launch_s")
    return {"first_prediction_s": first,
            "tail_s": round(wall_s - last, 2) if last is not None else None}


def _timed_child(args: List[str], env: Optional[Dict[str, str]] = None,
                 devices: Sequence[int] = (), cpus: Optional[Sequence[int]] = None
                 ) -> Dict[str, Any]:
    """Run one end-to-end configuration in a fresh process while NVML samples the GPU;
    images/s is the child's own summary (ok / wall), CPU % its user + system time / wall.
    ``devices`` (NVML indices, which ignore CUDA_VISIBLE_DEVICES) are sampled one by one
    into ``per_gpu``; GPU 0 is always the headline sampler. When the child writes to an
    --output, its shards are watched too, for the steady rate without start-up. ``cpus``
    pins the child (and every SDK process it starts) to those cores."""
    import contextlib
    import resource
    import subprocess

    from transforms.runtime.benchmark import GpuSampler, ShardProgress

    from transforms.runtime import startup

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    launched = time.time()
    out = _output_of(args)
    milestones = tempfile.mkdtemp(prefix="startup-")
    env = {**(env or {}), startup.ENV: milestones}
    with contextlib.ExitStack() as stack:
        progress = stack.enter_context(ShardProgress(out)) if out else None
        sampler = stack.enter_context(GpuSampler())
        per_gpu = {d: stack.enter_context(GpuSampler(d)) for d in devices}
        done = subprocess.run([sys.executable] + args, capture_output=True, text=True,
                              env={**os.environ, **env},
                              preexec_fn=None if cpus is None
                              else (lambda: os.sched_setaffinity(0, cpus)))
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    line = next((x for x in reversed(done.stdout.splitlines()) if x.startswith("summary:")), "")
    fields = dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)
    record = {"command": "python " + " ".join(args), "returncode": done.returncode,
              "summary": line, "images_per_s": float(fields.get("images/s", "nan")),
              "ok": int(fields.get("ok", "0")), "process_wall_s": wall,
              "cpu_percent": 100.0 * cpu / wall if wall > 0 else None, **sampler.summary()}
    if cpus is not None:
        record["cpus"] = len(cpus)
    record["startup"] = startup.summarize(milestones, launched)
    record.update(start_and_tail(record["startup"], wall))
    if out:
        record["stages"] = _stages_or_error(out)
    if out and "pipeline.main" in args:
        record["audit"] = _audit_or_error(args, out)
    if devices:
        record["per_gpu"] = {str(d): g.summary() for d, g in per_gpu.items()}
    if progress is not None:
        record.update(progress.steady_rate(record["ok"] + int(fields.get("failed", "0"))))
    if done.returncode:
        record["stderr_tail"] = done.stderr[-2000:]
    return record


def _stages_or_error(output: str) -> Dict[str, Any]:
    """A finished run's per-stage cost (``stage_costs``), or why there is none: a
    benchmark reports a run it could not break down, it does not fail on it."""
    try:
        return stage_costs(output)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        return {"error": f"{type(exc).__name__}: {exc}"}


def _audit_or_error(args: Sequence[str], output: str) -> Dict[str, Any]:
    """Did the run write every input once (pipeline.audit's counts)? A figure from a run
    that lost images must say so beside it: on the H200 one wrote 48,620 of 50,000."""
    from pipeline.audit import audit

    inputs = [args[i + 1] for i, x in enumerate(args) if x == "--input"]
    input_list = next((args[i + 1] for i, x in enumerate(args) if x == "--input_list"), None)
    try:
        report = audit(inputs, output, examples=3, input_list=input_list)
    except Exception as exc:  # noqa: BLE001 - reported beside the run, not fatal to it
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {k: v for k, v in report.items() if not k.endswith("_examples")
            and k != "missing_kinds"} | {"missing_examples": report["missing_examples"]}


def _ratio(num: Optional[float], den: Optional[float]) -> Optional[float]:
    """num / den, or None where either is missing, zero or NaN (a run that failed)."""
    ok = all(x is not None and x == x and x != 0 for x in (num, den))
    return round(num / den, 3) if ok else None


def _corpus_glob(a: argparse.Namespace) -> str:
    """The corpus's images (scripts/make_corpus.py names them <corpus_name>-NNNNNN.*)."""
    return os.path.join(a.corpus, f"{a.corpus_name}-*")


def _unique_files(a: argparse.Namespace) -> List[str]:
    """The corpus's generated photos without the hard links of ``make_corpus --links``
    (<corpus_name>-lNNNNNNN.*): what DALI alone and the CPU pool ceiling are timed on."""
    return sorted(glob.glob(os.path.join(a.corpus, f"{a.corpus_name}-[0-9]*")))


def _manifest(a: argparse.Namespace) -> str:
    """The corpus's URIs in a manifest file (one per line) beside the corpus, written once:
    the input of a run of millions, as a user would list GCS objects (pipeline.main
    --input_list) rather than have one worker match them."""
    path = os.path.join(a.corpus, "manifest.txt")
    if not os.path.exists(path):
        with open(path + ".tmp", "w") as f:
            f.writelines(uri + "\n" for uri in sorted(glob.glob(_corpus_glob(a))))
        os.replace(path + ".tmp", path)
    return path


def _main_command(a: argparse.Namespace, *extra: str) -> List[str]:
    """``python -m pipeline.main`` over the corpus on the plan, batches of exactly --batch
    (the corpus as a glob, or with --manifest as an --input_list)."""
    source = (["--input_list", _manifest(a)] if getattr(a, "manifest", False)
              else ["--input", _corpus_glob(a)])
    return ["-m", "pipeline.main", *source, "--backend", "tensorrt",
            "--engine", a.engine, "--min_batch_size", str(a.batch),
            "--max_batch_size", str(a.batch), *extra]


ROWS = ("engine", "dali", "gpu", "cpu", "stock", "pool")


def cmd_pipeline(a: argparse.Namespace) -> int:
    """Engine alone, DALI alone, end to end (gpu and cpu preprocessing) and the stock-Beam
    baseline, over one corpus, one plan and one batch size, in one run."""
    from transforms.runtime.benchmark import bench_dali
    from transforms.spec import OPEN_NSFW_SPEC

    rows = set(a.rows.split(","))
    if not rows <= set(ROWS):
        raise SystemExit(f"--rows {a.rows!r}: expected a comma list of {ROWS}")
    files = sorted(glob.glob(_corpus_glob(a)))
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
        record["cpu_rows_images"] = len(glob.glob(_corpus_glob(slow)))
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
    ("end to end, --preprocess cpu", "e2e_cpu_images_per_s", "e2e_cpu"),
    ("  the same, steady (no start-up)", "e2e_cpu_steady_images_per_s", "e2e_cpu"),
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
            if detail and "steady" not in key and r.get(key) is not None:
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


def _decode_and_preprocess(path: str) -> int:
    from transforms.decode import decode_image
    from transforms.preprocess import preprocess
    from transforms.spec import OPEN_NSFW_SPEC as spec

    with open(path, "rb") as f:
        return preprocess(decode_image(f.read(), target_size=spec.resize_size,
                                       alpha_background=spec.alpha_background), spec).nbytes


def pool_ceiling(files: List[str], workers: int) -> float:
    """Images/s of the CPU path's own decode + preprocess code in a plain process pool:
    the ceiling a Beam run of the same code on the same cores can approach."""
    from multiprocessing import Pool

    with Pool(workers) as pool:
        pool.map(_decode_and_preprocess, files[:workers * 4])        # warm the workers
        start = time.perf_counter()
        pool.map(_decode_and_preprocess, files, chunksize=16)
        return len(files) / (time.perf_counter() - start)


def cmd_sharing(a: argparse.Namespace) -> int:
    """The CPU path on every core of one worker: 1 process x N threads, N processes with
    their own engines, N processes sharing one engine (model_copies), against the pool
    ceiling of the same decode code; GPU memory per process from NVML."""
    from transforms.runtime.benchmark import GpuSampler

    files = sorted(glob.glob(_corpus_glob(a)))
    n = a.workers
    with GpuSampler() as idle:
        time.sleep(1.0)
    idle_mib = idle.summary().get("gpu_mem_max_mib") or 0.0
    record: Dict[str, Any] = {
        "corpus": a.corpus_name, "images": len(files), "batch_size": a.batch, "plan": a.engine,
        "gpu": device_name(), "cores": usable_cores(), "workers": n,
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d"),
        "command": "python -m pipeline.benchmark " + " ".join(sys.argv[1:]),
        "cpu_pool_ceiling_images_per_s": pool_ceiling(files, n), "gpu_idle_mem_mib": idle_mib,
    }
    modes = {
        "1_process_1_thread": ([], 1),
        f"1_process_{n}_threads": ([f"--direct_num_workers={n}",
                                    "--direct_running_mode=multi_threading"], 1),
        f"{n}_processes_own_engines": ([f"--direct_num_workers={n}",
                                        "--direct_running_mode=multi_processing"], n),
        f"{n}_processes_shared_engine": ([f"--direct_num_workers={n}",
                                          "--direct_running_mode=multi_processing",
                                          "--model_copies", "1"], n),
    }
    rows = {}
    for name, (extra, processes) in modes.items():
        r = _timed_child(_main_command(a, "--preprocess", "cpu", *extra, "--output",
                                       tempfile.mkdtemp(prefix="share-")))
        used = (r.get("gpu_mem_max_mib") or idle_mib) - idle_mib
        r["gpu_mem_mb_per_process"] = used / processes
        r["gpu_mem_mb_total"] = used
        r["vs_pool_ceiling"] = r["images_per_s"] / record["cpu_pool_ceiling_images_per_s"]
        rows[name] = r
    record["rows"] = rows
    record["gpu_mem_mb_per_process"] = {k: v["gpu_mem_mb_per_process"] for k, v in rows.items()}
    with open(a.json, "w") as f:
        json.dump(record, f, indent=2)
    print(f"| CPU path, {len(files)} {a.corpus_name} images, batch {a.batch} | images/s | "
          "× pool ceiling | GPU MB total | CPU % |\n| --- | --- | --- | --- | --- |")
    print(f"| pool ceiling ({n} processes, decode + preprocess only) | "
          f"{record['cpu_pool_ceiling_images_per_s']:.0f} | 1.00 | – | – |")
    for name, r in rows.items():
        print(f"| {name} | {r['images_per_s']:.0f} | {r['vs_pool_ceiling']:.2f} | "
              f"{r['gpu_mem_mb_total']:.0f} | {_fmt(r.get('cpu_percent'), digits=0)} |")
    return 0 if all(r["returncode"] == 0 for r in rows.values()) else 3


def images_by_device(output: str) -> Dict[str, int]:
    """Images each device scored, summed over a run's bundle records (``cuda:N`` as the
    SDK process saw it, so relative to its CUDA_VISIBLE_DEVICES)."""
    from transforms.io import read_jsonl

    counts: Dict[str, int] = {}
    for record in read_jsonl(os.path.join(output, "bundles-*.jsonl")):
        for device, n in record.get("images_by_device", {}).items():
            counts[device] = counts.get(device, 0) + int(n)
    return counts


STAGES = ("read_ms", "decode_ms", "preprocess_ms", "inference_ms", "postprocess_ms")


def stage_costs(output: str) -> Dict[str, Any]:
    """Per-image cost of each stage from a run's bundle records (the product's own
    timings, so they need no profiler): read, decode, preprocess, inference (each batch's
    time counted once), postprocess, and the rest of each bundle's wall time (Beam's own
    work between DoFns, batching waits, writes). Per process, and for the run."""
    from transforms.io import read_jsonl

    per_pid: Dict[str, Dict[str, float]] = {}
    for record in read_jsonl(os.path.join(output, "bundles-*.jsonl")):
        acc = per_pid.setdefault(f"{record['worker']}:{record['pid']}",
                                 {"images": 0, "wall_ms": 0.0, **{k: 0.0 for k in STAGES}})
        acc["images"] += record["images"]
        acc["wall_ms"] += record["wall_ms"]
        for k in STAGES:
            acc[k] += record.get(k, 0.0)
    total = {"images": 0, "wall_ms": 0.0, **{k: 0.0 for k in STAGES}}
    for acc in per_pid.values():
        for k in total:
            total[k] += acc[k]

    def per_image(acc: Dict[str, float]) -> Dict[str, float]:
        n = max(acc["images"], 1)
        row = {k.replace("_ms", "_ms_per_image"): round(acc[k] / n, 3) for k in STAGES}
        staged = sum(acc[k] for k in STAGES)
        row["other_ms_per_image"] = round(max(acc["wall_ms"] - staged, 0.0) / n, 3)
        row["bundle_wall_ms_per_image"] = round(acc["wall_ms"] / n, 3)
        row["images"] = int(acc["images"])
        return row

    return {"processes": len(per_pid), "run": per_image(total),
            "per_process": {pid: per_image(acc) for pid, acc in sorted(per_pid.items())}}


def cmd_stages(a: argparse.Namespace) -> int:
    costs = stage_costs(a.output)
    cols = [k.replace("_ms", "_ms_per_image") for k in STAGES] + ["other_ms_per_image",
                                                                   "bundle_wall_ms_per_image"]
    print("| process | images | " + " | ".join(c.replace("_ms_per_image", "") for c in cols)
          + " |\n|" + " --- |" * (len(cols) + 2))
    for name, row in list(costs["per_process"].items()) + [("run", costs["run"])]:
        print(f"| {name} | {row['images']} | " + " | ".join(f"{row[c]:.2f}" for c in cols) + " |")
    print("(ms per image; inference is each batch's time counted once; 'other' is the rest "
          "of the bundles' wall time)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(costs, f, indent=2)
    return 0


def visible_gpus() -> List[int]:
    """NVML indices of the GPUs this process may use (CUDA_VISIBLE_DEVICES as indices)."""
    from transforms.runtime import cuda

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpus = ([int(x) for x in visible.split(",") if x.strip().isdigit()]
            if visible is not None else list(range(cuda.device_count())))
    if not gpus:
        raise SystemExit(f"benchmark gpus: expected at least one visible GPU, got none "
                         f"(CUDA_VISIBLE_DEVICES={visible!r})")
    return gpus


def gpu_runs(gpus: Sequence[int], workers_per_gpu: int, cores_per_gpu: Optional[int],
             cores: Sequence[int]) -> Dict[str, Dict[str, Any]]:
    """The configurations `benchmark gpus` compares: one GPU, then every visible GPU, each
    with ``workers_per_gpu`` SDK processes per GPU. With ``cores_per_gpu`` each run is
    pinned to that many cores per GPU it uses, as Dataflow's GPU machine types scale vCPUs
    with GPUs (a2-highgpu-1g/-2g: 12/24); a third run gives the one GPU every core, to show
    whether the host or the GPU bounds it."""
    runs: Dict[str, Dict[str, Any]] = {}
    for name, use in (("one_gpu", list(gpus[:1])), ("all_gpus", list(gpus))):
        cpus = None
        if cores_per_gpu:
            need = cores_per_gpu * len(use)
            if need > len(cores):
                raise SystemExit(f"benchmark gpus: --cores_per_gpu {cores_per_gpu} x "
                                 f"{len(use)} GPUs needs {need} cores, expected at most "
                                 f"{len(cores)} (this process's affinity)")
            cpus = list(cores[:need])
        runs[name] = {"visible": use, "workers": workers_per_gpu * len(use), "cpus": cpus}
    if cores_per_gpu and len(gpus) > 1:
        runs["one_gpu_all_cores"] = {"visible": list(gpus[:1]),
                                     "workers": workers_per_gpu * len(gpus), "cpus": None}
    return runs


def cmd_gpus(a: argparse.Namespace) -> int:
    """The same run on one GPU and on every visible GPU of the machine: images/s (with
    start-up, and steady), and per GPU the images scored (bundle records), NVML
    utilisation and memory."""
    gpus = visible_gpus()
    files = sorted(glob.glob(_corpus_glob(a)))
    cores = affinity()
    plan = gpu_runs(gpus, a.workers_per_gpu, a.cores_per_gpu, cores)
    record: Dict[str, Any] = {
        "corpus": a.corpus_name, "images": len(files), "batch_size": a.batch, "plan": a.engine,
        "gpu": device_name(), "gpus": len(gpus), "cores": usable_cores(),
        "preprocess": a.preprocess, "workers_per_gpu": a.workers_per_gpu,
        "cores_per_gpu": a.cores_per_gpu,
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d"),
        "command": "python -m pipeline.benchmark " + " ".join(sys.argv[1:]),
    }
    runs = {}
    for name, cfg in plan.items():
        out = tempfile.mkdtemp(prefix=f"gpus-{name}-")
        r = _timed_child(_main_command(
            a, "--preprocess", a.preprocess, f"--direct_num_workers={cfg['workers']}",
            "--direct_running_mode=multi_processing", "--output", out),
            env={"CUDA_VISIBLE_DEVICES": ",".join(map(str, cfg["visible"]))}, devices=gpus,
            cpus=cfg["cpus"])
        r.update(visible=cfg["visible"], sdk_processes=cfg["workers"],
                 images_by_device=images_by_device(out))
        runs[name] = r
    record["runs"] = runs
    for name, r in runs.items():
        record[f"{name}_images_per_s"] = r["images_per_s"]
        record[f"{name}_steady_images_per_s"] = r.get("steady_images_per_s")
    if len(gpus) == 2:
        record["two_gpu_images_per_s"] = record["all_gpus_images_per_s"]
        record["two_gpu_steady_images_per_s"] = record["all_gpus_steady_images_per_s"]
    record["speedup"] = _ratio(record["all_gpus_images_per_s"], record["one_gpu_images_per_s"])
    record["speedup_steady"] = _ratio(record["all_gpus_steady_images_per_s"],
                                      record["one_gpu_steady_images_per_s"])
    total = sum(runs["all_gpus"]["images_by_device"].values())
    record["all_gpus_share_by_device"] = {
        d: round(n / total, 3) for d, n in runs["all_gpus"]["images_by_device"].items()
    } if total else {}
    with open(a.json, "w") as f:
        json.dump(record, f, indent=2)
    print(f"| {a.preprocess} path, {len(files)} images | SDK processes | cores | images/s "
          "| steady images/s | images per GPU | GPU util % per GPU | GPU MiB per GPU |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in runs.items():
        util = {d: _fmt(g.get("gpu_util_mean"), digits=0) for d, g in r["per_gpu"].items()}
        mem = {d: _fmt(g.get("gpu_mem_max_mib"), digits=0) for d, g in r["per_gpu"].items()}
        print(f"| {name} ({r['visible']}) | {r['sdk_processes']} | "
              f"{r.get('cpus', len(cores))} | {r['images_per_s']:.0f} | "
              f"{_fmt(r.get('steady_images_per_s'), digits=0)} | {r['images_by_device']} | "
              f"{util} | {mem} |")
    print(f"speedup all/one: {_fmt(record['speedup'], digits=2)} end to end, "
          f"{_fmt(record['speedup_steady'], digits=2)} steady")
    return 0 if all(r["returncode"] == 0 for r in runs.values()) else 3


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


if __name__ == "__main__":
    sys.exit(main())
