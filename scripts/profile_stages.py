"""Per-stage CPU cost per image from a py-spy profile of a pipeline run (all processes).

Why py-spy: it samples every process of a multi-process DirectRunner run (the launcher,
the runner's controller and each SDK worker) from outside, without changing the code
or its speed much. Record with

    py-spy record --subprocesses --format raw --rate 100 -o prof.txt -- \
        python -m pipeline.main --input 'corpus/*' --output out \
        --direct_num_workers=16 --direct_running_mode=multi_processing

then summarise:

    python scripts/profile_stages.py prof.txt --images 10000 --rate 100 --json stages.json

Each sampled stack is charged to the first stage whose marker appears in it (the list
below, most specific first), so a PIL frame under ``Preprocess.apply`` counts as
preprocess and one under ``DecodeImage.apply`` as decode. CPU ms per image =
samples / rate / images * 1000, summed over all processes (py-spy skips idle threads).
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys
from pathlib import Path
from typing import Dict, List, Tuple

# (stage, markers): a stack belongs to the first stage with any marker in it.
STAGES: List[Tuple[str, Tuple[str, ...]]] = [
    ("import / start-up", ("_find_and_load", "preflight", "pipeline_options.py")),
    ("inference (engine / session)", ("runtime/tensorrt/engine.py", "runtime/onnx.py",
                                      "gpu_preprocess.py", "InferenceSession")),
    ("batch assembly (stack, split)", ("runtime/batching.py", "model_handler.py",
                                       "handlers/keyed.py", "ml/inference/base.py")),
    ("preprocess", ("Preprocess.apply", "transforms/preprocess.py")),
    ("decode", ("DecodeImage.apply", "transforms/decode.py", "image_bounds.py",
                "jpeg_structure.py", "RouteForGpu")),
    ("read", ("ReadBytes.apply",)),
    ("postprocess", ("Postprocess.process", "transforms/postprocess.py",
                     "SplitGpuResults", "BatchFailures")),
    ("bundle metrics", ("transforms/metrics.py",)),
    ("writes (sinks)", ("io/textio.py", "io/filebasedsink.py", "io/iobase.py",
                        "io/parquetio.py", "transforms/io.py:to_json", "to_json")),
    ("listing / anti-join", ("fileio.py", "ScoredUris", "_NewOnce", "MatchFiles",
                             "CoGroupByKey", "io/filesystems.py")),
    ("coders (encode/decode elements)", ("coders/", "coder_impl", "pickler", "cloudpickle",
                                         "dill")),
    ("data plane (gRPC, channels)", ("data_plane.py", "grpc", "_channel.py",
                                     "worker_handlers.py")),
    ("runner control (fn_api_runner, bundles)", ("fn_api_runner/", "portability/",
                                                 "runners/direct/")),
    ("SDK worker overhead (operations)", ("runners/worker/", "runners/common.py",
                                          "transforms/core.py", "metrics/")),
]
OTHER = "other"
_LINE = re.compile(r"^(process \d+:\"(?P<cmd>[^\"]*)\";)?(?P<stack>.*) (?P<count>\d+)$")


def role(cmd: str) -> str:
    if "sdk_worker_main" in cmd or "worker_pool_main" in cmd:
        return "sdk worker"
    if "pipeline.main" in cmd:
        return "launcher + runner"
    return cmd.split()[0].rsplit("/", 1)[-1] if cmd else "?"


def summarise(path: Path) -> Tuple[Dict[str, int], Dict[str, Dict[str, int]], int]:
    by_stage: Dict[str, int] = collections.Counter()
    by_role: Dict[str, Dict[str, int]] = collections.defaultdict(collections.Counter)
    processes = set()
    for line in path.read_text(errors="replace").splitlines():
        m = _LINE.match(line.strip())
        if not m:
            continue
        stack, count = m.group("stack"), int(m.group("count"))
        cmd = m.group("cmd") or ""
        pid = line.split(":", 1)[0] if line.startswith("process ") else "?"
        processes.add(pid)
        stage = next((name for name, marks in STAGES if any(k in stack for k in marks)), OTHER)
        by_stage[stage] += count
        by_role[role(cmd)][stage] += count
    return by_stage, by_role, len(processes)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("profile", help="py-spy --format raw output")
    ap.add_argument("--images", type=int, required=True, help="Images the run scored.")
    ap.add_argument("--rate", type=float, default=100.0, help="py-spy --rate used.")
    ap.add_argument("--wall_s", type=float, default=None, help="The run's wall time.")
    ap.add_argument("--label", default="")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    by_stage, by_role, nproc = summarise(Path(args.profile))
    total = sum(by_stage.values())
    order = [s for s, _ in STAGES] + [OTHER]
    rows = []
    print(f"{'stage':44s} {'CPU ms/image':>13s} {'share':>7s}")
    for stage in order:
        n = by_stage.get(stage, 0)
        if not n:
            continue
        ms = n / args.rate / args.images * 1000.0
        rows.append({"stage": stage, "cpu_ms_per_image": round(ms, 3),
                     "share": round(n / total, 4), "samples": n})
        print(f"{stage:44s} {ms:13.2f} {n / total:7.1%}")
    total_ms = total / args.rate / args.images * 1000.0
    print(f"{'total (all processes)':44s} {total_ms:13.2f}")
    roles = {r: {"cpu_s": round(sum(c.values()) / args.rate, 1),
                 "top": [[s, round(n / args.rate, 1)] for s, n in c.most_common(4)]}
             for r, c in by_role.items()}
    for r, v in roles.items():
        print(f"  {r}: {v['cpu_s']} CPU s; top {v['top']}")
    report = {"label": args.label, "images": args.images, "rate_hz": args.rate,
              "wall_s": args.wall_s, "processes": nproc,
              "cpu_ms_per_image_total": round(total_ms, 3), "stages": rows, "roles": roles}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
