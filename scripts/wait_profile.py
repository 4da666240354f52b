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

Prints the most sampled (state, wait channel, call, device) keys as a share of all thread
samples, and writes every key with its count. Linux only; reading another process's
``syscall`` needs the same user (or root), which a command and its children are.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import time
from typing import Counter, Dict, Iterable, List, Optional, Tuple

# x86-64 numbers of the calls a loading process spends its time in (asm/unistd_64.h)
SYSCALLS = {0: "read", 1: "write", 3: "close", 7: "poll", 9: "mmap", 10: "mprotect",
            11: "munmap", 12: "brk", 16: "ioctl", 17: "pread64", 23: "select",
            24: "sched_yield", 28: "madvise", 35: "nanosleep", 44: "sendto", 45: "recvfrom",
            46: "sendmsg", 47: "recvmsg", 61: "wait4", 72: "fcntl", 74: "fsync",
            149: "mlock", 150: "munlock", 202: "futex", 228: "clock_gettime",
            230: "clock_nanosleep", 232: "epoll_wait", 257: "openat", 270: "pselect6",
            271: "ppoll", 281: "epoll_pwait", 435: "clone3"}

Key = Tuple[str, str, str, str]          # (state, wchan, call, device or "")


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
    return f"ioctl {fields[2]}", target


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
    samples = 0
    while proc.poll() is None:
        keys = sample(descendants(proc.pid))
        counts.update(keys)
        samples += 1
        time.sleep(interval)
    total = sum(counts.values())
    rows = [{"state": k[0], "wchan": k[1], "call": k[2], "device": k[3], "thread_samples": n,
             "share": round(n / total, 4) if total else 0.0} for k, n in counts.most_common()]
    return {"command": argv, "returncode": proc.returncode, "interval_s": interval,
            "rounds": samples, "thread_samples": total,
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
