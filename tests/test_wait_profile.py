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
    assert got["process_samples"] > got["rounds"]          # two processes for most rounds
    # time.sleep is clock_nanosleep from Python 3.11, a select call before
    assert "wait4" in calls and calls & {"clock_nanosleep", "nanosleep", "pselect6",
                                         "select"}, calls
    assert abs(sum(r["share"] for r in got["keys"]) - 1.0) < 0.01


def test_an_ioctl_names_its_device_file(tmp_path):
    path = tmp_path / "device"
    path.write_text("")
    with open(path) as f:
        line = f"16 {hex(f.fileno())} 0xc020462a 0x7ffd0 0x0 0x0 0x0 0x7ffd 0x7f00"
        assert wait_profile.parse_syscall(line, os.getpid()) == \
            ("ioctl 0xc020462a NV_ESC_RM_CONTROL", str(path))
    assert wait_profile.parse_syscall("running", 1) == ("running", "")
    assert wait_profile.parse_syscall("230 0x1 0x1 0x7ffc 0x0 0x0 0x0 0x7ffc 0x7f6b", 1) == \
        ("clock_nanosleep", "")
    assert wait_profile.parse_syscall("999 0x0", 1) == ("syscall 999", "")


def test_descendants_follow_every_level():
    parents = {10: 1, 11: 10, 12: 10, 13: 11, 20: 1}
    assert sorted(wait_profile.descendants(10, parents)) == [10, 11, 12, 13]


def test_the_nvidia_drivers_requests_are_named():
    assert wait_profile.ioctl_name("0xc038464e") == "0xc038464e NV_ESC_RM_MAP_MEMORY"
    assert wait_profile.ioctl_name("0xc0104629") == "0xc0104629 NV_ESC_RM_FREE"
    assert wait_profile.ioctl_name("0xc00446c9") == "0xc00446c9 NV_ESC_REGISTER_FD"
    assert wait_profile.ioctl_name("0xc0044699") == "0xc0044699 NV_ESC_0x99"   # unknown code
    assert wait_profile.ioctl_name("0x5401") == "0x5401"                      # TCGETS: not 'F'
    assert wait_profile.ioctl_name("0x25") == "0x25"                          # nvidia-uvm's
    assert wait_profile.ioctl_name("?") == "?"


def test_per_process_classes_count_threads_per_sampled_process():
    """Two processes sampled over 10 rounds (20 process samples) in a 4 s run: 10 samples
    in the driver's lock are half a thread per process, 2 s of its run."""
    def key(state, wchan, call, device, n):
        return {"state": state, "wchan": wchan, "call": call, "device": device,
                "thread_samples": n}
    result = {"process_samples": 20, "wall_s": 4.0, "keys": [
        key("D", "os_acquire_rwlock_read", "ioctl 0xc020462a NV_ESC_RM_CONTROL",
            "/dev/nvidiactl", 6),
        key("D", "os_acquire_rwlock_write", "ioctl 0xc0104629 NV_ESC_RM_FREE",
            "/dev/nvidiactl", 4),
        key("D", "uvm_gpu_retain_by_uuid", "ioctl 0x25", "/dev/nvidia-uvm", 2),
        key("R", "-", "running", "", 5),
        key("D", "folio_wait_bit", "read", "", 1),
        key("S", "futex_do_wait", "futex", "", 40)]}
    rows = {r["class"]: r for r in wait_profile.per_process(result)}
    assert list(rows) == list(wait_profile.CLASSES)
    lock = rows["waiting for the NVIDIA driver's lock"]
    assert lock["threads_per_process"] == 0.5 and lock["thread_s_per_process"] == 2.0
    assert rows["in another NVIDIA driver call"]["threads_per_process"] == 0.1
    assert rows["running"]["threads_per_process"] == 0.25
    assert rows["other uninterruptible wait"]["threads_per_process"] == 0.05
    assert rows["sleeping (futex, poll, ...)"]["threads_per_process"] == 2.0
