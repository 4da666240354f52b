"""Kill a run halfway, run it again to the same output: every image scored exactly once.

Why it holds: predictions go through Beam's file sinks, which write temporary files and
finalize them only when the run ends, and a rerun to the same --output skips every URI
already in a finalized predictions-* file. A run killed before finalizing leaves nothing a
rerun would skip; a run killed after leaves nothing a rerun would score again.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, sample_paths
from transforms.io import read_jsonl

pytestmark = pytest.mark.slow


def _images(folder: Path, copies: int) -> list:
    folder.mkdir()
    uris = []
    for i in range(copies):
        for p in sample_paths():
            target = folder / f"{i:03d}-{p.name}"
            shutil.copy(p, target)
            uris.append(str(target))
    return uris


def _cmd(images: Path, out: Path) -> list:
    return [sys.executable, "-m", "pipeline.main", "--input", str(images / "*"),
            "--output", str(out)]


@pytest.mark.parametrize("delay_s", [0.0, 1.5, 3.0])
def test_killed_run_then_rerun_scores_every_image_once(tmp_path, delay_s):
    """SIGKILL at three points after the run starts writing (as a preempted worker dies)."""
    images, out = tmp_path / "images", tmp_path / "out"
    uris = _images(images, 30)                           # 300 images, a few seconds of work
    proc = subprocess.Popen(_cmd(images, out), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:   # wait until work is under way
        if out.exists() and any(out.rglob("*")):
            break
        time.sleep(0.05)
    time.sleep(delay_s)
    killed_mid_run = proc.poll() is None
    if killed_mid_run:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    done = subprocess.run(_cmd(images, out), cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    scored = [p["uri"] for p in read_jsonl(str(out / "predictions-*.jsonl"))]
    assert sorted(scored) == sorted(uris), "an image was lost or written twice"
    if delay_s == 0.0:
        assert killed_mid_run, "the first run finished before it could be killed"


def test_sigint_gives_one_line_and_no_traceback(tmp_path):
    images, out = tmp_path / "images", tmp_path / "out"
    _images(images, 30)
    proc = subprocess.Popen(_cmd(images, out), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if out.exists() and any(out.rglob("*")):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-2000:]
    assert stderr.strip().splitlines()[-1].startswith("interrupted: "), stderr[-2000:]
    print("\nstderr after SIGINT:", stderr.strip()[-600:])
