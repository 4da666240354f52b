"""What listing and the anti-join cost per URI, before any image is read or scored.

Why: on the H200 a 1,000,000-URI GPU-path run spent 4.4 -> 33.5 s (of 128 s) reading its
manifest and shuffling the URIs through the anti-join, before the first image was scored,
because Beam's local runner runs one stage at a time (docs/benchmarks.md, third
2026-11-30 session). At about 29 us per URI that caps end to end near 0.7 of the engine
at any run size. This times exactly that part: the URI side (transforms/admitted.py: the
manifest in byte ranges or a glob, the hash-bucketed GroupByKey against earlier
predictions, the once-per-URI filter), ending in a count, with the runner's stage table.

    python scripts/read_join_cost.py --uris 300000 [--glob] [--workers 2] --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any, Dict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(uris: int, use_glob: bool, workers: int, folder: str) -> Dict[str, Any]:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline import local_runner
    from transforms.admitted import AdmittedUris
    from transforms.runtime import startup

    os.environ[startup.ENV] = tempfile.mkdtemp(prefix="read-join-")
    local_runner.prepare()
    names = os.path.join(folder, "names")
    manifest = os.path.join(folder, "manifest.txt")
    if not os.path.exists(manifest):
        os.makedirs(names, exist_ok=True)
        with open(manifest, "w") as f:
            for i in range(uris):
                path = os.path.join(names, f"img-{i:08d}.jpg")
                f.write(path + "\n")
                if use_glob:
                    open(path, "w").close()
    args = ([f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]
            if workers > 1 else [])
    launched = time.time()
    start = time.perf_counter()
    with beam.Pipeline(options=PipelineOptions(args)) as p:
        admitted = p | AdmittedUris(
            (os.path.join(names, "*.jpg"),) if use_glob else (), None if use_glob else manifest,
            (os.path.join(folder, "out"),))
        counted = admitted | beam.combiners.Count.Globally()
        counted | beam.Map(lambda n: open(os.path.join(folder, "count"), "w").write(str(n)))
    wall = time.perf_counter() - start
    got = int(open(os.path.join(folder, "count")).read())
    stages = startup.summarize(os.environ[startup.ENV], launched).get("runner_stages", [])
    return {"uris": uris, "admitted": got, "source": "glob" if use_glob else "manifest",
            "workers": workers, "wall_s": round(wall, 2),
            "us_per_uri": round(1e6 * wall / uris, 1), "runner_stages": stages}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--uris", type=int, default=300000)
    ap.add_argument("--glob", action="store_true", help="match empty files instead of a manifest")
    ap.add_argument("--workers", type=int, default=1, help="SDK processes (1: in-process)")
    ap.add_argument("--folder", default=None, help="reuse a folder of an earlier run")
    ap.add_argument("--json")
    a = ap.parse_args()
    folder = a.folder or tempfile.mkdtemp(prefix="read-join-data-")
    r = run(a.uris, a.glob, a.workers, folder)
    print(f"{r['admitted']} of {r['uris']} URIs admitted from a {r['source']} in "
          f"{r['wall_s']} s: {r['us_per_uri']} us per URI ({r['workers']} SDK processes)")
    for row in r["runner_stages"]:
        if row["seconds"] >= 0.05:
            print(f"  {row['stage'][:70]:70s} {row['seconds']:7.2f} s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=2)
    return 0 if r["admitted"] == r["uris"] else 1


if __name__ == "__main__":
    sys.exit(main())
