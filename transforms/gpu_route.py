"""Which path each image takes with ``--preprocess gpu``: DALI on the GPU, or Pillow on the CPU.

Why on the CPU, per image, before batching: a GPU decoder must never see a file it may
choke on. DALI decodes a truncated JPEG without an error (wrong pixels, silently) and can
fail a whole batch or crash the process on bytes that are not an image. So every cap and
dead-letter rule of the CPU path runs here first, on the header only (decode.open_checked
and image_bounds), and a JPEG must also prove it is whole (jpeg_structure). Files DALI
would not decode the way the CPU path does (anything that is not a plain Huffman-coded
JPEG: arithmetic, lossless or hierarchical JPEG, PNG alpha and palettes, animation, MPO,
other formats) take the Pillow path, and so do JPEGs above ``--dali_max_megapixels`` and,
with ``--dali_progressive cpu``, progressive JPEGs.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from transforms.decode import open_checked
from transforms.jpeg_structure import check_jpeg_structure
from transforms.records import DEAD_LETTER, METRICS_NAMESPACE, Item, dead_letter
from transforms.spec import DecodeLimits, ModelSpec

CPU_PATH = "cpu_path"
GPU_MODES = ("RGB", "L", "CMYK")   # JPEG modes nvJPEG decodes as Pillow does
# Huffman-coded DCT frames: baseline, extended sequential, progressive. Arithmetic,
# lossless and hierarchical JPEGs take the Pillow path (nvJPEG does not decode them; one
# labelled lossless over DCT data passed the structure check and reached DALI before).
GPU_FRAMES = (0xC0, 0xC1, 0xC2)
PROGRESSIVE = 0xC2


def gpu_decodable(data: bytes, spec: ModelSpec, limits: DecodeLimits,
                  max_pixels: Optional[int] = None, progressive: bool = True) -> bool:
    """True if the GPU path would produce what the CPU path does (and, with
    ``max_pixels``, the JPEG is not larger; with ``progressive`` False, it is not
    progressive); raises the CPU path's own per-image errors (ImageTooLarge,
    UndecodableImage, ...)."""
    img = open_checked(data, limits)
    if img.format != "JPEG" or img.mode not in GPU_MODES:
        return False
    if max_pixels is not None and img.size[0] * img.size[1] > max_pixels:
        return False              # the Pillow path decodes it at a reduced DCT scale
    frame = check_jpeg_structure(data)
    if frame not in GPU_FRAMES or (frame == PROGRESSIVE and not progressive):
        return False
    if spec.resize_policy == "none":
        w, h = img.size
        if w < spec.width or h < spec.height:
            return False          # the CPU path names the size in its dead letter
    return True


class RouteForGpu(beam.DoFn):
    """Item(uri, bytes) -> main: Item(uri, uint8 array) for DALI; CPU_PATH: Item(uri, bytes)
    for Pillow; DEAD_LETTER: stage "decode", as the CPU path would write it."""

    def __init__(self, spec: ModelSpec, limits: DecodeLimits,
                 max_megapixels: Optional[float] = None, progressive: bool = True) -> None:
        self._spec = spec
        self._limits = limits
        self._progressive = progressive
        self._max_pixels = None if max_megapixels is None else int(max_megapixels * 1e6)
        self._gpu = Metrics.counter(METRICS_NAMESPACE, "images_gpu_path")
        self._cpu = Metrics.counter(METRICS_NAMESPACE, "images_cpu_path")
        self._failed = Metrics.counter(METRICS_NAMESPACE, "images_failed")

    def process(self, item: Item) -> Iterator[Any]:
        try:
            gpu = gpu_decodable(item.payload, self._spec, self._limits, self._max_pixels,
                                self._progressive)
        except Exception as exc:  # noqa: BLE001 - one image's fault is a dead letter
            self._failed.inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter(item.uri, "decode", exc))
            return
        if gpu:
            self._gpu.inc()
            yield item.next(np.frombuffer(item.payload, dtype=np.uint8), "route", 0.0)
        else:
            self._cpu.inc()
            yield beam.pvalue.TaggedOutput(CPU_PATH, item)
