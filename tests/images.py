"""Hostile and edge-case image bytes, built in code so tests need no fixtures on disk."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path
from typing import Dict, List, Sequence

from PIL import Image


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width x height, with no pixel data (a bomb header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def jpeg_bytes(size=(64, 48), color=(200, 30, 30), quality=90) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def truncated_jpeg() -> bytes:
    data = jpeg_bytes((256, 256))
    return data[: len(data) // 2]


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


# Decodes (and optionally preprocesses, as the CPU path does) each file in a child under a
# 3 GB address-space cap: a hang, a memory blow-up or a crash shows as that file's figures
# or the child's death, instead of taking the test runner down.
_CHILD = textwrap.dedent("""
    import json, resource, sys, time
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
    sys.path.insert(0, sys.argv[1])
    from transforms.decode import decode_image
    from transforms.preprocess import preprocess
    from transforms.spec import OPEN_NSFW_SPEC as spec
    from tests.peak_rss import peak_rss_mb
    with_preprocess = sys.argv[2] == "1"

    for path in sys.argv[3:]:
        data = open(path, "rb").read()
        start = time.perf_counter()
        try:
            if with_preprocess:
                preprocess(decode_image(data, target_size=spec.resize_size), spec)
            else:
                decode_image(data)
            outcome, message = "ok", ""
        except BaseException as exc:  # MemoryError too: that is the regression to catch
            outcome, message = type(exc).__name__, str(exc)
        print(json.dumps({"file": path.rsplit("/", 1)[-1], "outcome": outcome,
                          "message": message, "seconds": time.perf_counter() - start,
                          "peak_rss_mb": peak_rss_mb()}),
              flush=True)
""")


def decode_in_child(paths: Sequence[Path], timeout_s: float, preprocess: bool = False
                    ) -> List[Dict]:
    """One record per file (outcome "ok" or the exception's type, its message, seconds,
    the child's peak RSS so far); raises CalledProcessError / TimeoutExpired if the child
    dies or hangs."""
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", _CHILD, str(root), "1" if preprocess else "0",
                           *map(str, paths)],
                          capture_output=True, text=True, timeout=timeout_s, check=True)
    return [json.loads(line) for line in done.stdout.splitlines()]
