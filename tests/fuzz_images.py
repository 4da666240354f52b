"""Mutated image files, seeded, and a child process that decodes each under a memory cap.

Why mutate real encodings: a decoder's bugs live just past a valid header. The seeds are
small real files in every accepted format family (JPEG baseline and progressive, PNG RGB,
palette and RGBA, GIF palette and animated, WebP lossy and animated, TIFF, BMP); each
mutation is one of
  bitflip        1-8 random bits flipped anywhere,
  truncate       cut at a random offset,
  header_edit    1-4 bytes of the first 64 overwritten (0x00, 0xFF or random),
  header_random  the first 16-64 bytes kept, the rest random (same length).
Used by tests/test_fuzz.py (the CI share) and scripts/fuzz_decode.py (the full size).
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Callable, Dict, List, Tuple

from PIL import Image

from tests import images

ROOT = Path(__file__).resolve().parent.parent
MUTATIONS = ("bitflip", "truncate", "header_edit", "header_random")


def _base() -> Image.Image:
    with Image.open(ROOT / "samples" / "chelsea.jpg") as img:
        return img.convert("RGB").resize((96, 64))


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def seeds() -> Dict[str, bytes]:
    """One small valid file per format family the decoder accepts."""
    rgb = _base()
    frames = [rgb, rgb.rotate(90), rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    rgba = rgb.copy()
    rgba.putalpha(128)
    return {
        "jpeg": _save(rgb, "JPEG", quality=90),
        "jpeg_progressive": _save(rgb, "JPEG", quality=85, progressive=True),
        "png": _save(rgb, "PNG"),
        "png_palette": _save(rgb.convert("P"), "PNG"),
        "png_rgba": _save(rgba, "PNG"),
        "gif": _save(rgb.convert("P"), "GIF"),
        "gif_animated": _save(frames[0].convert("P"), "GIF", save_all=True,
                              append_images=[f.convert("P") for f in frames[1:]]),
        "webp": _save(rgb, "WEBP", quality=80),
        "webp_animated": _save(frames[0], "WEBP", save_all=True, append_images=frames[1:]),
        "tiff": _save(rgb, "TIFF"),
        "bmp": _save(rgb, "BMP"),
    }


def _bitflip(data: bytearray, rng: random.Random) -> None:
    for _ in range(rng.randint(1, 8)):
        pos = rng.randrange(len(data))
        data[pos] ^= 1 << rng.randrange(8)


def _truncate(data: bytearray, rng: random.Random) -> None:
    del data[rng.randrange(1, len(data)):]


def _header_edit(data: bytearray, rng: random.Random) -> None:
    for _ in range(rng.randint(1, 4)):
        pos = rng.randrange(min(64, len(data)))
        data[pos] = rng.choice((0x00, 0xFF, rng.randrange(256)))


def _header_random(data: bytearray, rng: random.Random) -> None:
    keep = rng.randint(16, 64)
    data[keep:] = rng.randbytes(max(0, len(data) - keep))


_MUTATORS: Dict[str, Callable[[bytearray, random.Random], None]] = {
    "bitflip": _bitflip, "truncate": _truncate, "header_edit": _header_edit,
    "header_random": _header_random}


def corpus(count: int, seed: int = 0) -> List[Tuple[str, bytes]]:
    """``count`` (name, bytes), cycling seeds x mutations; names say what was done."""
    rng = random.Random(seed)
    base = seeds()
    out = []
    for i in range(count):
        fmt = list(base)[i % len(base)]
        kind = MUTATIONS[(i // len(base)) % len(MUTATIONS)]
        data = bytearray(base[fmt])
        _MUTATORS[kind](data, rng)
        out.append((f"{i:05d}_{fmt}_{kind}", bytes(data)))
    return out


def write_corpus(folder: Path, count: int, seed: int = 0) -> List[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in corpus(count, seed):
        path = folder / name
        path.write_bytes(data)
        paths.append(path)
    return paths


def decode_in_child(paths: List[Path], timeout_s: float) -> List[Dict]:
    """Decode + preprocess each file in a capped child (tests/images.py)."""
    return images.decode_in_child(paths, timeout_s, preprocess=True)
