import faulthandler, sys, time, glob
faulthandler.dump_traceback_later(90, exit=True)
import numpy as np
from transforms.spec import OPEN_NSFW_SPEC
from transforms.runtime.tensorrt.runner import TrtLoader
from transforms.runtime.tensorrt.gpu_runner import TrtDaliLoader
from transforms.handlers.model_handler import NumpyModelHandler
plan = sys.argv[1]
t = time.perf_counter()
loader = TrtDaliLoader(TrtLoader(plan, example_shape=(224, 224, 3), input_dtype="float32"), OPEN_NSFW_SPEC)
runner = loader()
print("loaded", time.perf_counter() - t, flush=True)
files = [open(p, "rb").read() for p in sorted(glob.glob("samples/*.jpg"))] * 6
h = NumpyModelHandler(loader)
t = time.perf_counter()
res, facts = h.run_batch(files, runner)
print("batch", len(res), time.perf_counter() - t, flush=True)
print([round(float(r.inference["prob"][1]) if "prob" in r.inference else 0, 4) for r in res[:6]], list(res[0].inference), flush=True)
t = time.perf_counter()
for _ in range(20):
    h.run_batch(files[:32], runner)
print("20 batches of 32:", time.perf_counter() - t, flush=True)
