"""`sharing` and the pool ceiling: the CPU path on every core (threads, processes, a
shared engine) against a plain process pool running the same decode code."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from typing import Any, Dict, List

from transforms.runtime.benchmark import device_name
from pipeline.benchmark.common import _corpus_files, _fmt, _main_command, usable_cores
from pipeline.benchmark.timed import _timed_child


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

    files = _corpus_files(a)
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

