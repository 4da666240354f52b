"""Folding the spec's normalisation into the ONNX graph: same scores from uint8 pixels."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from tests.conftest import SAMPLES, make_linear_model
from transforms.decode import decode_image
from transforms.preprocess import preprocess
from transforms.runtime.errors import ModelLoadError
from transforms.runtime.fold import WIRE_INPUT, fold_normalisation, wire_spec
from transforms.runtime.storage import read_bytes
from transforms.spec import OPEN_NSFW_SPEC, ModelSpec


def _run(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    s = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def _images(spec: ModelSpec) -> list:
    return [decode_image(p.read_bytes(), target_size=spec.resize_size,
                         alpha_background=spec.alpha_background)
            for p in sorted(SAMPLES.glob("*.jpg"))]


def test_wire_spec_sends_raw_pixels():
    w = wire_spec(OPEN_NSFW_SPEC)
    assert (w.input_dtype, w.layout, w.channel_order, w.scale, w.mean, w.std) == (
        "uint8", "NHWC", "RGB", 1.0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert (w.height, w.width, w.resize_size, w.jpeg_roundtrip_quality) == (
        224, 224, (256, 256), 75)


def test_open_nsfw_folded_scores_equal_the_float_path():
    original = read_bytes("bundled://open_nsfw")
    folded = fold_normalisation(original, OPEN_NSFW_SPEC)
    rgb = _images(OPEN_NSFW_SPEC)
    want = _run(original, np.stack([preprocess(x, OPEN_NSFW_SPEC) for x in rgb]))
    pixels = np.stack([preprocess(x, wire_spec(OPEN_NSFW_SPEC)) for x in rgb])
    assert pixels.dtype == np.uint8 and pixels.nbytes * 4 == pixels.size * 4
    got = _run(folded, pixels)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_nchw_mean_std_bgr_spec(tmp_path):
    path = tmp_path / "m.onnx"
    make_linear_model(path, input_name="x", layout="NCHW", hw=(16, 16), classes=4)
    spec = ModelSpec(name="m", height=16, width=16, layout="NCHW", input_name="x",
                     channel_order="BGR", resize_policy="shorter_side", resize_height=20,
                     resize_width=20, scale=1 / 255, mean=(0.485, 0.456, 0.406),
                     std=(0.229, 0.224, 0.225))
    folded = fold_normalisation(path.read_bytes(), spec)
    rgb = _images(spec)
    want = _run(path.read_bytes(), np.stack([preprocess(x, spec) for x in rgb]))
    got = _run(folded, np.stack([preprocess(x, wire_spec(spec)) for x in rgb]))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    s = ort.InferenceSession(folded, providers=["CPUExecutionProvider"])
    assert [i.name for i in s.get_inputs()] == [WIRE_INPUT]
    assert s.get_inputs()[0].type == "tensor(uint8)"


def test_a_spec_that_does_not_fit_is_refused(tmp_path):
    path = tmp_path / "m.onnx"
    make_linear_model(path, input_name="x")
    with pytest.raises(ModelLoadError, match=r"expected one image input images to fold into, "
                                             r"the model has \['x'\]"):
        fold_normalisation(path.read_bytes(), ModelSpec(name="m", height=8, width=8,
                                                        input_name="images"))
    with pytest.raises(ModelLoadError, match="input 'x' expected dtype float16 as the spec "
                                             "says, the model declares FLOAT"):
        fold_normalisation(path.read_bytes(), ModelSpec(name="m", height=8, width=8,
                                                        input_dtype="float16"))
