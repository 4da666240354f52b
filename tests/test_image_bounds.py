"""Every size a file declares is bounded before a decoder allocates from it.

The hostile files (tests/hostile_images.py) each pass the cap on their outer header and
declare a huge image inside. They are decoded in a child process under an address-space
limit (tests/images.py: decode_in_child), so a regression fails with MemoryError instead
of taking the test machine down, and the child reports its own peak RSS and time per file.
"""

from __future__ import annotations

import pytest
from PIL import Image

from transforms.spec import ConfigError, DecodeLimits
from tests.hostile_images import HOSTILE, LEGIT, gif, ico, j2k_codestream, jp2, tiff
from tests.images import decode_in_child, encode, jpeg_bytes, png_header_only
from transforms.decode import (ImageTooLarge, UndecodableImage, UnsupportedFormat,
                               decode_image)
from transforms.image_bounds import (BOUNDED_FORMATS, MAX_J2K_TILES, check_bytes,
                                     jpeg_size, png_size)

@pytest.fixture(scope="module")
def hostile_report(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("hostile")
    paths = []
    for name, build in HOSTILE.items():
        (folder / name).write_bytes(build())
        paths.append(str(folder / name))
    return {r["file"]: r for r in decode_in_child(paths, timeout_s=300)}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_file_is_refused_fast_and_small(hostile_report, name):
    r = hostile_report[name]
    assert r["outcome"] in ("ImageTooLarge", "UnsupportedFormat"), r
    assert r["seconds"] < 1.0, r
    assert r["peak_rss_mb"] < 1024, r


@pytest.mark.parametrize("name", sorted(LEGIT))
def test_benign_twin_of_each_format_decodes(name):
    arr = decode_image(LEGIT[name]())
    assert arr.ndim == 3 and arr.shape[2] == 3 and arr.size > 0


@pytest.mark.parametrize("name,match", [
    ("icns_j2k.icns", "codestream SIZ declares 400000x400000"),
    ("icns_png.icns", r"ICNS entry ic09 \(embedded PNG\) declares 400000x400000"),
    ("ico_bmp.ico", r"ICO entry 0 \(embedded BMP\) declares 60000x60000"),
    ("ico_second_entry.ico", "ICO entry 1"),
    ("mpo_frame.jpg", "MPO frame 1 SOF declares 60000x60000"),
    ("tiff_page2.tif", "TIFF page 1 declares 400000x400000"),
    ("tiff_tile.tif", "TIFF page 0 tile declares 1048576x1048576"),
    ("jp2_codestream.jp2", "codestream SIZ declares 400000x400000"),
    ("jp2_tile.jp2", "JPEG 2000 tile declares 1048576x1048576"),
    ("j2k_tiles.j2k", f"62500 tiles of 32x32; expected at most {MAX_J2K_TILES}"),
    ("gif_frame0.gif", r"GIF frame 0 declares 60000x60000 at \(0,0\), outside the 16x16 canvas"),
    ("gif_frame2.gif", "GIF frame 1 declares 60000x60000"),
    ("apng_frame.png", "APNG frame 0 declares 60000x60000"),
    ("webp_frame.webp", "WebP frame 1 declares 16000x16000"),
])
def test_message_names_the_nested_image_and_its_size(name, match):
    with pytest.raises(ImageTooLarge, match=match):
        decode_image(HOSTILE[name]())


def test_psd_is_refused_by_default_by_name():
    with pytest.raises(UnsupportedFormat, match=r"PSD files are refused.*expected one of"):
        decode_image(HOSTILE["psd_layer.psd"]())


def test_formats_outside_the_run_list_are_refused():
    limits = DecodeLimits(formats=("JPEG", "PNG"))
    with pytest.raises(UnsupportedFormat, match=r"GIF files are refused.*\['JPEG', 'PNG'\]"):
        decode_image(LEGIT["gif_anim.gif"](), limits)
    assert decode_image(jpeg_bytes(), limits).shape == (48, 64, 3)


def test_format_list_accepts_only_bounded_formats():
    with pytest.raises(ConfigError, match=r"--image_formats: expected one of .*got 'PSD'"):
        DecodeLimits(formats=("JPEG", "psd"))
    assert DecodeLimits(formats=("jpeg",)).formats == ("JPEG",)
    assert "PSD" not in BOUNDED_FORMATS


def test_pillow_check_follows_the_cap_for_what_the_walkers_skip():
    # a plain BMP has no nested size: Pillow's own check (armed at our cap) refuses it
    data = encode(Image.new("RGB", (40, 30)), "BMP")
    with pytest.raises(ImageTooLarge, match=r"declares 1200 pixels \(Pillow's decompression-bomb "
                                            r"check\); expected at most 1000"):
        decode_image(data, DecodeLimits(max_pixels=1000))


def test_nested_image_just_over_the_cap_is_refused():
    # 33x33 = 1089 > 1000 but < 2 x 1000: Pillow alone would only warn here
    data = ico([encode(Image.new("RGBA", (16, 16)), "PNG"), png_header_only(33, 33)])
    with pytest.raises(ImageTooLarge, match="ICO entry 1 .* 1089 pixels; expected at most 1000"):
        decode_image(data, DecodeLimits(max_pixels=1000))


def test_header_walkers_read_sizes():
    assert png_size(png_header_only(7, 9)) == (7, 9)
    assert jpeg_size(jpeg_bytes((64, 48))) == (64, 48)


@pytest.mark.parametrize("data", [
    gif((16, 16), [(0, 0, 1, 1)])[:14],                 # cut inside the palette
    jp2(8, 8, j2k_codestream(8, 8))[:60],               # cut inside the codestream box
    tiff([(4, 4)])[:30],                                 # cut inside the IFD
])
def test_truncated_headers_are_undecodable_not_crashes(data):
    with pytest.raises((UndecodableImage, ImageTooLarge)):
        decode_image(data)


def test_jp2_header_must_match_its_codestream():
    data = jp2(64, 64, j2k_codestream(32, 32))
    with pytest.raises(ImageTooLarge, match="JP2 header declares 64x64 but its codestream "
                                            "declares 32x32"):
        check_bytes(data, 10_000, BOUNDED_FORMATS)


def test_hostile_files_pass_the_outer_cap():
    """Each hostile file really is nested: Pillow's outer size alone is under the cap."""
    for name in ("icns_j2k.icns", "ico_second_entry.ico", "mpo_frame.jpg", "tiff_page2.tif",
                 "gif_frame2.gif", "webp_frame.webp"):
        import io
        with Image.open(io.BytesIO(HOSTILE[name]())) as img:
            assert img.size[0] * img.size[1] <= DecodeLimits().max_pixels, name
