"""Launcher-side checks that stop a bad job before it is submitted."""

from __future__ import annotations

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.config import RunConfig
from transforms.spec import ConfigError
from pipeline.main import run
from pipeline.preflight import (check_dataflow, check_image_beam_version,
                                check_output_writable, parse_accelerator)

IMAGE = "us-docker.pkg.dev/my-project/repo/beam-trt-inference:0.1.0-beam2.77.0"
GPU = "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"


def _check(*flags: str, backend: str = "tensorrt") -> None:
    cfg = RunConfig(output="gs://b/o", inputs=("gs://b/i/*",), backend=backend,
                    engine="gs://b/e.plan" if backend == "tensorrt" else None)
    check_dataflow(PipelineOptions(list(flags)), cfg)


def test_parse_accelerator():
    assert parse_accelerator([GPU, "x=y"]) == {"driver": True, "mps": False,
                                               "type": "nvidia-l4", "count": "1"}
    assert parse_accelerator([GPU + ";use_nvidia_mps"])["mps"] is True
    assert parse_accelerator(["x=y"]) is None


def test_good_dataflow_gpu_job_passes():
    _check("--dataflow_service_options", GPU, "--sdk_container_image", IMAGE,
           "--sdk_location", "container")
    _check("--dataflow_service_options", GPU + ";use_nvidia_mps", "--sdk_container_image",
           IMAGE, "--sdk_location", "container")


@pytest.mark.parametrize("flags,match", [
    (["--dataflow_service_options", GPU.replace("nvidia-l4", "nvidia-rtx-4090"),
      "--sdk_container_image", IMAGE, "--sdk_location", "container"],
     r"worker_accelerator type: expected one of \[.*'nvidia-l4'.*\], got 'nvidia-rtx-4090'"),
    (["--dataflow_service_options", GPU.replace("count:1", "count:0"),
      "--sdk_container_image", IMAGE, "--sdk_location", "container"],
     "count: expected a positive integer, got '0'"),
    (["--dataflow_service_options", GPU.replace(";install-nvidia-driver", ""),
      "--sdk_container_image", IMAGE, "--sdk_location", "container"],
     "expected install-nvidia-driver"),
    (["--sdk_container_image", IMAGE, "--sdk_location", "container"],
     "expected worker_accelerator=type:GPU;count:N;install-nvidia-driver for a GPU backend"),
    (["--dataflow_service_options", GPU, "--sdk_container_image", IMAGE],
     "--sdk_location: expected 'container'"),
    (["--dataflow_service_options", GPU.replace("count:1", "count:2") + ";use_nvidia_mps",
      "--sdk_container_image", IMAGE, "--sdk_location", "container"],
     "use_nvidia_mps expected count:1 .*single GPU.*, got count:2"),
    (["--dataflow_service_options", GPU + ";use_nvidia_mps", "--sdk_container_image", IMAGE,
      "--sdk_location", "container", "--experiments=no_use_multiple_sdk_containers"],
     "use_nvidia_mps expected several SDK processes .* got "
     "--experiments=no_use_multiple_sdk_containers"),
    (["--dataflow_service_options", GPU],
     "--sdk_container_image: expected the GPU image"),
    (["--dataflow_service_options", GPU, "--sdk_location", "container",
      "--sdk_container_image", IMAGE.replace("beam2.77.0", "beam2.71.0")],
     "the image has Beam 2.71.0, this launcher has Beam 2.77.0"),
])
def test_bad_dataflow_config(flags, match):
    with pytest.raises(ConfigError, match=match):
        _check(*flags)


def test_cpu_job_needs_no_gpu():
    _check(backend="onnx")


def test_image_tag_must_name_beam_version():
    with pytest.raises(ConfigError, match="expected a tag naming its Beam version"):
        check_image_beam_version("gcr.io/p/img:latest", "2.77.0")


def test_unwritable_output(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match=r"--output: cannot write under .*a-file/out"):
        check_output_writable(str(blocker / "out"))
    check_output_writable(str(tmp_path / "fine"))
    assert [p.name for p in (tmp_path / "fine").iterdir()] == []


def test_tensorrt_without_engine_or_cache_fails_before_running(tmp_path):
    with pytest.raises(ConfigError, match="--backend tensorrt: expected --engine PATH or "
                                          "--engine_cache PREFIX, got neither"):
        run(["--input", "x/*", "--output", str(tmp_path), "--backend", "tensorrt"])


def test_unknown_gpu_fails_in_run_before_submission(tmp_path):
    with pytest.raises(ConfigError, match="got 'nvidia-tesla-k80'"):
        run(["--runner", "DataflowRunner", "--project", "my-project", "--region", "us-central1",
             "--temp_location", "gs://my-bucket/tmp", "--input", "x/*", "--output", str(tmp_path),
             "--backend", "tensorrt", "--engine", __file__, "--sdk_location", "container",
             "--sdk_container_image", IMAGE, "--dataflow_service_options",
             GPU.replace("nvidia-l4", "nvidia-tesla-k80")])
