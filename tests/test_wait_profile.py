"""scripts/wait_profile.py on this machine: it follows a command's children and names the
calls and device files their threads wait in."""

from __future__ import annotations

import os
import sys

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import wait_profile  # noqa: E402 - the script, imported from its folder

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/syscall"),
                                reason="needs Linux /proc/<pid>/syscall")


def test_a_child_process_is_sampled_where_it_waits():
    """The parent waits for its child (wait4) while the child sleeps:
    both show up, so the children of a command are followed."""
    code = ("import subprocess, sys; subprocess.run([sys.executable, '-c', "
            "'import time; time.sleep(1.5)'])")
    got = wait_profile.profile([sys.executable, "-c", code], interval=0.02)
    calls = {r["call"] for r in got["keys"]}
    assert got["returncode"] == 0 and got["rounds"] > 10
    # time.sleep is clock_nanosleep from Python 3.11, a select call before
    assert "wait4" in calls and calls & {"clock_nanosleep", "nanosleep", "pselect6",
                                         "select"}, calls
    assert abs(sum(r["share"] for r in got["keys"]) - 1.0) < 0.01


def test_an_ioctl_names_its_device_file(tmp_path):
    path = tmp_path / "device"
    path.write_text("")
    with open(path) as f:
        line = f"16 {hex(f.fileno())} 0xc020462a 0x7ffd0 0x0 0x0 0x0 0x7ffd 0x7f00"
        assert wait_profile.parse_syscall(line, os.getpid()) == ("ioctl 0xc020462a", str(path))
    assert wait_profile.parse_syscall("running", 1) == ("running", "")
    assert wait_profile.parse_syscall("230 0x1 0x1 0x7ffc 0x0 0x0 0x0 0x7ffc 0x7f6b", 1) == \
        ("clock_nanosleep", "")
    assert wait_profile.parse_syscall("999 0x0", 1) == ("syscall 999", "")


def test_descendants_follow_every_level():
    parents = {10: 1, 11: 10, 12: 10, 13: 11, 20: 1}
    assert sorted(wait_profile.descendants(10, parents)) == [10, 11, 12, 13]
