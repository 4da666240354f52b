"""Where the threads of a command and its children wait: kernel wait channel, system call and,
for ioctl, the device file, sampled from /proc.

Why: on two H200s, 32 processes building DALI pipelines at once took 29-30 s each against
2.5 s alone, while keeping 4-5 of 32 cores busy (docs/benchmarks.md, sixth session). They
wait on something the host shares, not on compute, and neither NVML, the hardware decoder
nor a native py-spy profile (it crashed) said what. A thread that waits in the kernel shows
it in ``/proc/<pid>/task/<tid>/``: ``wchan`` (the kernel function it sleeps in), ``syscall``
(the call and its arguments) and ``stat`` (R running, S sleeping, D uninterruptible). For an
ioctl the first argument is a file descriptor; its link names the device (``/dev/nvidiactl``
is the driver's resource manager, ``/dev/nvidia-uvm`` unified memory, ``/dev/nvidiaN`` a GPU).

    python scripts/wait_profile.py --json waits.json -- python scripts/load_contention.py \\
        --engine nsfw-b64.fp16.plan --jpegs 'corpus/*.jpg' --procs 32

Prints, per sampled process, how many of its threads were waiting for the NVIDIA driver's
lock, in other driver calls, running, or asleep (and those as seconds of the run); then the
most sampled (state, wait channel, call, device) keys as a share of all thread samples,
with the driver's requests named (``NV_ESC_RM_CONTROL``...). The JSON has every key with its
count. On two H200s it showed 32 loading processes each with 0.72 threads waiting for the
driver's lock over a 43 s run: 31 of its 34.5 s load (docs/benchmarks.md, seventh session).
Linux only; reading another process's ``syscall`` needs the same user (or root), which a
command and its children are.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import time
from typing import Any, Counter, Dict, Iterable, List, Optional, Tuple

# x86-64 numbers of the calls a loading process spends its time in (asm/unistd_64.h)
SYSCALLS = {0: "read", 1: "write", 3: "close", 7: "poll", 9: "mmap", 10: "mprotect",
            11: "munmap", 12: "brk", 16: "ioctl", 17: "pread64", 23: "select",
            24: "sched_yield", 28: "madvise", 35: "nanosleep", 44: "sendto", 45: "recvfrom",
            46: "sendmsg", 47: "recvmsg", 61: "wait4", 72: "fcntl", 74: "fsync",
            149: "mlock", 150: "munlock", 202: "futex", 228: "clock_gettime",
            230: "clock_nanosleep", 232: "epoll_wait", 257: "openat", 270: "pselect6",
            271: "ppoll", 281: "epoll_pwait", 435: "clone3"}

Key = Tuple[str, str, str, str]          # (state, wchan, call, device or "")

# The NVIDIA driver's ioctl requests: magic 'F', the escape code in the low byte (the
# open kernel modules' nv_escape.h and nv-ioctl-numbers.h). RM_CONTROL is a generic call
# whose real command sits in its payload, so it names a class of request, not one operation.
NV_IOCTL_MAGIC = ord("F")
NV_ESCAPES = {0x27: "RM_ALLOC_MEMORY", 0x28: "RM_ALLOC_OBJECT", 0x29: "RM_FREE",
              0x2A: "RM_CONTROL", 0x2B: "RM_ALLOC", 0x34: "RM_DUP_OBJECT", 0x35: "RM_SHARE",
              0x4A: "RM_VID_HEAP_CONTROL", 0x4E: "RM_MAP_MEMORY", 0x4F: "RM_UNMAP_MEMORY",
              0x57: "RM_MAP_MEMORY_DMA", 0x58: "RM_UNMAP_MEMORY_DMA",
              0x5E: "RM_UPDATE_DEVICE_MAPPING_INFO", 200: "CARD_INFO", 201: "REGISTER_FD",
              206: "ALLOC_OS_EVENT", 207: "FREE_OS_EVENT", 210: "CHECK_VERSION_STR",
              212: "ATTACH_GPUS_TO_FD", 214: "SYS_PARAMS"}

# What a sampled thread was doing, for the per-process summary (first match wins)
CLASSES = ("waiting for the NVIDIA driver's lock", "in another NVIDIA driver call", "running",
           "other uninterruptible wait", "sleeping (futex, poll, ...)")


def descendants(root: int, parents: Optional[Dict[int, int]] = None) -> List[int]:
    """``root`` and every process below it (from each /proc/<pid>/stat's parent field)."""
    if parents is None:
        parents = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                stat = _read(f"/proc/{name}/stat")
                try:
                    parents[int(name)] = int(stat.rsplit(")", 1)[1].split()[1])
                except (IndexError, ValueError):      # gone between listing and reading
                    continue
    children: Dict[int, List[int]] = collections.defaultdict(list)
    for pid, parent in parents.items():
        children[parent].append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:                 # the thread or process ended between listing and reading
        return ""


def thread_key(pid: int, tid: int) -> Optional[Key]:
    """One thread's (state, wait channel, call, device) now; None if it has gone."""
    base = f"/proc/{pid}/task/{tid}"
    stat = _read(f"{base}/stat")
    if not stat:
        return None
    state = stat.rsplit(")", 1)[1].split()[0]
    wchan = _read(f"{base}/wchan") or "?"
    call, device = parse_syscall(_read(f"{base}/syscall"), pid)
    return state, "-" if wchan == "0" else wchan, call, device


def parse_syscall(text: str, pid: int) -> Tuple[str, str]:
    """(call name, device file for an ioctl) from a /proc/.../syscall line."""
    if not text:
        return "?", ""
    fields = text.split()
    if fields[0] == "running":
        return "running", ""
    if not fields[0].lstrip("-").isdigit():
        return fields[0], ""
    number = int(fields[0])
    name = SYSCALLS.get(number, f"syscall {number}")
    if name != "ioctl" or len(fields) < 3:
        return name, ""
    try:
        target = os.readlink(f"/proc/{pid}/fd/{int(fields[1], 16)}")
    except (OSError, ValueError):
        target = "?"
    return f"ioctl {ioctl_name(fields[2])}", target


def ioctl_name(request: str) -> str:
    """``0xc020462a`` -> ``0xc020462a NV_ESC_RM_CONTROL`` for the NVIDIA driver's requests;
    any other request as it came."""
    try:
        number = int(request, 16)
    except ValueError:
        return request
    if (number >> 8) & 0xFF != NV_IOCTL_MAGIC:
        return request
    code = number & 0xFF
    return f"{request} NV_ESC_{NV_ESCAPES.get(code, hex(code))}"


def classify(state: str, wchan: str, call: str, device: str) -> str:
    """One of CLASSES. The driver serialises its resource-manager calls behind locks taken
    in ``os_acquire_rwlock``/``os_acquire_mutex``/``os_acquire_spinlock``; a thread
    asleep there waits for another caller, anywhere on the host."""
    nvidia = call.startswith("ioctl") and device.startswith("/dev/nvidia")
    if state == "D" and wchan.startswith("os_acquire_"):
        return CLASSES[0]
    if nvidia and state in "DR":
        return CLASSES[1]
    if state == "R":
        return CLASSES[2]
    if state == "D":
        return CLASSES[3]
    return CLASSES[4]


def per_process(result: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Each class as threads per sampled process (a mean over the rounds) and as seconds of
    one process's run: what the per-key shares hide when most threads idle in pools."""
    process_samples = result["process_samples"]
    totals: Counter[str] = collections.Counter()
    for r in result["keys"]:
        totals[classify(r["state"], r["wchan"], r["call"], r["device"])] += r["thread_samples"]
    rows = []
    for name in CLASSES:
        threads = totals[name] / process_samples if process_samples else 0.0
        rows.append({"class": name, "threads_per_process": round(threads, 3),
                     "thread_s_per_process": round(threads * result["wall_s"], 1)})
    return rows


def sample(pids: Iterable[int]) -> List[Key]:
    keys = []
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            key = thread_key(pid, int(tid))
            if key is not None:
                keys.append(key)
    return keys


def profile(argv: List[str], interval: float) -> Dict[str, object]:
    """Run ``argv``, sampling every thread of it and its children each ``interval``."""
    start = time.monotonic()
    proc = subprocess.Popen(argv)
    counts: Counter[Key] = collections.Counter()
    samples = process_samples = 0
    while proc.poll() is None:
        pids = descendants(proc.pid)
        counts.update(sample(pids))
        samples += 1
        process_samples += len(pids)
        time.sleep(interval)
    total = sum(counts.values())
    rows = [{"state": k[0], "wchan": k[1], "call": k[2], "device": k[3], "thread_samples": n,
             "share": round(n / total, 4) if total else 0.0} for k, n in counts.most_common()]
    return {"command": argv, "returncode": proc.returncode, "interval_s": interval,
            "rounds": samples, "process_samples": process_samples, "thread_samples": total,
            "wall_s": round(time.monotonic() - start, 2), "keys": rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--interval", type=float, default=0.05, help="seconds between samples")
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--json")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
    a = ap.parse_args()
    argv = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not argv:
        ap.error("expected a command after --")
    result = profile(argv, a.interval)
    result["per_process"] = per_process(result)
    print(f"| what a process's threads were doing | threads (mean) | thread-s of "
          f"{result['wall_s']} s |")
    print("| --- | ---: | ---: |")
    for r in result["per_process"]:
        print(f"| {r['class']} | {r['threads_per_process']} | {r['thread_s_per_process']} |")
    print(f"| state | kernel wait channel | call | device | share of {result['thread_samples']} "
          f"thread samples |")
    print("| --- | --- | --- | --- | ---: |")
    for r in result["keys"][:a.top]:
        print(f"| {r['state']} | {r['wchan']} | {r['call']} | {r['device'] or '–'} | "
              f"{100 * r['share']:.1f}% |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)
    return int(result["returncode"] or 0)


if __name__ == "__main__":
    sys.exit(main())
