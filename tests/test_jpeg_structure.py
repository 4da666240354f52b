"""The CPU-side JPEG structure check that guards the GPU decode path."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.conftest import SAMPLES
from tests.images import jpeg_bytes
from transforms.decode_errors import UndecodableImage
from transforms.jpeg_structure import check_jpeg_structure


def _progressive() -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((300, 200), 60).convert("RGB").save(buf, "JPEG", progressive=True,
                                                           quality=85)
    return buf.getvalue()


def _with_restarts() -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((256, 256), 60).convert("RGB").save(buf, "JPEG", restart_marker_rows=1)
    return buf.getvalue()


@pytest.mark.parametrize("name", sorted(p.name for p in SAMPLES.glob("*.jpg")))
def test_every_sample_jpeg_is_whole(name):
    check_jpeg_structure((SAMPLES / name).read_bytes())


def test_progressive_restart_and_trailing_bytes_are_whole_and_say_their_frame():
    assert check_jpeg_structure(_progressive()) == 0xC2
    assert check_jpeg_structure(_with_restarts()) == 0xC0
    assert check_jpeg_structure(jpeg_bytes() + b"SAMSUNG-TRAILER" * 10) == 0xC0


@pytest.mark.parametrize("cut", [0.3, 0.6, 0.95])
def test_truncated_anywhere_is_refused(cut):
    for data in (jpeg_bytes((256, 256)), _progressive()):
        short = data[: int(len(data) * cut)]
        with pytest.raises(UndecodableImage, match="JPEG is truncated: .*(without an EOI "
                                                   "marker|runs past the end|remain|"
                                                   "before its EOI)"):
            check_jpeg_structure(short)


def test_cut_exactly_before_eoi_is_refused():
    data = jpeg_bytes()
    assert data.endswith(b"\xff\xd9")
    with pytest.raises(UndecodableImage, match="JPEG is truncated"):
        check_jpeg_structure(data[:-2])


@pytest.mark.parametrize("data,match", [
    (b"", "not a JPEG"),
    (b"hello world", "not a JPEG"),
    (b"\xff\xd8\xff\xd9", "no frame header"),
    (b"\xff\xd8\xff\xe0\x00\x40JFIF", "declares 64 bytes; only"),
    (b"\xff\xd8\x00\x00", "expected a marker at byte 2"),
])
def test_malformed_headers_are_refused(data, match):
    with pytest.raises(UndecodableImage, match=match):
        check_jpeg_structure(data)


def test_check_is_fast_on_a_large_photo():
    import time

    buf = io.BytesIO()
    Image.effect_noise((4000, 3000), 40).convert("RGB").save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    start = time.perf_counter()
    check_jpeg_structure(data)
    assert time.perf_counter() - start < 0.5, "the walk must not decode"
