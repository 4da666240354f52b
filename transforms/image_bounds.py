"""Every size an image file declares, checked against the pixel cap before any decoder allocates.

Why this exists: Pillow's own decompression-bomb check looks at the size a plugin
reports, which for container formats is the *outer* size. A file can declare a small
image outside and a huge one inside (an ICNS or ICO entry, an MPO frame, a TIFF page,
the codestream of a JP2 box, a GIF/APNG/WebP frame larger than its canvas), and the
decoder then allocates from the inner number. These walkers read only headers (chunk,
box, IFD and marker lengths, never pixel data), so they cost microseconds, and they
refuse a file when *any* image it declares, at any nesting level, exceeds the cap.

Formats without a walker here are refused by ``decode`` unless listed in
``BOUNDED_FORMATS``; PSD and other layered formats are refused on purpose.
"""

from __future__ import annotations

import struct
from typing import Callable, Iterator, Optional, Tuple

from PIL import Image

from transforms.decode_errors import DecodeError, ImageTooLarge, UndecodableImage
from transforms.jpeg_structure import SOF_MARKERS, jpeg_segments

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
J2K_SIGNATURE = b"\xff\x4f\xff\x51"

# Formats whose every declared size is bounded here (or, for BMP, is only the header
# Pillow already checks). MPO arrives through Pillow's JPEG plugin.
BOUNDED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "ICO", "ICNS", "JPEG2000")

MAX_TIFF_PAGES = 1024      # pages walked; a file with more is refused
MAX_J2K_TILES = 4096       # OpenJPEG allocates per-tile state before any pixel

Size = Tuple[int, int]


def _refuse_if_over(what: str, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageTooLarge(f"{what} declares {width}x{height} = {width * height} pixels; "
                            f"expected at most {max_pixels}")


def _refuse_outside(what: str, rect: Tuple[int, int, int, int], canvas: Size) -> None:
    x, y, w, h = rect
    if x + w > canvas[0] or y + h > canvas[1]:
        raise ImageTooLarge(f"{what} declares {w}x{h} at ({x},{y}), outside the "
                            f"{canvas[0]}x{canvas[1]} canvas; expected it inside")


def _unpack(fmt: str, data: bytes, offset: int, what: str) -> tuple:
    try:
        return struct.unpack_from(fmt, data, offset)
    except struct.error as exc:
        raise UndecodableImage(f"truncated {what} at byte {offset}") from exc


# --- PNG / APNG --------------------------------------------------------------------

def png_chunks(data: bytes, start: int = 0) -> Iterator[Tuple[bytes, int, int]]:
    """(type, payload offset, payload length) of each chunk, up to IEND or the end."""
    pos = start + len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        yield kind, pos + 8, length
        if kind == b"IEND":
            return
        pos += 12 + length


def png_size(data: bytes, start: int = 0) -> Size:
    """The IHDR width and height of the PNG starting at ``start``."""
    for kind, off, _ in png_chunks(data, start):
        if kind != b"IHDR":
            break
        return _unpack(">II", data, off, "PNG IHDR")
    raise UndecodableImage(f"PNG at byte {start} has no IHDR first")


def check_png(data: bytes, max_pixels: int) -> None:
    """APNG: every fcTL frame must lie inside the IHDR canvas (which Pillow checked)."""
    canvas = png_size(data)
    _refuse_if_over("PNG IHDR", *canvas, max_pixels)
    frame = 0
    for kind, off, _ in png_chunks(data):
        if kind == b"fcTL":
            _, w, h, x, y = _unpack(">5I", data, off, "APNG fcTL")
            _refuse_outside(f"APNG frame {frame}", (x, y, w, h), canvas)
            frame += 1


# --- GIF ---------------------------------------------------------------------------

def _skip_sub_blocks(data: bytes, pos: int) -> int:
    while pos < len(data):
        size = data[pos]
        pos += 1 + size
        if size == 0:
            return pos
    return pos


def check_gif(data: bytes, max_pixels: int) -> None:
    """Every image descriptor must lie inside the logical screen.

    Pillow grows the canvas to fit an oversized frame, so one descriptor of
    60000x60000 on a 16x16 screen would otherwise allocate 3.6 G pixels.
    """
    canvas = _unpack("<HH", data, 6, "GIF logical screen")
    _refuse_if_over("GIF logical screen", *canvas, max_pixels)
    flags = data[10] if len(data) > 10 else 0
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    frame = 0
    while pos < len(data):
        block = data[pos]
        if block == 0x21:                       # extension: label, then sub-blocks
            pos = _skip_sub_blocks(data, pos + 2)
        elif block == 0x2C:                     # image descriptor
            x, y, w, h, fl = _unpack("<HHHHB", data, pos + 1, "GIF image descriptor")
            _refuse_outside(f"GIF frame {frame}", (x, y, w, h), canvas)
            frame += 1
            pos += 10 + (3 << ((fl & 7) + 1) if fl & 0x80 else 0)
            pos = _skip_sub_blocks(data, pos + 1)   # LZW minimum code size, then data
        else:                                   # trailer or garbage: the decoder stops too
            return


# --- WebP --------------------------------------------------------------------------

def _riff_chunks(data: bytes, start: int, end: int) -> Iterator[Tuple[bytes, int, int]]:
    pos = start
    while pos + 8 <= end:
        kind, length = struct.unpack_from("<4sI", data, pos)
        yield kind, pos + 8, length
        pos += 8 + length + (length & 1)


def _u24(data: bytes, off: int) -> int:
    b = data[off:off + 3]
    if len(b) < 3:
        raise UndecodableImage(f"truncated WebP header at byte {off}")
    return b[0] | b[1] << 8 | b[2] << 16


def _webp_bitstream_size(kind: bytes, data: bytes, off: int) -> Optional[Size]:
    if kind == b"VP8 " and data[off + 3:off + 6] == b"\x9d\x01\x2a":
        w, h = _unpack("<HH", data, off + 6, "VP8 frame header")
        return w & 0x3FFF, h & 0x3FFF
    if kind == b"VP8L" and data[off:off + 1] == b"\x2f":
        (bits,) = _unpack("<I", data, off + 1, "VP8L header")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def check_webp(data: bytes, max_pixels: int) -> None:
    """VP8X canvas, every ANMF frame inside it, every bitstream inside its frame."""
    end = min(len(data), 8 + _unpack("<I", data, 4, "RIFF header")[0])
    canvas: Optional[Size] = None
    frame = 0
    for kind, off, length in _riff_chunks(data, 12, end):
        if kind == b"VP8X":
            canvas = (_u24(data, off + 4) + 1, _u24(data, off + 7) + 1)
            _refuse_if_over("WebP VP8X canvas", *canvas, max_pixels)
        elif kind == b"ANMF":
            rect = (2 * _u24(data, off), 2 * _u24(data, off + 3),
                    _u24(data, off + 6) + 1, _u24(data, off + 9) + 1)
            if canvas is None:
                raise UndecodableImage("WebP ANMF frame before any VP8X canvas")
            _refuse_outside(f"WebP frame {frame}", rect, canvas)
            for sub, soff, _ in _riff_chunks(data, off + 16, off + length):
                size = _webp_bitstream_size(sub, data, soff)
                if size is not None:
                    _refuse_outside(f"WebP frame {frame} bitstream", (0, 0) + size, rect[2:])
            frame += 1
        else:
            size = _webp_bitstream_size(kind, data, off)
            if size is not None:
                _refuse_if_over("WebP bitstream", *size, max_pixels)
                if canvas is not None:
                    _refuse_outside("WebP bitstream", (0, 0) + size, canvas)


# --- JPEG / MPO --------------------------------------------------------------------

def jpeg_size(data: bytes, start: int = 0) -> Optional[Size]:
    """The SOF width and height of the JPEG starting at ``start``; None if it has none."""
    for marker, off, _ in jpeg_segments(data, start):
        if marker in SOF_MARKERS:
            h, w = _unpack(">HH", data, off + 1, "JPEG SOF")
            return w, h
    return None


def _mp_header_offset(data: bytes) -> int:
    """Where the MP header (after "MPF\\0" in APP2) starts: MP offsets count from it."""
    for marker, off, _ in jpeg_segments(data):
        if marker == 0xE2 and data[off:off + 4] == b"MPF\x00":
            return off + 4
    raise UndecodableImage("MPO file has no APP2 MPF segment")


def check_mpo(img: Image.Image, data: bytes, max_pixels: int) -> None:
    """Every frame of the MP index, not only the first one Pillow decodes."""
    entries = (getattr(img, "mpinfo", None) or {}).get(0xB002, ())
    base = _mp_header_offset(data) if len(entries) > 1 else 0
    for index, entry in enumerate(entries):
        offset = 0 if index == 0 else base + entry["DataOffset"]
        if not 0 <= offset < len(data):
            raise UndecodableImage(f"MPO frame {index} starts at byte {offset}, "
                                   f"outside the {len(data)}-byte file")
        size = jpeg_size(data, offset)
        if size is not None:
            _refuse_if_over(f"MPO frame {index} SOF", *size, max_pixels)


# --- TIFF --------------------------------------------------------------------------

def check_tiff(img: Image.Image, max_pixels: int) -> None:
    """Every page's size and tile size, read from its IFD (Pillow's seek reads no pixels)."""
    try:
        for page in range(MAX_TIFF_PAGES + 1):
            try:
                img.seek(page)
            except EOFError:
                break
            if page == MAX_TIFF_PAGES:
                raise ImageTooLarge(f"TIFF has more than {MAX_TIFF_PAGES} pages; "
                                    f"expected at most {MAX_TIFF_PAGES}")
            _refuse_if_over(f"TIFF page {page}", *img.size, max_pixels)
            tile = (img.tag_v2.get(322), img.tag_v2.get(323))   # TileWidth, TileLength
            if tile[0] and tile[1]:
                _refuse_if_over(f"TIFF page {page} tile", tile[0], tile[1], max_pixels)
    except DecodeError:
        raise
    except (SyntaxError, ValueError, OSError, struct.error) as exc:
        raise UndecodableImage(f"TIFF page {page}: {exc}") from exc
    finally:
        img.seek(0)


# --- JPEG 2000 ---------------------------------------------------------------------

def check_j2k_codestream(data: bytes, start: int, max_pixels: int,
                         outer: Optional[Size] = None) -> None:
    """SIZ marker: image area, tile area and tile count; and it must match ``outer``."""
    if data[start:start + 4] != J2K_SIGNATURE:
        raise UndecodableImage(f"expected a JPEG 2000 codestream (SOC, SIZ) at byte {start}")
    (_, _, xsiz, ysiz, xo, yo, xt, yt, xto, yto, csiz) = _unpack(
        ">HHIIIIIIIIH", data, start + 4, "JPEG 2000 SIZ")
    w, h = xsiz - xo, ysiz - yo
    if w <= 0 or h <= 0 or xt == 0 or yt == 0 or xto > xo or yto > yo:
        raise UndecodableImage(f"JPEG 2000 SIZ declares an invalid image {xsiz}x{ysiz} "
                               f"offset ({xo},{yo}) tile {xt}x{yt} offset ({xto},{yto})")
    _refuse_if_over("JPEG 2000 codestream SIZ", w, h, max_pixels)
    _refuse_if_over("JPEG 2000 tile", xt, yt, max_pixels)
    tiles = -(-(xsiz - xto) // xt) * -(-(ysiz - yto) // yt)
    if tiles > MAX_J2K_TILES:
        raise ImageTooLarge(f"JPEG 2000 SIZ declares {tiles} tiles of {xt}x{yt}; "
                            f"expected at most {MAX_J2K_TILES}")
    if csiz > 4:
        raise ImageTooLarge(f"JPEG 2000 SIZ declares {csiz} components; expected at most 4")
    if outer is not None and outer != (w, h):
        raise ImageTooLarge(f"JP2 header declares {outer[0]}x{outer[1]} but its codestream "
                            f"declares {w}x{h}; expected them equal")


def _jp2_boxes(data: bytes, start: int, end: int) -> Iterator[Tuple[bytes, int, int]]:
    """(type, payload offset, payload end) of each ISO box between start and end."""
    pos = start
    while pos + 8 <= end:
        length, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if length == 1:
            (length,) = _unpack(">Q", data, pos + 8, "JP2 box")
            header = 16
        elif length == 0:
            length = end - pos
        if length < header:
            raise UndecodableImage(f"JP2 box {kind!r} at byte {pos} has length {length}")
        yield kind, pos + header, min(pos + length, end)
        pos += length


def check_jpeg2000(data: bytes, max_pixels: int, start: int = 0) -> None:
    """Both forms: a bare codestream, or JP2 boxes whose ihdr must match the codestream."""
    if data[start:start + 4] == J2K_SIGNATURE:
        check_j2k_codestream(data, start, max_pixels)
        return
    outer: Optional[Size] = None
    found = False
    for kind, off, end in _jp2_boxes(data, start, len(data)):
        if kind == b"jp2h":
            for sub, soff, _ in _jp2_boxes(data, off, end):
                if sub == b"ihdr":
                    h, w = _unpack(">II", data, soff, "JP2 ihdr")
                    _refuse_if_over("JP2 ihdr", w, h, max_pixels)
                    outer = (w, h)
        elif kind == b"jp2c":
            check_j2k_codestream(data, off, max_pixels, outer)
            found = True
    if not found:
        raise UndecodableImage("JP2 file has no jp2c codestream box")


# --- ICO / ICNS: containers of PNG, BMP or JPEG 2000 -----------------------------

def _check_embedded(what: str, data: bytes, start: int, max_pixels: int) -> bool:
    """A PNG or JPEG 2000 embedded at ``start``; True if it was one of those."""
    head = data[start:start + 12]
    if head.startswith(PNG_SIGNATURE):
        _refuse_if_over(f"{what} (embedded PNG)", *png_size(data, start), max_pixels)
        return True
    if head.startswith(J2K_SIGNATURE) or head == JP2_SIGNATURE:
        check_jpeg2000(data, max_pixels, start)
        return True
    return False


def check_ico(data: bytes, max_pixels: int) -> None:
    """Every directory entry's embedded PNG or DIB header, not only the largest."""
    (count,) = _unpack("<H", data, 4, "ICO header")
    for index in range(count):
        size, offset = _unpack("<II", data, 6 + 16 * index + 8, "ICO directory")
        what = f"ICO entry {index}"
        if offset >= len(data):
            raise UndecodableImage(f"{what} starts at byte {offset}, outside the "
                                   f"{len(data)}-byte file")
        if not _check_embedded(what, data, offset, max_pixels):
            _, w, h = _unpack("<Iii", data, offset, "ICO DIB header")
            _refuse_if_over(f"{what} (embedded BMP)", abs(w), abs(h) // 2, max_pixels)


def check_icns(data: bytes, max_pixels: int) -> None:
    """Every resource that holds a PNG or JPEG 2000; the others have fixed sizes."""
    (total,) = _unpack(">I", data, 4, "ICNS header")
    pos, end = 8, min(total, len(data))
    while pos + 8 <= end:
        kind, length = struct.unpack_from(">4sI", data, pos)
        if length < 8:
            raise UndecodableImage(f"ICNS entry {kind!r} at byte {pos} has length {length}")
        _check_embedded(f"ICNS entry {kind.decode('latin-1')}", data, pos + 8, max_pixels)
        pos += length


# --- dispatch ----------------------------------------------------------------------

_BYTE_CHECKS: Tuple[Tuple[str, Callable[[bytes], bool], Callable[[bytes, int], None]], ...] = (
    ("PNG", lambda d: d.startswith(PNG_SIGNATURE), check_png),
    ("GIF", lambda d: d[:6] in (b"GIF87a", b"GIF89a"), check_gif),
    ("WEBP", lambda d: d[:4] == b"RIFF" and d[8:12] == b"WEBP", check_webp),
    ("ICO", lambda d: d[:4] == b"\x00\x00\x01\x00", check_ico),
    ("ICNS", lambda d: d[:4] == b"icns", check_icns),
    ("JPEG2000", lambda d: d[:4] == J2K_SIGNATURE or d[:12] == JP2_SIGNATURE, check_jpeg2000),
)


def check_bytes(data: bytes, max_pixels: int, formats: Tuple[str, ...]) -> None:
    """Before Pillow sees the file: walk the headers of the format its magic bytes name.

    Runs first so that Pillow's own plugins never parse a hostile inner header (some
    grow the canvas to fit an oversized frame, others reject it as "not an image").
    """
    for fmt, sniff, check in _BYTE_CHECKS:
        if fmt in formats and sniff(data):
            check(data, max_pixels)
            return


def check_opened(img: Image.Image, data: bytes, max_pixels: int) -> None:
    """After Pillow read the headers (no pixels): the sizes only its parse exposes.

    MPO frames come from Pillow's MP index, TIFF pages from its IFD walk. The outer size
    itself is checked by the caller (decode.open_checked) before this runs.
    """
    if img.format == "MPO":
        check_mpo(img, data, max_pixels)
    elif img.format == "TIFF":
        check_tiff(img, max_pixels)
