"""Soak: 100,000 images through `python -m pipeline.main`, RSS of every process sampled
each second; writes the curve as JSON and PNG and says whether memory stayed flat.

The corpus is `--unique` photos from scripts/make_corpus.py (seeded), hard-linked to
`--count` distinct file names, so every URI is its own image to the pipeline (keyed,
scored exactly once) without 100,000 distinct files on disk. Progress comes from the
lines already in the sinks' temporary shards (sampled every few seconds), which is how
the "10k-image mark" is found. Flat means: the largest total RSS of the process tree
after the 10k mark grows less than 10% over the total at that mark.

    python scripts/soak.py --count 100000 --json docs/reliability/soak-cpu.json \
        --png docs/reliability/soak-cpu.png
    python scripts/soak.py ... --pipeline_args "--backend tensorrt --engine X.plan --preprocess gpu"
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from transforms.runtime.benchmark import ShardProgress  # noqa: E402
from wait_profile import descendants as _tree  # noqa: E402 - pid and its children (/proc)
PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20


def _rss_mb(pid: int) -> Optional[float]:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE_MB
    except (OSError, IndexError, ValueError):
        return None


def build_inputs(work: Path, count: int, unique: int, profile: str, seed: int) -> Path:
    corpus = work / f"corpus-{profile}-{unique}-{seed}"
    if not (corpus / "corpus.json").exists():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "make_corpus.py"), "--profile",
                        profile, "--count", str(unique), "--seed", str(seed), "--output",
                        str(corpus)], check=True, stdout=subprocess.DEVNULL)
    sources = sorted(p for p in corpus.iterdir() if p.name != "corpus.json")
    images = work / f"images-{count}"
    if not images.exists() or sum(1 for _ in images.iterdir()) != count:
        images.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            src = sources[i % len(sources)]
            dst = images / f"{i:06d}_{src.name}"
            if not dst.exists():
                os.link(src, dst)
    return images


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--unique", type=int, default=2000)
    ap.add_argument("--profile", default="imagenet")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default="/tmp/soak")
    ap.add_argument("--pipeline_args", default="", help="Extra flags for pipeline.main.")
    ap.add_argument("--mark", type=int, default=10_000, help="Where warm-up ends (images).")
    ap.add_argument("--json", default="")
    ap.add_argument("--png", default="")
    ap.add_argument("--label", default="")
    ap.add_argument("--replot", default="", help="Only draw --png from this soak JSON "
                    "(for runs on machines without matplotlib).")
    args = ap.parse_args()
    if args.replot:
        _plot(json.loads(Path(args.replot).read_text()), args.png)
        return 0

    work = Path(args.workdir)
    images = build_inputs(work, args.count, args.unique, args.profile, args.seed)
    out = work / "out"
    subprocess.run(["rm", "-rf", str(out)], check=True)
    cmd = [sys.executable, "-m", "pipeline.main", "--input", f"{images}/*", "--output",
           str(out), *shlex.split(args.pipeline_args)]
    samples: List[Dict] = []
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    log: List[str] = []
    reader = threading.Thread(target=lambda: log.extend(proc.stdout), daemon=True)
    reader.start()
    with ShardProgress(str(out), period_s=5.0) as shards:   # progress: lines in the shards
        while proc.poll() is None:
            t = time.perf_counter() - start
            rss = {str(p): r for p in _tree(proc.pid) if (r := _rss_mb(p)) is not None}
            samples.append({"t": round(t, 1), "rss_mb": {k: round(v, 1) for k, v in rss.items()},
                            "total_mb": round(sum(rss.values()), 1)})
            time.sleep(1.0)
    reader.join(timeout=10)
    wall = time.perf_counter() - start
    summary = next((line.strip() for line in log if line.startswith("summary:")), "")
    progress = [{"t": round(t, 1), "written": n} for t, n in shards.samples]
    mark_t = next((p["t"] for p in progress if p["written"] >= args.mark), None)
    after = [s for s in samples if mark_t is not None and s["t"] >= mark_t]
    at_mark = after[0]["total_mb"] if after else None
    end = samples[-1]["total_mb"] if samples else None
    peak_after = max((s["total_mb"] for s in after), default=None)
    growth = (peak_after - at_mark) / at_mark if at_mark else None
    report = {
        "label": args.label, "command": " ".join(shlex.quote(c) for c in cmd),
        "images": args.count, "unique_files": args.unique, "profile": args.profile,
        "returncode": proc.returncode, "summary": summary, "wall_s": round(wall, 1),
        "start_total_rss_mb": samples[0]["total_mb"] if samples else None,
        "mark_images": args.mark, "mark_t_s": mark_t, "rss_at_mark_mb": at_mark,
        "rss_end_mb": end, "peak_rss_after_mark_mb": peak_after,
        "growth_after_mark": None if growth is None else round(growth, 4),
        "flat": growth is not None and growth < 0.10,
        "processes_seen": len({p for s in samples for p in s["rss_mb"]}),
        "cores": os.cpu_count(), "samples": samples, "progress": progress,
        "log_tail": log[-20:],
        "stages": _stages(out),
    }
    print(f"{'t_s':>8} {'written':>9} {'total_rss_mb':>13}")
    for p in progress[:: max(1, len(progress) // 20)]:
        near = min(samples, key=lambda s: abs(s["t"] - p["t"]))
        print(f"{p['t']:8.0f} {p['written']:9d} {near['total_mb']:13.0f}")
    brief = {k: v for k, v in report.items()
             if k not in ("samples", "progress", "log_tail", "stages")}
    if report["stages"] and "run" in report["stages"]:
        print("stages, ms per image (whole run):", json.dumps(report["stages"]["run"]))
    print(json.dumps(brief))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report) + "\n")
    if args.png:
        _plot(report, args.png)
    return 0 if proc.returncode == 0 and report["flat"] else 1


def _stages(out: Path) -> Optional[Dict]:
    """Per-stage ms per image, per process, from the run's bundle records."""
    from pipeline.benchmark import stage_costs

    try:
        return stage_costs(str(out))
    except Exception as exc:  # noqa: BLE001 - the soak's verdict does not depend on it
        return {"error": f"{type(exc).__name__}: {exc}"}


def _plot(report: Dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    ts = [s["t"] for s in report["samples"]]
    ax.plot(ts, [s["total_mb"] for s in report["samples"]], label="all processes", lw=1.5)
    pids = sorted({p for s in report["samples"] for p in s["rss_mb"]})
    for pid in pids:
        pts = [(s["t"], s["rss_mb"][pid]) for s in report["samples"] if pid in s["rss_mb"]]
        if len(pts) > 10:
            ax.plot(*zip(*pts), lw=0.6, alpha=0.6)
    if report["mark_t_s"] is not None:
        ax.axvline(report["mark_t_s"], color="grey", ls="--",
                   label=f"{report['mark_images']:,} images")
    ax.set_xlabel("seconds")
    ax.set_ylabel("RSS (MB)")
    ax.set_title(f"soak: {report['images']:,} images, RSS growth after "
                 f"{report['mark_images']:,}: {report['growth_after_mark']:.1%}\n"
                 f"{report['label']}", fontsize=9)
    ax.legend(loc="lower right")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    sys.exit(main())
