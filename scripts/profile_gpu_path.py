"""Where a run spends its host CPU time, per stage, on any machine (no GPU needed).

The model is replaced by a runner that returns zeros at once, so what is measured is
everything else a run costs on the host: reading, the anti-join, routing (GPU path) or
decoding and preprocessing (CPU path), Beam's per-element work, batching, postprocessing,
writing. With --preprocess gpu it is the ceiling of end-to-end images/s of the GPU path
on this runner, whatever the GPU.

    python scripts/make_corpus.py --profile imagenet --count 3000 --output /tmp/corpus
    python scripts/profile_gpu_path.py /tmp/corpus 'imagenet-*' --stages
    python scripts/profile_gpu_path.py /tmp/corpus 'imagenet-*' --preprocess cpu --stages
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Tuple

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import apache_beam as beam  # noqa: E402

from pipeline import stage_timeline  # noqa: E402
from pipeline.build import build_pipeline  # noqa: E402
from pipeline.config import RunConfig  # noqa: E402
from transforms.handlers.model_handler import NumpyModelHandler  # noqa: E402
from transforms.runtime import startup  # noqa: E402
from transforms.runtime.runner import Feeds, Runner, RunnerInfo, TensorInfo  # noqa: E402
from transforms.runtime.tensorrt.gpu_runner import ENCODED, GPU_OK  # noqa: E402


class ZeroRunner(Runner):
    """Encoded files (GPU path) or open_nsfw tensors (CPU path) in, zeros out, instantly."""

    def __init__(self, max_batch: int, encoded: bool) -> None:
        super().__init__()
        inputs = ((TensorInfo(ENCODED, "encoded", ()),) if encoded else
                  (TensorInfo("input", "float32", (224, 224, 3)),))
        outputs = ("prob", GPU_OK) if encoded else ("prob",)
        self._info = RunnerInfo("tensorrt", "zero://", "0" * 64, "none", inputs, outputs,
                                1, max_batch, max_batch)

    def info(self) -> RunnerInfo:
        return self._info

    def infer(self, feeds: Feeds) -> Feeds:
        n = len(next(iter(feeds.values())))
        out = {"prob": np.full((n, 2), 0.5, np.float32)}
        if GPU_OK in self._info.outputs:
            out[GPU_OK] = np.ones(n, bool)
        return out


@dataclass(frozen=True)
class ZeroLoader:
    batch: int
    encoded: bool = True
    backend = "tensorrt"

    def __call__(self) -> ZeroRunner:
        return ZeroRunner(self.batch, self.encoded)

    def batch_bounds(self) -> Tuple[int, int]:
        return self.batch, self.batch


# Stage -> the entry points whose cumulative time is that stage's cost.
STAGES = {
    "read (match + ReadBytes)": [("transforms/read_images.py", "apply"),
                                 ("fileio.py", "process"), ("transforms/manifest.py", "range_uris")],
    "anti-join (scored URIs)": [("transforms/admitted.py", "process")],
    "route (header + JPEG structure)": [("transforms/gpu_route.py", "process")],
    "decode (Pillow)": [("transforms/decode.py", "apply")],
    "preprocess (Pillow)": [("transforms/preprocess.py", "apply")],
    "inference (handler + runner)": [("model_handler.py", "run_batch")],
    "postprocess": [("transforms/postprocess.py", "process")],
    "bundle metrics": [("transforms/metrics.py", "process"),
                       ("transforms/metrics.py", "finish_bundle")],
    "write (file sinks)": [("apache_beam/io/iobase.py", "process"),
                           ("apache_beam/io/filebasedsink.py", "write_record")],
}


def stage_table(stats: pstats.Stats, wall: float, n: int) -> None:
    """Cumulative time of each stage's entry points; the rest is Beam's own work."""
    rows, total = [], 0.0
    for stage, keys in STAGES.items():
        t = sum(v[3] for (f, _, name), v in stats.stats.items()
                if any(name == fn and k in f for k, fn in keys))
        rows.append((stage, t))
        total += t
    rows.append(("Beam's runner, batching, shuffles and the rest", max(0.0, wall - total)))
    print("| stage | ms per image | share |\n| --- | --- | --- |")
    for stage, t in rows:
        print(f"| {stage} | {1000 * t / n:.3f} | {100 * t / wall:.0f}% |")


def _group(filename: str) -> str:
    for key in ("/transforms/", "/pipeline/", "apache_beam", "PIL", "pyarrow", "numpy"):
        if key in filename:
            return key.strip("/")
    return "other"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("corpus")
    p.add_argument("pattern", nargs="?", default="*")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--no_profile", action="store_true", help="time only (cProfile adds ~40%%)")
    p.add_argument("--preprocess", choices=("gpu", "cpu"), default="gpu")
    p.add_argument("--manifest", action="store_true",
                   help="read the URIs from a manifest (--input_list) written from the "
                        "pattern's matches, instead of matching the pattern in the run")
    p.add_argument("--stages", action="store_true", help="print the per-stage table")
    p.add_argument("--runner_stages", action="store_true",
                   help="also time each stage of Beam's runner (pipeline/stage_timeline.py) "
                        "and print seconds per stage")
    p.add_argument("--pipeline_args", nargs=argparse.REMAINDER, default=[],
                   help="runner flags, e.g. --direct_num_workers=2 "
                        "--direct_running_mode=multi_processing (timing only: cProfile "
                        "sees the launcher, not the workers)")
    a = p.parse_args()
    out = tempfile.mkdtemp(prefix="profile-gpu-path-")
    inputs: Tuple[str, ...] = (os.path.join(a.corpus, a.pattern),)
    input_list = None
    if a.manifest:
        import glob

        input_list = os.path.join(tempfile.mkdtemp(prefix="manifest-"), "uris.txt")
        with open(input_list, "w") as f:
            f.writelines(u + "\n" for u in sorted(glob.glob(inputs[0])))
        inputs = ()
    cfg = RunConfig(output=out, inputs=inputs, input_list=input_list, backend="tensorrt",
                    engine="unused.plan", preprocess=a.preprocess, run_id="profile",
                    min_batch_size=a.batch, max_batch_size=a.batch)
    from apache_beam.options.pipeline_options import PipelineOptions

    launched = time.time()
    if a.runner_stages:
        os.environ[startup.ENV] = tempfile.mkdtemp(prefix="profile-stages-")
        stage_timeline.apply()
    pipe = beam.Pipeline(options=PipelineOptions(a.pipeline_args))
    build_pipeline(pipe, cfg, gpu_handler=NumpyModelHandler(ZeroLoader(a.batch, True)),
                   handler=NumpyModelHandler(ZeroLoader(a.batch, False)))
    prof = cProfile.Profile()
    start = time.perf_counter()
    if not a.no_profile:
        prof.enable()
    pipe.run().wait_until_finish()
    prof.disable()
    wall = time.perf_counter() - start
    n = sum(1 for f in os.listdir(out) if f.startswith("predictions-")
            for _ in open(os.path.join(out, f)))
    print(f"{n} images in {wall:.2f} s{'' if a.no_profile else ' under cProfile'}: "
          f"{n / wall:.0f} images/s ({1000 * wall / n:.2f} ms of host time per image)")
    if a.runner_stages:
        print("| runner stage | bundles | s | from s | to s |\n| --- | ---: | ---: | ---: | ---: |")
        for row in startup.summarize(os.environ[startup.ENV], launched).get("runner_stages", []):
            print(f"| {row['stage']} | {row['bundles']} | {row['seconds']:.2f} | "
                  f"{row['start_s']:.2f} | {row['end_s']:.2f} |")
    if a.no_profile:
        return 0
    stats = pstats.Stats(prof)
    if a.stages:
        stage_table(stats, wall, n)
        return 0
    groups = defaultdict(float)
    for (filename, _, _), (_, _, tottime, _, _) in stats.stats.items():
        groups[_group(filename)] += tottime
    total = sum(groups.values())
    print("self time by package: " + ", ".join(
        f"{k} {100 * v / total:.0f}%" for k, v in sorted(groups.items(), key=lambda kv: -kv[1])))
    stats.sort_stats("cumulative").print_stats(a.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
