"""Reproduce, on the CPU, the element loss of Beam's multi-process local runner, and show
that pipeline/runner_fix.py ends it.

The --preprocess gpu graph runs with the stand-in GPU runner of tests/test_build.py over
small JPEGs (the GPU side) and large noise PNGs (the Pillow side, whose input carries each
file's bytes from one stage to the next), on 16 SDK processes. Each run prints what the
route sent to the Pillow side (images_cpu_path) against what reached it
(images_pillow_in); a table and JSON summarise the runs without and with the fix.

    python scripts/repro_runner_loss.py --runs 5 --json loss.json

Since the Pillow branches run inside the stage that routes them (pipeline/build.py, third
2026-11-30 session), the GPU graph no longer hands file bytes from one stage to the next,
and this script no longer loses images without the fix: what it reproduced is the graph
up to commit 6882093. The runner's race itself is unchanged in Beam;
scripts/beam_runner_loss_minimal.py shows it with Beam alone, and the fix stays applied.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def make_inputs(folder: Path, jpegs: int, pngs: int, side: int) -> None:
    import numpy as np
    from PIL import Image

    from tests.test_build import _jpeg

    folder.mkdir(parents=True, exist_ok=True)
    small = _jpeg((10, 90, 200))
    for i in range(jpegs):
        (folder / f"g-{i:06d}.jpg").write_bytes(small)
    rng = np.random.default_rng(0)
    for i in range(pngs):
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(
            folder / f"p-{i:06d}.png", compress_level=1)


def one_run(inputs: Path, workers: int, fix: bool) -> dict:
    """The graph in this process (the runner), counters back as a dict."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline import runner_fix
    from pipeline.build import build_pipeline
    from pipeline.config import RunConfig
    from pipeline.main import stage_counters
    from tests.conftest import make_linear_model
    from tests.test_build import SPEC, StandInLoader
    from transforms.handlers.model_handler import NumpyModelHandler
    from transforms.runtime.onnx import OnnxLoader

    if fix:
        runner_fix.apply()
    work = Path(tempfile.mkdtemp(prefix="repro-loss-"))
    model = work / "tiny.onnx"
    make_linear_model(model, hw=(8, 8))
    cfg = RunConfig(output=str(work / "out"), inputs=(str(inputs / "*"),), spec=SPEC,
                    backend="tensorrt", engine="unused.plan", preprocess="gpu", run_id="r",
                    min_batch_size=32, max_batch_size=32)
    p = beam.Pipeline(options=PipelineOptions([f"--direct_num_workers={workers}",
                                               "--direct_running_mode=multi_processing"]))
    build_pipeline(p, cfg, handler=NumpyModelHandler(OnnxLoader(str(model))),
                   gpu_handler=NumpyModelHandler(StandInLoader(str(model))))
    result = p.run()
    result.wait_until_finish()
    return stage_counters(result)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="runs without, then with the fix")
    ap.add_argument("--jpegs", type=int, default=300)
    ap.add_argument("--pngs", type=int, default=600)
    ap.add_argument("--side", type=int, default=600, help="PNG side: 600 -> about 1 MB")
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", choices=("fix", "nofix"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    inputs = Path(tempfile.gettempdir()) / f"repro-loss-{a.jpegs}-{a.pngs}-{a.side}"
    if a.child:
        print(json.dumps(one_run(inputs, a.workers, a.child == "fix")))
        return 0
    if not inputs.is_dir():
        make_inputs(inputs, a.jpegs, a.pngs, a.side)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    rows = []
    for mode in ("nofix", "fix"):
        for i in range(a.runs):
            # each run in a fresh process: the fix must not leak into the unfixed runs
            out = subprocess.run([sys.executable, __file__, "--child", mode, "--runs", "1",
                                  "--jpegs", str(a.jpegs), "--pngs", str(a.pngs), "--side",
                                  str(a.side), "--workers", str(a.workers)], env=env,
                                 capture_output=True, text=True, cwd=ROOT)
            if out.returncode != 0:
                print(out.stderr[-2000:], file=sys.stderr)
                return 1
            c = json.loads(out.stdout.strip().splitlines()[-1])
            sent = c.get("images_cpu_path", 0) + c.get("images_gpu_fallback", 0)
            lost = sent - c.get("images_pillow_in", 0)
            rows.append({"mode": mode, "run": i, "sent_to_pillow": sent,
                         "reached_pillow": c.get("images_pillow_in", 0), "lost": lost,
                         "admitted": c.get("images_admitted"), "ok": c.get("images_ok")})
            print(f"{mode:<6} run {i}: sent {sent}, reached {sent - lost}, lost {lost}",
                  flush=True)
    summary = {m: {"runs": sum(r["mode"] == m for r in rows),
                   "runs_with_loss": sum(r["mode"] == m and r["lost"] > 0 for r in rows),
                   "images_lost": sum(r["lost"] for r in rows if r["mode"] == m)}
               for m in ("nofix", "fix")}
    print("\n| runner | runs | runs that lost images | images lost |\n| --- | --- | --- | --- |")
    for m, s in summary.items():
        label = "Beam as shipped" if m == "nofix" else "with pipeline/runner_fix.py"
        print(f"| {label} | {s['runs']} | {s['runs_with_loss']} | {s['images_lost']} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"summary": summary, "runs": rows, "jpegs": a.jpegs, "pngs": a.pngs,
                       "png_side": a.side, "workers": a.workers}, f, indent=1)
    return 1 if summary["fix"]["images_lost"] else 0


if __name__ == "__main__":
    sys.exit(main())
