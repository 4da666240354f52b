"""Where an SDK process's start-up goes: process start -> imports -> model load -> first bundle.

Why: on the H200 the first prediction of a 16-process GPU-path run came 23-37 s after
launch, and that grew with the number of processes (docs/benchmarks.md, 2026-11-30). That
start-up, not the per-image work, kept end-to-end rates far below the steady state. A
profiler over 17 processes gave no trustworthy table (py-spy, stop 15), so each process
writes its own milestones instead.

Off unless ``BEAM_TRT_STARTUP_DIR`` is set (``python -m pipeline.benchmark`` sets it for
the runs it times): then each process appends one JSON line per milestone to
``<dir>/startup-<pid>.jsonl``: the milestone, wall-clock time, and seconds since the
process started (from /proc, so the interpreter's own start and imports count).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Any, Callable, Dict, Iterator, List, Optional

ENV = "BEAM_TRT_STARTUP_DIR"
# SDK processes, in the order a process meets them: imports; the model load (RunInference's
# setup, when the main stage's first bundle reaches the process, so after the match and
# the anti-join's shuffle); that bundle's start; its first URI; the first file read; the
# first prediction out
MILESTONES = ("imported", "load_start", "load_done", "first_bundle", "first_admitted",
              "first_read", "first_prediction")
# every bundle that scored images, when it finished: the last of them, against the
# launcher's run_done, is the run's tail (sink finalize stages, SDK shutdown)
LAST_MILESTONES = ("bundle_done",)
# the launcher: started, graph built (options, preflight), runner returned
LAUNCHER_MILESTONES = ("launch", "graph_built", "run_done")


def process_start_unix() -> Optional[float]:
    """When this process was created (Linux: /proc/self/stat starttime), else None."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = int(fields[19])                   # field 22 overall: starttime
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


_START = process_start_unix()
_SEEN: set = set()


def record(milestone: str, once: bool = True, **fields: Any) -> None:
    """Append ``milestone`` for this process (once per process unless ``once`` is False)."""
    folder = os.environ.get(ENV)
    if not folder or (once and milestone in _SEEN):
        return
    _SEEN.add(milestone)
    now = time.time()
    line = {"pid": os.getpid(), "milestone": milestone, "t": round(now, 3),
            "since_start_s": round(now - _START, 3) if _START else None, **fields}
    try:
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"startup-{os.getpid()}.jsonl"), "a") as f:
            f.write(json.dumps(line) + "\n")
    except OSError:
        pass       # instrumentation never fails a run


@contextlib.contextmanager
def timed_part(part: str, **fields: Any) -> Iterator[None]:
    """One part of a model load (CUDA init, the plan, the engine, DALI's build) as a
    ``load_part`` milestone with its seconds: on the H200 a GPU-path load took 16 s with 16
    processes loading at once against 2.8 s for the engine alone, and this says which
    part grows."""
    start = time.perf_counter()
    try:
        yield
    finally:
        record("load_part", once=False, part=part,
               seconds=round(time.perf_counter() - start, 3), **fields)


def timed_load(loader: Callable[[], Any], **fields: Any) -> Any:
    """``loader()`` between this process's load_start and load_done milestones, the
    latter with the seconds it took and the loader's backend."""
    start = time.perf_counter()
    record("load_start", once=False, **fields)
    loaded = loader()
    record("load_done", once=False, load_s=round(time.perf_counter() - start, 3),
           backend=getattr(loader, "backend", None), **fields)
    return loaded


def summarize(folder: str, launched_unix: Optional[float] = None) -> Dict[str, Any]:
    """Per milestone, the median and max over processes of seconds since each process
    started, and (with ``launched_unix``) since the run was launched; plus model load
    times. Processes that never loaded a model are left out of the per-milestone
    figures; the launcher's own milestones are reported apart."""
    per_pid: Dict[int, Dict[str, Dict[str, Any]]] = {}
    stages: List[Dict[str, Any]] = []
    parts: Dict[str, Dict[int, float]] = {}      # part -> pid -> seconds (its first load)
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            with open(os.path.join(folder, name)) as f:
                for raw in f:
                    rec = json.loads(raw)
                    if rec["milestone"] == "stage":
                        stages.append(rec)
                        continue
                    if rec["milestone"] == "load_part":
                        parts.setdefault(rec["part"], {}).setdefault(rec["pid"], rec["seconds"])
                        continue
                    mine = per_pid.setdefault(rec["pid"], {})
                    if rec["milestone"] in LAST_MILESTONES:
                        mine[rec["milestone"]] = rec          # the last of each
                    else:
                        # the first of each: a GPU run loads a second model later
                        mine.setdefault(rec["milestone"], rec)
    workers = {pid: m for pid, m in per_pid.items() if "load_done" in m}
    launchers = [m for m in per_pid.values() if "launch" in m]

    def stats(values: List[float]) -> Dict[str, float]:
        values = sorted(values)
        return {"median": round(values[len(values) // 2], 2), "max": round(values[-1], 2)}

    out: Dict[str, Any] = {"processes": len(workers),
                           # whose scoring model loaded as they started (runtime/prewarm.py)
                           "prewarmed_processes": sum("prewarm_taken" in m
                                                      for m in workers.values())}
    for milestone in MILESTONES:
        since_start = [m[milestone]["since_start_s"] for m in workers.values()
                       if milestone in m and m[milestone]["since_start_s"] is not None]
        if since_start:
            out[f"{milestone}_since_process_start_s"] = stats(since_start)
        if launched_unix is not None:
            since_launch = [m[milestone]["t"] - launched_unix for m in workers.values()
                            if milestone in m]
            if since_launch:
                out[f"{milestone}_since_launch_s"] = stats(since_launch)
    done = [m["bundle_done"]["t"] for m in per_pid.values() if "bundle_done" in m]
    if done and launched_unix is not None:
        out["last_bundle_done_since_launch_s"] = round(max(done) - launched_unix, 2)
    if launchers and launched_unix is not None:
        out["launcher_since_launch_s"] = {
            k: round(launchers[0][k]["t"] - launched_unix, 2)
            for k in LAUNCHER_MILESTONES if k in launchers[0]}
    loads = [m["load_done"].get("load_s") for m in workers.values()
             if m["load_done"].get("load_s") is not None]
    if loads:
        out["model_load_s"] = stats(loads)
    if parts:
        out["load_parts_s"] = {name: dict(stats(list(by_pid.values())), processes=len(by_pid))
                               for name, by_pid in parts.items()}
    if stages and launched_unix is not None:
        out["runner_stages"] = stage_table(stages, launched_unix)
    return out


def stage_table(records: List[Dict[str, Any]], launched_unix: float) -> List[Dict[str, Any]]:
    """The runner's ``stage`` records (pipeline/stage_timeline.py) per stage, in the order
    stages first ran: bundles, seconds, first start and last end since launch. Stages are
    told apart by Beam's own id; ``stage`` is the readable label, which several share."""
    rows: Dict[str, Dict[str, Any]] = {}
    for rec in sorted(records, key=lambda r: r["start"]):
        row = rows.setdefault(rec.get("stage_id", rec["stage"]), {
            "stage": rec["stage"], "bundles": 0, "seconds": 0.0,
            "start_s": round(rec["start"] - launched_unix, 2)})
        row["bundles"] += 1
        row["seconds"] = round(row["seconds"] + rec["seconds"], 3)
        row["end_s"] = round(rec["start"] + rec["seconds"] - launched_unix, 2)
    return list(rows.values())
