"""The ONNX Runtime GPU path's CPU-checkable parts: device options, refusals, output shapes.
Its GPU run is tests/gpu/test_onnx_cuda_gpu.py (marker gpu)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import make_linear_model
from transforms.runtime.errors import ModelLoadError
from transforms.runtime.onnx import OnnxLoader
from transforms.runtime.onnx_gpu import OnnxDaliLoader, OnnxDaliRunner, with_device
from transforms.spec import OPEN_NSFW_SPEC


def test_with_device_sets_the_cuda_ep_device_and_keeps_its_other_options():
    loader = OnnxLoader("m.onnx", providers=("CUDAExecutionProvider", "CPUExecutionProvider"),
                        provider_options=(("CUDAExecutionProvider", (("use_tf32", "0"),)),))
    placed = with_device(loader, 1)
    assert dict(placed.provider_options)["CUDAExecutionProvider"] == (
        ("device_id", "1"), ("use_tf32", "0"))
    assert placed.providers == loader.providers and hash(placed)      # still a frozen key


def test_the_gpu_path_refuses_a_session_that_would_not_run_on_cuda():
    loader = OnnxDaliLoader(OnnxLoader("m.onnx"), OPEN_NSFW_SPEC)
    with pytest.raises(ModelLoadError, match=r"expected --onnx_providers "
                       r"CUDAExecutionProvider first, got \['CPUExecutionProvider'\]"):
        loader()
    assert loader.batch_bounds() == (1, 32) and loader.backend == "onnx"


def test_output_shapes_give_dtype_and_the_rows_shape(tmp_path):
    import onnxruntime as ort

    path = tmp_path / "tiny.onnx"
    make_linear_model(path, hw=(8, 8), classes=4)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    shapes = OnnxDaliRunner._output_shapes(session, str(path))
    (name, (dtype, rest)), = shapes.items()
    assert dtype == np.float32 and rest == (4,)


def test_preprocess_gpu_with_onnx_needs_the_cuda_ep_first(tmp_path):
    from pipeline.options import resolve_preprocess
    from transforms.spec import ConfigError
    from pipeline.main import configure

    base = ["--input", "x/*.jpg", "--output", str(tmp_path), "--backend", "onnx",
            "--preprocess", "gpu"]
    with pytest.raises(ConfigError, match="expected --onnx_providers to start with "
                       "CUDAExecutionProvider .* got CPUExecutionProvider"):
        configure(base)
    assert resolve_preprocess("gpu", "onnx", ("CPUExecutionProvider",)) == "gpu"
    assert resolve_preprocess("auto", "onnx", ("CPUExecutionProvider",)) == "cpu"
    # remote (Dataflow): the workers' GPU container has DALI, whatever this launcher has
    cuda = ("CUDAExecutionProvider", "CPUExecutionProvider")
    assert resolve_preprocess("auto", "onnx", cuda, remote=True) == "gpu"
    assert resolve_preprocess("auto", "tensorrt", remote=True) == "gpu"
    assert resolve_preprocess("auto", "onnx", ("CPUExecutionProvider",), remote=True) == "cpu"
    assert resolve_preprocess("cpu", "tensorrt", remote=True) == "cpu"
