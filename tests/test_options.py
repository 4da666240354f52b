"""Option parsing into one validated RunConfig; unknown flags refused."""

from __future__ import annotations

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
