"""Which step of a GPU-path model load puts a CUDA context on a GPU other than its own.

Why: on the two-H200 machine (docs/benchmarks.md, issue 13) the 16 SDK processes whose
engine placement put on cuda:1 each also held about 500 MiB on cuda:0 (GPU 0 25,171 MiB,
GPU 1 17,253 MiB, one GPU alone 17,229 MiB), and the CPU path, the same engine without
DALI, did not. A context on the wrong GPU costs its memory, its creation at start-up and
its teardown at exit, all on a GPU that other processes are creating theirs on.

This loads exactly what an SDK process loads, step by step, on one named device, and after
each step lists the GPUs (NVML) that hold a context of this process, with its MiB there.
The parent also polls NVML every 10 ms over the child's whole life, so a context made
while the process exits (after its last step, with the model still held, as Beam leaves
it) is seen too. Each variant runs in a fresh process:
  plain    the product as it is, in a process Beam did not start (not narrowed);
  visible  the same with CUDA_VISIBLE_DEVICES naming only the target GPU (device 0);
  sdk      marked as an SDK process Beam started, so placement narrows it to the GPU.

    python scripts/device_contexts.py --engine nsfw-b64.fp16.plan --jpegs 'corpus/*.jpg' \\
        --device 1 --json device-contexts.json
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def nvml_handles() -> List[Any]:
    """Every GPU's NVML handle, NVML's order (with CUDA_DEVICE_ORDER=PCI_BUS_ID, CUDA's)."""
    import pynvml

    pynvml.nvmlInit()
    return [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]


def held_mib(pid: int, handles: List[Any]) -> Dict[str, float]:
    """{NVML index: MiB} of every GPU holding a context of process ``pid``."""
    import pynvml

    out: Dict[str, float] = {}
    for i, handle in enumerate(handles):
        for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
            if p.pid == pid:
                out[str(i)] = round((p.usedGpuMemory or 0) / 2**20, 1)
    return out


def child(engine: str, jpegs: List[str], device: int, variant: str) -> Dict[str, Any]:
    """The load's steps, each timed, with the contexts after it."""
    steps: List[Dict[str, Any]] = []
    handles = nvml_handles()

    def step(name: str, fn) -> Any:
        start = time.perf_counter()
        value = fn()
        steps.append({"step": name, "s": round(time.perf_counter() - start, 3),
                      "contexts_mib": held_mib(os.getpid(), handles)})
        return value

    from pathlib import Path

    from transforms.runtime.batching import stack_encoded
    from transforms.runtime.gpu_preprocess import DaliOptions, DaliPreprocessor
    from transforms.runtime.tensorrt.gpu_runner import ENCODED, TrtDaliRunner
    from transforms.runtime.tensorrt.runner import TrtLoader
    from transforms.spec import OPEN_NSFW_SPEC

    step("start", lambda: None)
    runner = step("engine (placement, set_device, deserialize)",
                  lambda: TrtLoader(engine_uri=engine, device=device)())
    options = DaliOptions(device_id=runner.engine.device)     # its CUDA index here
    pre = step("DALI pipeline build", lambda: DaliPreprocessor(
        OPEN_NSFW_SPEC, runner.info().max_batch, options))
    both = TrtDaliRunner(runner, pre)
    batch = stack_encoded([Path(p).read_bytes() for p in jpegs], ENCODED)
    step("first batch, loading thread", lambda: both.infer({ENCODED: batch}))

    def other_thread() -> None:      # Beam's DoFn threads are not the thread that loaded
        t = threading.Thread(target=lambda: both.infer({ENCODED: batch}))
        t.start()
        t.join()

    step("batch from another thread", other_thread)
    return {"variant": variant, "device": runner.info().device,
            "visible": os.environ.get("CUDA_VISIBLE_DEVICES"), "steps": steps}


def watched(argv: List[str], env: Dict[str, str]) -> Dict[str, Any]:
    """Run ``argv``, polling NVML every 10 ms for the GPUs its process holds a context on:
    before its result line, and from that line (its exit) to its end."""
    handles = nvml_handles()
    errors = tempfile.TemporaryFile(mode="w+")     # a pipe nobody reads could fill and block
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=errors, text=True)
    out: List[str] = []
    exiting: List[float] = []

    def read() -> None:
        for line in proc.stdout:
            out.append(line)
            if line.startswith("{"):
                exiting.append(time.monotonic())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    before, during = set(), set()
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        held = {int(i) for i in held_mib(proc.pid, handles)}
        (during if exiting else before).update(held)
        time.sleep(0.01)
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    errors.seek(0)
    err = errors.read()
    reader.join(timeout=10)
    return {"returncode": proc.returncode, "stdout": "".join(out), "stderr": err,
            "held_before_exit": sorted(before), "held_while_exiting": sorted(during),
            "exit_s": round(time.monotonic() - exiting[0], 2) if exiting else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", required=True)
    ap.add_argument("--jpegs", required=True, help="glob: the first --batch form the batch")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--device", type=int, default=1, help="the GPU the load is placed on")
    ap.add_argument("--variants", default="plain,visible,sdk")
    ap.add_argument("--json")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    jpegs = sorted(glob.glob(a.jpegs))[:a.batch]
    if a.child:
        print(json.dumps(child(a.engine, jpegs, a.device, a.child)))
        return 0
    results = []
    for variant in a.variants.split(","):
        env = dict(os.environ, PYTHONPATH=ROOT, CUDA_DEVICE_ORDER="PCI_BUS_ID")  # CUDA = NVML
        device = a.device
        if variant == "visible":
            env["CUDA_VISIBLE_DEVICES"], device = str(a.device), 0
        elif variant == "sdk":      # what Beam sets in its SDK processes: placement narrows
            env["CONTROL_API_SERVICE_DESCRIPTOR"] = "device-contexts"
        done = watched([sys.executable, __file__, "--engine", a.engine, "--jpegs", a.jpegs,
                        "--batch", str(a.batch), "--device", str(device), "--child", variant],
                       env)
        lines = [ln for ln in done["stdout"].splitlines() if ln.startswith("{")]
        if done["returncode"] or not lines:
            results.append({"variant": variant, "error": done["stderr"][-2000:]})
            print(f"{variant}: failed\n{done['stderr'][-2000:]}")
            continue
        results.append(dict(json.loads(lines[-1]), held_while_loaded=done["held_before_exit"],
                            held_while_exiting=done["held_while_exiting"],
                            exit_s=done["exit_s"]))
    print("| variant | step | s | contexts (NVML GPU: MiB) |\n| --- | --- | ---: | --- |")
    for r in results:
        for s in r.get("steps", []):
            print(f"| {r['variant']} ({r['device']}, visible {r['visible']}) | {s['step']} "
                  f"| {s['s']:.2f} | {s['contexts_mib']} |")
        if "exit_s" in r:
            print(f"| {r['variant']} | process exit (NVML GPUs seen) | {r['exit_s']:.2f} "
                  f"| {r['held_while_exiting']} (while loaded: {r['held_while_loaded']}) |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0 if all("error" not in r for r in results) else 3


if __name__ == "__main__":
    sys.exit(main())
