"""Checks that run on the launcher, before anything is submitted.

Why: a Dataflow GPU job takes minutes to start workers. A wrong GPU type, a container
built for another Beam, an unwritable output or a spec that does not fit the model
must fail in a second on the launcher with a message a user can act on.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Dict, Optional

import apache_beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (DebugOptions, GoogleCloudOptions,
                                                  PipelineOptions, SetupOptions,
                                                  StandardOptions, WorkerOptions)

from pipeline.config import RunConfig
from transforms.runtime.errors import InputMismatch, ModelLoadError
from transforms.spec import ConfigError

LOG = logging.getLogger(__name__)

# GPU types Dataflow accepts in worker_accelerator (Compute Engine accelerator names).
KNOWN_GPU_TYPES = (
    "nvidia-tesla-t4", "nvidia-tesla-p4", "nvidia-tesla-p100", "nvidia-tesla-v100",
    "nvidia-tesla-a100", "nvidia-a100-80gb", "nvidia-l4", "nvidia-h100-80gb",
    "nvidia-h100-mega-80gb",
)


def check_model(cfg: RunConfig) -> None:
    """The ONNX model loads on CPU and its input fits the spec (ONNX backend or engine
    builds): the same loader the workers use, so the same checks and messages."""
    from pipeline.build import onnx_loader

    try:
        onnx_loader(cfg, providers=("CPUExecutionProvider",))().close()
    except InputMismatch:
        raise
    except ModelLoadError as exc:
        raise ConfigError(f"--model: not a loadable ONNX model: {exc}") from exc


def check_output_writable(output: str) -> None:
    """Write and delete a probe object under --output."""
    probe = FileSystems.join(output, f".write-probe-{uuid.uuid4().hex}")
    try:
        with FileSystems.create(probe) as f:
            f.write(b"ok")
        FileSystems.delete([probe])
    except Exception as exc:  # noqa: BLE001 - local, GCS and others raise differently
        raise ConfigError(f"--output: cannot write under {output} "
                          f"({type(exc).__name__}: {exc})") from exc


def check_run_id_unused(output: str, run_id: str) -> None:
    """A run writes only files of its own: Beam's sinks delete same-named shards of an
    earlier run before finalizing, and the launcher counts every record under the run's
    prefix, so reusing a --run_id would overwrite or miscount an earlier run's output."""
    from transforms.io import BUNDLES, ERRORS, PREDICTIONS, file_prefix, matching_paths

    for name in (PREDICTIONS, ERRORS, BUNDLES):
        pattern = file_prefix(output, name, run_id) + "-*"
        found = matching_paths(pattern)
        if found:
            raise ConfigError(
                f"--run_id: expected a run id with no files under {output}, but "
                f"{len(found)} file(s) match {pattern} (e.g. {found[0]}). Omit --run_id for "
                f"a fresh one; images already scored there are skipped either way.")


def parse_accelerator(service_options: Optional[list]) -> Optional[Dict[str, str]]:
    """worker_accelerator=type:T;count:N;install-nvidia-driver[;use_nvidia_mps] ->
    {type, count, driver, mps}."""
    for opt in service_options or []:
        if opt.startswith("worker_accelerator="):
            parts = opt.split("=", 1)[1].split(";")
            out = {"driver": "install-nvidia-driver" in parts, "mps": "use_nvidia_mps" in parts}
            for part in parts:
                if ":" in part:
                    k, v = part.split(":", 1)
                    out[k] = v
            return out
    return None


def check_dataflow(options: PipelineOptions, cfg: RunConfig) -> None:
    """GPU request, container and Beam version for DataflowRunner."""
    gcp = options.view_as(GoogleCloudOptions)
    acc = parse_accelerator(gcp.dataflow_service_options)
    needs_gpu = cfg.backend == "tensorrt" or any(p != "CPUExecutionProvider"
                                                 for p in cfg.onnx_providers)
    if acc is None:
        if needs_gpu:
            raise ConfigError("--dataflow_service_options: expected worker_accelerator="
                              "type:GPU;count:N;install-nvidia-driver for a GPU backend, got none")
    else:
        gpu = acc.get("type")
        if gpu not in KNOWN_GPU_TYPES:
            raise ConfigError(f"worker_accelerator type: expected one of "
                              f"{list(KNOWN_GPU_TYPES)}, got {gpu!r}")
        if not re.fullmatch(r"[1-9][0-9]*", str(acc.get("count", ""))):
            raise ConfigError(f"worker_accelerator count: expected a positive integer, got "
                              f"{acc.get('count')!r}")
        if not acc["driver"]:
            raise ConfigError("worker_accelerator: expected install-nvidia-driver; without it "
                              "the workers have no GPU driver")
        if acc["mps"]:
            check_mps(str(acc.get("count")), options)
    image = options.view_as(WorkerOptions).sdk_container_image
    if image:
        if options.view_as(SetupOptions).sdk_location != "container":
            raise ConfigError("--sdk_location: expected 'container' with a custom "
                              f"--sdk_container_image, got "
                              f"{options.view_as(SetupOptions).sdk_location!r}")
        check_image_beam_version(image, apache_beam.__version__)
    elif needs_gpu:
        raise ConfigError("--sdk_container_image: expected the GPU image built from "
                          "tensor_rt.dockerfile, got none")


def check_mps(count: str, options: PipelineOptions) -> None:
    """use_nvidia_mps: Dataflow runs NVIDIA's Multi-Process Service only on workers with one
    GPU, and MPS only helps where several SDK processes share it."""
    if count != "1":
        raise ConfigError(f"worker_accelerator: use_nvidia_mps expected count:1 (Dataflow "
                          f"runs MPS only on workers with a single GPU), got count:{count}")
    experiments = options.view_as(DebugOptions).experiments or []
    if "no_use_multiple_sdk_containers" in experiments:
        raise ConfigError("worker_accelerator: use_nvidia_mps expected several SDK "
                          "processes per worker to share the GPU, got "
                          "--experiments=no_use_multiple_sdk_containers (one process; "
                          "unset SDK_PROCESSES=1 or drop MPS=1)")


def check_image_beam_version(image: str, launcher: str) -> None:
    """The container's Beam SDK must equal the launcher's; tags carry it as -beamX.Y.Z."""
    found = re.search(r"beam(\d+\.\d+\.\d+)", image.rsplit("/", 1)[-1])
    if not found:
        raise ConfigError(f"--sdk_container_image: expected a tag naming its Beam version "
                          f"(…:TAG-beam{launcher}, as run_dataflow.sh builds), got {image}")
    if found.group(1) != launcher:
        raise ConfigError(f"--sdk_container_image: the image has Beam {found.group(1)}, this "
                          f"launcher has Beam {launcher}; they must be equal")


def _manifest_is_empty(uri: str) -> bool:
    """True if the manifest names no URI; reads only up to the first one it names, with
    the pipeline's own reader (so a gzip manifest is decompressed as the run will)."""
    from transforms.manifest import manifest_file_uris

    try:
        return next(manifest_file_uris(uri), None) is None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"--input_list {uri}: expected UTF-8 text, one URI per line; "
                          f"{exc}") from exc


def check_inputs_match(cfg: RunConfig) -> None:
    """A glob that matches nothing is almost always a typo: with no manifest either, the run
    would end ok=0 and exit 0. Each glob is listed with a limit of one file, and a manifest
    is read up to its first URI, so this stays cheap on a bucket of millions.
    ``--allow_empty`` turns the refusal into a warning."""
    empty = []
    for pattern in cfg.inputs:
        try:
            found = FileSystems.match([pattern], limits=[1])[0].metadata_list
        except Exception as exc:  # noqa: BLE001 - cannot list here: say so, do not guess
            LOG.warning("--input %s could not be listed from the launcher (%s); not checked",
                        pattern, exc)
            continue
        if not found:
            empty.append(pattern)
    manifest_empty = bool(cfg.input_list) and _manifest_is_empty(cfg.input_list)
    if len(empty) == len(cfg.inputs) and (not cfg.input_list or manifest_empty):
        what = ([f"--input {empty} matched no files"] if empty else []) + (
            [f"--input_list {cfg.input_list} names no URI"] if manifest_empty else [])
        message = f"expected images, but {' and '.join(what)}"
        if not cfg.allow_empty:
            raise ConfigError(f"{message} (pass --allow_empty if an empty input is expected)")
        LOG.warning("%s; running anyway (--allow_empty)", message)
        return
    for pattern in empty:
        LOG.warning("--input %s matched no files", pattern)


def preflight(options: PipelineOptions, cfg: RunConfig) -> None:
    if cfg.input_list and not FileSystems.exists(cfg.input_list):
        raise ConfigError(f"--input_list: {cfg.input_list} does not exist")
    if cfg.backend == "onnx" or cfg.engine_cache:
        check_model(cfg)
    elif cfg.engine and not FileSystems.exists(cfg.engine):
        raise ConfigError(f"--engine: {cfg.engine} does not exist")
    check_output_writable(cfg.output)
    check_run_id_unused(cfg.output, cfg.run_id)
    runner = str(options.view_as(StandardOptions).runner or "")
    if runner.split(".")[-1] == "DataflowRunner":
        check_dataflow(options, cfg)
    check_inputs_match(cfg)
