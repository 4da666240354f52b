"""`gpus`: the same run on one GPU and on every visible GPU, with each GPU's images,
utilisation and memory (issue "Prove a two-GPU worker")."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
from typing import Any, Dict, List, Optional, Sequence

from transforms.runtime.benchmark import device_name
from pipeline.benchmark.common import _corpus_files, _fmt, _main_command, _ratio, affinity, usable_cores
from pipeline.benchmark.timed import _timed_child, images_by_device


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


def select_runs(plan: Dict[str, Dict[str, Any]], names: Optional[str]) -> Dict[str, Dict[str, Any]]:
    """The planned runs named in ``--runs`` (a comma list; None: all of them), so the
    one-GPU and the all-GPU runs of a long corpus can each take one device call."""
    if not names:
        return plan
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in plan]
    if unknown or not wanted:
        raise SystemExit(f"benchmark gpus: --runs {names!r}; expected a comma list of "
                         f"{', '.join(plan)}")
    return {n: plan[n] for n in wanted}


MERGE_MUST_MATCH = ("corpus", "images", "batch_size", "plan", "gpu", "preprocess",
                    "workers_per_gpu", "cores_per_gpu")


def merged_runs(record: Dict[str, Any], path: Optional[str]) -> Dict[str, Any]:
    """The runs of an earlier `benchmark gpus --json` of the same configuration (the other
    half of a split measurement); a different corpus, plan or layout is refused."""
    if not path:
        return {}
    with open(path) as f:
        earlier = json.load(f)
    for key in MERGE_MUST_MATCH:
        if earlier.get(key) != record.get(key):
            raise SystemExit(f"benchmark gpus --merge {path}: {key} is {earlier.get(key)!r} "
                             f"there; expected {record.get(key)!r} as in this run")
    return dict(earlier.get("runs", {}))


SPEEDUP_TARGETS = (1.5, 1.7, 1.9)


def growth_rate(run: Dict[str, Any]) -> Optional[float]:
    """Images/s by which a run's wall grows: the steady rate sampled from its shards, else
    its scoring stage's. The steady rate comes first because the local runner's stage can
    open before the models load: in the eighth session's 8M two-GPU run the stage held 35 s
    of start-up (386.6 s against 351.7 s from first prediction to last bundle), which made
    that run's time outside it 17 s, less than the one-GPU run's."""
    return run.get("steady_images_per_s") or run.get("main_stage_images_per_s")


def fixed_seconds(run: Dict[str, Any]) -> Optional[float]:
    """A run's time that does not grow with the images (start-up, listing, the tail): its
    wall less its images at the rate its wall grows by (``growth_rate``)."""
    ok, rate, grows = run.get("ok"), run.get("images_per_s"), growth_rate(run)
    if not ok or not rate or not grows:
        return None
    return round(ok / rate - ok / grows, 1)


def images_for_speedup(one: Dict[str, Any], two: Dict[str, Any],
                       target: float) -> Optional[int]:
    """How many images a worker must score before the all-GPU run is ``target`` times the
    one-GPU run end to end, each modelled as its fixed time plus images at its growth rate.
    None if it never gets there (the growth rates' own ratio is at most the target) or a
    figure is missing."""
    f1, f2 = fixed_seconds(one), fixed_seconds(two)
    r1, r2 = growth_rate(one), growth_rate(two)
    if None in (f1, f2) or not r1 or not r2:
        return None
    per_image = 1 / r1 - target / r2          # seconds the gap closes by, per image
    if per_image <= 0:
        return None
    return max(0, round((target * f2 - f1) / per_image))


def summarize_runs(record: Dict[str, Any], gpus: int) -> None:
    """The top-level keys (issue 13's names) from whichever runs the record holds."""
    runs = record["runs"]
    for name, r in runs.items():
        record[f"{name}_images_per_s"] = r["images_per_s"]
        record[f"{name}_steady_images_per_s"] = r.get("steady_images_per_s")
    if gpus == 2 and "all_gpus" in runs:
        record["two_gpu_images_per_s"] = record["all_gpus_images_per_s"]
        record["two_gpu_steady_images_per_s"] = record["all_gpus_steady_images_per_s"]
    both = "all_gpus" in runs and "one_gpu" in runs
    record["speedup"] = (_ratio(record["all_gpus_images_per_s"], record["one_gpu_images_per_s"])
                         if both else None)
    record["speedup_steady"] = (_ratio(record["all_gpus_steady_images_per_s"],
                                       record["one_gpu_steady_images_per_s"]) if both else None)
    # the scoring stages alone (the runner's stage table): a steady ratio without sampling
    record["speedup_main_stage"] = (_ratio(runs["all_gpus"].get("main_stage_images_per_s"),
                                           runs["one_gpu"].get("main_stage_images_per_s"))
                                    if both else None)
    for r in runs.values():
        r["fixed_s"] = fixed_seconds(r)
    record["images_for_speedup"] = ({f"{t}": images_for_speedup(runs["one_gpu"],
                                                               runs["all_gpus"], t)
                                     for t in SPEEDUP_TARGETS} if both else None)
    by_device = runs.get("all_gpus", {}).get("images_by_device", {})
    total = sum(by_device.values())
    record["all_gpus_share_by_device"] = {
        d: round(n / total, 3) for d, n in by_device.items()} if total else {}


def stray_processes(run: Dict[str, Any], workers_per_gpu: int) -> Dict[str, int]:
    """Per GPU (NVML index), how many more processes held a context there than were placed
    on it: ``workers_per_gpu`` on each GPU the run used, none on the others. Non-zero means
    processes placed elsewhere opened contexts on that GPU (issue 13: 32 on GPU 0 with 16
    placed, before each SDK process was narrowed to its GPU)."""
    used = {str(d) for d in run.get("visible", [])}
    out = {}
    for d, g in run.get("per_gpu", {}).items():
        extra = (g.get("gpu_processes_max") or 0) - (workers_per_gpu if d in used else 0)
        if extra > 0:
            out[d] = extra
    return out


def cmd_gpus(a: argparse.Namespace) -> int:
    """The same run on one GPU and on every visible GPU of the machine: images/s (with
    start-up, and steady), and per GPU the images scored (bundle records), NVML
    utilisation and memory."""
    gpus = visible_gpus()
    files = _corpus_files(a)
    cores = affinity()
    plan = select_runs(gpu_runs(gpus, a.workers_per_gpu, a.cores_per_gpu, cores), a.runs)
    record: Dict[str, Any] = {
        "corpus": a.corpus_name, "images": len(files), "batch_size": a.batch, "plan": a.engine,
        "gpu": device_name(), "gpus": len(gpus), "cores": usable_cores(),
        "preprocess": a.preprocess, "workers_per_gpu": a.workers_per_gpu,
        "cores_per_gpu": a.cores_per_gpu,
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d"),
        "command": "python -m pipeline.benchmark " + " ".join(sys.argv[1:]),
    }
    runs = merged_runs(record, a.merge)
    for name, cfg in plan.items():
        out = tempfile.mkdtemp(prefix=f"gpus-{name}-")
        r = _timed_child(_main_command(
            a, "--preprocess", a.preprocess, f"--direct_num_workers={cfg['workers']}",
            "--direct_running_mode=multi_processing", "--output", out),
            env={"CUDA_VISIBLE_DEVICES": ",".join(map(str, cfg["visible"]))}, devices=gpus,
            cpus=cfg["cpus"])
        r.update(visible=cfg["visible"], sdk_processes=cfg["workers"],
                 images_by_device=images_by_device(out))
        r["stray_processes_by_gpu"] = stray_processes(r, a.workers_per_gpu)
        runs[name] = r
    record["runs"] = runs
    summarize_runs(record, len(gpus))
    with open(a.json, "w") as f:
        json.dump(record, f, indent=2)
    print(f"| {a.preprocess} path, {len(files)} images | SDK processes | cores | images/s "
          "| steady images/s | images per GPU | GPU util % per GPU | GPU MiB per GPU "
          "| processes per GPU (max) |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in runs.items():
        util = {d: _fmt(g.get("gpu_util_mean"), digits=0) for d, g in r["per_gpu"].items()}
        mem = {d: _fmt(g.get("gpu_mem_max_mib"), digits=0) for d, g in r["per_gpu"].items()}
        procs = {d: g.get("gpu_processes_max") for d, g in r["per_gpu"].items()}
        print(f"| {name} ({r['visible']}) | {r['sdk_processes']} | "
              f"{r.get('cpus', len(cores))} | {r['images_per_s']:.0f} | "
              f"{_fmt(r.get('steady_images_per_s'), digits=0)} | {r['images_by_device']} | "
              f"{util} | {mem} | {procs} |")
    for name, r in runs.items():
        if r.get("stray_processes_by_gpu"):
            print(f"{name}: processes placed on other GPUs held contexts here (GPU: extra "
                  f"processes): {r['stray_processes_by_gpu']}")
    print(f"speedup all/one: {_fmt(record['speedup'], digits=2)} end to end, "
          f"{_fmt(record['speedup_steady'], digits=2)} steady, "
          f"{_fmt(record['speedup_main_stage'], digits=2)} scoring stage")
    if record.get("images_for_speedup"):
        print("images per worker for the all-GPU run to reach, end to end: " + ", ".join(
            f"{t}x {_fmt(n, digits=0) if n is not None else 'never'}"
            for t, n in record["images_for_speedup"].items()))
    return 0 if all(runs[n]["returncode"] == 0 for n in plan) else 3

