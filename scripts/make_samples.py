"""Regenerate samples/ from scikit-image's bundled data images (public domain / CC0).

Run once by a maintainer (pip install scikit-image); the outputs are committed, so
neither the demo nor the tests need scikit-image. Each derived file exercises one
decode path: grayscale, 16-bit, RGBA, palette with transparency, CMYK, EXIF rotation.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from PIL import Image

OUT = sys.argv[1] if len(sys.argv) > 1 else "samples"


def main() -> None:
    import skimage

    data = os.path.join(os.path.dirname(skimage.__file__), "data")

    def src(name: str) -> Image.Image:
        img = Image.open(os.path.join(data, name))
        img.load()
        return img

    os.makedirs(OUT, exist_ok=True)
    save = lambda img, name, **kw: img.save(os.path.join(OUT, name), **kw)  # noqa: E731
    save(src("astronaut.png").convert("RGB"), "astronaut.jpg", quality=85)
    save(src("chelsea.png").convert("RGB"), "chelsea.jpg", quality=85)
    save(src("coffee.png").convert("RGB"), "coffee.jpg", quality=85)
    save(src("rocket.jpg"), "rocket.jpg", quality=85)
    save(src("clock_motion.png").convert("L"), "clock_gray.png")
    # 16-bit grayscale: 0..255 stretched to 0..65535, stored as PNG I;16.
    gray16 = np.asarray(src("clock_motion.png").convert("L"), np.uint16) * 257
    save(Image.fromarray(gray16), "clock_16bit.png")
    # RGBA with real transparency: a brown horse whose white background is alpha 0.
    gray = np.asarray(src("horse.png").convert("L"))
    alpha = (255 - gray).astype(np.uint8)
    rgba = np.dstack([np.full_like(gray, 90), np.full_like(gray, 60), np.full_like(gray, 30),
                      alpha])
    save(Image.fromarray(rgba), "horse_rgba.png")
    # Palette image: index 1 is the transparent entry, coloured black underneath.
    pal = np.where(alpha >= 128, 0, 1).astype(np.uint8)
    pimg = Image.fromarray(pal).convert("P")
    pimg.putpalette([90, 60, 30, 0, 0, 0] + [0, 0, 0] * 254)
    save(pimg, "horse_palette.png", transparency=1)
    save(src("coffee.png").convert("RGB").convert("CMYK"), "coffee_cmyk.jpg", quality=85)
    # EXIF orientation 6 ("rotate 90 CW to display"): store the pixels rotated CCW.
    cat = src("chelsea.png").convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    save(cat.transpose(Image.Transpose.ROTATE_90), "chelsea_exif_rotated.jpg", quality=85,
         exif=exif.tobytes())


if __name__ == "__main__":
    main()
