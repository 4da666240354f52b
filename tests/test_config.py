"""ModelSpec / RunConfig validation: every error names the field, expected and actual."""

from __future__ import annotations

import json

import pytest

from pipeline.config import RunConfig
from transforms.spec import ConfigError, DecodeLimits, ModelSpec, OPEN_NSFW_SPEC


def test_open_nsfw_spec_shape():
    assert OPEN_NSFW_SPEC.input_shape(4) == (4, 224, 224, 3)
    assert OPEN_NSFW_SPEC.resize_size == (256, 256)
    assert OPEN_NSFW_SPEC.labels == ("sfw", "nsfw")


@pytest.mark.parametrize("kw,match", [
    ({"layout": "HWC"}, r"layout: expected one of \['NHWC', 'NCHW'\], got 'HWC'"),
    ({"height": 0}, "height: expected a positive integer, got 0"),
    ({"std": (1, 0, 1)}, "std: expected non-zero values"),
    ({"mean": (1, 2)}, "mean: expected 3 finite numbers"),
    ({"jpeg_roundtrip_quality": 100}, "jpeg_roundtrip_quality: expected 1..95"),
    ({"resize_height": 10}, "resize_height: expected >= height 32, got 10"),
    ({"crop": "none", "resize_height": 40}, "crop: 'none' needs the resize size"),
    ({"input_dtype": "int64"}, "input_dtype: expected one of"),
])
def test_spec_errors(kw, match):
    with pytest.raises(ConfigError, match=match):
        ModelSpec(**{"name": "m", "height": 32, "width": 32, **kw})


def test_spec_json_roundtrip(tmp_path):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(OPEN_NSFW_SPEC.to_dict()))
    assert ModelSpec.from_json(str(path)) == OPEN_NSFW_SPEC


def test_spec_json_unknown_key(tmp_path):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"name": "m", "height": 8, "width": 8, "heigth": 9}))
    with pytest.raises(ConfigError, match=r"spec.json: unknown model spec keys \['heigth'\]"):
        ModelSpec.from_json(str(path))


def test_spec_json_must_state_its_preprocessing(tmp_path):
    """A 0-255 model with mean 127 / std 128 that leaves out scale must not run with 1/255."""
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"name": "m", "height": 8, "width": 8, "layout": "NCHW",
                                "channel_order": "RGB", "mean": [127, 127, 127],
                                "std": [128, 128, 128]}))
    with pytest.raises(ConfigError, match=r"spec.json: model spec keys \['scale'\] are missing; "
                                          r"expected every one of \['layout', 'channel_order', "
                                          r"'scale', 'mean', 'std'\]"):
        ModelSpec.from_json(str(path))
    path.write_text(json.dumps({"name": "m", "height": 8, "width": 8}))
    with pytest.raises(ConfigError, match=r"\['layout', 'channel_order', 'scale', 'mean', 'std'\] "
                                          "are missing"):
        ModelSpec.from_json(str(path))


def test_spec_json_invalid(tmp_path):
    path = tmp_path / "spec.json"
    path.write_text("{nope")
    with pytest.raises(ConfigError, match="not valid JSON"):
        ModelSpec.from_json(str(path))


def test_spec_is_frozen():
    with pytest.raises(AttributeError):
        OPEN_NSFW_SPEC.height = 1  # type: ignore[misc]


@pytest.mark.parametrize("kw,match", [
    ({"inputs": ()}, "expected at least one, got neither"),
    ({"backend": "torch"}, "--backend: expected one of"),
    ({"backend": "tensorrt"}, "--backend tensorrt: expected --engine PATH"),
    ({"min_batch_size": 8, "max_batch_size": 4}, "--max_batch_size: expected >= --min_batch_size 8, got 4"),
    ({"onnx_providers": ("CudaProvider",)}, "--onnx_providers: expected one of"),
    ({"output_format": "csv"}, "--output_format: expected one of"),
    ({"top_k": 0}, "--top_k: expected a positive integer, got 0"),
])
def test_run_config_errors(kw, match):
    base = {"output": "/tmp/o", "inputs": ("a/*",)}
    base.update(kw)
    with pytest.raises(ConfigError, match=match):
        RunConfig(**base)


def test_limits_positive():
    with pytest.raises(ConfigError, match="max_pixels"):
        DecodeLimits(max_pixels=0)
