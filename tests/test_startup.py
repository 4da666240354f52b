"""Start-up milestones of each process (BEAM_TRT_STARTUP_DIR), and their summary."""

from __future__ import annotations

import json
import os
import time

import pytest

from transforms.runtime import startup


def test_milestones_are_written_once_per_process_only_when_asked(tmp_path, monkeypatch):
    monkeypatch.setattr(startup, "_SEEN", set())
    monkeypatch.delenv(startup.ENV, raising=False)
    startup.record("imported")
    assert not any(tmp_path.iterdir())
    monkeypatch.setenv(startup.ENV, str(tmp_path))
    startup.record("imported")
    startup.record("imported")                    # once per process
    startup.record("load_done", once=False, load_s=1.5)
    lines = [json.loads(x) for x in (tmp_path / f"startup-{os.getpid()}.jsonl").read_text()
             .splitlines()]
    assert [x["milestone"] for x in lines] == ["imported", "load_done"]
    assert lines[0]["pid"] == os.getpid() and lines[1]["load_s"] == 1.5
    start = startup.process_start_unix()
    assert start is None or 0 <= lines[0]["since_start_s"] <= time.time() - start + 1


def test_summary_over_processes_leaves_out_those_without_a_model(tmp_path):
    t0 = 1000.0

    def write(pid, rows):
        with open(tmp_path / f"startup-{pid}.jsonl", "w") as f:
            for milestone, t, extra in rows:
                f.write(json.dumps({"pid": pid, "milestone": milestone, "t": t0 + t,
                                    "since_start_s": t - 1, **extra}) + "\n")

    write(1, [("imported", 3, {}), ("load_start", 4, {}), ("load_done", 6, {"load_s": 2}),
              ("load_done", 30, {"load_s": 9}), ("first_bundle", 7, {})])
    write(2, [("imported", 5, {}), ("load_start", 6, {}), ("load_done", 10, {"load_s": 4}),
              ("first_bundle", 11, {})])
    write(3, [("imported", 1, {})])                # the launcher: no model
    # bundles' ends (written by any process; the last one written counts)
    write(4, [("bundle_done", 20, {}), ("bundle_done", 41, {}), ("bundle_done", 33, {})])
    s = startup.summarize(str(tmp_path), launched_unix=t0)
    assert s["last_bundle_done_since_launch_s"] == 33     # the last written, not the first
    assert s["processes"] == 2
    assert s["imported_since_launch_s"] == {"median": 5, "max": 5}
    assert s["first_bundle_since_launch_s"] == {"median": 11, "max": 11}
    assert s["model_load_s"] == {"median": 4, "max": 4}     # the first load of each
    assert s["load_done_since_process_start_s"]["max"] == 9


def test_a_timed_run_reports_its_processes_start_up(tmp_path):
    from pipeline.benchmark import _timed_child
    from tests.conftest import SAMPLES

    r = _timed_child(["-m", "pipeline.main", "--input", str(SAMPLES / "*.jpg"), "--output",
                      str(tmp_path / "out")])
    s = r["startup"]
    assert s["processes"] == 1 and s["model_load_s"]["max"] > 0
    assert s["imported_since_launch_s"]["max"] <= s["first_bundle_since_launch_s"]["max"]
    # the whole way from launch to the first prediction, in order
    order = [s[f"{m}_since_launch_s"]["max"] for m in startup.MILESTONES]
    assert order == sorted(order), order
    launcher = s["launcher_since_launch_s"]
    assert 0 <= launcher["launch"] <= launcher["graph_built"] <= launcher["run_done"]
    assert s["first_prediction_since_launch_s"]["max"] <= launcher["run_done"]
    # the last bundle's end: what comes after it is the tail (finalize, shutdown)
    assert (s["first_prediction_since_launch_s"]["max"] <= s["last_bundle_done_since_launch_s"]
            <= launcher["run_done"])
    # the runner's stages (pipeline/stage_timeline.py), in the order they ran, inside the run
    stages = s["runner_stages"]
    assert any("RunInference" in row["stage"] for row in stages), stages
    assert [row["start_s"] for row in stages] == sorted(row["start_s"] for row in stages)
    assert all(launcher["graph_built"] <= row["start_s"] <= row["end_s"] <= launcher["run_done"]
               for row in stages), stages
    main_stage = next(row for row in stages if "RunInference" in row["stage"])
    assert main_stage["end_s"] >= s["last_bundle_done_since_launch_s"] - 0.01


def test_timed_load_brackets_the_loader_with_its_milestones(tmp_path, monkeypatch):
    monkeypatch.setenv(startup.ENV, str(tmp_path))

    class Loader:
        backend = "onnx"

        def __call__(self):
            return "model"

    assert startup.timed_load(Loader(), lazy=True) == "model"
    lines = [json.loads(x) for x in (tmp_path / f"startup-{os.getpid()}.jsonl").read_text()
             .splitlines()]
    assert [x["milestone"] for x in lines] == ["load_start", "load_done"]
    assert lines[1]["backend"] == "onnx" and lines[1]["load_s"] >= 0
    assert lines[0]["lazy"] is lines[1]["lazy"] is True


def test_load_parts_are_timed_and_summarized_per_part(tmp_path, monkeypatch):
    """Each part of a load (CUDA init, engine, DALI build) is its own milestone; the summary
    gives each part's median and max over processes, the first load of each process."""
    monkeypatch.setenv(startup.ENV, str(tmp_path))
    with startup.timed_part("engine"):
        time.sleep(0.01)
    with pytest.raises(ValueError):
        with startup.timed_part("dali_build"):      # a part that fails is still timed
            raise ValueError("no GPU")
    with startup.timed_part("engine"):              # a second load: not this process's first
        time.sleep(0.2)
    with open(tmp_path / "startup-99.jsonl", "w") as f:
        f.write(json.dumps({"pid": 99, "milestone": "load_part", "part": "engine", "t": 1.0,
                            "since_start_s": 1.0, "seconds": 3.0}) + "\n")
    parts = startup.summarize(str(tmp_path))["load_parts_s"]
    assert parts["engine"]["processes"] == 2 and parts["engine"]["max"] == 3.0
    assert 0.01 <= parts["engine"]["median"] < 0.2 or parts["engine"]["median"] == 3.0
    assert parts["dali_build"]["processes"] == 1
