"""The plan sidecar: round trip, runtime checks that name both sides, batch limits."""

from __future__ import annotations

import numpy as np
import pytest

from transforms.runtime.batching import batch_inputs
from transforms.runtime.tensorrt.sidecar import EngineLoadError, EngineMismatch, Sidecar, TensorSpec


def sidecar(**kw) -> Sidecar:
    base = dict(
        tensorrt_version="8.6.0", gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0",
        tensors=(TensorSpec("input_1", "input", "float32", (-1, 384, 384, 3),
                            (1, 384, 384, 3), (10, 384, 384, 3), (32, 384, 384, 3)),
                 TensorSpec("logits", "output", "float32", (-1, 1000))),
        precision="tf32", onnx_sha256="a" * 64, plan_sha256="b" * 64,
        builder={"builder_optimization_level": 1})
    base.update(kw)
    return Sidecar(**base)


def test_roundtrip_and_batch_limits():
    s = sidecar()
    assert Sidecar.from_json(s.to_json()) == s
    assert (s.min_batch, s.max_batch) == (1, 32)
    assert [t.name for t in s.inputs] == ["input_1"] and [t.name for t in s.outputs] == ["logits"]


def test_invalid_json():
    with pytest.raises(EngineLoadError, match="e.plan.json: not a valid engine sidecar"):
        Sidecar.from_json('{"tensorrt_version": "8.6"}', source="e.plan.json")


def test_runtime_match_passes():
    sidecar().check_runtime("8.6.0", "NVIDIA H100 80GB HBM3", "9.0")


def test_runtime_mismatch_names_both_sides():
    with pytest.raises(EngineMismatch) as info:
        sidecar().check_runtime("10.13.0.35", "Tesla T4", "7.5", source="gs://b/e.plan.json")
    msg = str(info.value)
    assert msg.startswith("gs://b/e.plan.json: the plan was built for TensorRT 8.6.0 "
                          "(running 10.13.0.35)")
    assert "compute capability 9.0 (this GPU has 7.5)" in msg
    assert "GPU 'NVIDIA H100 80GB HBM3' (this GPU is 'Tesla T4')" in msg
    assert "pipeline.build_engine" in msg


def test_plan_hash_mismatch():
    with pytest.raises(EngineMismatch, match=r"e.plan: plan sha256 cccccccccccccccc\.\.\. does not match"):
        sidecar().check_plan("c" * 64, source="e.plan")


def test_batch_inputs_arrays_and_dicts():
    a = [np.zeros(2), np.ones(2)]
    assert batch_inputs(a, ["x"]) == {"x": a}
    d = [{"x": np.zeros(1), "y": np.ones(1)}]
    assert list(batch_inputs(d, ["x", "y"])) == ["x", "y"]
    with pytest.raises(ValueError, match=r"example 0: expected a dict with keys \['x', 'y'\]"):
        batch_inputs([np.zeros(1)], ["x", "y"])


def test_an_empty_sidecar_names_the_missing_key(tmp_path):
    """`{}` used to surface as a raw KeyError traceback; now the run says what is missing."""
    from pipeline.main import main

    plan = tmp_path / "e.plan"
    plan.write_bytes(b"plan")
    (tmp_path / "e.plan.json").write_text("{}")
    with pytest.raises(EngineLoadError, match=r"e\.plan\.json: not a valid engine sidecar: "
                                              r"missing key 'tensorrt_version'"):
        Sidecar.from_json("{}", source=str(tmp_path / "e.plan.json"))
    import sys
    argv = sys.argv
    sys.argv = ["pipeline.main", "--input", str(tmp_path / "*.plan"), "--output",
                str(tmp_path / "o"), "--backend", "tensorrt", "--engine", str(plan),
                "--preprocess", "cpu"]
    try:
        assert main() == 2
    finally:
        sys.argv = argv
