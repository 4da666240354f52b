"""Decode image bytes into an RGB HWC uint8 array, one image at a time.

Why per image: Beam's RunInference dead-letter output fails a whole batch, so every
decode failure is caught here, where it concerns exactly one URI.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
from typing import Any, Callable, Iterator, Optional, Tuple

import numpy as np
from apache_beam.metrics import Metrics
from PIL import Image, ImageOps, UnidentifiedImageError

from transforms.spec import DecodeLimits, ModelSpec
from transforms.decode_errors import (DecodeError, EmptyImage, ImageTooLarge,
                                      UndecodableImage, UnsupportedFormat, UnsupportedMode)
from transforms.image_bounds import check_bytes, check_opened
from transforms.records import METRICS_NAMESPACE, Item, PerImageStageFn

__all__ = ["DecodeError", "EmptyImage", "ImageTooLarge", "UndecodableImage",
           "UnsupportedFormat", "UnsupportedMode", "check_size",
           "decode_image", "open_checked", "to_rgb", "DecodeImage"]

# Pillow's own decompression-bomb check stays on as a second line behind
# image_bounds: Image.MAX_IMAGE_PIXELS is set to the run's cap on every call, and its
# DecompressionBombWarning (over the cap, under twice it) is made an error here, so
# both map to ImageTooLarge.
_BOMB_FILTER = ("error", None, Image.DecompressionBombWarning, None, 0)
_BOMBS = (Image.DecompressionBombError, Image.DecompressionBombWarning)


_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_WITH_ALPHA = ("RGBA", "LA", "PA", "RGBa", "La")
_PLAIN_CONVERT = ("1", "L", "RGB", "CMYK", "YCbCr", "RGBX", "HSV")


def check_size(nbytes: int, limits: DecodeLimits) -> None:
    """Reject by byte count before anything is read into memory."""
    if nbytes == 0:
        raise EmptyImage("file is empty (0 bytes)")
    if nbytes > limits.max_bytes:
        raise ImageTooLarge(f"file has {nbytes} bytes; expected at most {limits.max_bytes}")


def _arm_pillow_check(limits: DecodeLimits) -> None:
    """Pillow's cap follows the run's; its warning raises (re-armed if a test or a
    library reset the warning filters)."""
    Image.MAX_IMAGE_PIXELS = limits.max_pixels
    if _BOMB_FILTER not in warnings.filters:
        warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


def _too_large(exc: BaseException, limits: DecodeLimits) -> ImageTooLarge:
    """Pillow's bomb error or warning, in the words of our own header check."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    declared = f"{found.group(1)} pixels" if found else str(exc)
    return ImageTooLarge(f"an image in the file declares {declared} (Pillow's "
                         f"decompression-bomb check); expected at most {limits.max_pixels}")


def _refused_format(prefix: bytes, allowed: Tuple[str, ...]) -> Optional[str]:
    """The name of a format Pillow knows but this run refuses, from its magic bytes only.

    Some plugins' accept functions assume a few bytes (DIB unpacks 4 and raises
    struct.error on a 3-byte file, found by tests/test_fuzz.py); one that raises is a
    plugin that does not accept the prefix."""
    Image.init()
    for fmt, (_, accept) in Image.OPEN.items():
        if fmt in allowed or accept is None:
            continue
        try:
            if accept(prefix) is True:
                return fmt
        except Exception:  # noqa: BLE001 - see the docstring
            continue
    return None


def open_checked(data: bytes, limits: DecodeLimits) -> Image.Image:
    """Identify and read headers only (Pillow opens lazily); every declared size is
    checked against the cap here, before any decoder allocates. Pillow's own check is
    armed here too, so it also guards the caller's later ``load()``."""
    _arm_pillow_check(limits)
    _bounded(lambda: check_bytes(data, limits.max_pixels, limits.formats), "")
    try:
        img = Image.open(io.BytesIO(data), formats=limits.formats)
    except UnidentifiedImageError as exc:
        refused = _refused_format(data[:16], limits.formats)
        if refused is not None:
            raise UnsupportedFormat(
                f"{refused} files are refused: their declared sizes cannot be bounded "
                f"before decoding; expected one of {list(limits.formats)}") from exc
        raise UndecodableImage(
            f"not a recognised image format (first bytes {data[:8]!r})") from exc
    except _BOMBS as exc:
        raise _too_large(exc, limits) from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise UndecodableImage(f"cannot open image: {exc}") from exc
    w, h = img.size
    if w * h > limits.max_pixels:
        raise ImageTooLarge(
            f"header declares {w}x{h} = {w * h} pixels; expected at most {limits.max_pixels}")
    if w == 0 or h == 0:
        raise UndecodableImage(f"header declares an empty image {w}x{h}")
    _bounded(lambda: check_opened(img, data, limits.max_pixels), f"{img.format} ")
    return img


def _bounded(check: Callable[[], None], what: str) -> None:
    """Run a header walk; a header too broken to walk is undecodable, not a crash."""
    try:
        check()
    except DecodeError:
        raise
    except (LookupError, TypeError, ValueError, struct.error) as exc:
        raise UndecodableImage(f"cannot read {what}headers: {exc}") from exc


def _sixteen_bit_to_l(img: Image.Image) -> Image.Image:
    """Scale 0..65535 to 0..255 (Pillow's own convert("L") clips instead)."""
    arr = np.asarray(img).astype(np.float64)
    arr = np.clip(arr, 0, 65535) / 257.0
    return Image.fromarray(np.rint(arr).astype(np.uint8))


def _float_to_l(img: Image.Image) -> Image.Image:
    """Mode F: values in [0, 1] are scaled to 0..255, anything else is clipped."""
    arr = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=255.0, neginf=0.0)
    if arr.size and arr.min() >= 0.0 and arr.max() <= 1.0:
        arr = arr * 255.0
    return Image.fromarray(np.rint(np.clip(arr, 0, 255)).astype(np.uint8))


def _composite(rgba: Image.Image, background: Optional[Tuple[float, float, float]]) -> np.ndarray:
    if background is None:
        return np.asarray(rgba.convert("RGB"))
    arr = np.asarray(rgba, dtype=np.float32)
    alpha = arr[..., 3:4] / 255.0
    out = arr[..., :3] * alpha + np.asarray(background, dtype=np.float32) * (1.0 - alpha)
    return np.rint(out).astype(np.uint8)


def to_rgb(img: Image.Image, alpha_background: Optional[Tuple[float, float, float]]) -> np.ndarray:
    """Any Pillow mode -> HWC uint8 RGB, with deliberate rules for the lossy ones."""
    mode = img.mode
    if mode in _SIXTEEN_BIT or mode == "I":
        # 32-bit "I" comes from 16-bit PNG/TIFF in older Pillows: same 0..65535 scale.
        img = _sixteen_bit_to_l(img)
    elif mode == "F":
        img = _float_to_l(img)
    elif mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in _WITH_ALPHA:
        return _composite(img.convert("RGBA"), alpha_background)
    if img.mode in _PLAIN_CONVERT:
        return np.asarray(img.convert("RGB"))
    raise UnsupportedMode(f"image mode {img.mode!r} has no RGB conversion here")


def decode_image(
    data: bytes,
    limits: DecodeLimits = DecodeLimits(),
    target_size: Optional[Tuple[int, int]] = None,
    alpha_background: Optional[Tuple[float, float, float]] = (255.0, 255.0, 255.0),
) -> np.ndarray:
    """Bytes -> HWC uint8 RGB array, EXIF orientation applied.

    ``target_size`` (height, width) lets large JPEGs decode at a reduced DCT scale
    (``draft``); the request is twice the target per side so the later resize still
    downsamples with antialiasing and quality is unchanged.
    """
    check_size(len(data), limits)
    img = open_checked(data, limits)
    try:
        if target_size is not None and img.format == "JPEG":
            side = 2 * max(target_size)
            img.draft("RGB", (side, side))
        img.load()
        img = ImageOps.exif_transpose(img)
        return to_rgb(img, alpha_background)
    except DecodeError:
        raise
    except _BOMBS as exc:
        raise _too_large(exc, limits) from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise UndecodableImage(f"cannot decode {img.format or 'image'} data: {exc}") from exc


class DecodeImage(PerImageStageFn):
    """DoFn: Item(uri, bytes) -> Item(uri, HWC uint8 RGB); failures are dead letters."""

    stage = "decode"

    def __init__(self, spec: ModelSpec, limits: DecodeLimits) -> None:
        super().__init__()
        self._spec = spec
        self._limits = limits
        # what reached the Pillow path: with --preprocess gpu it must equal the route's
        # images_cpu_path plus images_gpu_fallback (the launcher prints them when a run's
        # counts do not balance, to show between which stages images went missing)
        self._entered = Metrics.counter(METRICS_NAMESPACE, "images_pillow_in")

    def process(self, item: Item) -> Iterator[Any]:
        self._entered.inc()
        return super().process(item)

    def apply(self, item: Item) -> np.ndarray:
        return decode_image(item.payload, self._limits, self._spec.resize_size,
                            self._spec.alpha_background)
