"""build_engine's argument handling and profile derivation (no TensorRT needed)."""

from __future__ import annotations

import pytest

from pipeline.build_engine import main, options_from_args
from transforms.runtime.storage import write_bytes as write_file
from transforms.runtime.tensorrt.builder import (BuildError, BuildOptions, derive_profiles,
                                                 parse_shapes, parse_tactic_sources)

KNOWN = ["CUBLAS", "CUBLAS_LT", "CUDNN", "EDGE_MASK_CONVOLUTIONS", "JIT_CONVOLUTIONS"]


def test_parse_shapes():
    assert parse_shapes("input_1:1x384x384x3,m:2x4", "--min_shapes") == {
        "input_1": (1, 384, 384, 3), "m": (2, 4)}
    assert parse_shapes(None, "--min_shapes") == {}
    for bad in ("input_1", "x:1xAx3", "x:0x3", ":1x2"):
        with pytest.raises(BuildError, match="--min_shapes: expected NAME:DxDxD"):
            parse_shapes(bad, "--min_shapes")


def test_parse_tactic_sources():
    assert parse_tactic_sources("-CUBLAS,-cublas_lt,+CUDNN", KNOWN) == (
        ["CUDNN"], ["CUBLAS", "CUBLAS_LT"])
    with pytest.raises(BuildError, match=r"expected \+NAME or -NAME .* got 'CUBLAS'"):
        parse_tactic_sources("CUBLAS", KNOWN)
    with pytest.raises(BuildError, match="got '-MAGIC'"):
        parse_tactic_sources("-MAGIC", KNOWN)


def test_derive_profiles_batch_flags():
    got = derive_profiles({"input_1": (-1, 384, 384, 3)}, 1, 10, 32, {}, {}, {})
    assert got == {"input_1": ((1, 384, 384, 3), (10, 384, 384, 3), (32, 384, 384, 3))}


def test_derive_profiles_full_shapes_and_errors():
    inputs = {"x": (-1, 3, -1, -1)}
    got = derive_profiles(inputs, 1, 1, 1, {"x": (1, 3, 64, 64)}, {"x": (4, 3, 128, 128)},
                          {"x": (8, 3, 256, 256)})
    assert got["x"][2] == (8, 3, 256, 256)
    with pytest.raises(BuildError, match="dynamic dims .* give --min_shapes"):
        derive_profiles(inputs, 1, 1, 1, {}, {}, {})
    with pytest.raises(BuildError, match="expected all of --min/--opt/--max_shapes"):
        derive_profiles(inputs, 1, 1, 1, {"x": (1, 3, 64, 64)}, {}, {})
    with pytest.raises(BuildError, match=r"--opt_shapes: no network input named \['y'\]"):
        derive_profiles(inputs, 1, 1, 1, {}, {"y": (1,)}, {})
    with pytest.raises(BuildError, match=r"profile shape \[1, 4, 64, 64\] does not fit"):
        derive_profiles(inputs, 1, 1, 1, {"x": (1, 4, 64, 64)}, {"x": (1, 4, 64, 64)},
                        {"x": (1, 4, 64, 64)})
    with pytest.raises(BuildError, match="expected min <= opt <= max"):
        derive_profiles(inputs, 1, 1, 1, {"x": (8, 3, 64, 64)}, {"x": (4, 3, 64, 64)},
                        {"x": (8, 3, 64, 64)})
    with pytest.raises(BuildError, match="got 1/40/32"):
        derive_profiles({"x": (-1, 3)}, 1, 40, 32, {}, {}, {})


def test_options_from_args():
    o = options_from_args(["--onnx", "m.onnx", "--output", "m.plan", "--fp16", "--no-tf32",
                           "--max_batch", "64", "--builder_optimization_level", "1",
                           "--timing_cache", "t.cache", "--max_shapes", "x:64x3"])
    assert (o.fp16, o.tf32, o.max_batch, o.builder_optimization_level) == (True, False, 64, 1)
    assert o.max_shapes == {"x": (64, 3)} and o.precision == "fp16"
    assert BuildOptions(onnx="a", output="b", tf32=False).precision == "fp32"
    assert BuildOptions(onnx="a", output="b").precision == "tf32"
    with pytest.raises(BuildError, match="--builder_optimization_level: expected 0..5, got 7"):
        BuildOptions(onnx="a", output="b", builder_optimization_level=7)
    with pytest.raises(SystemExit):
        options_from_args(["--output", "x"])  # --onnx is required


def test_main_reports_missing_onnx(tmp_path, capsys):
    rc = main(["--onnx", str(tmp_path / "missing.onnx"), "--output", str(tmp_path / "m.plan")])
    err = capsys.readouterr().err
    assert rc == 1
    try:
        import tensorrt  # noqa: F401  (only probing)
        assert "missing.onnx: cannot read ONNX model" in err
    except ImportError:
        assert "the tensorrt package is not installed" in err


def test_write_file_is_atomic_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "m.plan"
    write_file(str(target), b"abc")
    write_file(str(target), b"defg")
    assert target.read_bytes() == b"defg"
    assert [p.name for p in target.parent.iterdir()] == ["m.plan"]
