"""What a model expects and what a decoder may allocate: the bottom layer, imported by all.

Why frozen dataclasses: the same objects are pickled to every Beam worker, so they
must be immutable, cheap to pickle, and wrong values must fail on the launcher,
before a job is submitted, not on the thousandth image. Nothing here imports Beam or
anything above it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Tuple

from transforms.image_bounds import BOUNDED_FORMATS
from transforms.runtime.errors import ModelLoadError
from transforms.runtime.storage import BUNDLED_OPEN_NSFW, read_bytes  # noqa: F401 - re-exported

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

# The preprocessing a model's scores depend on: a user's spec JSON must state each one.
EXPLICIT_FIELDS = ("layout", "channel_order", "scale", "mean", "std")


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the field, expected and actual."""


def choice(name: str, value: Any, allowed: Sequence[Any]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}: expected one of {list(allowed)}, got {value!r}")


def positive(name: str, value: Any) -> None:
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
        positive("height", self.height)
        positive("width", self.width)
        choice("layout", self.layout, LAYOUTS)
        choice("channel_order", self.channel_order, CHANNEL_ORDERS)
        choice("resize_policy", self.resize_policy, RESIZE_POLICIES)
        choice("crop", self.crop, CROPS)
        choice("interpolation", self.interpolation, INTERPOLATIONS)
        choice("input_dtype", self.input_dtype, INPUT_DTYPES)
        choice("output_kind", self.output_kind, OUTPUT_KINDS)
        for name in ("resize_height", "resize_width"):
            if getattr(self, name) is not None:
                positive(name, getattr(self, name))
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
        """A user's spec: unknown keys are refused, and so are missing preprocessing keys.

        Why no defaults there: a 0-255 model run with the default ``scale`` of 1/255
        still produces confident scores, all wrong. Every field the model's output
        depends on (``EXPLICIT_FIELDS``) must be written out.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"{source}: unknown model spec keys {unknown}; expected some of {sorted(known)}")
        missing = [k for k in EXPLICIT_FIELDS if k not in data]
        if missing:
            raise ConfigError(
                f"{source}: model spec keys {missing} are missing; expected every one of "
                f"{list(EXPLICIT_FIELDS)} written out (a raw 0-255 model says "
                '"scale": 1, "mean": [0, 0, 0], "std": [1, 1, 1])')
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"{source}: {exc}") from exc
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from exc

    @classmethod
    def from_json(cls, path: str) -> "ModelSpec":
        """Load a spec from a local or gs:// JSON file."""
        try:
            data = json.loads(read_bytes(path, "model spec").decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
        except ModelLoadError as exc:
            raise ConfigError(str(exc)) from exc
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
        positive("max_bytes", self.max_bytes)
        positive("max_pixels", self.max_pixels)
        object.__setattr__(self, "formats", tuple(f.upper() for f in self.formats))
        if not self.formats:
            raise ConfigError("--image_formats: expected at least one format, got none")
        for fmt in self.formats:
            choice("--image_formats", fmt, BOUNDED_FORMATS)
