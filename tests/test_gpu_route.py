"""Routing for --preprocess gpu, on the CPU: which files may reach DALI, and that every
refusal is the same dead letter the CPU path writes."""

from __future__ import annotations

import io

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from tests.conftest import SAMPLES
from tests.hostile_images import HOSTILE, LEGIT
from tests.images import encode, jpeg_bytes, png_header_only, truncated_jpeg
from transforms.decode import ImageTooLarge, UndecodableImage
from transforms.gpu_route import CPU_PATH, RouteForGpu, gpu_decodable
from transforms.records import DEAD_LETTER, Item
from transforms.spec import OPEN_NSFW_SPEC, DecodeLimits, ModelSpec

LIMITS = DecodeLimits()


@pytest.mark.parametrize("name,gpu", [
    ("chelsea.jpg", True), ("coffee_cmyk.jpg", True), ("chelsea_exif_rotated.jpg", True),
    ("rocket.jpg", True), ("horse_rgba.png", False), ("horse_palette.png", False),
    ("clock_16bit.png", False),
])
def test_samples_are_routed_by_what_dali_decodes_like_pillow(name, gpu):
    assert gpu_decodable((SAMPLES / name).read_bytes(), OPEN_NSFW_SPEC, LIMITS) is gpu


def test_greyscale_and_progressive_jpegs_go_to_the_gpu():
    buf = io.BytesIO()
    Image.new("L", (64, 64), 90).save(buf, "JPEG")
    assert gpu_decodable(buf.getvalue(), OPEN_NSFW_SPEC, LIMITS)
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 40).convert("RGB").save(buf, "JPEG", progressive=True)
    assert gpu_decodable(buf.getvalue(), OPEN_NSFW_SPEC, LIMITS)


def test_mpo_and_other_formats_take_the_cpu_path():
    for name in ("mpo.jpg", "gif_anim.gif", "webp_anim.webp", "bmp.bmp", "tiff_pages.tif"):
        assert not gpu_decodable(LEGIT[name](), OPEN_NSFW_SPEC, LIMITS), name


@pytest.mark.parametrize("marker", [0xC3, 0xC9, 0xCA, 0xC5])
def test_lossless_arithmetic_and_hierarchical_jpegs_take_the_cpu_path(marker):
    """Frames nvJPEG does not decode: only Huffman-coded DCT (C0, C1, C2) reaches DALI."""
    data = bytearray(jpeg_bytes((64, 64)))
    pos = data.find(b"\xff\xc0")
    data[pos + 1] = marker
    assert not gpu_decodable(bytes(data), OPEN_NSFW_SPEC, LIMITS)


@pytest.mark.parametrize("data,exc", [
    (truncated_jpeg(), UndecodableImage),
    (b"this is text", UndecodableImage),
    (png_header_only(100000, 100000), ImageTooLarge),
    (HOSTILE["mpo_frame.jpg"](), ImageTooLarge),
])
def test_nothing_dali_could_choke_on_passes(data, exc):
    with pytest.raises(exc):
        gpu_decodable(data, OPEN_NSFW_SPEC, LIMITS)


def test_too_small_for_a_crop_without_resize_takes_the_cpu_path():
    spec = ModelSpec(name="m", height=64, width=64, resize_policy="none", crop="center")
    assert not gpu_decodable(jpeg_bytes((32, 32)), spec, LIMITS)
    assert gpu_decodable(jpeg_bytes((80, 80)), spec, LIMITS)


def test_jpegs_above_the_megapixel_cap_take_the_cpu_path():
    """--dali_max_megapixels: the size is read from the header; at the cap it still goes
    to DALI, above it to Pillow (which decodes at a reduced DCT scale)."""
    at_cap, above = jpeg_bytes((1000, 500)), jpeg_bytes((1000, 501))   # 0.5 MP, just over
    assert gpu_decodable(at_cap, OPEN_NSFW_SPEC, LIMITS, max_pixels=500_000)
    assert not gpu_decodable(above, OPEN_NSFW_SPEC, LIMITS, max_pixels=500_000)
    assert gpu_decodable(above, OPEN_NSFW_SPEC, LIMITS)
    p = TestPipeline()
    out = (p | beam.Create([Item("small.jpg", at_cap), Item("big.jpg", above)])
           | beam.ParDo(RouteForGpu(OPEN_NSFW_SPEC, LIMITS, max_megapixels=0.5)).with_outputs(
               DEAD_LETTER, CPU_PATH, main="gpu"))
    assert_that(out.gpu | "g" >> beam.Map(lambda i: i.uri), equal_to(["small.jpg"]), label="g")
    assert_that(out[CPU_PATH] | "c" >> beam.Map(lambda i: i.uri), equal_to(["big.jpg"]),
                label="c")
    p.run().wait_until_finish()


def test_progressive_jpegs_take_the_cpu_path_when_asked():
    """--dali_progressive cpu: a progressive JPEG (frame 0xC2) goes to Pillow, a baseline one
    of the same pixels still to DALI; by default both go to DALI."""
    progressive = encode(Image.new("RGB", (320, 240), (200, 90, 10)), "JPEG", quality=85,
                         progressive=True)
    baseline = jpeg_bytes((320, 240))
    assert gpu_decodable(progressive, OPEN_NSFW_SPEC, LIMITS)
    assert not gpu_decodable(progressive, OPEN_NSFW_SPEC, LIMITS, progressive=False)
    assert gpu_decodable(baseline, OPEN_NSFW_SPEC, LIMITS, progressive=False)
    p = TestPipeline()
    out = (p | beam.Create([Item("p.jpg", progressive), Item("b.jpg", baseline)])
           | beam.ParDo(RouteForGpu(OPEN_NSFW_SPEC, LIMITS, progressive=False)).with_outputs(
               DEAD_LETTER, CPU_PATH, main="gpu"))
    assert_that(out.gpu | "g" >> beam.Map(lambda i: i.uri), equal_to(["b.jpg"]), label="g")
    assert_that(out[CPU_PATH] | "c" >> beam.Map(lambda i: i.uri), equal_to(["p.jpg"]),
                label="c")
    p.run().wait_until_finish()


def test_route_dofn_outputs():
    items = [Item("good.jpg", jpeg_bytes()), Item("a.png", (SAMPLES / "horse_rgba.png").read_bytes()),
             Item("cut.jpg", truncated_jpeg())]
    p = TestPipeline()
    out = (p | beam.Create(items)
           | beam.ParDo(RouteForGpu(OPEN_NSFW_SPEC, LIMITS)).with_outputs(
               DEAD_LETTER, CPU_PATH, main="gpu"))
    assert_that(out.gpu | "g" >> beam.Map(lambda i: (i.uri, type(i.payload).__name__,
                                                     i.payload.dtype.name)),
                equal_to([("good.jpg", "ndarray", "uint8")]), label="gpu")
    assert_that(out[CPU_PATH] | "c" >> beam.Map(lambda i: i.uri), equal_to(["a.png"]),
                label="cpu")
    assert_that(out[DEAD_LETTER] | "d" >> beam.Map(lambda d: (d["uri"], d["stage"],
                                                              d["error_type"])),
                equal_to([("cut.jpg", "decode", "UndecodableImage")]), label="dead")
    p.run().wait_until_finish()
    assert np.frombuffer(jpeg_bytes(), np.uint8).size > 0
