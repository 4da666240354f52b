"""Placement on a real GPU with CUDA_VISIBLE_DEVICES: every copy names its device, the
sidecar is checked per device, and nothing assumes device 0 exists."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.gpu, pytest.mark.tensorrt]

_CHILD = """
import json, sys
from transforms.runtime.tensorrt.runner import TrtLoader
from transforms.runtime.placement import choose_device
plan, counter = sys.argv[1], sys.argv[2]
import transforms.runtime.placement as placement
placement.COUNTER_FILE = counter
out = {}
try:
    copies = [TrtLoader(plan)() for _ in range(2)]      # two model copies, as model_copies=2
    out["devices"] = [c.info().device for c in copies]
    import numpy as np
    x = {copies[0].info().inputs[0].name: np.zeros((1, 8, 8, 3), np.float32)}
    out["rows"] = [int(c.infer(x)["logits"].shape[0]) for c in copies]
    for c in copies:
        c.close()
    try:
        TrtLoader(plan, device=1)()
    except ValueError as exc:
        out["device_1"] = str(exc)
except Exception as exc:
    out["error"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(out))
"""


def _child(plan, tmp_path, visible: str) -> dict:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=visible)
    done = subprocess.run([sys.executable, "-c", _CHILD, str(plan), str(tmp_path / "rr")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_two_copies_on_the_visible_device(tiny_engine, tmp_path, report):
    plan, _ = tiny_engine
    got = _child(plan, tmp_path, "0")
    report["placement_visible_0"] = got
    assert got.get("devices") == ["cuda:0", "cuda:0"], got
    assert got["rows"] == [1, 1]
    assert "expected 0..0 (the visible devices), got 1" in got["device_1"]


def test_no_visible_device_is_a_clear_error(tiny_engine, tmp_path):
    plan, _ = tiny_engine
    got = _child(plan, tmp_path, "")
    assert "error" in got and ("no CUDA device" in got["error"] or "cuda" in got["error"].lower())


def test_sidecar_for_another_gpu_is_refused_on_this_device(tiny_engine, tmp_path):
    import shutil

    plan, _ = tiny_engine
    copy = tmp_path / "other.plan"
    shutil.copy(plan, copy)
    side = json.loads(open(str(plan) + ".json").read())
    side["gpu_name"] = "NVIDIA L4"
    side["compute_capability"] = "8.9"
    (tmp_path / "other.plan.json").write_text(json.dumps(side))
    from transforms.runtime.tensorrt.runner import TrtLoader
    from transforms.runtime.tensorrt.sidecar import EngineMismatch

    with pytest.raises(EngineMismatch, match=r"on cuda:\d+: the plan was built for compute "
                                             r"capability 8\.9"):
        TrtLoader(str(copy))()
