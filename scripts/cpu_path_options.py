"""Cheaper per-image CPU work, and what it does to scores: JPEG DCT scaling (draft) at 1x
instead of 2x the resize target, and Pillow's reducing_gap, against today's CPU path.

    python scripts/make_corpus.py --profile uploads --count 80 --output /tmp/c2
    python scripts/cpu_path_options.py        # reads /tmp/c2/*.jpg and samples/*.jpg
"""
import glob, time, io, sys
import numpy as np
from PIL import Image, ImageOps
sys.path.insert(0, '.')
from transforms.decode import decode_image, to_rgb, open_checked, arm_pillow_check
from transforms.preprocess import preprocess, to_tensor, center_crop_box, jpeg_roundtrip, resized_size, _RESAMPLE
from transforms.spec import OPEN_NSFW_SPEC as S, DecodeLimits
from transforms.runtime.onnx import OnnxLoader
runner = OnnxLoader("bundled://open_nsfw")()
name = runner.info().inputs[0].name
L = DecodeLimits()
files = [open(f, 'rb').read() for f in sorted(glob.glob('/tmp/c2/*.jpg'))][:80] + [open(f,'rb').read() for f in sorted(glob.glob('samples/*.jpg'))]

def variant(data, draft_factor, gap):
    arm_pillow_check(L)
    img = open_checked(data, L)
    if draft_factor and img.format == "JPEG":
        side = int(draft_factor * max(S.resize_size)); img.draft("RGB", (side, side))
    img.load(); img = ImageOps.exif_transpose(img)
    rgb = to_rgb(img, S.alpha_background)
    pil = Image.fromarray(rgb)
    size = resized_size(rgb.shape[:2], S)
    pil = pil.resize((size[1], size[0]), resample=_RESAMPLE[S.interpolation], reducing_gap=gap)
    pil = pil.crop(center_crop_box(size, (S.height, S.width)))
    pil = jpeg_roundtrip(pil, S.jpeg_roundtrip_quality)
    return to_tensor(np.asarray(pil.convert("RGB")), S)

def run(draft_factor, gap):
    t = time.perf_counter(); xs = [variant(f, draft_factor, gap) for f in files]; dt = (time.perf_counter() - t) / len(files) * 1000
    scores = np.concatenate([runner.infer({name: np.stack(xs[i:i+16])})[runner.info().outputs[0]][:, 1] for i in range(0, len(xs), 16)])
    return dt, scores

base_t, base = run(2, None)
print(f"baseline (draft 2x, no reducing_gap): {base_t:.1f} ms/img")
for df, gap in [(2, 3.0), (2, 2.0), (1, None), (1, 3.0), (1, 2.0)]:
    t, s = run(df, gap)
    d = np.abs(s - base)
    print(f"draft {df}x reducing_gap {gap}: {t:.1f} ms/img ({base_t/t:.2f}x), max |d nsfw| {d.max():.4f}, mean {d.mean():.5f}")
