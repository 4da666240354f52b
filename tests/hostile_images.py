"""Decompression bombs built in code: a small outer header, a huge image declared inside.

Every builder returns bytes whose outer size passes the default pixel cap while some
nested size (a container entry, a page, a frame, a codestream, a tile) is far above it.
The ``legit_*`` builders make the benign twin of each format, so a test can show the
guard refuses only the hostile one.
"""

from __future__ import annotations

import struct
import zlib
from typing import Callable, Dict

from PIL import Image

from tests.images import encode, jpeg_bytes, png_header_only

HUGE = 400_000          # declared side of the inner image: 1.6e11 pixels
BIG = 60_000            # for 16-bit fields: 3.6e9 pixels


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def j2k_codestream(width: int, height: int, tile=None, components: int = 3) -> bytes:
    """SOC + SIZ (+ EOC): enough for Pillow and OpenJPEG to read the header."""
    tw, th = tile or (width, height)
    siz = struct.pack(">HHIIIIIIIIH", 38 + 3 * components, 0, width, height, 0, 0,
                      tw, th, 0, 0, components) + b"\x07\x01\x01" * components
    return b"\xff\x4f\xff\x51" + siz + b"\xff\xd9"


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def jp2(outer_w: int, outer_h: int, codestream: bytes) -> bytes:
    """JP2 box form: the ihdr box says outer_w x outer_h, the codestream says its own."""
    ihdr = struct.pack(">IIHBBBB", outer_h, outer_w, 3, 7, 7, 0, 0)
    colr = struct.pack(">BBBI", 1, 0, 0, 16)
    return (b"\x00\x00\x00\x0cjP  \r\n\x87\n" + _box(b"ftyp", b"jp2 \x00\x00\x00\x00jp2 ")
            + _box(b"jp2h", _box(b"ihdr", ihdr) + _box(b"colr", colr))
            + _box(b"jp2c", codestream))


def icns(entry_type: bytes, payload: bytes) -> bytes:
    entry = entry_type + struct.pack(">I", 8 + len(payload)) + payload
    return b"icns" + struct.pack(">I", 8 + len(entry)) + entry


def ico(payloads) -> bytes:
    """An ICO directory whose entries all say 256x256 (0), pointing at ``payloads``."""
    header = struct.pack("<HHH", 0, 1, len(payloads))
    offset = len(header) + 16 * len(payloads)
    entries, body = b"", b""
    for p in payloads:
        entries += struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(p), offset + len(body))
        body += p
    return header + entries + body


def dib_header(width: int, height: int) -> bytes:
    return struct.pack("<IiiHHIIiiII", 40, width, 2 * height, 1, 32, 0, 0, 0, 0, 0, 0)


def tiff(pages, tile=None) -> bytes:
    """Little-endian TIFF, 8-bit grey; each page (w, h) points at the same 16 pixel bytes."""
    pixels = bytes(range(16))
    out = bytearray(b"II*\x00" + struct.pack("<I", 8 + len(pixels)) + pixels)
    for index, (w, h) in enumerate(pages):
        tags = [(256, 4, w), (257, 4, h), (258, 3, 8), (259, 3, 1), (262, 3, 1),
                (277, 3, 1)]
        if tile:
            tags += [(322, 4, tile[0]), (323, 4, tile[1]), (324, 4, 8), (325, 4, 16)]
        else:
            tags += [(273, 4, 8), (278, 4, h), (279, 4, 16)]
        tags.sort()
        ifd_start = len(out)
        next_ifd = 0 if index == len(pages) - 1 else ifd_start + 2 + 12 * len(tags) + 4
        out += struct.pack("<H", len(tags))
        for tag, typ, value in tags:
            out += struct.pack("<HHI", tag, typ, 1)
            out += struct.pack("<HH", value, 0) if typ == 3 else struct.pack("<I", value)
        out += struct.pack("<I", next_ifd)
    return bytes(out)


def gif(canvas, frames) -> bytes:
    """GIF89a, 2-colour palette; each frame (x, y, w, h) carries one pixel of LZW data."""
    out = b"GIF89a" + struct.pack("<HHBBB", canvas[0], canvas[1], 0x80, 0, 0)
    out += b"\x00\x00\x00\xff\xff\xff"
    for x, y, w, h in frames:
        out += b"\x21\xf9\x04\x00\x0a\x00\x00\x00"          # graphic control: 100 ms
        out += b"\x2c" + struct.pack("<HHHHB", x, y, w, h, 0) + b"\x02\x02\x44\x01\x00"
    return out + b"\x3b"


def apng(canvas, frame) -> bytes:
    """APNG whose first fcTL frame (w, h) is larger than the IHDR canvas."""
    w, h = canvas
    raw = b"".join(b"\x00" + b"\x80" * (3 * w) for _ in range(h))
    fctl = struct.pack(">IIIIIHHBB", 0, frame[0], frame[1], 0, 0, 1, 10, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + _png_chunk(b"acTL", struct.pack(">II", 1, 0)) + _png_chunk(b"fcTL", fctl)
            + _png_chunk(b"IDAT", zlib.compress(raw)) + _png_chunk(b"IEND", b""))


def _webp_chunks(data: bytes):
    pos = 12
    while pos + 8 <= len(data):
        kind, length = struct.unpack_from("<4sI", data, pos)
        yield kind, pos
        pos += 8 + length + (length & 1)


def legit_webp_anim() -> bytes:
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255))]
    return encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=50,
                  lossless=True)


def webp_frame_outside_canvas() -> bytes:
    """An animated WebP whose second ANMF frame says 16000x16000 on a 16x16 canvas."""
    data = bytearray(legit_webp_anim())
    anmf = [pos for kind, pos in _webp_chunks(data) if kind == b"ANMF"]
    w1 = (16000 - 1).to_bytes(3, "little")
    data[anmf[1] + 8 + 6:anmf[1] + 8 + 12] = w1 + w1
    return bytes(data)


def legit_mpo() -> bytes:
    frames = [Image.new("RGB", (32, 24), c) for c in ((200, 0, 0), (0, 200, 0))]
    return encode(frames[0], "MPO", save_all=True, append_images=frames[1:])


def mpo_huge_second_frame() -> bytes:
    """MPO whose second frame's SOF declares 60000x60000 (the MP index is untouched)."""
    data = bytearray(legit_mpo())
    sofs = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xC0]
    data[sofs[-1] + 5:sofs[-1] + 9] = struct.pack(">HH", BIG, BIG)
    return bytes(data)


def psd_with_huge_layer() -> bytes:
    """PSD: 16x16 composite, one layer record whose rectangle is 400000x400000."""
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, 16, 16, 8, 3)
    layer = struct.pack(">iiiiH", 0, 0, HUGE, HUGE, 3)
    layer += b"".join(struct.pack(">hI", c, 2) for c in (0, 1, 2))
    layer += b"8BIMnorm" + struct.pack(">BBBBI", 255, 0, 0, 0, 8) + b"\x00" * 8
    layers = struct.pack(">h", 1) + layer + b"\x00\x00" * 3
    info = struct.pack(">I", len(layers)) + layers
    body = struct.pack(">I", 0) + struct.pack(">I", 0) + struct.pack(">I", len(info)) + info
    return header + body + struct.pack(">H", 0) + b"\x00" * (16 * 16 * 3)


HOSTILE: Dict[str, Callable[[], bytes]] = {
    # the reproducer: ICNS says 512x512 outside, its JPEG 2000 says 400000^2
    "icns_j2k.icns": lambda: icns(b"ic09", j2k_codestream(HUGE, HUGE)),
    "icns_jp2.icns": lambda: icns(b"ic09", jp2(512, 512, j2k_codestream(HUGE, HUGE))),
    "icns_png.icns": lambda: icns(b"ic09", png_header_only(HUGE, HUGE)),
    "ico_png.ico": lambda: ico([png_header_only(HUGE, HUGE)]),
    "ico_bmp.ico": lambda: ico([dib_header(BIG, BIG)]),
    "ico_second_entry.ico": lambda: ico([encode(Image.new("RGBA", (16, 16)), "PNG"),
                                         png_header_only(HUGE, HUGE)]),
    "mpo_frame.jpg": mpo_huge_second_frame,
    "tiff_page2.tif": lambda: tiff([(4, 4), (HUGE, HUGE)]),
    "tiff_tile.tif": lambda: tiff([(4, 4)], tile=(1 << 20, 1 << 20)),
    "jp2_codestream.jp2": lambda: jp2(64, 64, j2k_codestream(HUGE, HUGE)),
    "jp2_tile.jp2": lambda: jp2(64, 64, j2k_codestream(64, 64, tile=(1 << 20, 1 << 20))),
    "j2k_tiles.j2k": lambda: j2k_codestream(8000, 8000, tile=(32, 32)),
    "gif_frame0.gif": lambda: gif((16, 16), [(0, 0, BIG, BIG)]),
    "gif_frame2.gif": lambda: gif((16, 16), [(0, 0, 16, 16), (0, 0, BIG, BIG)]),
    "apng_frame.png": lambda: apng((16, 16), (BIG, BIG)),
    "webp_frame.webp": webp_frame_outside_canvas,
    "psd_layer.psd": psd_with_huge_layer,
}

LEGIT: Dict[str, Callable[[], bytes]] = {
    "icns.icns": lambda: encode(Image.new("RGB", (64, 64), (10, 120, 200)), "ICNS"),
    "ico.ico": lambda: encode(Image.new("RGB", (32, 32), (10, 120, 200)), "ICO",
                              sizes=[(16, 16), (32, 32)]),
    "mpo.jpg": legit_mpo,
    "tiff_pages.tif": lambda: tiff([(4, 4), (4, 4)]),
    "tiff_tiled.tif": lambda: tiff([(4, 4)], tile=(16, 16)),
    "jp2.jp2": lambda: encode(Image.new("RGB", (40, 30), (10, 120, 200)), "JPEG2000"),
    "j2k.j2k": lambda: encode(Image.new("RGB", (40, 30), (10, 120, 200)), "JPEG2000",
                              no_jp2=True, tile_size=(16, 16)),
    "gif_anim.gif": lambda: gif((16, 16), [(0, 0, 1, 1), (4, 4, 1, 1)]),
    "apng.png": lambda: apng((16, 16), (16, 16)),
    "webp_anim.webp": legit_webp_anim,
    "jpeg.jpg": lambda: jpeg_bytes((64, 48)),
    "bmp.bmp": lambda: encode(Image.new("RGB", (20, 10), (1, 2, 3)), "BMP"),
}
