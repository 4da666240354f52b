"""The benchmark CLI on a real ONNX model with the CPU backend: JSON, table and PNG."""

from __future__ import annotations

import importlib.util
import json

import pytest

from pipeline.benchmark import main


def test_run_and_report(tiny_model, tmp_path):
    path, _ = tiny_model
    out = tmp_path / "cpu.json"
    assert main(["run", "--backend", "onnx-cpu", "--model", str(path), "--batch_sizes", "2,5",
                 "--warmup", "1", "--iterations", "3", "--json", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert [r["batch"] for r in rec["results"]] == [2, 5]
    r = rec["results"][0]
    assert r["host_min_s"] <= r["host_med_s"] <= r["host_max_s"] and r["iterations"] == 3
    assert r["images_per_s"] > 0 and r["gpu_med_ms"] is None
    bad = tmp_path / "trt.json"
    assert main(["run", "--backend", "tensorrt", "--engine", str(tmp_path / "none.plan"),
                 "--json", str(bad)]) == 3
    assert "error" in json.loads(bad.read_text())
    md, png = tmp_path / "b.md", tmp_path / "b.png"
    has_mpl = importlib.util.find_spec("matplotlib") is not None  # absent in pack-trt's venv
    args = ["report", str(out), str(bad), "--markdown", str(md)]
    assert main(args + (["--png", str(png)] if has_mpl else [])) == 0
    text = md.read_text()
    assert "| onnx-cpu |" in text and "unavailable" in text and "batch 5" in text
    if has_mpl:
        assert png.stat().st_size > 1000


def test_images_by_device_sums_a_runs_bundle_records(tmp_path):
    """What `benchmark gpus` reports per GPU: the bundle records' per-device counts."""
    from pipeline.benchmark import images_by_device
    from pipeline.main import run
    from tests.conftest import SAMPLES

    summary = run(["--input", str(SAMPLES / "*.jpg"), "--output", str(tmp_path)])
    counts = images_by_device(str(tmp_path))
    assert sum(counts.values()) == summary.ok == 6
    assert list(counts) == ["cpu"]


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch):
    from pipeline.benchmark import visible_gpus

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert visible_gpus() == [0, 1]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(SystemExit, match="expected at least one visible GPU"):
        visible_gpus()


def test_stage_costs_from_a_runs_bundle_records(tmp_path, capsys):
    from pipeline.benchmark import main as bench_main, stage_costs
    from pipeline.main import run
    from tests.conftest import SAMPLES

    run(["--input", str(SAMPLES / "*.jpg"), "--output", str(tmp_path / "out")])
    costs = stage_costs(str(tmp_path / "out"))
    row = costs["run"]
    assert costs["processes"] == 1 and row["images"] == 6
    assert row["decode_ms_per_image"] > 0 and row["preprocess_ms_per_image"] > 0
    assert row["read_ms_per_image"] > 0 and row["inference_ms_per_image"] > 0
    staged = sum(v for k, v in row.items() if k.endswith("_ms_per_image")
                 and k not in ("other_ms_per_image", "bundle_wall_ms_per_image"))
    assert staged <= row["bundle_wall_ms_per_image"] + 1e-6 or row["other_ms_per_image"] == 0
    assert bench_main(["stages", "--output", str(tmp_path / "out"),
                       "--json", str(tmp_path / "s.json")]) == 0
    assert "| run | 6 |" in capsys.readouterr().out
    assert json.loads((tmp_path / "s.json").read_text())["run"]["images"] == 6


def test_shard_progress_measures_the_steady_rate_of_growing_shards(tmp_path):
    """Lines written at about 1,000 per second into a temp shard, sampled from a thread."""
    import time

    from transforms.runtime.benchmark import ShardProgress

    shard = tmp_path / "out" / "beam-temp-predictions-x" / "part.jsonl"
    shard.parent.mkdir(parents=True)
    (tmp_path / "out" / "bundles-x.jsonl").write_text("not counted\n" * 99)
    with ShardProgress(str(tmp_path / "out"), period_s=0.05) as progress:
        with open(shard, "w") as f:
            for _ in range(40):
                f.write('{"uri": "u"}\n' * 50)
                f.flush()
                time.sleep(0.05)
        time.sleep(0.1)
    rate = progress.steady_rate(2000)
    assert progress.samples[-1][1] == 2000            # bundles-* is not counted
    assert rate["steady_samples"] >= 5 and rate["first_output_s"] is not None
    assert 300 < rate["steady_images_per_s"] < 1500, rate


def test_line_counter_reads_only_appended_bytes_and_follows_finalization(tmp_path):
    """Temp shards grow, then are finalized under a new name: counted once either way; a
    shard that shrank is recounted; bundles-* never counts."""
    from transforms.runtime import benchmark
    from transforms.runtime.benchmark import LineCounter

    out = tmp_path / "out"
    temp = out / "beam-temp-predictions-x" / "part.jsonl"
    temp.parent.mkdir(parents=True)
    (out / "bundles-x.jsonl").write_text("b\n" * 7)
    counter = LineCounter()
    temp.write_text("a\n" * 100)
    assert counter.count(str(out)) == 100
    reads = []
    original = benchmark._count_lines
    benchmark._count_lines = lambda path, offset=0: reads.append(offset) or original(path, offset)
    try:
        with open(temp, "a") as f:
            f.write("a\n" * 50)
        assert counter.count(str(out)) == 150 and reads == [200]      # from byte 200 on
        assert counter.count(str(out)) == 150 and reads == [200]      # unchanged: no read
    finally:
        benchmark._count_lines = original
    final = out / "predictions-r-00000-of-00001.jsonl"
    temp.rename(final)
    assert counter.count(str(out)) == 150 == LineCounter().count(str(out))
    final.write_text("a\n" * 3)
    assert counter.count(str(out)) == 3


def test_main_stage_rate_is_the_longest_stage():
    from pipeline.benchmark.timed import main_stage_rate

    summary = {"runner_stages": [{"stage": "ReadImages", "seconds": 4.7},
                                 {"stage": "ReadImages, RouteForGpu +26", "seconds": 89.9},
                                 {"stage": "WritePredictionsGpu", "seconds": 0.04}]}
    assert main_stage_rate(summary, 1_000_000) == {"main_stage_s": 89.9,
                                                   "main_stage_images_per_s": 11123.5}
    assert main_stage_rate({}, 10) == {"main_stage_s": None, "main_stage_images_per_s": None}


def test_timed_child_reports_the_run_and_its_first_output(tmp_path):
    from pipeline.benchmark import _timed_child
    from tests.conftest import SAMPLES

    r = _timed_child(["-m", "pipeline.main", "--input", str(SAMPLES / "*.jpg"), "--output",
                      str(tmp_path / "out")])
    assert r["returncode"] == 0 and r["ok"] == 6
    assert r["first_output_s"] is not None and "steady_images_per_s" in r
    assert r["stages"]["run"]["images"] == 6          # the run's own per-stage table
    assert r["audit"]["whole"] and r["audit"]["predictions"] == 6
    # the two fixed costs: launch to first prediction, last bundle's end to exit
    assert 0 < r["first_prediction_s"] < r["process_wall_s"]
    assert 0 <= r["tail_s"] < r["process_wall_s"] - r["first_prediction_s"] + 1
    assert r["main_stage_images_per_s"] > 0 and 0 < r["main_stage_s"] < r["process_wall_s"]


def test_timed_child_pins_the_run_to_the_cores_it_is_given(tmp_path):
    """`benchmark gpus --cores_per_gpu`: the child and what it starts run on those cores."""
    import os

    from pipeline.benchmark import _timed_child

    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("CPU affinity is Linux-only")
    core = sorted(os.sched_getaffinity(0))[:1]
    code = "import os; print('summary: ok=1 images/s=1', len(os.sched_getaffinity(0)))"
    r = _timed_child(["-c", code], cpus=core)
    assert r["returncode"] == 0 and r["cpus"] == 1 and r["summary"].endswith(" 1")


def test_gpu_runs_scale_processes_and_cores_with_the_gpus_used():
    from pipeline.benchmark import gpu_runs

    runs = gpu_runs([0, 1], workers_per_gpu=8, cores_per_gpu=16, cores=list(range(32)))
    assert runs["one_gpu"] == {"visible": [0], "workers": 8, "cpus": list(range(16))}
    assert runs["all_gpus"] == {"visible": [0, 1], "workers": 16, "cpus": list(range(32))}
    # the control: one GPU with the whole host, to tell a host bound from a GPU bound
    assert runs["one_gpu_all_cores"] == {"visible": [0], "workers": 16, "cpus": None}
    assert set(gpu_runs([3], 4, None, list(range(8)))) == {"one_gpu", "all_gpus"}
    with pytest.raises(SystemExit, match="needs 32 cores, expected at most 16"):
        gpu_runs([0, 1], 8, 16, list(range(16)))


def test_gpus_runs_split_over_two_calls_and_merged(tmp_path):
    """A long corpus: the one-GPU run in one device call, the two-GPU run in the next
    with --merge; the second record carries both runs and the issue's keys. A merge of
    another corpus or layout is refused."""
    from pipeline.benchmark.gpus import gpu_runs, merged_runs, select_runs, summarize_runs

    plan = gpu_runs([0, 1], 8, 16, list(range(32)))
    assert list(select_runs(plan, None)) == ["one_gpu", "all_gpus", "one_gpu_all_cores"]
    assert list(select_runs(plan, "all_gpus")) == ["all_gpus"]
    with pytest.raises(SystemExit, match="expected a comma list of one_gpu, all_gpus"):
        select_runs(plan, "two_gpus")
    base = {"corpus": "imagenet", "images": 4000000, "batch_size": 32, "plan": "p.plan",
            "gpu": "NVIDIA H200", "preprocess": "gpu", "workers_per_gpu": 16,
            "cores_per_gpu": 16}
    first = dict(base, runs={"one_gpu": {"images_per_s": 10000.0, "steady_images_per_s":
                                         11000.0, "images_by_device": {"cuda:0": 4000000}}})
    summarize_runs(first, 2)
    assert first["one_gpu_images_per_s"] == 10000.0 and first["speedup"] is None
    path = tmp_path / "one.json"
    path.write_text(json.dumps(first))
    second = dict(base)
    runs = merged_runs(second, str(path))
    runs["all_gpus"] = {"images_per_s": 18000.0, "steady_images_per_s": 21000.0,
                        "main_stage_images_per_s": 22000.0,
                        "images_by_device": {"cuda:0": 2000400, "cuda:1": 1999600}}
    runs["one_gpu"]["main_stage_images_per_s"] = 11000.0
    second["runs"] = runs
    summarize_runs(second, 2)
    assert second["two_gpu_images_per_s"] == 18000.0 and second["speedup"] == 1.8
    assert second["speedup_main_stage"] == 2.0
    assert second["all_gpus_share_by_device"] == {"cuda:0": 0.5, "cuda:1": 0.5}
    with pytest.raises(SystemExit, match="images is 4000000 there; expected 1000"):
        merged_runs(dict(base, images=1000), str(path))


def test_fixed_time_and_the_images_a_speedup_needs():
    """The seventh session's 4M runs on two H200s: end to end 10,423 and 16,533 images/s,
    steady 11,548 and 23,127, so 37.4 s and 69.0 s that do not grow with the images; 1.7x
    from about 6.1M images per worker, and never 2.0x (the steady ratio is 2.003)."""
    from pipeline.benchmark.gpus import fixed_seconds, images_for_speedup, summarize_runs

    one = {"ok": 4000000, "images_per_s": 10423.0, "steady_images_per_s": 11548.0,
           "main_stage_s": 356.434, "main_stage_images_per_s": 11222.3,
           "images_by_device": {"cuda:0": 4000000}}
    two = {"ok": 4000000, "images_per_s": 16533.4, "steady_images_per_s": 23127.0,
           "main_stage_s": 183.653, "main_stage_images_per_s": 21780.2,
           "images_by_device": {"cuda:0": 2000382, "cuda:1": 1999618}}
    assert fixed_seconds(one) == 37.4 and fixed_seconds(two) == 69.0
    assert 6.0e6 < images_for_speedup(one, two, 1.7) < 6.2e6
    assert images_for_speedup(one, two, 1.5) < 4e6     # already past it at 4M
    assert images_for_speedup(one, two, 2.01) is None
    assert fixed_seconds({"ok": 10, "images_per_s": 5.0}) is None    # no rate to grow by
    record = {"runs": {"one_gpu": dict(one), "all_gpus": dict(two)}}
    summarize_runs(record, 2)
    assert record["runs"]["all_gpus"]["fixed_s"] == 69.0
    assert set(record["images_for_speedup"]) == {"1.5", "1.7", "1.9"}
    assert record["images_for_speedup"]["1.7"] == images_for_speedup(one, two, 1.7)


def test_fixed_time_prefers_the_steady_rate_to_the_runner_stage():
    """The eighth session's 8M two-GPU run: the runner's scoring stage opened before the
    models had loaded (386.6 s, against 351.7 s from first prediction to last bundle), so
    the stage would leave it 17.0 s outside, less than the one-GPU run's 27.6 s. The steady
    rate gives 40.5 s and 55.8 s, and 1.7x from about 4.1M images."""
    from pipeline.benchmark.gpus import fixed_seconds, images_for_speedup

    one = {"ok": 8000000, "images_per_s": 10855.1, "steady_images_per_s": 11486.7,
           "main_stage_s": 709.333, "main_stage_images_per_s": 11278.2}
    two = {"ok": 8000000, "images_per_s": 19823.0, "steady_images_per_s": 23000.8,
           "main_stage_s": 386.605, "main_stage_images_per_s": 20693.0}
    assert fixed_seconds(one) == 40.5 and fixed_seconds(two) == 55.8
    stage_only = {k: v for k, v in two.items() if k != "steady_images_per_s"}
    assert fixed_seconds(stage_only) == 17.0           # the stage's figure, kept as a fallback
    assert 4.0e6 < images_for_speedup(one, two, 1.7) < 4.3e6
    assert 14e6 < images_for_speedup(one, two, 1.9) < 16e6


def test_pipeline_ratios_table_and_report(tmp_path, capsys):
    """The issues' bars computed from one run's figures, and several runs in one table."""
    from pipeline.benchmark import main as bench_main, ratios

    rec = {"corpus": "imagenet", "images": 50000, "batch_size": 32, "cores": 16,
           "gpu": "NVIDIA H200", "engine_images_per_s": 10000.0,
           "gpu_preprocess_images_per_s": 8000.0, "e2e_gpu_images_per_s": 2000.0,
           "e2e_gpu_steady_images_per_s": 7000.0, "e2e_cpu_images_per_s": 1000.0,
           "e2e_cpu_steady_images_per_s": 1500.0, "stock_beam_images_per_s": 500.0,
           "cpu_pool_ceiling_images_per_s": 1600.0,
           "runs": {"e2e_gpu": {"gpu_util_mean": 30.0, "cpu_percent": 900.0,
                                "first_prediction_s": 29.06, "tail_s": 14.7}}}
    r = ratios(rec)
    assert r["e2e_gpu_steady_vs_engine"] == 0.7
    assert r["e2e_gpu_steady_vs_min_engine_dali"] == 0.875
    assert r["e2e_gpu_vs_stock_beam"] == 4.0 and r["e2e_gpu_steady_vs_stock_beam"] is None and r["e2e_gpu_steady_vs_cpu"] == 4.667
    assert r["e2e_cpu_steady_vs_pool_ceiling"] == 0.938
    # end to end against the CPU path's steady rate: the bound when it ran a smaller corpus
    assert r["e2e_gpu_vs_cpu_steady"] == 1.333 and r["e2e_gpu_vs_stock_beam_steady"] is None
    assert ratios(dict(rec, stock_beam_images_per_s=float("nan")))["e2e_gpu_vs_stock_beam"] is None
    uploads = dict(rec, corpus="uploads", stock_beam_images_per_s=None,
                   runs={"stock_beam": {"returncode": 1},
                         "e2e_gpu": {"audit": {"missing": 3}, "gpu_util_mean": 1.0}})
    paths = []
    for i, record in enumerate((rec, uploads)):
        paths.append(tmp_path / f"p{i}.json")
        paths[-1].write_text(json.dumps(record))
    md = tmp_path / "t.md"
    has_mpl = importlib.util.find_spec("matplotlib") is not None
    png = ["--png", str(tmp_path / "t.png")] if has_mpl else []
    assert bench_main(["pipeline-report", *map(str, paths), "--markdown", str(md), *png]) == 0
    text = md.read_text()
    assert "| imagenet (50000 images, batch 32, 16 cores) | uploads" in text
    assert "| end to end, --preprocess gpu | 2000 (GPU 30%, CPU 900%) | 2000 LOST 3 images" in text
    assert "| Beam's stock TensorRTEngineHandlerNumPy | 500 | failed (exit 1) |" \
        in text
    assert "| e2e_gpu_vs_stock_beam | 4.00 | – |" in text
    assert ("|   the same, steady (no start-up) | 7000 (first prediction at 29.1 s, tail 14.7 s)"
            in text)
    if has_mpl:
        assert (tmp_path / "t.png").stat().st_size > 1000


def test_stock_baseline_writes_one_line_per_batch_row():
    """What lets the benchmark watch the stock run's steady rate: a line per image row."""
    import numpy as np
    from apache_beam.ml.inference.base import PredictionResult

    from pipeline.stock_baseline import _rows

    batch = np.zeros((3, 4, 4, 3), np.float32)            # one element = a batch of 3
    lines = _rows(PredictionResult(example=batch, inference=[np.ones(2)]))
    assert [json.loads(x) for x in lines] == [{"row": 0}, {"row": 1}, {"row": 2}]


def test_stock_handler_switches_off_the_version_check_where_it_loads(monkeypatch):
    """The concession must act in the process that loads the engine (an SDK worker), so it
    lives in load_model: here the load then fails only for want of the plan file."""
    import pickle

    from apache_beam.ml.inference import tensorrt_inference

    from pipeline.stock_baseline import StockHandlerOnTrt86

    calls = []
    monkeypatch.setattr(tensorrt_inference, "_check_trt_version",
                        lambda: calls.append("checked"))
    handler = pickle.loads(pickle.dumps(StockHandlerOnTrt86(
        min_batch_size=1, max_batch_size=1, engine_path="/nonexistent/fixed32.plan")))
    with pytest.raises(Exception):
        handler.load_model()
    assert calls == []                       # the worker-side load never checked
    assert tensorrt_inference._check_trt_version() is None


def test_pipeline_runs_only_the_rows_asked_for(tmp_path, capsys):
    """--rows pool: no engine, no DALI, no end-to-end run; the record says which rows ran,
    and a row name outside the list is refused."""
    from PIL import Image

    from pipeline.benchmark import main as bench_main

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(4):
        Image.new("RGB", (64, 48), (40 * i, 90, 200)).save(corpus / f"imagenet-{i:06d}.jpg")
    out = tmp_path / "p.json"
    args = ["pipeline", "--engine", str(tmp_path / "absent.plan"), "--corpus", str(corpus),
            "--corpus_name", "imagenet", "--json", str(out), "--pool_images", "4"]
    assert bench_main(args + ["--rows", "pool"]) == 0
    record = json.loads(out.read_text())
    assert record["rows"] == ["pool"] and record["runs"] == {}
    assert record["cpu_pool_ceiling_images_per_s"] > 0
    assert "engine_images_per_s" not in record and "e2e_gpu_images_per_s" not in record
    with pytest.raises(SystemExit, match="--rows 'pool,gpus'"):
        bench_main(args + ["--rows", "pool,gpus"])


def test_a_run_of_millions_reads_a_manifest_written_once(tmp_path):
    """--manifest: our end-to-end runs read <corpus>/manifest.txt (--input_list), every
    corpus URI once, instead of matching the glob in one worker."""
    import argparse

    from pipeline.benchmark import _main_command

    for name in ("imagenet-000001.jpg", "imagenet-l00000000.jpg", "other.jpg"):
        (tmp_path / name).write_bytes(b"x")
    a = argparse.Namespace(corpus=str(tmp_path), corpus_name="imagenet", engine="e.plan",
                           batch=32, manifest=True)
    cmd = _main_command(a, "--preprocess", "gpu")
    manifest = cmd[cmd.index("--input_list") + 1]
    assert "--input" not in cmd and manifest == str(tmp_path / "manifest.txt")
    assert open(manifest).read().split() == [str(tmp_path / "imagenet-000001.jpg"),
                                             str(tmp_path / "imagenet-l00000000.jpg")]
    a.manifest = False
    assert _main_command(a)[:4] == ["-m", "pipeline.main", "--input",
                                    str(tmp_path / "imagenet-*")]


def test_gpu_sampler_counts_the_processes_holding_each_gpu():
    """The sampler's per-sample reading, fed by a stand-in for NVML (no GPU here; the GPU
    machine's `benchmark gpus` runs it on the real one): the most processes seen is
    reported, and a GPU whose process list NVML refuses counts none rather than failing."""
    from transforms.runtime.benchmark import GpuSampler

    class FakeNvml:
        class NVMLError(Exception):
            pass

        def __init__(self, lists):
            self.lists = list(lists)

        def nvmlDeviceGetUtilizationRates(self, handle):
            return type("U", (), {"gpu": 50})()

        def nvmlDeviceGetMemoryInfo(self, handle):
            return type("M", (), {"used": 2 ** 30})()

        def nvmlDeviceGetComputeRunningProcesses(self, handle):
            got = self.lists.pop(0)
            if got is None:
                raise FakeNvml.NVMLError("not supported in this container")
            return got

    sampler = GpuSampler(device=1)
    sampler._nvml, sampler._handle = FakeNvml([[1, 2], [1, 2, 3], None]), object()
    for _ in range(3):
        sampler._sample()
    got = sampler.summary()
    assert got["gpu_processes_max"] == 3 and got["samples"] == 3
    assert got["gpu_mem_max_mib"] == 1024.0

    hidden = GpuSampler()
    hidden._nvml, hidden._handle = FakeNvml([None]), object()
    hidden._sample()
    assert hidden.summary()["gpu_processes_max"] is None


def test_gpus_flags_processes_placed_elsewhere_on_a_gpu():
    """The two-H200 run before the narrowing: 16 SDK processes placed per GPU, NVML saw 32
    on GPU 0; the one-GPU run's idle GPU 1 held none."""
    from pipeline.benchmark.gpus import stray_processes

    two = {"visible": [0, 1], "per_gpu": {"0": {"gpu_processes_max": 32},
                                          "1": {"gpu_processes_max": 16}}}
    one = {"visible": [0], "per_gpu": {"0": {"gpu_processes_max": 16},
                                       "1": {"gpu_processes_max": 0}}}
    assert stray_processes(two, 16) == {"0": 16}
    assert stray_processes(one, 16) == {}
    assert stray_processes({"visible": [0], "per_gpu": {"1": {"gpu_processes_max": 2}}},
                           16) == {"1": 2}
