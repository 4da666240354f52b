"""Generate a benchmark corpus from the bundled samples: seeded, so every machine makes the
same files, and generated where the benchmark runs (no datasets are downloaded or committed).

Profiles:
  imagenet  photos of about 500x375 (either orientation), JPEG quality 75-95, about 110 KB:
            the size of ImageNet's validation set.
  uploads   what users upload: 0.2-12 MP log-uniform (median about 1 MP), phone-photo and
            screenshot aspect ratios, JPEG quality 70-95, a fifth progressive, one in ten
            with an EXIF orientation; about 5% PNG, 2% CMYK JPEG, 2% greyscale JPEG, 1% WebP.

    python scripts/make_corpus.py --profile imagenet --count 10000 --output /tmp/corpus-imagenet

Writes the images and <output>/corpus.json (profile, seed, count, bytes, formats).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import random
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(ROOT, "samples")
ASPECTS = (4 / 3, 3 / 4, 16 / 9, 9 / 16, 3 / 2, 2 / 3, 1.0, 9 / 19.5, 19.5 / 9)

_SOURCES: List[Image.Image] = []
_NOISE: List[np.ndarray] = []


def _sources() -> List[Image.Image]:
    if not _SOURCES:
        for name in sorted(os.listdir(SAMPLES)):
            if name.endswith((".jpg", ".png")):
                with Image.open(os.path.join(SAMPLES, name)) as img:
                    img = ImageOps.exif_transpose(img)
                    _SOURCES.append(img.convert("RGB"))
    return _SOURCES


def _noise(rng: random.Random, size: Tuple[int, int]) -> np.ndarray:
    """Sensor-like grain: a seeded 512x512 tile, repeated from a random offset (generating
    fresh noise for a 12 MP image costs more than encoding it)."""
    if not _NOISE:
        gen = np.random.default_rng(1234)
        _NOISE.extend((gen.standard_normal((512, 512, 1), np.float32) * sigma).astype(np.int16)
                      for sigma in (6, 9, 12, 15, 18))
    tile = rng.choice(_NOISE)
    w, h = size
    reps = (h // 512 + 2, w // 512 + 2, 1)
    oy, ox = rng.randrange(512), rng.randrange(512)
    return np.tile(tile, reps)[oy:oy + h, ox:ox + w]


def _photo(rng: random.Random, size: Tuple[int, int]) -> Image.Image:
    """A varied photo: a random crop of a random sample, flipped, colour-jittered, with
    sensor-like noise so JPEG sizes are those of photos, not of smooth upscales."""
    src = rng.choice(_sources())
    w, h = src.size
    scale = rng.uniform(0.4, 1.0)
    cw, ch = max(8, int(w * scale)), max(8, int(h * scale))
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    img = src.crop((x, y, x + cw, y + ch)).resize(size, Image.BILINEAR)
    if rng.random() < 0.5:
        img = ImageOps.mirror(img)
    img = ImageEnhance.Color(img).enhance(rng.uniform(0.6, 1.4))
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.7, 1.3))
    img = ImageEnhance.Sharpness(img).enhance(rng.uniform(1.0, 3.0))
    arr = np.asarray(img, np.int16) + _noise(rng, size)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _imagenet(rng: random.Random) -> Tuple[bytes, str]:
    w, h = int(500 * rng.uniform(0.8, 1.2)), int(375 * rng.uniform(0.8, 1.2))
    if rng.random() < 0.25:
        w, h = h, w
    buf = io.BytesIO()
    _photo(rng, (w, h)).save(buf, "JPEG", quality=rng.randint(75, 95))
    return buf.getvalue(), "jpg"


def _uploads(rng: random.Random) -> Tuple[bytes, str]:
    pixels = math.exp(rng.uniform(math.log(0.2e6), math.log(12e6)))
    aspect = rng.choice(ASPECTS)
    w = max(16, int(math.sqrt(pixels * aspect)))
    h = max(16, int(pixels / w))
    img = _photo(rng, (w, h))
    buf = io.BytesIO()
    kind = rng.random()
    if kind < 0.05:
        img.save(buf, "PNG", compress_level=1)
        return buf.getvalue(), "png"
    if kind < 0.06:
        img.save(buf, "WEBP", quality=80)
        return buf.getvalue(), "webp"
    if kind < 0.08:
        img = img.convert("CMYK")
    elif kind < 0.10:
        img = img.convert("L")
    exif = Image.Exif()
    if rng.random() < 0.1:
        exif[0x0112] = rng.choice((3, 6, 8))       # Orientation
    img.save(buf, "JPEG", quality=rng.randint(70, 95), progressive=rng.random() < 0.2,
             exif=exif.tobytes())
    return buf.getvalue(), "jpg"


PROFILES = {"imagenet": _imagenet, "uploads": _uploads}


def _make(job: Tuple[str, int, int, str]) -> Tuple[str, int]:
    profile, seed, index, out = job
    rng = random.Random(f"{profile}-{seed}-{index}")
    data, ext = PROFILES[profile](rng)
    name = f"{profile}-{index:06d}.{ext}"
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
    return ext, len(data)


def main(argv: List[str] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", choices=sorted(PROFILES), required=True)
    p.add_argument("--count", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", required=True)
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--links", type=int, default=0,
                   help="Also hard-link the generated files to this many more names "
                        "(<profile>-lNNNNNNN.<ext>): long runs that amortise start-up "
                        "without generating or storing more photos. Each name is its own "
                        "URI to the pipeline.")
    a = p.parse_args(argv)
    os.makedirs(a.output, exist_ok=True)
    jobs = [(a.profile, a.seed, i, a.output) for i in range(a.count)]
    with ProcessPoolExecutor(a.workers) as pool:
        made = list(pool.map(_make, jobs, chunksize=32))
    formats: Dict[str, int] = {}
    for ext, _ in made:
        formats[ext] = formats.get(ext, 0) + 1
    sizes = sorted(n for _, n in made)
    info = {"profile": a.profile, "seed": a.seed, "count": a.count, "formats": formats,
            "bytes_total": sum(sizes), "bytes_median": sizes[len(sizes) // 2],
            "links": a.links}
    for j in range(a.links):
        i = j % a.count
        ext = made[i][0]
        src = os.path.join(a.output, f"{a.profile}-{i:06d}.{ext}")
        dst = os.path.join(a.output, f"{a.profile}-l{j:07d}.{ext}")
        if not os.path.exists(dst):
            os.link(src, dst)
    with open(os.path.join(a.output, "corpus.json"), "w") as f:
        json.dump(info, f, indent=2)
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
