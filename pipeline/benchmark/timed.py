"""One end-to-end run in a child process, timed: images/s, CPU %, NVML samples, the steady
rate from its growing shards, its start-up milestones and its audit; and `stages`, the
per-stage cost of a finished run from its bundle records."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence


def _output_of(args: Sequence[str]) -> Optional[str]:
    return args[args.index("--output") + 1] if "--output" in args else None


def start_and_tail(summary: Dict[str, Any], wall_s: float) -> Dict[str, Optional[float]]:
    """The run's two fixed costs from its start-up summary: seconds from launch to the last
    process's first prediction, and from the last bundle's end to the process's exit."""
    first = summary.get("first_prediction_since_launch_s", {}).get("max")
    last = summary.get("last_bundle_done_since_launch_s")
    return {"first_prediction_s": first,
            "tail_s": round(wall_s - last, 2) if last is not None else None}


def main_stage_rate(summary: Dict[str, Any], images: int) -> Dict[str, Optional[float]]:
    """Images/s of the run's longest runner stage (the one that scores, on Beam's local
    runner), from the stage table: the steady rate without start-up, listing or tail, and
    without sampling the shards."""
    stages = summary.get("runner_stages") or []
    main = max(stages, key=lambda s: s.get("seconds", 0.0), default=None)
    if not main or not main.get("seconds") or not images:
        return {"main_stage_s": None, "main_stage_images_per_s": None}
    return {"main_stage_s": main["seconds"],
            "main_stage_images_per_s": round(images / main["seconds"], 1)}


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
    record.update(main_stage_rate(record["startup"], record["ok"]))
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

