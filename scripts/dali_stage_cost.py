"""How a DALI batch's time splits between decoding, resizing and the rest of the graph.

Why: on the `uploads` corpus (0.2-12 MP photos) the GPU path ran at about 2 GP/s, short of
its bars against the CPU path and Beam's stock handler, while on `imagenet` (0.19 MP) it
reached 0.95 of the engine (docs/benchmarks.md). The benchmark's "DALI alone" row times
the whole graph. This times three prefixes of it on the same JPEGs, in one process: the
decode; the decode, resize and crop; the product's whole graph (gpu_preprocess
.DaliPreprocessor, as the runner builds it). Each step's cost is the difference between
two rows. Only the JPEGs the GPU path would take are used (gpu_route.gpu_decodable).

    python scripts/dali_stage_cost.py 'corpus-uploads/uploads-*' --batch 32 --json stages.json
    python scripts/dali_stage_cost.py 'samples/*.jpg' --cpu      # DALI's CPU backend, no GPU

``--jpeg progressive`` or ``baseline`` and ``--megapixels 1:4`` time one kind of JPEG at a
time, and ``--cpu_path N`` times the CPU path (the product's Pillow decode, at a reduced DCT
scale, and preprocessing) on N of the same JPEGs on one core: per kind, what a GPU decode
costs against a core's, the figure that decides which JPEGs the GPU path should send to
Pillow (``--dali_max_megapixels``).

The decode and resize prefixes end in a per-image mean (a few bytes back to the host, so
the timing waits for the GPU without copying whole images); the whole graph copies its
output (224x224x3 for open_nsfw) to the host, as the benchmark's DALI row does.
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import os
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Sequence, Tuple

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

STAGES = ("decode", "decode_resize_crop", "graph")


def parse_band(text: str) -> Tuple[float, float]:
    """'1:4' -> (1.0, 4.0) megapixels; an empty side is open ('4:' is 4 MP and up)."""
    lo, sep, hi = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected MIN:MAX megapixels (either may be "
                                         f"empty), got {text!r}")
    try:
        band = (float(lo) if lo else 0.0, float(hi) if hi else float("inf"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers in MIN:MAX, got {text!r}") from None
    if not band[0] < band[1]:
        raise argparse.ArgumentTypeError(f"expected MIN < MAX, got {text!r}")
    return band


def jpeg_kind(raw: bytes) -> str:
    """'progressive' or 'baseline' (any sequential Huffman frame), from the frame header."""
    from transforms.gpu_route import PROGRESSIVE
    from transforms.jpeg_structure import check_jpeg_structure

    return "progressive" if check_jpeg_structure(raw) == PROGRESSIVE else "baseline"


def select(paths: Sequence[str], spec: Any, limit: int, kind: str = "any",
           band: Tuple[float, float] = (0.0, float("inf"))) -> Tuple[List[bytes], List[int]]:
    """The files the GPU path would send to DALI (up to ``limit``), and their pixel counts;
    only JPEGs of ``kind`` (any, baseline, progressive) within ``band`` megapixels."""
    from PIL import Image

    from transforms.gpu_route import gpu_decodable
    from transforms.spec import DecodeLimits

    limits = DecodeLimits()
    data, pixels = [], []
    for path in paths:
        with open(path, "rb") as f:
            raw = f.read()
        try:
            if not gpu_decodable(raw, spec, limits):
                continue
        except Exception:  # noqa: BLE001 - a file the CPU path would dead-letter
            continue
        with Image.open(io.BytesIO(raw)) as img:     # the header only, from the bytes read
            size = img.size[0] * img.size[1]
        if not band[0] <= size / 1e6 < band[1] or kind not in ("any", jpeg_kind(raw)):
            continue
        pixels.append(size)
        data.append(raw)
        if len(data) == limit:
            break
    return data, pixels


def time_cpu_path(data: Sequence[bytes], spec: Any, passes: int) -> List[float]:
    """Seconds per pass of the CPU path over ``data`` on one core: the product's decode
    (``decode_image``, at a reduced DCT scale for large JPEGs) and ``preprocess``."""
    from transforms.decode import decode_image
    from transforms.preprocess import preprocess
    from transforms.spec import DecodeLimits

    limits = DecodeLimits()

    def run(batch: Sequence[bytes]) -> None:
        for raw in batch:
            preprocess(decode_image(raw, limits, spec.resize_size, spec.alpha_background),
                       spec)
    return time_stage(run, [list(data)], passes)   # one batch: the warm-up is a whole pass


def prefix_graph(stage: str, spec: Any, batch: int, options: Any, cpu: bool) -> Any:
    """The product's graph up to ``stage`` (its own decode, or decode + resize + crop, from
    gpu_preprocess), ending in a per-image mean so that only a few bytes come back."""
    from nvidia.dali import fn, pipeline_def, types

    from transforms.runtime.gpu_preprocess import decode, pipeline_settings, resize_and_crop

    @pipeline_def(**pipeline_settings(batch, options, cpu))
    def graph():
        img = decode(fn.external_source(name="encoded", dtype=types.UINT8, batch=True),
                     options, cpu)
        if stage == "decode_resize_crop":
            img = resize_and_crop(img, spec)
        return fn.reductions.mean(img, dtype=types.FLOAT)

    pipe = graph()
    pipe.build()
    return pipe


def runner_for(stage: str, spec: Any, batch: int, options: Any,
               cpu: bool) -> Callable[[List[np.ndarray]], Any]:
    if stage == "graph":
        from transforms.runtime.gpu_preprocess import DaliPreprocessor

        pre = DaliPreprocessor(spec, batch, options, cpu_only=cpu)
        return pre.to_host
    pipe = prefix_graph(stage, spec, batch, options, cpu)

    def run(encoded: List[np.ndarray]) -> Any:
        pipe.feed_input("encoded", encoded)
        (out,) = pipe.run()
        return out.as_cpu() if hasattr(out, "as_cpu") else out
    return run


def time_stage(run: Callable[[Any], Any], batches: Sequence[Any], passes: int) -> List[float]:
    """Seconds per pass over every batch, after one warm-up batch."""
    run(batches[0])
    out = []
    for _ in range(passes):
        start = time.perf_counter()
        for b in batches:
            run(b)
        out.append(time.perf_counter() - start)
    return out


def rows(seconds: Dict[str, List[float]], images: int, pixels: int) -> List[Dict[str, Any]]:
    """Per stage: median seconds of a pass, images/s, decoded GP/s, and the step's own cost
    (the difference from the stage before) as a share of the whole graph's time. A step
    cheaper than the noise between passes can come out negative; it is left so."""
    medians = {s: statistics.median(v) for s, v in seconds.items()}
    whole = medians.get("graph")
    out, before = [], 0.0
    for stage in STAGES:
        if stage not in medians:
            continue
        s = medians[stage]
        step = s - before
        out.append({"stage": stage, "pass_s": round(s, 4),
                    "images_per_s": round(images / s, 1) if s else None,
                    "gigapixels_per_s": round(pixels / s / 1e9, 3) if s else None,
                    "step_s": round(step, 4),
                    "step_share_of_graph": round(step / whole, 3) if whole else None,
                    "passes_s": [round(x, 4) for x in seconds[stage]]})
        before = s
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", help="glob of images (those the GPU path would take are used)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--images", type=int, default=1024, help="at most this many, whole batches")
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="DaliOptions.threads")
    ap.add_argument("--hw_decoder_load", type=float, default=None)
    ap.add_argument("--device_id", type=int, default=0)
    ap.add_argument("--cpu", action="store_true", help="DALI's CPU backend (no GPU)")
    ap.add_argument("--jpeg", choices=("any", "baseline", "progressive"), default="any",
                    help="only JPEGs of this kind")
    ap.add_argument("--megapixels", type=parse_band, default=(0.0, float("inf")),
                    help="only JPEGs of MIN:MAX megapixels (either side may be empty)")
    ap.add_argument("--cpu_path", type=int, default=0, metavar="N",
                    help="also time the CPU path on N of the JPEGs, on one core")
    ap.add_argument("--label", default="")
    ap.add_argument("--json")
    a = ap.parse_args()

    from transforms.runtime.gpu_preprocess import DaliOptions
    from transforms.spec import OPEN_NSFW_SPEC

    spec = OPEN_NSFW_SPEC
    paths = sorted(glob.glob(a.files))
    data, pixels = select(paths, spec, a.images, a.jpeg, a.megapixels)
    n = len(data) - len(data) % a.batch if len(data) >= a.batch else len(data)
    if n == 0:
        ap.error(f"{a.files!r}: expected JPEGs the GPU path takes ({a.jpeg}, "
                 f"{a.megapixels[0]}-{a.megapixels[1]} MP), found none in {len(paths)} files")
    data, pixels = data[:n], pixels[:n]
    arrays = [np.frombuffer(d, np.uint8) for d in data]
    batches = [arrays[i:i + a.batch] for i in range(0, n, a.batch)]
    knobs = {k: v for k, v in (("threads", a.threads), ("hw_decoder_load", a.hw_decoder_load))
             if v is not None}
    options = DaliOptions(device_id=a.device_id, **knobs)
    seconds = {}
    for stage in STAGES:
        seconds[stage] = time_stage(runner_for(stage, spec, min(a.batch, n), options, a.cpu),
                                    batches, a.passes)
    table = rows(seconds, n, sum(pixels))
    cpu_row = None
    if a.cpu_path:
        m = min(a.cpu_path, n)
        cpu_s = statistics.median(time_cpu_path(data[:m], spec, a.passes))
        cpu_row = {"images": m, "pass_s": round(cpu_s, 4),
                   "images_per_s_one_core": round(m / cpu_s, 1),
                   "gigapixels_per_s_one_core": round(sum(pixels[:m]) / cpu_s / 1e9, 4)}
    kind = "" if a.jpeg == "any" else f" {a.jpeg}"
    print(f"| DALI, {n}{kind} JPEGs of {statistics.median(pixels) / 1e6:.2f} MP median, batch "
          f"{a.batch}{', CPU backend' if a.cpu else ''} | pass s (median of {a.passes}) | "
          f"images/s | GP/s | its step's share of the graph |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in table:
        share = r["step_share_of_graph"]
        print(f"| {r['stage']} | {r['pass_s']:.3f} | {r['images_per_s']:,.0f} | "
              f"{r['gigapixels_per_s']:.3f} | {'–' if share is None else f'{100 * share:.0f}%'} |")
    if cpu_row:
        print(f"| CPU path, one core, {cpu_row['images']} of them | {cpu_row['pass_s']:.3f} | "
              f"{cpu_row['images_per_s_one_core']:,.1f} | "
              f"{cpu_row['gigapixels_per_s_one_core']:.3f} | – |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"files": a.files, "label": a.label, "images": n, "batch": a.batch,
                       "megapixels_median": round(statistics.median(pixels) / 1e6, 3),
                       "megapixels_total": round(sum(pixels) / 1e6, 1),
                       "backend": "cpu" if a.cpu else "gpu", "options": knobs,
                       "jpeg": a.jpeg, "megapixels_band": [a.megapixels[0],
                                                           None if a.megapixels[1] == float("inf")
                                                           else a.megapixels[1]],
                       "rows": table, "cpu_path": cpu_row}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
