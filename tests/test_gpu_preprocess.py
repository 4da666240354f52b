"""The GPU path's DALI graph, checked on DALI's CPU backend against the CPU path.

DALI's resize and JPEG-distortion arithmetic is shared by its CPU and GPU backends, so
the graph's own agreement with Pillow can be measured without a GPU. Needs nvidia-dali
(the `dali` extra; present in the GPU harness, not in CI, where these skip). The GPU run
of the same graph is tests/gpu/test_dali_gpu.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import sample_paths
from transforms.decode import decode_image
from transforms.preprocess import preprocess
from transforms.runtime.gpu_preprocess import DaliOptions, DaliPreprocessor, dali_available
from transforms.spec import OPEN_NSFW_SPEC, ModelSpec

pytestmark = pytest.mark.skipif(not dali_available(), reason="nvidia-dali is not installed "
                                "here (pip install 'beam-trt-inference[dali]')")

MEANSTD = ModelSpec(name="meanstd", height=224, width=224, layout="NCHW", input_name="x",
                    resize_policy="shorter_side", resize_height=256, resize_width=256,
                    crop="center", scale=1 / 255, mean=(0.485, 0.456, 0.406),
                    std=(0.229, 0.224, 0.225), labels=("a",))


def _jpegs():
    return [p.read_bytes() for p in sample_paths() if p.suffix == ".jpg"]


@pytest.mark.parametrize("spec", [OPEN_NSFW_SPEC, MEANSTD], ids=["open_nsfw", "meanstd"])
def test_pillow_resize_brings_the_graph_to_the_cpu_path(spec):
    """One-pass DALI resize against Pillow-order two-pass (pillow_resize), per tensor."""
    files = [f for f in _jpegs()]
    cpu = np.stack([preprocess(decode_image(f, target_size=spec.resize_size,
                                            alpha_background=spec.alpha_background), spec)
                    for f in files]).astype(np.float32)
    diffs = {}
    for pillow in (False, True):
        pre = DaliPreprocessor(spec, len(files), DaliOptions(threads=1, pillow_resize=pillow),
                               cpu_only=True)
        gpu_graph = pre.to_host([np.frombuffer(f, np.uint8) for f in files]).astype(np.float32)
        assert gpu_graph.shape == cpu.shape
        diffs[pillow] = float(np.abs(gpu_graph - cpu).mean() / np.float32(1 / spec.scale
                                                                          if spec.scale < 1
                                                                          else 1))
    # in pixel levels: the two-pass resize is at least 5x closer to Pillow than one pass
    assert diffs[True] * 5 <= diffs[False], diffs
    assert diffs[True] < 0.2, diffs
