"""How long a GPU-path model load takes when N processes load at once, part by part.

Why: on the H200, 16 SDK processes each loading the engine and building DALI took 16.0 s,
against 2.8 s for the engine alone on the CPU path (docs/benchmarks.md, 2026-11-30): a
third of a 50,000-image run. This starts N processes together (a barrier), each doing
exactly what an SDK process does (the launcher's own TrtDaliLoader, or TrtLoader with
--engine_only), then one batch of real JPEGs, and reports each load part's median and
max (transforms/runtime/startup.py ``load_part``) per N.

    python scripts/load_contention.py --engine nsfw-b64.fp16.plan --jpegs 'corpus/*.jpg' \\
        --procs 1,4,16 --json load-contention.json
"""

from __future__ import annotations

import argparse
import glob
import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load(engine: str, jpegs: List[str], barrier: Any, folder: str, dali: Dict[str, Any],
          how: Dict[str, Any]) -> None:
    """One SDK process's load. ``how``: ``part`` is full (engine, then DALI on its GPU),
    engine (no DALI), dali (DALI on the placed GPU, no engine) or cpu_dali (the engine,
    then the same graph on DALI's CPU backend: no CUDA in DALI's build); ``hold_nvml``;
    ``roundtrip`` (open_nsfw's JPEG round trip in the graph)."""
    os.environ["BEAM_TRT_STARTUP_DIR"] = folder
    from transforms.runtime import startup

    barrier.wait()
    start = time.perf_counter()
    if how["hold_nvml"]:
        # NVML initialised once and held for the process's life: DALI's own nvmlInit and
        # nvmlShutdown pairs (thread pools, the decoder's hardware check) then only count
        # references instead of each opening every device
        with startup.timed_part("nvml_hold"):
            import pynvml
            pynvml.nvmlInit()
    with startup.timed_part("import_runtime"):
        from dataclasses import replace

        from transforms.runtime.gpu_preprocess import DaliOptions, DaliPreprocessor
        from transforms.runtime.placement import place_current
        from transforms.runtime.tensorrt.gpu_runner import ENCODED, TrtDaliLoader
        from transforms.runtime.tensorrt.runner import TrtLoader
        from transforms.spec import OPEN_NSFW_SPEC
    # without the JPEG round trip open_nsfw's graph has no nvJPEG encoder to set up
    spec = OPEN_NSFW_SPEC if how["roundtrip"] else replace(OPEN_NSFW_SPEC,
                                                           jpeg_roundtrip_quality=None)
    part = how["part"]
    if how.get("decoder"):
        # a diagnostic: the product's graph with these arguments added to its decoder
        # (nvJPEG's buffer paddings and preallocation, which the build allocates)
        import functools

        import nvidia.dali.fn as dali_fn
        dali_fn.decoders.image = functools.partial(dali_fn.decoders.image, **how["decoder"])
    from pathlib import Path

    from transforms.runtime.batching import stack_encoded

    batch = stack_encoded([Path(p).read_bytes() for p in jpegs], ENCODED)
    closers = []
    with startup.timed_part("load_total"):
        if part == "dali":
            placed = place_current()
            pre = DaliPreprocessor(spec, 64, DaliOptions(**dict(dali, device_id=placed.cuda_index)))
            run = pre.to_host
        elif part == "cpu_dali":
            runner = TrtLoader(engine_uri=engine)()
            closers.append(runner.close)
            pre = DaliPreprocessor(spec, runner.info().max_batch, DaliOptions(**dali),
                                   cpu_only=True)
            run = pre.to_host
        else:
            loader: Any = TrtLoader(engine_uri=engine)
            if part == "full":
                loader = TrtDaliLoader(loader, spec, DaliOptions(**dali))
            runner = loader()
            closers.append(runner.close)
            run = (lambda b: runner.infer({ENCODED: b})) if part == "full" else None
    if run is not None:
        feed = list(batch) if part in ("dali", "cpu_dali") else batch
        with startup.timed_part("first_batch"):
            run(feed)
        with startup.timed_part("second_batch"):
            run(feed)
    startup.record("load_part", once=False, part="ready_since_barrier",
                   seconds=round(time.perf_counter() - start, 3))
    for close in closers:
        close()


def one(n: int, a: argparse.Namespace, jpegs: List[str]) -> Dict[str, Any]:
    from transforms.runtime import startup

    ctx = mp.get_context("spawn")          # CUDA in the parent would not survive a fork
    folder = tempfile.mkdtemp(prefix=f"load-{n}-")
    barrier = ctx.Barrier(n)
    dali = {k: v for k, v in (("threads", a.dali_threads),
                              ("hw_decoder_load", a.hw_decoder_load)) if v is not None}
    how = {"part": a.part, "hold_nvml": a.hold_nvml, "roundtrip": not a.no_jpeg_roundtrip,
           "decoder": a.decoder_args}
    procs = [ctx.Process(target=_load, args=(a.engine, jpegs, barrier, folder, dali, how))
             for _ in range(n)]
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    failed = [p.exitcode for p in procs if p.exitcode]
    parts = startup.summarize(folder).get("load_parts_s", {})
    # CPU time of all N against the wall: near the usable cores means the loads are bound
    # by the host's cores, far below means they wait (a lock, the driver, the GPU)
    return {"processes": n, "dali": dali, **how,
            "failed_exitcodes": failed, "parts": parts,
            "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "cores_busy": round(cpu / wall, 1) if wall > 0 else None,
            "usable_cores": len(os.sched_getaffinity(0))}


def parse_env(pairs: List[str]) -> Optional[Dict[str, str]]:
    """{NAME: VALUE} from NAME=VALUE strings; None if one is not of that shape."""
    env: Dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            return None
        env[name] = value
    return env


def parse_decoder(pairs: List[str]) -> Optional[Dict[str, Any]]:
    """{argument: value} for fn.decoders.image from NAME=VALUE strings, the values read as
    Python literals (0, 0.5, True) or kept as text; None if one is not of that shape."""
    import ast

    raw = parse_env(pairs)
    if raw is None or not all(name.isidentifier() for name in raw):
        return None
    args: Dict[str, Any] = {}
    for name, text in raw.items():
        try:
            args[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            args[name] = text
    return args


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", required=True, help="a plan with its sidecar")
    ap.add_argument("--jpegs", required=True, help="glob: the first --batch are one batch")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--procs", default="1,4,16")
    ap.add_argument("--engine_only", action="store_true", help="TrtLoader, no DALI "
                    "(--part engine)")
    ap.add_argument("--part", choices=("full", "engine", "dali", "cpu_dali"), default="full",
                    help="what each process loads: the engine and DALI on its GPU (full), the "
                         "engine alone, DALI alone on the placed GPU, or the engine and the "
                         "graph on DALI's CPU backend (no CUDA in DALI's build)")
    ap.add_argument("--dali_threads", type=int, default=None, help="DaliOptions.threads")
    ap.add_argument("--hw_decoder_load", type=float, default=None,
                    help="DaliOptions.hw_decoder_load (0: no hardware decoder to set up)")
    ap.add_argument("--hold_nvml", action="store_true",
                    help="initialise NVML (nvidia-ml-py) before the load and hold it")
    ap.add_argument("--no_jpeg_roundtrip", action="store_true",
                    help="build the graph without open_nsfw's JPEG round trip (a diagnostic: "
                         "its scores then differ)")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="set in every loading process (e.g. CUDA_MODULE_LOADING=LAZY, "
                         "DALI_USE_VMM=0); repeatable")
    ap.add_argument("--decoder", action="append", default=[], metavar="NAME=VALUE",
                    help="an argument added to the graph's fn.decoders.image (e.g. "
                         "host_memory_padding=0, device_memory_padding=0); repeatable")
    ap.add_argument("--json")
    a = ap.parse_args()
    a.decoder_args = parse_decoder(a.decoder)
    if a.decoder_args is None:
        ap.error(f"--decoder: expected NAME=VALUE, got {a.decoder!r}")
    if a.engine_only:
        a.part = "engine"
    env = parse_env(a.env)
    if env is None:
        ap.error(f"--env: expected NAME=VALUE, got {a.env!r}")
    os.environ.update(env)                 # spawned processes inherit it
    jpegs = sorted(glob.glob(a.jpegs))[:a.batch]
    if len(jpegs) < a.batch:
        ap.error(f"--jpegs {a.jpegs!r}: expected at least {a.batch} files, got {len(jpegs)}")
    rows = [one(int(n), a, jpegs) for n in a.procs.split(",")]
    names = sorted({p for r in rows for p in r["parts"]},
                   key=lambda p: -max(r["parts"].get(p, {}).get("median", 0) for r in rows))
    print("| load part, s (median / max over processes) | "
          + " | ".join(f"{r['processes']} at once" for r in rows) + " |")
    print("| --- |" + " ---: |" * len(rows))
    for name in names:
        cells = [f"{r['parts'][name]['median']:.2f} / {r['parts'][name]['max']:.2f}"
                 if name in r["parts"] else "–" for r in rows]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("| wall s / CPU s / cores busy (of usable) | " + " | ".join(
        f"{r['wall_s']:.1f} / {r['cpu_s']:.1f} / {r['cores_busy']} ({r['usable_cores']})"
        for r in rows) + " |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"engine": a.engine, "part": a.part, "batch": a.batch,
                       "env": env, "rows": rows}, f, indent=2)
    return 1 if any(r["failed_exitcodes"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
