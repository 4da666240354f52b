"""decode_image across Pillow modes, orientation, draft decoding and the safety caps."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from transforms.spec import DecodeLimits
from tests.conftest import SAMPLES
from tests.images import encode, jpeg_bytes, png_header_only, truncated_jpeg
from transforms.decode import (EmptyImage, ImageTooLarge, UndecodableImage, decode_image,
                               to_rgb)

WHITE = (255.0, 255.0, 255.0)


def _check(arr: np.ndarray, h: int, w: int) -> None:
    assert arr.dtype == np.uint8
    assert arr.shape == (h, w, 3)


def test_rgb_passthrough():
    arr = decode_image(jpeg_bytes((64, 48), (200, 30, 30)))
    _check(arr, 48, 64)
    assert np.abs(arr.astype(int) - [200, 30, 30]).max() <= 3


def test_grayscale_l_repeats_channel():
    img = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8))
    arr = decode_image(encode(img))
    _check(arr, 8, 8)
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()
    assert arr[0, 0, 0] == 0 and arr[7, 7, 0] == 63


def test_la_composites_on_background():
    img = Image.new("LA", (4, 4), (10, 0))  # fully transparent dark pixel
    arr = decode_image(encode(img), alpha_background=WHITE)
    _check(arr, 4, 4)
    assert (arr == 255).all()


def test_rgba_composite_and_drop():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3] = (100, 50, 0)
    rgba[0, 0, 3] = 255   # opaque
    rgba[0, 1, 3] = 128   # half
    data = encode(Image.fromarray(rgba))
    arr = decode_image(data, alpha_background=WHITE)
    assert tuple(arr[0, 0]) == (100, 50, 0)
    assert tuple(arr[1, 1]) == (255, 255, 255)
    assert tuple(arr[0, 1]) == tuple(np.rint(np.array([100, 50, 0]) * 128 / 255
                                             + 255 * (1 - 128 / 255)).astype(int))
    dropped = decode_image(data, alpha_background=None)
    assert (dropped == (100, 50, 0)).all()


def test_palette_with_transparency_is_not_black():
    arr = decode_image((SAMPLES / "horse_palette.png").read_bytes(), alpha_background=WHITE)
    _check(arr, 328, 400)
    assert tuple(arr[0, 0]) == (255, 255, 255)  # corner is the transparent index
    assert (arr == (90, 60, 30)).all(axis=-1).any()  # the opaque horse keeps its colour


def test_palette_without_transparency():
    img = Image.new("P", (3, 3), 1)
    img.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    arr = decode_image(encode(img))
    assert (arr == (10, 20, 30)).all()


def test_cmyk_converts_to_rgb():
    arr = decode_image(encode(Image.new("CMYK", (4, 4), (255, 0, 0, 0)), "TIFF"))
    _check(arr, 4, 4)
    assert tuple(arr[0, 0]) == (0, 255, 255)


def test_cmyk_jpeg_sample():
    arr = decode_image((SAMPLES / "coffee_cmyk.jpg").read_bytes())
    ref = decode_image((SAMPLES / "coffee.jpg").read_bytes())
    _check(arr, 400, 600)
    assert np.abs(arr.astype(int) - ref.astype(int)).mean() < 8


def test_sixteen_bit_is_scaled_not_clipped():
    raw = np.array([[0, 257 * 128, 65535, 1000]], dtype=np.uint16)
    img = Image.fromarray(raw)
    assert img.mode == "I;16"
    arr = decode_image(encode(img))
    assert list(arr[0, :, 0]) == [0, 128, 255, 4]  # 1000/257 = 3.9 -> 4


def test_sixteen_bit_sample_matches_8bit_original():
    a16 = decode_image((SAMPLES / "clock_16bit.png").read_bytes())
    a8 = decode_image((SAMPLES / "clock_gray.png").read_bytes())
    assert np.array_equal(a16, a8)


def test_mode_i_scaled_as_16bit():
    img = Image.fromarray(np.array([[0, 65535, 70000, -5]], dtype=np.int32))
    assert img.mode == "I"
    arr = to_rgb(img, WHITE)
    assert list(arr[0, :, 1]) == [0, 255, 255, 0]


def test_mode_f_unit_range_and_clipping():
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert unit.mode == "F"
    assert list(to_rgb(unit, WHITE)[0, :, 0]) == [0, 128, 255]
    wide = Image.fromarray(np.array([[-3.0, 100.0, 300.0, np.nan]], dtype=np.float32))
    assert list(to_rgb(wide, WHITE)[0, :, 0]) == [0, 100, 255, 0]


def test_exif_orientation_applied():
    arr = decode_image((SAMPLES / "chelsea_exif_rotated.jpg").read_bytes())
    ref = decode_image((SAMPLES / "chelsea.jpg").read_bytes())
    _check(arr, 300, 451)  # stored 300 wide x 451 high, displayed landscape
    assert np.abs(arr.astype(int) - ref.astype(int)).mean() < 6


def test_large_jpeg_uses_draft():
    data = jpeg_bytes((2000, 1600), (10, 200, 10))
    full = decode_image(data)
    drafted = decode_image(data, target_size=(224, 224))
    _check(full, 1600, 2000)
    _check(drafted, 800, 1000)  # 1/2 scale keeps >= 2x the target per side


def test_small_jpeg_not_drafted():
    data = jpeg_bytes((300, 300))
    _check(decode_image(data, target_size=(224, 224)), 300, 300)


@pytest.mark.parametrize("data,exc,match", [
    (b"", EmptyImage, "0 bytes"),
    (b"hello, this is text not an image\n", UndecodableImage, "not a recognised image"),
    (truncated_jpeg(), UndecodableImage, "truncated|cannot decode"),
    (png_header_only(100000, 100000), ImageTooLarge, "pixels"),
])
def test_bad_bytes_raise_named_errors(data, exc, match):
    with pytest.raises(exc, match=match):
        decode_image(data)


def test_pixel_cap_is_configurable():
    with pytest.raises(ImageTooLarge, match="3072 pixels.*expected at most 1000"):
        decode_image(jpeg_bytes((64, 48)), DecodeLimits(max_pixels=1000))


def test_byte_cap():
    with pytest.raises(ImageTooLarge, match="expected at most 100"):
        decode_image(jpeg_bytes((64, 48)), DecodeLimits(max_bytes=100))


@pytest.mark.parametrize("data", [b"\xff", b"\xff\xd8", b"\xff\xd8\xff", b"BM\x00"])
def test_files_of_a_few_bytes_are_undecodable_not_a_struct_error(data):
    # Found by tests/test_fuzz.py: Pillow's DIB accept() raised struct.error on < 4 bytes.
    with pytest.raises(UndecodableImage, match="not a recognised image format"):
        decode_image(data)
