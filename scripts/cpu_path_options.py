"""Cheaper per-image CPU work, and what it does to scores: JPEG DCT scaling (draft) at 1x
instead of 2x the resize target, and Pillow's reducing_gap, against today's CPU path.

    python scripts/make_corpus.py --profile uploads --count 80 --output /tmp/c2
    python scripts/cpu_path_options.py /tmp/c2        # and the samples' JPEGs

The variants differ from transforms.preprocess only in the two knobs measured: the draft
request at decode and ``reducing_gap`` at resize; every other step is the project's own.
"""

from __future__ import annotations

import glob
import os
import sys
import time
from typing import List, Optional, Tuple

import numpy as np
from PIL import Image, ImageOps

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from transforms.decode import open_checked, to_rgb  # noqa: E402
from transforms.preprocess import (_RESAMPLE, center_crop_box, jpeg_roundtrip,  # noqa: E402
                                   resized_size, to_tensor)
from transforms.runtime.onnx import OnnxLoader  # noqa: E402
from transforms.spec import OPEN_NSFW_SPEC as SPEC, DecodeLimits  # noqa: E402

LIMITS = DecodeLimits()


def variant(data: bytes, draft_factor: int, gap: Optional[float]) -> np.ndarray:
    """open_nsfw's CPU preprocessing with the draft factor and reducing_gap given."""
    img = open_checked(data, LIMITS)
    if img.format == "JPEG":
        side = draft_factor * max(SPEC.resize_size)
        img.draft("RGB", (side, side))
    img.load()
    rgb = to_rgb(ImageOps.exif_transpose(img), SPEC.alpha_background)
    size = resized_size(rgb.shape[:2], SPEC)
    pil = Image.fromarray(rgb).resize((size[1], size[0]), resample=_RESAMPLE[SPEC.interpolation],
                                      reducing_gap=gap)
    pil = jpeg_roundtrip(pil.crop(center_crop_box(size, (SPEC.height, SPEC.width))),
                         SPEC.jpeg_roundtrip_quality)
    return to_tensor(np.asarray(pil.convert("RGB")), SPEC)


def measure(files: List[bytes], runner, draft_factor: int, gap: Optional[float]
            ) -> Tuple[float, np.ndarray]:
    """(ms per image, nsfw scores) for one variant."""
    start = time.perf_counter()
    xs = [variant(f, draft_factor, gap) for f in files]
    ms = (time.perf_counter() - start) / len(files) * 1000
    name, out = runner.info().inputs[0].name, runner.info().outputs[0]
    scores = np.concatenate([runner.infer({name: np.stack(xs[i:i + 16])})[out][:, 1]
                             for i in range(0, len(xs), 16)])
    return ms, scores


def main() -> int:
    corpus = sys.argv[1] if len(sys.argv) > 1 else "/tmp/c2"
    paths = sorted(glob.glob(os.path.join(corpus, "*.jpg")))[:80] + sorted(glob.glob("samples/*.jpg"))
    files = [open(p, "rb").read() for p in paths]
    runner = OnnxLoader("bundled://open_nsfw")()
    base_ms, base = measure(files, runner, 2, None)
    print(f"today (draft 2x, no reducing_gap): {base_ms:.1f} ms/img")
    for factor, gap in [(2, 3.0), (2, 2.0), (1, None), (1, 3.0), (1, 2.0)]:
        ms, scores = measure(files, runner, factor, gap)
        d = np.abs(scores - base)
        print(f"draft {factor}x reducing_gap {gap}: {ms:.1f} ms/img ({base_ms / ms:.2f}x), "
              f"max |d nsfw| {d.max():.4f}, mean {d.mean():.5f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
