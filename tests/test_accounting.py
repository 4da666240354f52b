"""Every admitted image leaves the run once: the launcher's balance check (exit 4)."""

from __future__ import annotations

import shlex
import shutil

import pytest

from pipeline.accounting import ImagesUnaccounted, audit_command, check_accounting
from tests.conftest import SAMPLES


def test_a_balanced_run_passes_and_the_message_names_the_gap():
    check_accounting(10, 9, 1, ["gs://b/*.jpg"], None, "gs://b/out", "r1")
    with pytest.raises(ImagesUnaccounted, match=r"3 of 10 images admitted to run r1 are in "
                       r"neither .* \(ok=6 failed=1\); expected ok \+ failed = 10"):
        check_accounting(10, 6, 1, ["gs://b/*.jpg"], None, "gs://b/out", "r1")
    with pytest.raises(ImagesUnaccounted, match="2 outcomes more than images"):
        check_accounting(10, 11, 1, ["x/*"], None, "out", "r1")
    assert audit_command(["a b/*"], "m.txt", "out", "r1") == (
        "python -m pipeline.audit --input 'a b/*' --input_list m.txt --output out --run_id r1")


def test_a_real_run_admits_what_it_reports(tmp_path):
    from pipeline.main import run

    summary = run(["--input", str(SAMPLES / "*.jpg"), "--output", str(tmp_path / "out")])
    assert summary.admitted == summary.ok + summary.failed == 6
    again = run(["--input", str(SAMPLES / "*.jpg"), "--output", str(tmp_path / "out")])
    assert again.admitted == again.ok == 0 and again.skipped == 6


class _DropsRocket:
    """Fault injection: the last DoFn of the chain silently loses one image, the way the
    H200 GPU-path run lost images (no dead letter, no error)."""

    @staticmethod
    def wrap(base):
        class Dropping(base):
            def process(self, p):
                if "rocket" in p.uri:
                    return
                yield from super().process(p)
        return Dropping


def test_a_run_that_loses_an_image_fails_with_exit_4(tmp_path, monkeypatch, capsys):
    import sys

    import pipeline.build as build
    from pipeline import main as launcher

    images = tmp_path / "images"
    images.mkdir()
    for p in SAMPLES.glob("*.jpg"):
        shutil.copy(p, images / p.name)
    monkeypatch.setattr(build, "BundleMetrics", _DropsRocket.wrap(build.BundleMetrics))
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["pipeline.main", "--input", str(images / "*"),
                                      "--output", str(out), "--run_id", "lossy"])
    assert launcher.main() == 4
    err = capsys.readouterr().err
    assert "1 of 6 images admitted to run lossy are in neither" in err
    assert "Counters by stage: {" in err and "'images_admitted': 6" in err
    assert "'images_ok': 5" in err and "'images_pillow_in': 6" in err
    assert (f"python -m pipeline.audit --input {shlex.quote(str(images / '*'))} "
            f"--output {out} --run_id lossy") in err
    # the audit the message names finds exactly that image
    from pipeline.audit import main as audit_main

    assert audit_main(["--input", str(images / "*"), "--output", str(out),
                       "--run_id", "lossy"]) == 4
    assert "rocket.jpg" in capsys.readouterr().err


def _lossy_sink(base):
    """Fault injection after the counters: the predictions sink drops rocket.jpg's record,
    as a sink that failed to finalize one shard would."""
    import apache_beam as beam

    class LossySink(base):
        def expand(self, pcoll):
            kept = pcoll | "LoseRocket" >> beam.Filter(lambda r: "rocket" not in r["uri"])
            return super().expand(kept)
    return LossySink


def test_records_lost_in_the_sink_fail_the_run_even_though_the_counters_balance(
        tmp_path, monkeypatch, capsys):
    import sys

    import pipeline.build as build
    from pipeline import main as launcher

    monkeypatch.setattr(build, "WritePredictions", _lossy_sink(build.WritePredictions))
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["pipeline.main", "--input", str(SAMPLES / "*.jpg"),
                                      "--output", str(out), "--run_id", "sinkloss"])
    assert launcher.main() == 4
    err = capsys.readouterr().err
    assert ("run sinkloss's files hold 5 predictions and 0 dead letters; expected 6 and 0"
            in err) and "in the file sinks" in err and "--run_id sinkloss" in err


def test_written_counts_match_a_whole_run_and_name_unfinalized_temp_files(tmp_path):
    from pipeline.accounting import check_written, count_written
    from pipeline.main import run

    out = tmp_path / "out"
    summary = run(["--input", str(SAMPLES / "*"), "--output", str(out), "--run_id", "w1",
                   "--max_failed_fraction", "1"])
    written = count_written(str(out), "w1")
    assert (written.predictions, written.dead_letters) == (summary.ok, summary.failed)
    assert written.unfinalized == () and summary.ok > 0
    # a temp file a sink never finalized is named in the message
    left = out / "beam-temp-predictions-w1-cpu-0123abcd"
    left.mkdir()
    (left / "5f2e.jsonl").write_text('{"uri": "x"}\n')
    written = count_written(str(out), "w1")
    assert written.unfinalized == (str(left / "5f2e.jsonl"),)
    with pytest.raises(ImagesUnaccounted, match=r"1 sink temporary file\(s\) were never "
                       r"finalized, e.g. \['.*5f2e.jsonl'\]"):
        check_written(summary.ok + 1, summary.failed, written, ["in/*"], None, str(out), "w1")


def test_a_reused_run_id_is_refused_before_the_run(tmp_path):
    from pipeline.main import run
    from transforms.spec import ConfigError

    out = tmp_path / "out"
    run(["--input", str(SAMPLES / "*.jpg"), "--output", str(out), "--run_id", "once"])
    with pytest.raises(ConfigError, match=r"--run_id: expected a run id with no files under "
                       r".*predictions-once-\*"):
        run(["--input", str(SAMPLES / "*.jpg"), "--output", str(out), "--run_id", "once"])
