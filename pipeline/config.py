"""RunConfig: one run of the pipeline, built once from the options, validated on the launcher.

The model- and decode-level parts (ModelSpec, DecodeLimits) live in transforms.spec, the
bottom layer; this is the launcher's view of a whole run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional, Tuple

from transforms.runtime.gpu_preprocess import DaliOptions
from transforms.runtime.onnx import ProviderOptions
from transforms.runtime.tensorrt.sidecar import DEFAULT_PROFILE
from transforms.spec import (BACKENDS, BUNDLED_OPEN_NSFW, ONNX_PROVIDERS, OPEN_NSFW_SPEC,
                             OUTPUT_FORMATS, TRT_PRECISIONS, ConfigError, DecodeLimits,
                             ModelSpec, choice as _choice, positive as _positive)


PREPROCESS_PATHS = ("cpu", "gpu")


@dataclass(frozen=True)
class RunConfig:
    """One run of the pipeline, validated before anything is submitted."""

    output: str
    inputs: Tuple[str, ...] = ()
    input_list: Optional[str] = None
    model: str = BUNDLED_OPEN_NSFW
    spec: ModelSpec = OPEN_NSFW_SPEC
    backend: str = "onnx"
    onnx_providers: Tuple[str, ...] = ("CPUExecutionProvider",)
    # --onnx_provider_option, grouped by provider, handed to ONNX Runtime as given
    onnx_provider_options: ProviderOptions = ()
    engine: Optional[str] = None
    min_batch_size: Optional[int] = None
    max_batch_size: Optional[int] = None
    top_k: int = 5
    output_format: str = "jsonl"
    limits: DecodeLimits = field(default_factory=DecodeLimits)
    model_copies: Optional[int] = None
    engine_cache: Optional[str] = None
    trt_precision: str = "tf32"
    trt_profile: Tuple[int, int, int] = DEFAULT_PROFILE
    trt_optimization_level: Optional[int] = None
    skip_scored: Tuple[str, ...] = ()
    run_id: str = "run"
    # "cpu" (Pillow) or "gpu" (DALI); options resolve --preprocess auto before this.
    preprocess: str = "cpu"
    dali: DaliOptions = field(default_factory=DaliOptions)
    gpu_device: Optional[int] = None    # None: round-robin over the visible GPUs
    # False: SDK processes keep every GPU in view (other CUDA work in the same process)
    narrow_gpus: bool = True
    # SDK processes start loading the scoring model as they start (runtime/prewarm.py)
    prewarm: bool = True
    # The failure budget (pipeline/budget.py): over either limit, the run exits non-zero.
    max_failed_fraction: float = 0.05
    max_failed: Optional[int] = None
    # An input that matches nothing is refused at launch unless this is set.
    allow_empty: bool = False
    # Remote runners: block until the job ends, then apply the budget (local runs always do).
    wait_until_finish: bool = False

    def __post_init__(self) -> None:
        if not self.output:
            raise ConfigError("--output: expected a path prefix, got nothing")
        if not self.inputs and not self.input_list:
            raise ConfigError("--input/--input_list: expected at least one, got neither")
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "onnx_providers", tuple(self.onnx_providers))
        _choice("--backend", self.backend, BACKENDS)
        _choice("--output_format", self.output_format, OUTPUT_FORMATS)
        for p in self.onnx_providers:
            _choice("--onnx_providers", p, ONNX_PROVIDERS)
        if not self.onnx_providers:
            raise ConfigError("--onnx_providers: expected at least one provider, got none")
        object.__setattr__(self, "onnx_provider_options", tuple(self.onnx_provider_options))
        for provider, options in self.onnx_provider_options:
            if provider not in self.onnx_providers:
                raise ConfigError(f"--onnx_provider_option {provider}: expected one of "
                                  f"--onnx_providers {','.join(self.onnx_providers)}, "
                                  f"got {provider}")
            if provider == "CPUExecutionProvider":
                # onnxruntime's Python API creates the CPU EP from the session options
                # and drops any provider options for it without a word
                raise ConfigError(f"--onnx_provider_option CPUExecutionProvider: expected "
                                  f"none (onnxruntime ignores options for it), got "
                                  f"{dict(options)}")
        if self.backend == "tensorrt" and not (self.engine or self.engine_cache):
            raise ConfigError("--backend tensorrt: expected --engine PATH or --engine_cache "
                              "PREFIX, got neither")
        if self.engine and self.engine_cache:
            raise ConfigError("--engine and --engine_cache: expected one, got both")
        _choice("--trt_precision", self.trt_precision, TRT_PRECISIONS)
        profile = tuple(self.trt_profile)
        if len(profile) != 3 or not all(isinstance(b, int) and b > 0 for b in profile) or \
                not profile[0] <= profile[1] <= profile[2]:
            raise ConfigError(f"--trt_profile: expected MIN,OPT,MAX with 0 < MIN <= OPT <= MAX, "
                              f"got {self.trt_profile!r}")
        object.__setattr__(self, "trt_profile", profile)
        object.__setattr__(self, "skip_scored", tuple(self.skip_scored))
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.run_id):
            raise ConfigError(f"--run_id: expected letters, digits, '.', '_' or '-', "
                              f"got {self.run_id!r}")
        if self.min_batch_size is not None:
            _positive("--min_batch_size", self.min_batch_size)
        if self.max_batch_size is not None:
            _positive("--max_batch_size", self.max_batch_size)
            if self.min_batch_size is not None and self.max_batch_size < self.min_batch_size:
                raise ConfigError(
                    f"--max_batch_size: expected >= --min_batch_size {self.min_batch_size}, "
                    f"got {self.max_batch_size}")
        _positive("--top_k", self.top_k)
        if self.model_copies is not None:
            _positive("--model_copies", self.model_copies)
        _choice("--preprocess", self.preprocess, PREPROCESS_PATHS)
        if not (isinstance(self.max_failed_fraction, (int, float))
                and 0.0 <= self.max_failed_fraction <= 1.0):
            raise ConfigError(f"--max_failed_fraction: expected 0..1, got "
                              f"{self.max_failed_fraction!r}")
        if self.max_failed is not None and (not isinstance(self.max_failed, int)
                                            or self.max_failed < 0):
            raise ConfigError(f"--max_failed: expected a count >= 0, got {self.max_failed!r}")
        if self.gpu_device is not None and (isinstance(self.gpu_device, bool)
                                            or not isinstance(self.gpu_device, int)
                                            or self.gpu_device < 0):
            raise ConfigError(f"--gpu_device: expected a device index >= 0, got "
                              f"{self.gpu_device!r}")
        if (self.preprocess == "gpu" and self.backend == "onnx"
                and self.onnx_providers[:1] != ("CUDAExecutionProvider",)):
            raise ConfigError("--preprocess gpu with --backend onnx: expected --onnx_providers "
                              "to start with CUDAExecutionProvider (DALI's batch is bound on "
                              f"the GPU), got {','.join(self.onnx_providers)}")
