"""Encoded image bytes -> the spec's input tensor, on the GPU, with NVIDIA DALI.

Why: end to end the pipeline delivered about 2% of the engine because Pillow decode and
resize on the CPU could not keep up. DALI decodes JPEGs with the GPU's hardware JPEG
engines and nvJPEG and resizes, crops and normalises on the device; the result is copied
device-to-device into the engine's input buffer, never through the host.

The DALI graph follows the CPU path's order exactly (transforms/preprocess.py):
decode to RGB with EXIF orientation -> resize by the policy (antialiased) -> centre crop
-> optional JPEG round-trip (open_nsfw) -> channel order -> x * scale, (x - mean) / std ->
dtype -> layout. Only files that passed the CPU-side checks reach it
(transforms/jpeg_structure.py): DALI decodes a truncated JPEG without an error and can
fail a whole batch, or crash, on bytes that are not an image.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from transforms.runtime import startup
from transforms.runtime.errors import ModelLoadError
from transforms.spec import ModelSpec

LOG = logging.getLogger(__name__)

_INTERP = {"nearest": "INTERP_NN", "bilinear": "INTERP_LINEAR", "bicubic": "INTERP_CUBIC",
           "lanczos": "INTERP_LANCZOS3", "box": "INTERP_LINEAR", "hamming": "INTERP_LINEAR"}


@dataclass(frozen=True)
class DaliOptions:
    """DALI's knobs that decide throughput (measured on the H100, see docs/benchmarks.md).

    ``hw_decoder_load`` is the share of each batch sent to the hardware JPEG engines (the
    rest goes to nvJPEG's CUDA decoder); 0.9 beat DALI's default 0.65 by 1.6x at batch 32.
    """

    hw_decoder_load: float = 0.9
    threads: int = 4
    device_id: int = 0
    # Resize as Pillow does: horizontal pass to a uint8 image, then vertical, with the CPU
    # path's own output size and crop offsets. On DALI's CPU backend this took open_nsfw
    # from max |Δ| 0.086 to 0.0066 against the CPU path (scripts/dali_vs_pillow.py, 306
    # JPEGs); off until it has run on the GPU backend.
    pillow_resize: bool = False
    # JPEGs of more megapixels take the Pillow path, which decodes them at a reduced DCT
    # scale (draft) while nvJPEG decodes every pixel: on the H200 the GPU path was
    # pixel-bound at about 2 GP/s on both corpora (docs/benchmarks.md). None: every
    # decodable JPEG goes to DALI. Off by default, measured: on the H200 with 16 cores
    # (10,000 uploads photos, 2026-12-01) a 4 MP cap left end to end unchanged (181
    # against 174 images/s) and cut the steady rate from 604 to 439, with the run's CPU
    # use up from 715% to 803% of a core.
    max_megapixels: Optional[float] = None
    # Progressive JPEGs to DALI (True) or to the Pillow path. The hardware JPEG engines do
    # not take them, so nvJPEG's hybrid decoder does their Huffman stage on DALI's few CPU
    # threads per process and every pixel on the GPU, where Pillow decodes them at a
    # reduced DCT scale. On DALI by default, measured in the same run: progressive JPEGs
    # on the Pillow path gave 176 images/s end to end and 560 steady (against 174 and
    # 604). Alone, one DALI process took 12 ms per progressive JPEG (1.4 MP median) and
    # one core on the Pillow path 52 ms (scripts/dali_stage_cost.py --jpeg progressive).
    progressive_on_gpu: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.hw_decoder_load <= 1.0:
            raise ValueError(f"--dali_hw_decoder_load: expected 0..1, got {self.hw_decoder_load}")
        if self.threads <= 0:
            raise ValueError(f"--dali_threads: expected a positive integer, got {self.threads}")
        if self.max_megapixels is not None and not self.max_megapixels > 0:
            raise ValueError(f"--dali_max_megapixels: expected a positive number, got "
                             f"{self.max_megapixels}")


def dali_available() -> bool:
    """True when nvidia-dali imports (it needs a CUDA driver to run, not to import)."""
    try:
        import nvidia.dali  # noqa: F401 - probing only
    except ImportError:
        return False
    return True


def _dali() -> Tuple[Any, Any, Any]:
    try:
        from nvidia.dali import fn, pipeline_def, types
    except ImportError as exc:
        raise ModelLoadError("--preprocess gpu: nvidia-dali is not installed; expected it "
                             "(pip install 'beam-trt-inference[dali]')") from exc
    return fn, pipeline_def, types


def pipeline_settings(max_batch: int, options: DaliOptions, cpu_only: bool) -> Dict[str, Any]:
    """How every DALI pipeline here runs: one iteration per call, nothing prefetched (the
    caller feeds each batch and waits for it), on the placed GPU or DALI's CPU backend."""
    return {"batch_size": max_batch, "num_threads": options.threads,
            "device_id": None if cpu_only else options.device_id, "exec_async": False,
            "exec_pipelined": False, "prefetch_queue_depth": 1}


def decode(encoded: Any, options: DaliOptions, cpu_only: bool = False) -> Any:
    """The graph's decode to RGB: nvJPEG (``mixed``) on the GPU, libjpeg-turbo on DALI's CPU
    backend. Fancy upsampling makes the chroma come out as libjpeg-turbo's (Pillow's);
    without it open_nsfw's scores moved by up to 0.075 against the CPU path."""
    fn, _, types = _dali()
    where = {"device": "cpu"} if cpu_only else {"device": "mixed",
                                                  "hw_decoder_load": options.hw_decoder_load}
    return fn.decoders.image(encoded, output_type=types.RGB, jpeg_fancy_upsampling=True,
                             **where)


def resize_and_crop(img: Any, spec: ModelSpec) -> Any:
    """The spec's resize policy (antialiased) and centre crop as DALI operators, in the CPU
    path's order (transforms/preprocess.py)."""
    fn, _, types = _dali()
    rh, rw = spec.resize_size
    interp = getattr(types, _INTERP[spec.interpolation])
    if spec.resize_policy == "exact":
        img = fn.resize(img, resize_x=rw, resize_y=rh, interp_type=interp, antialias=True)
    elif spec.resize_policy == "shorter_side":
        img = fn.resize(img, resize_x=rw, resize_y=rh, mode="not_smaller",
                        interp_type=interp, antialias=True)
    if spec.crop == "center":
        img = fn.crop(img, crop=(spec.height, spec.width), crop_pos_x=0.5, crop_pos_y=0.5,
                      out_of_bounds_policy="error")
    return img


def normalisation(spec: ModelSpec) -> Tuple[List[float], List[float]]:
    """The spec's ``x * scale, (x - mean) / std`` as DALI's ``(x - mean') / std'`` on 0..255
    pixels, in the model's channel order."""
    mean = [m / spec.scale for m in spec.mean]
    std = [s / spec.scale for s in spec.std]
    return mean, std


class DaliPreprocessor:
    """One DALI pipeline for one spec and a maximum batch; ``run`` takes encoded bytes.

    Calls are serialized by a lock: a DALI pipeline runs one iteration at a time, and
    Beam's DoFn threads share the runner that owns this object.
    """

    def __init__(self, spec: ModelSpec, max_batch: int, options: DaliOptions = DaliOptions(),
                 cpu_only: bool = False) -> None:
        """``cpu_only`` builds the same graph on DALI's CPU backend (decoder "cpu", no
        device): for checking the graph's arithmetic where there is no GPU (to_host only)."""
        with startup.timed_part("import_dali"):
            fn, pipeline_def, types = _dali()
        self.spec = spec
        self.max_batch = max_batch
        self._lock = threading.Lock()
        out_dtype = {"float32": types.FLOAT, "float16": types.FLOAT16,
                     "uint8": types.UINT8}[spec.input_dtype]
        interp = getattr(types, _INTERP[spec.interpolation])

        @pipeline_def(**pipeline_settings(max_batch, options, cpu_only))
        def graph():
            encoded = fn.external_source(name="encoded", dtype=types.UINT8, batch=True)
            img = decode(encoded, options, cpu_only)
            if options.pillow_resize:
                img = pillow_resize_and_crop(img, spec, interp, encoded)
            else:
                img = resize_and_crop(img, spec)
            if spec.jpeg_roundtrip_quality is not None:
                img = fn.jpeg_compression_distortion(img, quality=spec.jpeg_roundtrip_quality)
            if spec.channel_order == "BGR":
                img = fn.color_space_conversion(img, image_type=types.RGB,
                                                output_type=types.BGR)
            if spec.input_dtype == "uint8":
                mean, std_ = [0.0] * 3, [1.0] * 3
            else:
                mean, std_ = normalisation(spec)
            return fn.crop_mirror_normalize(
                img, dtype=out_dtype, mean=mean, std=std_,
                output_layout="CHW" if spec.layout == "NCHW" else "HWC")

        self._graph = graph
        self._pipe = None
        with startup.timed_part("dali_build"):
            self.reset()

    def reset(self) -> None:
        """A fresh pipeline: after a decode error DALI's pipeline object is no longer valid."""
        self._pipe = self._graph()
        self._pipe.build()

    def _run(self, encoded: Sequence[np.ndarray]) -> Any:
        if not 0 < len(encoded) <= self.max_batch:
            raise ValueError(f"DALI batch of {len(encoded)}; expected 1..{self.max_batch}")
        self._pipe.feed_input("encoded", [np.asarray(e, np.uint8) for e in encoded])
        (out,) = self._pipe.run()
        return out

    def to_device(self, encoded: Sequence[np.ndarray], dst_ptr: int, stream: Any) -> None:
        """Preprocess a batch into ``dst_ptr`` (a device buffer of at least n rows), ordered
        on the CUDA ``stream`` the engine then runs on: no host round trip."""
        with self._lock:
            out = self._run(encoded)
            out.as_tensor().copy_to_external(ctypes.c_void_p(int(dst_ptr)),
                                             cuda_stream=ctypes.c_void_p(int(stream)),
                                             non_blocking=True)

    def to_host(self, encoded: Sequence[np.ndarray]) -> np.ndarray:
        """The same batch as a numpy array (tests and the benchmark's preprocessing row)."""
        with self._lock:
            out = self._run(encoded)
            out = out.as_cpu() if hasattr(out, "as_cpu") else out
            return np.array(out.as_array(), copy=True)


def pillow_resize_and_crop(img: Any, spec: ModelSpec, interp: Any, encoded: Any) -> Any:
    """The spec's resize and centre crop as the CPU path computes them (transforms/
    preprocess.py), on DALI: the output size from ``resized_size``'s rule, then a
    horizontal pass to a uint8 image and a vertical pass (Pillow's order and its
    intermediate rounding), then the crop at Pillow's floor((size - crop) / 2) offsets.
    The sizes come from the encoded file's header on the CPU (peek_image_shape, EXIF
    orientation applied as the decoder applies it): asking the decoded GPU image for its
    shape would need a GPU-to-CPU transfer inside the graph, which this pipeline's
    synchronous executor refuses.

    Why: DALI's one-pass resize differs from Pillow's by 0.16 pixel levels on average, and
    open_nsfw's JPEG round-trip amplifies that to score changes of up to 0.086."""
    from nvidia.dali import fn, types
    from nvidia.dali import math as dmath

    from transforms.preprocess import center_crop_box

    def const(x: float) -> Any:
        return types.Constant(float(x), dtype=types.FLOAT)

    shape = fn.peek_image_shape(encoded, dtype=types.FLOAT)   # H, W, C from the header
    h, w = shape[0], shape[1]
    rh, rw = spec.resize_size
    if spec.resize_policy == "exact":             # sizes and offsets known here
        img = fn.resize(img, size=fn.stack(h, const(rw)), interp_type=interp, antialias=True)
        img = fn.resize(img, size=[float(rh), float(rw)], interp_type=interp, antialias=True)
        if spec.crop == "center":
            left, top, _, _ = center_crop_box((rh, rw), (spec.height, spec.width))
            return fn.slice(img, start=[top, left], shape=[spec.height, spec.width],
                            axis_names="HW", out_of_bounds_policy="error")
        return img
    if spec.resize_policy == "shorter_side":
        scale = dmath.max(rh / h, rw / w)          # cover the box, keep the aspect ratio
        oh = dmath.max(const(rh), dmath.floor(h * scale + 0.5))
        ow = dmath.max(const(rw), dmath.floor(w * scale + 0.5))
        img = fn.resize(img, size=fn.stack(h, ow), interp_type=interp, antialias=True)
        img = fn.resize(img, size=fn.stack(oh, ow), interp_type=interp, antialias=True)
    else:
        oh, ow = h, w
    if spec.crop == "center":
        top = dmath.floor((oh - float(spec.height)) / 2)
        left = dmath.floor((ow - float(spec.width)) / 2)
        img = fn.slice(img, start=fn.cast(fn.stack(top, left), dtype=types.INT32),
                       shape=[spec.height, spec.width], axis_names="HW",
                       out_of_bounds_policy="error")
    return img


def fill_bisecting(pre: "DaliPreprocessor", encoded: Sequence[np.ndarray], ptr: int,
                   row_bytes: int, stream: Any, ok: np.ndarray) -> None:
    """Preprocess ``encoded`` into the device rows at ``ptr`` (``row_bytes`` apart), on
    ``stream``. If DALI fails for a batch, split it and retry, down to single images; a
    file that fails alone gets a zeroed row and ``ok[i] = False`` (the caller sends it to
    the Pillow path). Every engine fed by DALI shares this rule."""
    from transforms.runtime import cuda
    from transforms.runtime.errors import SystemicError

    def attempt(lo: int, hi: int) -> None:
        try:
            pre.to_device(encoded[lo:hi], ptr + lo * row_bytes, stream)
        except SystemicError:
            raise
        except Exception as exc:  # noqa: BLE001 - DALI raises RuntimeError for data
            pre.reset()
            if hi - lo == 1:
                LOG.warning("GPU decode failed for one image; it goes to the CPU path: %s",
                            str(exc).splitlines()[0][:300])
                ok[lo] = False
                cuda.memset_async(ptr + lo * row_bytes, row_bytes, stream)
                return
            mid = (lo + hi) // 2
            attempt(lo, mid)
            attempt(mid, hi)

    attempt(0, len(encoded))
