"""The scoring model starts loading as an SDK process starts (transforms/runtime/prewarm.py)."""

from __future__ import annotations

import json
import logging
import pickle
from dataclasses import dataclass

import pytest

from pipeline.build import scoring_loader
from pipeline.main import arrange_prewarm, configure
from transforms.runtime import prewarm, startup


@dataclass(frozen=True)
class Loader:
    name: str
    fail: bool = False
    sizes: tuple = (1, 2)

    def __call__(self):
        if self.fail:
            raise RuntimeError(f"{self.name}: engine built for another GPU")
        return {"runner": self.name}


@pytest.fixture(autouse=True)
def no_pending(monkeypatch):
    monkeypatch.setattr(prewarm, "_pending", [])


def test_options_are_read_in_beams_forms(monkeypatch, tmp_path):
    monkeypatch.delenv("PIPELINE_OPTIONS_FILE", raising=False)
    monkeypatch.setenv("PIPELINE_OPTIONS", json.dumps({"beam:option:prewarm_loader:v1": "x",
                                                       "beam:option:runner:v1": "y"}))
    assert prewarm.process_options() == {"prewarm_loader": "x", "runner": "y"}
    monkeypatch.setenv("PIPELINE_OPTIONS", json.dumps({"options": {"prewarm_loader": "z"}}))
    assert prewarm.process_options()["prewarm_loader"] == "z"
    path = tmp_path / "options.json"
    path.write_text(json.dumps({"beam:option:prewarm_loader:v1": "from-file"}))
    monkeypatch.setenv("PIPELINE_OPTIONS_FILE", str(path))
    assert prewarm.process_options()["prewarm_loader"] == "from-file"
    monkeypatch.setenv("PIPELINE_OPTIONS", "not json")
    monkeypatch.delenv("PIPELINE_OPTIONS_FILE")
    assert prewarm.process_options() == {}


def test_the_handlers_copy_takes_the_early_load_once(monkeypatch, tmp_path):
    monkeypatch.setenv(startup.ENV, str(tmp_path))
    monkeypatch.setenv("PIPELINE_OPTIONS", json.dumps(
        {"beam:option:prewarm_loader:v1": prewarm.encode(Loader("nsfw"))}))
    monkeypatch.delenv("PIPELINE_OPTIONS_FILE", raising=False)
    assert prewarm.start_from_process_options() is True
    assert prewarm.start(Loader("nsfw")) is False                 # already loading
    handler_copy = pickle.loads(pickle.dumps(Loader("nsfw")))     # as Beam unpickles it
    assert prewarm.take(handler_copy) == {"runner": "nsfw"}
    assert prewarm.take(handler_copy) is None                     # taken once
    lines = [json.loads(x) for f in tmp_path.iterdir() for x in f.read_text().splitlines()]
    loads = [x for x in lines if x["milestone"] in ("load_start", "load_done")]
    assert [x.get("prewarm") for x in loads] == [True, True]
    assert any(x["milestone"] == "prewarm_taken" for x in lines)


def test_a_failed_or_different_early_load_leaves_the_handler_to_load(caplog):
    prewarm.start(Loader("bad", fail=True))
    with caplog.at_level(logging.WARNING):
        assert prewarm.take(Loader("bad", fail=True)) is None
    assert "another GPU" in caplog.text and "loading again at setup" in caplog.text
    prewarm.start(Loader("a"))
    with caplog.at_level(logging.WARNING):
        assert prewarm.take(Loader("b")) is None
    assert "not this handler's" in caplog.text
    assert prewarm.start_from_process_options.__doc__


def test_the_launcher_arranges_it_unless_told_not_to(tmp_path):
    from apache_beam.options.pipeline_options import SetupOptions

    from pipeline.options import InferenceOptions

    base = ["--input", str(tmp_path / "*.jpg"), "--output", str(tmp_path / "out"),
            "--allow_empty"]
    options, cfg = configure(base)
    assert arrange_prewarm(options, cfg) is True
    assert options.view_as(SetupOptions).beam_plugins == [prewarm.MODULE]
    loader = prewarm.decode(options.view_as(InferenceOptions).prewarm_loader)
    assert loader == scoring_loader(cfg)
    for extra in (["--no_prewarm"], ["--model_copies", "1"]):
        options, cfg = configure(base + extra)
        assert arrange_prewarm(options, cfg) is False
        assert not options.view_as(SetupOptions).beam_plugins


def test_sdk_processes_load_before_the_scoring_stage_reaches_them(tmp_path):
    """A real multi-process run: each SDK process loads as it starts, and its handler
    takes that load instead of loading again."""
    from pipeline.benchmark import _timed_child
    from tests.conftest import SAMPLES

    r = _timed_child(["-m", "pipeline.main", "--input", str(SAMPLES / "*.jpg"), "--output",
                      str(tmp_path / "out"), "--direct_num_workers=2",
                      "--direct_running_mode=multi_processing"])
    assert r["returncode"] == 0, r.get("stderr_tail")
    s = r["startup"]
    assert s["processes"] >= 1 and s["prewarmed_processes"] == s["processes"], s
    assert s["load_done_since_launch_s"]["max"] <= s["first_bundle_since_launch_s"]["max"]
    assert r["ok"] == len(list(SAMPLES.glob("*.jpg")))


def test_with_no_prewarm_the_model_loads_at_setup(tmp_path):
    from pipeline.benchmark import _timed_child
    from tests.conftest import SAMPLES

    r = _timed_child(["-m", "pipeline.main", "--input", str(SAMPLES / "*.jpg"), "--output",
                      str(tmp_path / "out"), "--direct_num_workers=2",
                      "--direct_running_mode=multi_processing", "--no_prewarm"])
    assert r["returncode"] == 0, r.get("stderr_tail")
    assert r["startup"]["processes"] >= 1 and r["startup"]["prewarmed_processes"] == 0
