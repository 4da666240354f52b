"""Pure preprocessing from an RGB image to the model's input tensor, driven by ModelSpec.

Why Pillow for resizing: the default model (open_nsfw) was trained on Pillow-resized
images, and matching its reference preprocessing exactly is what keeps scores equal.
"""

from __future__ import annotations

import io
from typing import Tuple

import numpy as np
from PIL import Image

from transforms.spec import ModelSpec
from transforms.records import Item, PerImageStageFn

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


class PreprocessError(ValueError):
    """The image cannot be brought to the model's input shape."""


def resized_size(image_hw: Tuple[int, int], spec: ModelSpec) -> Tuple[int, int]:
    """(height, width) after the spec's resize policy."""
    h, w = image_hw
    rh, rw = spec.resize_size
    if spec.resize_policy == "exact":
        return rh, rw
    if spec.resize_policy == "shorter_side":
        scale = max(rh / h, rw / w)  # cover the resize box, keep the aspect ratio
        return max(rh, int(round(h * scale))), max(rw, int(round(w * scale)))
    return h, w


def center_crop_box(size_hw: Tuple[int, int], crop_hw: Tuple[int, int]) -> Tuple[int, int, int, int]:
    """Pillow crop box (left, top, right, bottom) for a centred crop."""
    (h, w), (ch, cw) = size_hw, crop_hw
    if h < ch or w < cw:
        raise PreprocessError(f"image is {w}x{h} after resize; expected at least {cw}x{ch}")
    top, left = (h - ch) // 2, (w - cw) // 2
    return left, top, left + cw, top + ch


def jpeg_roundtrip(img: Image.Image, quality: int) -> Image.Image:
    """Re-encode as JPEG: open_nsfw was trained on JPEG-compressed crops."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    out = Image.open(buf)
    out.load()
    return out


def to_tensor(rgb: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """HWC uint8 RGB of the final size -> the model's layout, channel order and dtype."""
    arr = rgb.astype(np.float32)
    if spec.channel_order == "BGR":
        arr = arr[:, :, ::-1]
    if spec.input_dtype == "uint8":
        out = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    else:
        arr = arr * np.float32(spec.scale)
        arr = (arr - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
        out = arr.astype(np.dtype(spec.input_dtype))
    if spec.layout == "NCHW":
        out = out.transpose(2, 0, 1)
    return np.ascontiguousarray(out)


def resize_and_crop(rgb: np.ndarray, spec: ModelSpec) -> Image.Image:
    """The spec's resize policy and crop on an HWC uint8 RGB array (what the GPU path's
    ``--dali_resize pillow`` reproduces and scripts/dali_vs_pillow.py compares against)."""
    img = Image.fromarray(rgb, mode="RGB")
    size = resized_size(rgb.shape[:2], spec)
    if size != rgb.shape[:2]:
        img = img.resize((size[1], size[0]), resample=_RESAMPLE[spec.interpolation])
    if spec.crop == "center":
        img = img.crop(center_crop_box(size, (spec.height, spec.width)))
    return img


def preprocess(rgb: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """HWC uint8 RGB of any size -> one input tensor (no batch axis) for ``spec``."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise PreprocessError(
            f"expected an HxWx3 uint8 array, got shape {rgb.shape} dtype {rgb.dtype}")
    img = resize_and_crop(rgb, spec)
    if spec.jpeg_roundtrip_quality is not None:
        img = jpeg_roundtrip(img, spec.jpeg_roundtrip_quality)
    return to_tensor(np.asarray(img.convert("RGB")), spec)


class Preprocess(PerImageStageFn):
    """DoFn: Item(uri, RGB array) -> Item(uri, model input tensor)."""

    stage = "preprocess"

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self._spec = spec

    def apply(self, item: Item) -> np.ndarray:
        return preprocess(item.payload, self._spec)
