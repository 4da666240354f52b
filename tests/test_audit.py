"""pipeline.audit: a finished run's outputs against its inputs, by URI."""

from __future__ import annotations

import json
import shutil

from pipeline.audit import audit, main
from pipeline.main import run
from tests.conftest import SAMPLES


def _run(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for p in list(SAMPLES.glob("*.jpg"))[:3]:
        shutil.copy(p, images / p.name)
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    out = tmp_path / "out"
    run(["--input", str(images / "*"), "--output", str(out), "--run_id", "r1",
         "--max_failed_fraction", "1"])
    return images, out


def test_a_whole_run_passes(tmp_path, capsys):
    images, out = _run(tmp_path)
    report = audit([str(images / "*")], str(out), "r1")
    assert report["whole"] and report["inputs"] == 4
    assert (report["predictions"], report["dead_letters"], report["missing"]) == (3, 1, 0)
    manifest = tmp_path / "list.txt"
    manifest.write_text("# the run's images\n" + "\n".join(str(p) for p in images.iterdir()))
    assert main(["--input_list", str(manifest), "--output", str(out), "--json",
                 str(tmp_path / "a.json")]) == 0
    assert json.loads((tmp_path / "a.json").read_text())["whole"] is True
    assert "missing=0 written_more_than_once=0" in capsys.readouterr().out


def test_missing_twice_and_foreign_uris_are_named(tmp_path, capsys):
    images, out = _run(tmp_path)
    shard = next(out.glob("predictions-r1-*.jsonl"))
    lines = shard.read_text().splitlines()
    lost = json.loads(lines[0])["uri"]
    extra = dict(json.loads(lines[1]), uri="/elsewhere/x.jpg")
    shard.write_text("\n".join(lines[1:] + [lines[1], json.dumps(extra)]) + "\n")
    report = audit([str(images / "*")], str(out), "r1")
    assert not report["whole"]
    assert report["missing"] == 1 and report["missing_examples"][0]["uri"] == lost
    assert report["missing_examples"][0]["format"] == "JPEG"
    assert report["missing_kinds"][0]["count"] == 1
    assert report["written_more_than_once_examples"] == [json.loads(lines[1])["uri"]]
    assert report["not_an_input_examples"] == ["/elsewhere/x.jpg"]
    assert main(["--input", str(images / "*"), "--output", str(out)]) == 4
    assert "missing: " in capsys.readouterr().err
