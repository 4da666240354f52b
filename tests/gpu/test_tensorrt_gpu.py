"""Real TensorRT on a real GPU: builder, engine, handler and the pipeline with
--backend tensorrt. Run under ../shared/gpu/pack-trt with `pytest -m "gpu or tensorrt"`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SAMPLES, sample_paths
from tests.gpu.conftest import build_cached

pytestmark = [pytest.mark.gpu, pytest.mark.tensorrt]


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    """Norm-wise relative error ||got - ref|| / ||ref||, in float64."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    return float(np.linalg.norm(got - ref) / np.linalg.norm(ref))


def _tiny_inputs(n: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((8, 8, 3)).astype(np.float32) for _ in range(n)]


@pytest.mark.parametrize("n", [1, 7, 10, 32, 33])
def test_tiny_engine_batches_ordered(tiny_engine, n, report):
    from tests.test_trt_runner import TensorRTEngineHandler

    plan, w = tiny_engine
    handler = TensorRTEngineHandler(str(plan), example_shape=(8, 8, 3), input_dtype="float32")
    engine = handler.load_model()
    try:
        batch = _tiny_inputs(n, seed=n)
        results, facts = handler.run_batch(batch, engine)
        ref = np.stack(batch).astype(np.float64).mean(axis=(1, 2)) @ w.astype(np.float64)
        got = np.stack([r.inference for r in results])
        assert got.shape == (n, 5)
        err = rel_err(got, ref)
        report[f"tiny_fp32_rel_err_batch_{n}"] = err
        assert err <= 2e-3
        assert facts.size == n and facts.model_sha256 == engine.info().sha256
        assert engine.info().max_batch == 32
    finally:
        engine.close()


def test_model_copies_proxy_of_a_real_engine(tiny_engine, report):
    """What --model_copies hands the handler: a MultiProcessShared proxy of the TrtRunner."""
    import uuid

    from apache_beam.utils.multi_process_shared import MultiProcessShared

    from transforms.handlers.model_handler import NumpyModelHandler
    from transforms.runtime.tensorrt.runner import TrtLoader

    plan, w = tiny_engine
    loader = TrtLoader(str(plan), example_shape=(8, 8, 3), input_dtype="float32")
    shared = MultiProcessShared(loader, tag=f"trt-{uuid.uuid4().hex}", always_proxy=True)
    proxy = shared.acquire()
    try:
        handler = NumpyModelHandler(loader, model_copies=2)
        assert handler.share_model_across_processes() and handler.model_copies() == 2
        batch = _tiny_inputs(33, seed=5)
        results, facts = handler.run_batch(batch, proxy)
        _, facts2 = handler.run_batch(batch[:3], proxy)
        ref = np.stack(batch).astype(np.float64).mean(axis=(1, 2)) @ w.astype(np.float64)
        err = rel_err(np.stack([r.inference for r in results]), ref)
        report["model_copies_proxy_rel_err_batch_33"] = err
        assert err <= 2e-3
        assert facts.model_sha256 == proxy.info().sha256 and len(facts.model_sha256) == 64
        assert int(facts2.batch_id.rsplit("-", 1)[1]) == int(facts.batch_id.rsplit("-", 1)[1]) + 1
    finally:
        shared.release(proxy)


def test_multi_input_multi_output(trt, engine_dir):
    import onnx
    from onnx import TensorProto, helper

    from tests.test_trt_runner import TensorRTEngineHandler

    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 4])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 2])
    s = helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["N", 4])
    d = helper.make_tensor_value_info("double", TensorProto.FLOAT, ["N", 2])
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "a"], ["sum"]), helper.make_node("Mul", ["b", "b"],
                                                                        ["double"])],
        "two", [a, b], [s, d])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = engine_dir / "two.onnx"
    onnx.save(model, str(path))
    plan = engine_dir / "two.plan"
    build_cached(trt, path, plan, engine_dir, min_batch=1, opt_batch=4, max_batch=8)
    handler = TensorRTEngineHandler(str(plan), input_name="a")
    engine = handler.load_model()
    try:
        rng = np.random.default_rng(0)
        batch = [{"a": rng.standard_normal(4).astype(np.float32),
                  "b": rng.standard_normal(2).astype(np.float32)} for _ in range(11)]
        results = list(handler.run_inference(batch, engine))
        for ex, r in zip(batch, results):
            np.testing.assert_allclose(r.inference["sum"], ex["a"] * 2, rtol=1e-6)
            np.testing.assert_allclose(r.inference["double"], ex["b"] ** 2, rtol=1e-6)
    finally:
        engine.close()


@pytest.mark.parametrize("precision,tf32", [("fp32", False), ("tf32", True)])
def test_effnet_fp32_close_to_float64(effnet, engine_dir, trt, report, precision, tf32):
    """Strict fp32 must be within 2e-3 of float64; TF32 (TensorRT's default, 10-bit
    mantissa products) is reported, and bounded loosely."""
    from transforms.runtime.storage import read_bytes
    from transforms.runtime.tensorrt.engine import TrtEngine

    onnx_path, ref_path = effnet
    plan = engine_dir / f"effnetv2s.{precision}.plan"
    sidecar = build_cached(trt, onnx_path, plan, engine_dir, min_batch=1, opt_batch=10,
                           max_batch=32, tf32=tf32)
    report[f"effnet_{precision}_build_seconds"] = sidecar.builder.get("build_seconds")
    ref = np.load(ref_path)
    with TrtEngine(read_bytes(str(plan)), str(plan)) as engine:
        got = engine.run({"input_1": ref["x"]})["logits"]
    err = rel_err(got, ref["y"])
    report[f"effnet_{precision}_rel_err_vs_float64"] = err
    assert err <= (2e-3 if precision == "fp32" else 1e-2)


def test_effnet_fp16_reports_error(effnet, engine_dir, trt, report):
    from transforms.runtime.storage import read_bytes
    from transforms.runtime.tensorrt.engine import TrtEngine

    onnx_path, ref_path = effnet
    plan = engine_dir / "effnetv2s.fp16.plan"
    sidecar = build_cached(trt, onnx_path, plan, engine_dir, min_batch=1, opt_batch=10,
                           max_batch=32, fp16=True)
    report["effnet_fp16_build_seconds"] = sidecar.builder.get("build_seconds")
    ref = np.load(ref_path)
    with TrtEngine(read_bytes(str(plan)), str(plan)) as engine:
        got = engine.run({"input_1": ref["x"]})["logits"]
    err = rel_err(got, ref["y"])
    top1 = float(np.mean(got.argmax(1) == ref["y"].argmax(1)))
    report["effnet_fp16_rel_err_vs_float64"] = err
    report["effnet_fp16_top1_agreement_random_weights"] = top1
    print(f"EfficientNetV2-S fp16: relative error {err:.4f}, top-1 agreement {top1:.2f} "
          "(random weights: near-uniform logits, top-1 is not meaningful)")
    assert np.isfinite(got).all()


def _nsfw_scores(plan: Path) -> dict:
    from transforms.spec import OPEN_NSFW_SPEC
    from transforms.decode import decode_image
    from tests.test_trt_runner import TensorRTEngineHandler
    from transforms.preprocess import preprocess

    handler = TensorRTEngineHandler(str(plan), example_shape=(224, 224, 3))
    engine = handler.load_model()
    try:
        paths = sample_paths()
        batch = [preprocess(decode_image(p.read_bytes(), alpha_background=None), OPEN_NSFW_SPEC)
                 for p in paths]
        results = handler.run_inference(batch, engine)
        return {p.name: float(np.asarray(r.inference)[1])
                for p, r in zip(paths, results)}
    finally:
        engine.close()


def test_open_nsfw_fp16_within_002_of_fp32(nsfw_engines, report):
    fp32 = _nsfw_scores(nsfw_engines["fp32"])
    fp16 = _nsfw_scores(nsfw_engines["fp16"])
    diffs = {k: abs(fp32[k] - fp16[k]) for k in fp32}
    report["open_nsfw_fp16_vs_fp32_max_abs_diff"] = max(diffs.values())
    assert max(diffs.values()) <= 0.02, diffs


def test_corrupt_plan_is_refused(tiny_engine, tmp_path):
    from transforms.runtime.storage import sha256_hex
    from transforms.runtime.tensorrt.sidecar import EngineLoadError, EngineMismatch, Sidecar
    from tests.test_trt_runner import TensorRTEngineHandler

    plan, _ = tiny_engine
    bad = tmp_path / "bad.plan"
    data = bytearray(plan.read_bytes())
    data[:64] = b"\xff" * 64  # the header TensorRT validates before anything else
    bad.write_bytes(bytes(data))
    sidecar = Sidecar.from_json(Path(str(plan) + ".json").read_text())
    Path(str(bad) + ".json").write_text(sidecar.to_json())
    with pytest.raises(EngineMismatch, match="plan sha256 .* does not match its sidecar"):
        TensorRTEngineHandler(str(bad)).load_model()
    # Even with a sidecar vouching for the bytes, TensorRT must refuse them cleanly.
    side = json.loads(sidecar.to_json())
    side["plan_sha256"] = sha256_hex(bytes(data))
    Path(str(bad) + ".json").write_text(json.dumps(side))
    with pytest.raises(EngineLoadError, match="cannot deserialize the plan"):
        TensorRTEngineHandler(str(bad)).load_model()


@pytest.mark.parametrize("field,value,match", [
    ("compute_capability", "8.6", r"compute capability 8.6 \(this GPU has \d+\.\d+\)"),
    ("tensorrt_version", "10.13.0.35", r"TensorRT 10.13.0.35 \(running "),
    ("gpu_name", "Tesla T4", r"GPU 'Tesla T4' \(this GPU is '"),
])
def test_sidecar_for_another_target_is_refused(tiny_engine, tmp_path, field, value, match):
    from transforms.runtime.tensorrt.sidecar import EngineMismatch
    from tests.test_trt_runner import TensorRTEngineHandler

    plan, _ = tiny_engine
    copy = tmp_path / "copy.plan"
    shutil.copy(plan, copy)
    side = json.loads(Path(str(plan) + ".json").read_text())
    side[field] = value
    Path(str(copy) + ".json").write_text(json.dumps(side))
    with pytest.raises(EngineMismatch, match=match):
        TensorRTEngineHandler(str(copy)).load_model()


def test_200_load_close_cycles_do_not_grow_gpu_memory(tiny_engine, report):
    from transforms.runtime.storage import read_bytes
    from transforms.runtime.cuda import memory_used
    from transforms.runtime.tensorrt.engine import TrtEngine

    plan, _ = tiny_engine
    data = read_bytes(str(plan))
    x = {"images": np.zeros((32, 8, 8, 3), np.float32)}

    def cycle() -> None:
        engine = TrtEngine(data, str(plan))
        engine.run(x)
        engine.close()

    for _ in range(10):
        cycle()
    before = memory_used()
    for _ in range(200):
        cycle()
    growth = memory_used() - before
    report["gpu_memory_growth_bytes_after_200_cycles"] = growth
    assert growth <= 8 * 1024 * 1024, f"GPU memory grew by {growth} bytes"


def test_pipeline_tensorrt_top1_matches_onnx(nsfw_engines, tmp_path, report):
    from pipeline.main import run
    from transforms.io import read_jsonl

    common = ["--input", str(SAMPLES / "*.jpg"), "--input", str(SAMPLES / "*.png")]
    s_trt = run(common + ["--output", str(tmp_path / "trt"), "--backend", "tensorrt",
                          "--engine", str(nsfw_engines["fp32"])])
    s_onnx = run(common + ["--output", str(tmp_path / "onnx")])
    assert s_trt.ok == s_onnx.ok == 10 and s_trt.failed == 0
    top1 = {}
    for name in ("trt", "onnx"):
        for p in read_jsonl(str(tmp_path / name / "predictions-*.jsonl")):
            top1.setdefault(p["uri"], {})[name] = (p["top_k"][0]["label"], p["top_k"][0]["score"])
            assert p["backend"] == ("tensorrt" if name == "trt" else "onnx")
    assert all(v["trt"][0] == v["onnx"][0] for v in top1.values()), top1
    report["pipeline_trt_vs_onnx_max_top1_score_diff"] = max(
        abs(v["trt"][1] - v["onnx"][1]) for v in top1.values())
    report["pipeline_tensorrt_summary"] = s_trt.line()
    s_copies = run(common + ["--output", str(tmp_path / "copies"), "--backend", "tensorrt",
                             "--engine", str(nsfw_engines["fp32"]), "--model_copies", "2"])
    assert s_copies.ok == 10 and s_copies.failed == 0
    shas = {p["model_sha256"] for p in read_jsonl(str(tmp_path / "copies" / "predictions-*.jsonl"))}
    assert len(shas) == 1 and len(shas.pop()) == 64
    report["pipeline_tensorrt_model_copies_2_summary"] = s_copies.line()


def test_parse_error_names_the_node(trt, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from transforms.runtime.tensorrt.builder import BuildError, BuildOptions, build

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["r"], name="ok_relu"),
                               helper.make_node("NoSuchOp", ["r"], ["y"], name="bad_node",
                                                domain="com.example")], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.example", 1)])
    model.ir_version = 8
    path = tmp_path / "bad.onnx"
    onnx.save(model, str(path))
    with pytest.raises(BuildError, match=r"bad.onnx: TensorRT's ONNX parser failed: node 1"):
        build(BuildOptions(onnx=str(path), output=str(tmp_path / "bad.plan")))


def test_spec_mismatch_fails_before_deserializing(tiny_engine):
    from transforms.runtime.errors import InputMismatch
    from tests.test_trt_runner import TensorRTEngineHandler

    plan, _ = tiny_engine
    with pytest.raises(InputMismatch, match=r"expected shape \[\?, 3, 8, 8\], the engine declares \[\?, 8, 8, 3\]"):
        TensorRTEngineHandler(str(plan), example_shape=(3, 8, 8)).load_model()


def test_folded_plan_takes_uint8_and_scores_alike(trt, nsfw_engines, engine_dir, tmp_path, report):
    """open_nsfw fp16 with its normalisation folded in (--fold_spec): the host sends uint8
    pixels, and scores match the float plan's."""
    from pipeline.main import run
    from tests.gpu.conftest import build_cached
    from transforms.io import read_jsonl
    from transforms.runtime.storage import bundled_model_path
    from transforms.spec import OPEN_NSFW_SPEC

    plan = engine_dir / "open_nsfw.folded.fp16.plan"
    build_cached(trt, Path(bundled_model_path("bundled://open_nsfw")), plan, engine_dir,
                 min_batch=1, opt_batch=16, max_batch=32, fp16=True, fold_spec=OPEN_NSFW_SPEC)
    side = json.loads(Path(str(plan) + ".json").read_text())
    assert [t["dtype"] for t in side["tensors"] if t["mode"] == "input"] == ["uint8"]
    common = ["--input", str(SAMPLES / "*.jpg"), "--input", str(SAMPLES / "*.png"),
              "--backend", "tensorrt", "--preprocess", "cpu"]
    s_f = run(common + ["--engine", str(plan), "--output", str(tmp_path / "folded")])
    s_p = run(common + ["--engine", str(nsfw_engines["fp16"]), "--output", str(tmp_path / "p")])
    assert s_f.ok == s_p.ok == 10
    score = {}
    for name in ("folded", "p"):
        for p in read_jsonl(str(tmp_path / name / "predictions-*.jsonl")):
            score.setdefault(p["uri"], {})[name] = next(
                t["score"] for t in p["top_k"] if t["label"] == "nsfw")
    diff = max(abs(v["folded"] - v["p"]) for v in score.values())
    report["folded_vs_float_plan_open_nsfw_max_abs_diff"] = diff
    assert diff <= 0.01
