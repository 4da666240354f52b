"""The TensorRT loader under the generic handler, without a GPU: spec checks, batching
from the profile, byte counts, and a clear error where TensorRT is absent."""

from __future__ import annotations

import numpy as np
import pytest

from tests.test_sidecar import sidecar
from transforms.handlers.model_handler import NumpyModelHandler
from transforms.runtime.errors import InputMismatch
from transforms.runtime.tensorrt.runner import TrtLoader, check_spec
from transforms.runtime.tensorrt.sidecar import EngineLoadError


def TensorRTEngineHandler(engine_uri=None, *, min_batch_size=None, max_batch_size=None,
                          model_copies=None, **loader):
    """The generic handler over a TrtLoader (what pipeline.build.make_handler builds)."""
    return NumpyModelHandler(TrtLoader(engine_uri, **loader), min_batch_size=min_batch_size,
                             max_batch_size=max_batch_size, model_copies=model_copies)


def _write(tmp_path, **kw):
    plan = tmp_path / "e.plan"
    plan.write_bytes(b"not a real plan")
    (tmp_path / "e.plan.json").write_text(sidecar(**kw).to_json())
    return str(plan)


def test_check_spec():
    s = sidecar()
    assert check_spec(s, "e.plan", None, "float32", (384, 384, 3)) == "input_1"
    with pytest.raises(InputMismatch, match=r"expected an input named 'images', the engine has \['input_1'\]"):
        check_spec(s, "e.plan", "images", None, None)
    with pytest.raises(InputMismatch, match="expected dtype float16, the engine declares float32"):
        check_spec(s, "e.plan", None, "float16", None)
    with pytest.raises(InputMismatch, match=r"expected shape \[\?, 3, 384, 384\], the engine declares \[\?, 384, 384, 3\]"):
        check_spec(s, "e.plan", None, None, (3, 384, 384))


def test_batching_follows_profile_unless_overridden(tmp_path):
    plan = _write(tmp_path)
    # min = the profile's opt batch (10), max = its max (32)
    assert TensorRTEngineHandler(plan).batch_elements_kwargs() == {
        "min_batch_size": 10, "max_batch_size": 32}
    assert TensorRTEngineHandler(plan, min_batch_size=1).batch_elements_kwargs() == {
        "min_batch_size": 1, "max_batch_size": 32}
    assert TensorRTEngineHandler(plan, min_batch_size=4, max_batch_size=16
                                 ).batch_elements_kwargs() == {"min_batch_size": 4,
                                                               "max_batch_size": 16}


def test_missing_sidecar_is_named(tmp_path):
    with pytest.raises(Exception, match=r"e.plan.json: cannot read engine sidecar"):
        TensorRTEngineHandler(str(tmp_path / "e.plan")).batch_elements_kwargs()


def test_num_bytes_and_namespace(tmp_path):
    h = TensorRTEngineHandler(_write(tmp_path), model_copies=1)
    assert h.get_num_bytes([np.zeros((2, 3), np.float32), {"a": np.zeros(4, np.uint8)}]) == 28
    assert h.get_metrics_namespace() == "beam_trt_inference_tensorrt"
    assert h.share_model_across_processes() and h.model_copies() == 1


def test_load_without_tensorrt_or_gpu_says_so(tmp_path):
    try:
        import tensorrt  # noqa: F401  (only probing)
        pytest.skip("tensorrt is installed; this checks the message where it is not")
    except ImportError:
        pass
    with pytest.raises(EngineLoadError, match="the tensorrt package is not installed"):
        TensorRTEngineHandler(_write(tmp_path)).load_model()
