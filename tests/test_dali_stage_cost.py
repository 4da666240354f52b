"""scripts/dali_stage_cost.py: the split of a DALI batch's time into decode, resize and crop,
and the rest of the graph. The arithmetic is checked everywhere; the script itself runs on
DALI's CPU backend where nvidia-dali is installed (the GPU harness), and skips elsewhere."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, SAMPLES
from tests.images import encode

sys.path.insert(0, str(ROOT / "scripts"))
import dali_stage_cost  # noqa: E402 - the script, imported from its folder


def test_each_step_is_the_difference_from_the_stage_before():
    seconds = {"decode": [2.0, 1.0, 3.0], "decode_resize_crop": [2.5, 2.5, 2.6],
               "graph": [3.9, 4.0, 4.1]}
    rows = {r["stage"]: r for r in dali_stage_cost.rows(seconds, images=100,
                                                          pixels=2_000_000_000)}
    assert list(rows) == list(dali_stage_cost.STAGES)
    assert rows["decode"]["pass_s"] == 2.0 and rows["decode"]["images_per_s"] == 50.0
    assert rows["decode"]["gigapixels_per_s"] == 1.0
    assert rows["decode"]["step_share_of_graph"] == 0.5
    assert rows["decode_resize_crop"]["step_s"] == 0.5
    assert rows["decode_resize_crop"]["step_share_of_graph"] == 0.125
    assert rows["graph"]["step_s"] == 1.5 and rows["graph"]["images_per_s"] == 25.0


def test_a_step_within_the_noise_stays_negative():
    rows = dali_stage_cost.rows({"decode": [1.0], "decode_resize_crop": [0.9], "graph": [1.0]},
                                images=10, pixels=10)
    assert rows[1]["step_s"] == pytest.approx(-0.1)


def test_the_script_on_dalis_cpu_backend(tmp_path):
    pytest.importorskip("nvidia.dali", reason="nvidia-dali is not installed here "
                                              "(pip install 'beam-trt-inference[dali]')")
    out = tmp_path / "stages.json"
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "dali_stage_cost.py"),
                          str(SAMPLES / "*"), "--cpu", "--batch", "2", "--passes", "1",
                          "--json", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(out.read_text())
    assert got["backend"] == "cpu" and got["images"] >= 2 and got["images"] % 2 == 0
    assert [r["stage"] for r in got["rows"]] == list(dali_stage_cost.STAGES)
    assert all(r["images_per_s"] > 0 for r in got["rows"])
    assert "| decode |" in run.stdout


def test_megapixel_bands_parse_with_open_sides():
    assert dali_stage_cost.parse_band("1:4") == (1.0, 4.0)
    assert dali_stage_cost.parse_band("4:") == (4.0, float("inf"))
    assert dali_stage_cost.parse_band(":0.5") == (0.0, 0.5)
    for bad, why in (("4", "MIN:MAX"), ("a:b", "numbers"), ("4:1", "MIN < MAX")):
        with pytest.raises(Exception, match=why):
            dali_stage_cost.parse_band(bad)


def test_select_takes_one_kind_and_band_and_the_cpu_path_is_timed(tmp_path):
    """Progressive and baseline JPEGs of two sizes: each filter keeps only its own, with
    their pixel counts, and the CPU path's one-core timing runs the product's decode."""
    from PIL import Image

    from transforms.spec import OPEN_NSFW_SPEC

    files = {"small-base.jpg": ((400, 300), False), "big-base.jpg": ((1600, 1200), False),
             "small-prog.jpg": ((400, 300), True), "big-prog.jpg": ((1600, 1200), True)}
    for name, (size, progressive) in files.items():
        (tmp_path / name).write_bytes(encode(Image.new("RGB", size, (120, 30, 200)), "JPEG",
                                             quality=85, progressive=progressive))
    paths = sorted(str(p) for p in tmp_path.iterdir())

    def picked(**kw):
        data, pixels = dali_stage_cost.select(paths, OPEN_NSFW_SPEC, 10, **kw)
        return sorted(pixels), [dali_stage_cost.jpeg_kind(d) for d in data]

    assert picked()[0] == [120000, 120000, 1920000, 1920000]
    assert picked(kind="progressive") == ([120000, 1920000], ["progressive"] * 2)
    assert picked(kind="baseline", band=(1.0, float("inf"))) == ([1920000], ["baseline"])
    assert picked(band=(0.0, 1.0))[0] == [120000, 120000]
    data, _ = dali_stage_cost.select(paths, OPEN_NSFW_SPEC, 10)
    seconds = dali_stage_cost.time_cpu_path(data, OPEN_NSFW_SPEC, passes=2)
    assert len(seconds) == 2 and all(s > 0 for s in seconds)
