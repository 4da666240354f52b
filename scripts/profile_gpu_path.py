"""Where a --preprocess gpu run spends its CPU time, on any machine (no GPU needed).

The DALI + TensorRT runner is replaced by one that returns zeros at once, so what is
measured is everything else the GPU path costs on the host: reading, routing (header and
JPEG-structure checks), Beam's per-element work, batching, postprocessing, writing. It is
the ceiling of end-to-end images/s for the GPU path on this runner, whatever the GPU.

    python scripts/make_corpus.py --profile imagenet --count 3000 --output /tmp/corpus
    python scripts/profile_gpu_path.py /tmp/corpus 'imagenet-*' --top 25
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

from pipeline.build import build_pipeline  # noqa: E402
from pipeline.config import RunConfig  # noqa: E402
from transforms.handlers.model_handler import NumpyModelHandler  # noqa: E402
from transforms.runtime.runner import Feeds, Runner, RunnerInfo, TensorInfo  # noqa: E402
from transforms.runtime.tensorrt.gpu_runner import ENCODED, GPU_OK  # noqa: E402


class ZeroRunner(Runner):
    """Encoded files in, open_nsfw-shaped zeros out, instantly: the GPU taken as free."""

    def __init__(self, max_batch: int) -> None:
        super().__init__()
        self._info = RunnerInfo("tensorrt", "zero://", "0" * 64, "none",
                                (TensorInfo(ENCODED, "encoded", ()),), ("prob", GPU_OK),
                                1, max_batch, max_batch)

    def info(self) -> RunnerInfo:
        return self._info

    def infer(self, feeds: Feeds) -> Feeds:
        n = len(feeds[ENCODED])
        return {"prob": np.full((n, 2), 0.5, np.float32), GPU_OK: np.ones(n, bool)}


@dataclass(frozen=True)
class ZeroLoader:
    batch: int
    backend = "tensorrt"

    def __call__(self) -> ZeroRunner:
        return ZeroRunner(self.batch)

    def batch_bounds(self) -> Tuple[int, int]:
        return self.batch, self.batch


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
    a = p.parse_args()
    out = tempfile.mkdtemp(prefix="profile-gpu-path-")
    cfg = RunConfig(output=out, inputs=(os.path.join(a.corpus, a.pattern),), backend="tensorrt",
                    engine="unused.plan", preprocess="gpu", run_id="profile",
                    min_batch_size=a.batch, max_batch_size=a.batch)
    pipe = beam.Pipeline()
    build_pipeline(pipe, cfg, gpu_handler=NumpyModelHandler(ZeroLoader(a.batch)),
                   handler=NumpyModelHandler(ZeroLoader(a.batch)))
    prof = cProfile.Profile()
    start = time.perf_counter()
    if not a.no_profile:
        prof.enable()
    pipe.run().wait_until_finish()
    prof.disable()
    wall = time.perf_counter() - start
    n = sum(1 for _ in open(next(os.path.join(out, f) for f in os.listdir(out)
                                 if f.startswith("predictions-"))))
    print(f"{n} images in {wall:.2f} s{'' if a.no_profile else ' under cProfile'}: "
          f"{n / wall:.0f} images/s ({1000 * wall / n:.2f} ms of host time per image)")
    if a.no_profile:
        return 0
    stats = pstats.Stats(prof)
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
