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


_SDK_CHILD = """
import json, os, sys, threading
import transforms.runtime.placement as placement
from transforms.runtime.tensorrt.runner import TrtLoader
placement.COUNTER_FILE = sys.argv[2]
runner = TrtLoader(sys.argv[1])()
import numpy as np
from transforms.runtime import cuda
out = {"device": runner.info().device, "cuda_index": runner.engine.device,
       "visible": os.environ.get("CUDA_VISIBLE_DEVICES")}
out["rows"] = int(runner.infer({runner.info().inputs[0].name:
                                np.zeros((1, 8, 8, 3), np.float32)})["logits"].shape[0])
def stray():      # a thread that never chose a device: its CUDA calls go to device 0
    buf = cuda.DeviceBuffer(1 << 20)
    buf.free()
t = threading.Thread(target=stray)
t.start(); t.join()
print(json.dumps(out), flush=True)
"""


def test_sdk_processes_are_narrowed_to_their_gpus(tiny_engine, tmp_path, report):
    """Processes Beam started (its control-service variable set) each see only the GPU
    they were placed on: CUDA index 0 inside, the worker's cuda:N in records, and a CUDA
    call from a thread that never chose a device stays on that GPU (on two GPUs, NVML
    sees the second process on GPU 1 only, over its whole life)."""
    from transforms.runtime import cuda

    plan, _ = tiny_engine
    n = cuda.device_count()
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env.update(PYTHONPATH=str(ROOT), CUDA_DEVICE_ORDER="PCI_BUS_ID",
               CONTROL_API_SERVICE_DESCRIPTOR="url: 'localhost:1'")
    runs = []
    for _ in range(min(n, 2)):
        if _has_pynvml():
            sys.path.insert(0, str(ROOT / "scripts"))
            from device_contexts import watched

            done = watched([sys.executable, "-c", _SDK_CHILD, str(plan), str(tmp_path / "rr")],
                           env)
        else:
            p = subprocess.run([sys.executable, "-c", _SDK_CHILD, str(plan),
                                str(tmp_path / "rr")], env=env, capture_output=True,
                               text=True, timeout=300)
            done = {"returncode": p.returncode, "stdout": p.stdout, "stderr": p.stderr}
        lines = [ln for ln in done["stdout"].splitlines() if ln.startswith("{")]
        assert done["returncode"] == 0 and lines, done["stderr"][-2000:]
        runs.append(dict(json.loads(lines[-1]),
                         held=sorted(set(done.get("held_before_exit", []))
                                     | set(done.get("held_while_exiting", []))) or None))
    report["placement_sdk_narrowed"] = runs
    want = [(f"cuda:{i}", 0, str(i), 1) for i in range(len(runs))]
    assert [(r["device"], r["cuda_index"], r["visible"], r["rows"]) for r in runs] == want
    for i, r in enumerate(runs):
        if r["held"] is not None:
            assert r["held"] == [i], f"process placed on GPU {i} held contexts on {r['held']}"


def _has_pynvml() -> bool:
    try:
        import pynvml  # noqa: F401 - probing only
    except ImportError:
        return False
    return True
