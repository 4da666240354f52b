"""python -m pipeline.compare: two runs' scores joined by URI."""

from __future__ import annotations

import json

from pipeline.compare import compare, main, scores
from tests.conftest import SAMPLES


def _write(out, records):
    out.mkdir(parents=True)
    with open(out / "predictions-r-cpu-00000-of-00001.jsonl", "w") as f:
        for uri, nsfw in records.items():
            f.write(json.dumps({"uri": uri, "top_k": [
                {"label": "nsfw", "score": nsfw}, {"label": "sfw", "score": 1 - nsfw}]}) + "\n")


def test_differences_per_label_top1_and_uris_in_one_run_only(tmp_path, capsys):
    _write(tmp_path / "a", {"x.jpg": 0.10, "y.jpg": 0.60, "z.jpg": 0.90, "only-a.jpg": 0.5})
    _write(tmp_path / "b", {"x.jpg": 0.11, "y.jpg": 0.45, "z.jpg": 0.90, "only-b.jpg": 0.5})
    r = compare(scores(str(tmp_path / "a")), scores(str(tmp_path / "b")))
    assert r["images"] == 3 and r["only_in_a"] == r["only_in_b"] == 1
    assert r["examples_only_in_a"] == ["only-a.jpg"]
    nsfw = r["labels"]["nsfw"]
    assert abs(nsfw["max"] - 0.15) < 1e-9 and nsfw["worst_uri"] == "y.jpg"
    assert abs(nsfw["median"] - 0.01) < 1e-9
    assert abs(r["top1_agreement"] - 2 / 3) < 1e-6        # y flips from nsfw to sfw
    out = tmp_path / "r.json"
    assert main([str(tmp_path / "a"), str(tmp_path / "b"), "--max_diff", "0.2",
                 "--json", str(out)]) == 0
    assert json.loads(out.read_text())["labels"]["sfw"]["worst_uri"] == "y.jpg"
    assert main([str(tmp_path / "a"), str(tmp_path / "b"), "--label", "nsfw",
                 "--max_diff", "0.1"]) == 1
    assert "max |difference| above 0.1 for ['nsfw']" in capsys.readouterr().err
    assert main([str(tmp_path / "a"), str(tmp_path / "empty")]) == 2


def test_two_real_runs_of_one_model_agree_exactly(tmp_path, capsys):
    from pipeline.main import run

    for name in ("one", "two"):
        run(["--input", str(SAMPLES / "*.jpg"), "--output", str(tmp_path / name)])
    assert main([str(tmp_path / "one"), str(tmp_path / "two"), "--max_diff", "0"]) == 0
    assert "compared 6 images; top-1 agreement 1.0000" in capsys.readouterr().out
