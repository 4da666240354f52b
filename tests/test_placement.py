"""GPU placement without a GPU: round-robin across copies and processes, pinning, and errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pipeline.config import RunConfig
from tests.conftest import ROOT
from transforms.runtime.placement import choose_device
from transforms.spec import ConfigError


def test_copies_take_the_visible_devices_in_turn(tmp_path):
    counter = str(tmp_path / "rr")
    got = [choose_device(None, count=lambda: 3, counter_file=counter) for _ in range(7)]
    assert got == [0, 1, 2, 0, 1, 2, 0]


def test_round_robin_spans_processes(tmp_path):
    """Two processes loading two copies each get four consecutive slots: both devices twice."""
    counter = str(tmp_path / "rr")
    code = ("import json, sys; from transforms.runtime.placement import choose_device; "
            "print(json.dumps([choose_device(None, count=lambda: 2, counter_file=sys.argv[1]) "
            "for _ in range(2)]))")
    procs = [subprocess.Popen([sys.executable, "-c", code, counter], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    devices = sorted(d for p in procs for d in json.loads(p.communicate(timeout=60)[0]))
    assert devices == [0, 0, 1, 1]


def test_a_named_device_is_checked_against_what_is_visible(tmp_path):
    assert choose_device(1, count=lambda: 2, counter_file=str(tmp_path / "rr")) == 1
    with pytest.raises(ValueError, match=r"--gpu_device: expected 0\.\.1 \(the visible "
                                         r"devices\), got 2"):
        choose_device(2, count=lambda: 2)
    with pytest.raises(RuntimeError, match="no CUDA device is visible"):
        choose_device(None, count=lambda: 0)


def test_gpu_device_option_is_validated():
    with pytest.raises(ConfigError, match="--gpu_device: expected a device index >= 0, got -1"):
        RunConfig(output="o", inputs=("x",), gpu_device=-1)
    assert RunConfig(output="o", inputs=("x",), gpu_device=3).gpu_device == 3


@pytest.fixture
def fresh_process(monkeypatch):
    """placement's per-process state as in a process that has placed nothing yet."""
    import transforms.runtime.placement as placement

    monkeypatch.setattr(placement, "_confined", None)
    return placement


SDK_ENV = {"CONTROL_API_SERVICE_DESCRIPTOR": "url: 'localhost:1'"}


def test_an_sdk_process_is_narrowed_to_its_gpu(fresh_process, tmp_path):
    """In an SDK process before CUDA starts, the copy's GPU becomes the only visible one:
    CUDA calls use index 0, records keep the worker's name for the GPU."""
    counter = str(tmp_path / "rr")
    envs = [dict(SDK_ENV) for _ in range(2)]
    got = []
    for env in envs:                      # two SDK processes: a fresh state for each
        fresh_process._confined = None
        got.append(fresh_process.place(None, env=env, started=lambda: False,
                                       visible=lambda: ["0", "1"], counter_file=counter))
    assert [(p.device, p.cuda_index, p.confined) for p in got] == [(0, 0, True), (1, 0, True)]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0", "1"]


def test_a_narrowed_process_keeps_its_gpu_for_later_copies(fresh_process, tmp_path):
    env = dict(SDK_ENV, CUDA_VISIBLE_DEVICES="GPU-aaa,GPU-bbb")
    kw = dict(env=env, started=lambda: False, counter_file=str(tmp_path / "rr"))
    first = fresh_process.place(1, **kw)
    assert (first.device, first.cuda_index, env["CUDA_VISIBLE_DEVICES"]) == (1, 0, "GPU-bbb")
    assert fresh_process.place(None, **kw) == first
    with pytest.raises(ValueError, match=r"narrowed to GPU 1 \(CUDA_VISIBLE_DEVICES=GPU-bbb\); "
                                         r"expected 1, got 0"):
        fresh_process.place(0, **kw)


@pytest.mark.parametrize("case", ["not an SDK process", "CUDA started", "GPUs unknown",
                                  "model_copies"])
def test_no_narrowing_where_it_is_unsafe(fresh_process, tmp_path, case):
    """The launcher, tests and scripts, a process where CUDA already started, MIG or no
    NVML, and one process holding several copies: placed as before, the environment kept."""
    env = {} if case == "not an SDK process" else dict(SDK_ENV)
    got = fresh_process.place(
        None, confine=case != "model_copies", env=env, started=lambda: case == "CUDA started",
        visible=lambda: None if case == "GPUs unknown" else ["0", "1"], count=lambda: 2,
        counter_file=str(tmp_path / "rr"))
    assert (got.device, got.cuda_index, got.confined) == (0, 0, False)
    assert "CUDA_VISIBLE_DEVICES" not in env
    assert fresh_process._confined is None


def test_visible_gpus_are_found_without_starting_cuda():
    from transforms.runtime.placement import visible_without_cuda

    assert visible_without_cuda({"CUDA_VISIBLE_DEVICES": "2, 3"}) == ["2", "3"]
    assert visible_without_cuda({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert visible_without_cuda({"CUDA_VISIBLE_DEVICES": "MIG-1234"}) is None
    assert visible_without_cuda({}, nvml_count=lambda: 2) == ["0", "1"]
    assert visible_without_cuda({}, nvml_count=lambda: None) is None


def test_asking_whether_cuda_started_does_not_start_it():
    """In a fresh process the probe answers False, and again after asking: it never calls
    cuInit itself (on a machine without the driver, as in CI, there is nothing to start)."""
    code = ("from transforms.runtime.placement import cuda_started as s; "
            "print(s(), s())")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.stdout.split() == ["False", "False"], done.stderr


def test_pipeline_loaders_narrow_unless_copies_are_shared():
    from pipeline.build import may_narrow

    assert may_narrow(RunConfig(output="o", inputs=("x",))) is True
    assert may_narrow(RunConfig(output="o", inputs=("x",), model_copies=2)) is False
    assert may_narrow(RunConfig(output="o", inputs=("x",), narrow_gpus=False)) is False


def test_the_narrowing_option_reaches_the_config():
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.options import InferenceOptions, config_from_options

    def cfg(*extra):
        argv = ["--input", "x", "--output", "o", *extra]
        return config_from_options(PipelineOptions(argv).view_as(InferenceOptions))

    assert cfg().narrow_gpus is True
    assert cfg("--no_gpu_narrowing").narrow_gpus is False


def test_a_device_cuda_refuses_in_a_narrowed_process_names_the_narrowing():
    from transforms.runtime.placement import Placement, set_placed_device

    def refuse(device: int) -> None:
        raise RuntimeError(f"cudaSetDevice({device}) failed: cudaErrorNoDevice")

    env = {"CUDA_VISIBLE_DEVICES": "3"}
    with pytest.raises(RuntimeError, match=r"cudaErrorNoDevice; this SDK process was narrowed "
                                           r"to GPU 3 \(CUDA_VISIBLE_DEVICES='3'\)"):
        set_placed_device(Placement(3, 0, True), env=env, set_device=refuse)
    with pytest.raises(RuntimeError, match=r"cudaErrorNoDevice$"):
        set_placed_device(Placement(3, 3, False), env=env, set_device=refuse)
    made = []
    set_placed_device(Placement(1, 0, True), env=env, set_device=made.append)
    assert made == [0]


def _marked(_: int) -> tuple:
    import os as os_

    from transforms.runtime.placement import SDK_PROCESS_MARK

    return os_.getpid(), SDK_PROCESS_MARK in os_.environ


def test_beams_sdk_processes_carry_the_mark_and_the_launcher_does_not():
    """The premise of the narrowing, on this Beam: every SDK process the local runner starts
    has the control-service variable (Dataflow's boot sets it too), and the launching
    process has none, so only SDK processes are ever narrowed."""
    import os as os_

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.util import assert_that

    from transforms.runtime.placement import SDK_PROCESS_MARK

    assert SDK_PROCESS_MARK not in os_.environ
    launcher = os_.getpid()

    def check(seen):
        pids = {pid for pid, _ in seen}
        assert seen and all(marked for _, marked in seen), seen
        assert launcher not in pids, (launcher, pids)

    options = PipelineOptions(["--direct_num_workers=2", "--direct_running_mode=multi_processing"])
    with beam.Pipeline(options=options) as p:
        seen = p | beam.Create(range(20)) | beam.Reshuffle() | beam.Map(_marked)
        assert_that(seen, check)


def test_gpus_are_counted_without_cuda_python(monkeypatch):
    """ONNX Runtime's GPU providers need no cuda-python: the count then comes from
    CUDA_VISIBLE_DEVICES or NVML, else device 0 alone."""
    import transforms.runtime.placement as placement

    monkeypatch.setattr("transforms.runtime.cuda.cuda_python_available", lambda: False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert placement.visible_count() == 2
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr(placement, "_nvml_count", lambda: None)
    assert placement.visible_count() == 1
    monkeypatch.setattr(placement, "_nvml_count", lambda: 4)
    assert placement.visible_count() == 4
