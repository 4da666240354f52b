"""Option parsing into one validated RunConfig; unknown flags refused."""

from __future__ import annotations

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from transforms.spec import BUNDLED_OPEN_NSFW, OPEN_NSFW_SPEC
from pipeline.options import InferenceOptions, config_from_options, help_text, unknown_flags


def _cfg(argv):
    return config_from_options(PipelineOptions(argv).view_as(InferenceOptions))


def test_defaults():
    cfg = _cfg(["--input", "a/*.jpg", "--output", "/tmp/o"])
    assert cfg.model == BUNDLED_OPEN_NSFW and cfg.spec == OPEN_NSFW_SPEC
    assert cfg.backend == "onnx" and cfg.onnx_providers == ("CPUExecutionProvider",)
    assert cfg.inputs == ("a/*.jpg",) and cfg.top_k == 5 and cfg.output_format == "jsonl"


def test_repeatable_input_and_providers():
    cfg = _cfg(["--input", "a/*", "--input", "gs://b/*", "--output", "o",
                "--onnx_providers", "CUDAExecutionProvider, CPUExecutionProvider",
                "--min_batch_size", "4", "--max_batch_size", "16", "--max_image_pixels", "1000"])
    assert cfg.inputs == ("a/*", "gs://b/*")
    assert cfg.onnx_providers == ("CUDAExecutionProvider", "CPUExecutionProvider")
    assert (cfg.min_batch_size, cfg.max_batch_size, cfg.limits.max_pixels) == (4, 16, 1000)


def test_unknown_flags_but_beam_flags_known():
    assert unknown_flags(["--runner", "DataflowRunner", "--project", "p", "--region", "r",
                          "--temp_location", "gs://b/t", "--input", "x",
                          "--experiments", "a", "--dataflow_service_options", "x=y"]) == []
    assert unknown_flags(["--input", "x", "--max_batchsize", "3"]) == ["--max_batchsize"]


def test_help_mentions_beam():
    assert "Every Apache Beam / Dataflow flag" in " ".join(help_text().split())


def test_a_folded_plan_switches_the_host_to_uint8_pixels(tmp_path):
    """A plan built with --fold_spec: the run sends that spec's wire form, and a run with
    another spec is refused, naming the fields that differ."""
    import dataclasses
    import json

    from pipeline.options import apply_folded_engine
    from tests.test_sidecar import sidecar
    from transforms.runtime.fold import wire_spec
    from transforms.spec import ConfigError

    plan = tmp_path / "folded.plan"
    plan.write_bytes(b"plan bytes")
    (tmp_path / "folded.plan.json").write_text(
        sidecar(builder={"folded_spec": OPEN_NSFW_SPEC.to_dict()}).to_json())
    cfg = _cfg(["--input", "x/*", "--output", "o",
                "--backend", "tensorrt", "--engine", str(plan), "--preprocess", "cpu"])
    folded = apply_folded_engine(cfg)
    assert folded.spec == wire_spec(OPEN_NSFW_SPEC) and folded.spec.input_dtype == "uint8"
    other = dataclasses.replace(cfg, spec=dataclasses.replace(OPEN_NSFW_SPEC, mean=(1, 2, 3)))
    with pytest.raises(ConfigError, match=r"folds the spec of model 'open_nsfw'; this run's "
                                          r"spec differs in \['mean'\]"):
        apply_folded_engine(other)
    plain = tmp_path / "plain.plan"
    plain.write_bytes(b"p")
    (tmp_path / "plain.plan.json").write_text(sidecar().to_json())
    cfg2 = dataclasses.replace(cfg, engine=str(plain))
    assert apply_folded_engine(cfg2) is cfg2
    assert json.loads((tmp_path / "folded.plan.json").read_text())["builder"]["folded_spec"]


def test_dali_resize_chooses_pillows_two_passes_and_nothing_else():
    assert _cfg(["--input", "a/*", "--output", "o"]).dali.pillow_resize is False
    cfg = _cfg(["--input", "a/*", "--output", "o", "--dali_resize", "pillow",
                "--dali_threads", "2"])
    assert cfg.dali.pillow_resize is True and cfg.dali.threads == 2
    with pytest.raises(SystemExit):
        _cfg(["--input", "a/*", "--output", "o", "--dali_resize", "bicubic"])


def test_dali_progressive_goes_to_the_gpu_by_default():
    assert _cfg(["--input", "a/*", "--output", "o"]).dali.progressive_on_gpu is True
    cfg = _cfg(["--input", "a/*", "--output", "o", "--dali_progressive", "cpu"])
    assert cfg.dali.progressive_on_gpu is False
    with pytest.raises(SystemExit):
        _cfg(["--input", "a/*", "--output", "o", "--dali_progressive", "maybe"])


def test_dali_max_megapixels_is_off_by_default_and_must_be_positive():
    from transforms.spec import ConfigError

    assert _cfg(["--input", "a/*", "--output", "o"]).dali.max_megapixels is None
    cfg = _cfg(["--input", "a/*", "--output", "o", "--dali_max_megapixels", "4"])
    assert cfg.dali.max_megapixels == 4.0
    with pytest.raises(ConfigError, match="--dali_max_megapixels: expected a positive number, "
                                          "got 0.0"):
        _cfg(["--input", "a/*", "--output", "o", "--dali_max_megapixels", "0"])


def test_onnx_provider_options_grouped_by_provider_and_passed_to_the_loader():
    from pipeline.build import onnx_loader

    cfg = _cfg(["--input", "a/*", "--output", "o", "--onnx_providers",
                "TensorrtExecutionProvider,CUDAExecutionProvider,CPUExecutionProvider",
                "--onnx_provider_option", "TensorrtExecutionProvider:trt_fp16_enable=True",
                "--onnx_provider_option", "CUDAExecutionProvider:cudnn_conv_algo_search=HEURISTIC",
                "--onnx_provider_option",
                "TensorrtExecutionProvider:trt_engine_cache_path=gs://b/c:d"])
    expected = (("TensorrtExecutionProvider", (("trt_fp16_enable", "True"),
                                               ("trt_engine_cache_path", "gs://b/c:d"))),
                ("CUDAExecutionProvider", (("cudnn_conv_algo_search", "HEURISTIC"),)))
    assert cfg.onnx_provider_options == expected
    assert onnx_loader(cfg).provider_options == expected
    # the launcher's CPU-only check of the model gets none of them
    assert onnx_loader(cfg, providers=("CPUExecutionProvider",)).provider_options == ()


@pytest.mark.parametrize("option,match", [
    ("CUDAExecutionProvider", r"expected PROVIDER:KEY=VALUE.*got 'CUDAExecutionProvider'"),
    ("CUDAExecutionProvider:device_id", r"expected PROVIDER:KEY=VALUE.*got 'CUDAExecutionProvider:device_id'"),
    (":a=b", r"expected PROVIDER:KEY=VALUE.*got ':a=b'"),
    ("TensorrtExecutionProvider:trt_fp16_enable=1",
     r"--onnx_provider_option TensorrtExecutionProvider: expected one of --onnx_providers "
     r"CUDAExecutionProvider,CPUExecutionProvider, got TensorrtExecutionProvider"),
    ("CPUExecutionProvider:arena_extend_strategy=kSameAsRequested",
     r"CPUExecutionProvider: expected none \(onnxruntime ignores options for it\), got "
     r"\{'arena_extend_strategy': 'kSameAsRequested'\}"),
])
def test_onnx_provider_option_errors_name_flag_expected_and_actual(option, match):
    from transforms.spec import ConfigError

    with pytest.raises(ConfigError, match=match):
        _cfg(["--input", "a/*", "--output", "o", "--onnx_providers",
              "CUDAExecutionProvider,CPUExecutionProvider", "--onnx_provider_option", option])


def test_onnx_provider_option_given_twice_with_two_values_is_refused():
    from transforms.spec import ConfigError

    with pytest.raises(ConfigError, match=r"CUDAExecutionProvider:gpu_mem_limit given twice, "
                                          r"expected one value, got '1' and '2'"):
        _cfg(["--input", "a/*", "--output", "o", "--onnx_providers", "CUDAExecutionProvider",
              "--onnx_provider_option", "CUDAExecutionProvider:gpu_mem_limit=1",
              "--onnx_provider_option", "CUDAExecutionProvider:gpu_mem_limit=2"])
