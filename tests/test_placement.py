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


def test_exit_device_is_the_first_placed_and_registered_once(monkeypatch):
    """The exit hook makes the process's first placed device current, and is registered
    once however many copies load (a CUDA-free setter stands in for cudaSetDevice)."""
    import transforms.runtime.placement as placement

    registered, made_current = [], []
    monkeypatch.setattr(placement, "_exit_device", None)
    monkeypatch.setattr(placement.atexit, "register", registered.append)
    assert placement.hold_exit_device(1, set_device=made_current.append) is True
    assert placement.hold_exit_device(0, set_device=made_current.append) is False
    assert len(registered) == 1 and made_current == []
    registered[0]()
    assert made_current == [1]


def test_exit_hook_survives_a_torn_down_cuda(monkeypatch):
    """At exit CUDA may already be unloading: the hook swallows that, as exit must go on."""
    import transforms.runtime.placement as placement

    registered, tried = [], []
    monkeypatch.setattr(placement, "_exit_device", None)
    monkeypatch.setattr(placement.atexit, "register", registered.append)

    def unloading(device: int) -> None:
        tried.append(device)
        raise RuntimeError("cudaSetDevice(1): cudaErrorCudartUnloading")

    placement.hold_exit_device(1, set_device=unloading)
    assert registered[0]() is None and tried == [1]
