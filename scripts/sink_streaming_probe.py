"""Do predictions reach the sinks while inference runs, or only at the end?

Runs the --preprocess gpu graph on the DirectRunner with the scripted GPU runner of
tests/test_build.py (CPU only) over N copies of one small JPEG, and prints the lines in
the prediction shards every 2 s. Streaming sinks show growing counts; a stage barrier
shows 0 until the end (what a Flatten before one sink did; docs/reliability.md).

    python scripts/sink_streaming_probe.py --preprocess gpu --count 30000
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    import apache_beam as beam

    from pipeline.build import build_pipeline
    from pipeline.config import RunConfig
    from tests.conftest import make_linear_model
    from tests.test_build import SPEC, StandInLoader, _jpeg
    from transforms.handlers.model_handler import NumpyModelHandler
    from transforms.runtime.onnx import OnnxLoader

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preprocess", choices=("gpu", "cpu"), default="gpu")
    ap.add_argument("--count", type=int, default=30000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    try:
        (tmp / "images").mkdir()
        model = tmp / "tiny.onnx"
        make_linear_model(model, hw=(8, 8))
        data = _jpeg((30, 90, 200))
        for i in range(args.count):
            (tmp / "images" / f"{i:06d}.jpg").write_bytes(data)
        cfg = RunConfig(output=str(tmp / "out"), inputs=(str(tmp / "images" / "*"),),
                        spec=SPEC, backend="tensorrt", engine="unused.plan",
                        preprocess=args.preprocess, run_id="probe")
        done = threading.Event()

        def watch() -> None:
            start = time.time()
            while not done.is_set():
                lines = sum(p.read_bytes().count(b"\n") for p in (tmp / "out").rglob("*")
                            if p.is_file() and "predictions" in str(p))
                print(f"{time.time() - start:6.1f} s  prediction lines written: {lines}",
                      flush=True)
                done.wait(2.0)

        threading.Thread(target=watch, daemon=True).start()
        p = beam.Pipeline()
        build_pipeline(p, cfg, handler=NumpyModelHandler(OnnxLoader(str(model))),
                       gpu_handler=NumpyModelHandler(StandInLoader(str(model))))
        p.run().wait_until_finish()
        done.set()
        print(f"finished: {args.count} images")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
