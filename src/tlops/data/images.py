"""Decoding image bytes into RGB pictures, the one way every step does it.

Validation, in order: the bytes are not empty; the content (never the file name) is one of the supported
formats; the declared size is within the pixel limit, checked on the header before any pixel is allocated; the
container is intact (``Image.verify``: chunk checksums, and for PNG a complete ``IEND`` chunk); the pixels
decode fully (``ImageFile.LOAD_TRUNCATED_IMAGES`` is left ``False``, so a truncated stream is an error).

Conversion to 8-bit RGB is deterministic and the same for every step (:func:`to_rgb`):

- EXIF orientation is applied first, so width and height are those of the picture as displayed.
- Transparency (``RGBA``, ``LA``, ``PA``, a palette or colour key with ``transparency``) is composited over
  white, not dropped: a transparent pixel is white whatever colour it hides.
- 16-bit grey (``I;16``, ``I;16L``, ``I;16B``, ``I;16N``) is rescaled to 8 bits as ``round(v / 257)``
  (0 -> 0, 32768 -> 128, 65535 -> 255), where Pillow's own conversion would saturate everything above 255.
- 32-bit integer grey (``I``) is read as 16-bit samples (how Pillow opens many 16-bit files): clipped to
  0..65535, then rescaled as above.
- 32-bit float grey (``F``) is read on the 0..1 scale of float image files: clipped to 0..1 and mapped to
  ``round(x * 255)``; NaN becomes 0.
- Every other mode (``L``, ``1``, ``P``, ``CMYK``, ``YCbCr``, ...) goes through Pillow's ``convert("RGB")``;
  Adobe-inverted CMYK JPEGs are already un-inverted by Pillow's JPEG reader. ICC profiles are not applied.
"""

from __future__ import annotations

import io
import struct
import threading
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

# The usual extensions of the supported formats (for messages: files are read whatever their name).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
# Pillow readers of the supported formats (the JPEG reader also opens camera MPO files, reported as "MPO"). Naming
# them in Image.open keeps other content away from Pillow's other plugins, some of which run programs (EPS).
SUPPORTED_FORMATS = ("BMP", "GIF", "JPEG", "PNG", "TIFF", "WEBP")
# ISO base media brands (bytes 8..12 of an ``ftyp`` box) of formats people take for images.
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
MAX_IMAGE_PIXELS = 89_478_485  # Pillow's default decompression-bomb limit, enforced here on every decode

_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_WHITE = (255, 255, 255, 255)
# How many times decode_image ran in this process (for benchmarks and tests that assert a pass was skipped).
_decodes = 0
_decodes_lock = threading.Lock()


class InvalidImageError(ValueError):
    """Image bytes that tlops refuses to use; the message is a short reason fit for a quarantine list."""


@dataclass(frozen=True)
class DecodedImage:
    """An image that decoded fully.

    Attributes:
        image: The picture in mode ``RGB``, EXIF orientation applied.
        width: Width after EXIF orientation.
        height: Height after EXIF orientation.
        format: Format detected from the content (Pillow's name, e.g. ``"PNG"``, ``"JPEG"``).
    """

    image: Image.Image
    width: int
    height: int
    format: str


def decode_count() -> int:
    """How many times :func:`decode_image` was called in this process (failed decodes included)."""
    return _decodes


def decode_image(data: bytes, *, max_pixels: int = MAX_IMAGE_PIXELS) -> DecodedImage:
    """Fully decode image bytes into an RGB picture, applying EXIF orientation.

    The format is read from the content, not from a file name. Nothing global is changed: the pixel limit is
    checked here on the header, whatever ``PIL.Image.MAX_IMAGE_PIXELS`` says.

    Args:
        data: The whole file.
        max_pixels: Largest width x height accepted; larger images are rejected before any pixel is decoded.

    Returns:
        The RGB picture, its size and the detected format.

    Raises:
        InvalidImageError: (a ``ValueError``) when the bytes are empty, not an image of a supported format,
            truncated or corrupt, or too large to decode safely.
    """
    global _decodes
    with _decodes_lock:
        _decodes += 1
    if not data:
        raise InvalidImageError("empty file")
    try:
        image_format = _check_container(data, max_pixels)
        with Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS) as opened:
            opened.load()
            rgb = to_rgb(ImageOps.exif_transpose(opened))
    except InvalidImageError:
        raise
    except Image.DecompressionBombError as error:
        raise InvalidImageError(f"decompression bomb: {error}") from None
    except Image.UnidentifiedImageError:
        kind = sniff_kind(data)
        named = f" ({kind})" if kind else ""
        raise InvalidImageError(
            f"not an image{named}: the content is none of {', '.join(SUPPORTED_FORMATS)}"
            + ("; convert it to JPEG or PNG" if kind in ("SVG", "HEIC/HEIF", "AVIF", "PDF") else "")
        ) from None
    except MemoryError:
        raise
    except Exception as error:  # Pillow's plugins raise assorted types (OSError, SyntaxError, struct.error, ...)
        raise InvalidImageError(f"image does not decode fully: {error}") from None
    return DecodedImage(image=rgb, width=rgb.width, height=rgb.height, format=image_format)


def sniff_kind(data: bytes) -> str:
    """Name what some bytes that are no supported image are, from their first bytes, for a quarantine reason.

    Returns:
        ``"SVG"``, ``"HEIC/HEIF"``, ``"AVIF"``, ``"MP4/MOV video"``, ``"PDF"``, ``"ZIP archive"``, ``"HTML"``,
        ``"text"``, or ``""`` when unknown.
    """
    head = data[:4096]
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _HEIF_BRANDS:
            return "HEIC/HEIF"
        return "AVIF" if brand in _AVIF_BRANDS else "MP4/MOV video"
    if head.startswith(b"%PDF"):
        return "PDF"
    if head.startswith(b"PK\x03\x04"):
        return "ZIP archive"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<svg", b"<?xml", b"<!doctype svg")) and b"<svg" in text:
        return "SVG"
    if text.startswith((b"<!doctype html", b"<html")):
        return "HTML"
    try:
        decoded = head.decode("utf-8")
    except UnicodeDecodeError:
        decoded = ""  # binary, or a multi-byte character cut at 4096: not worth telling apart
    return "text" if decoded and all(c.isprintable() or c in "\t\r\n" for c in decoded) else ""


def _check_container(data: bytes, max_pixels: int) -> str:
    """Identify the format, check the declared size and verify the container, all without decoding pixels."""
    with Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS) as header:  # lazy: reads the header only
        image_format = str(header.format)
        width, height = header.size
        if width * height > max_pixels:
            raise InvalidImageError(
                f"decompression bomb: {width}x{height} = {width * height} pixels exceeds the limit of {max_pixels}"
            )
        try:
            header.verify()
        except Exception as error:
            raise InvalidImageError(f"truncated or corrupt {image_format} file: {error}") from None
    if image_format == "PNG" and not _png_has_end(data):
        raise InvalidImageError("truncated PNG file: no complete IEND chunk")
    return image_format


def _png_has_end(data: bytes) -> bool:
    """Whether the PNG's chunks lead, each complete, to an IEND chunk with its checksum."""
    offset = len(_PNG_SIGNATURE)
    while offset + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, offset)
        end = offset + 12 + length
        if end > len(data):
            return False
        if kind == b"IEND":
            return zlib.crc32(data[offset + 4 : end - 4]) == int.from_bytes(data[end - 4 : end], "big")
        offset = end
    return False


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert a decoded image of any Pillow mode to 8-bit RGB, as described in the module docstring.

    Args:
        image: A loaded image.

    Returns:
        A new image in mode ``RGB`` (or ``image`` itself when it already is).
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16") or mode == "I":
        samples = np.clip(np.asarray(image), 0, 65535).astype(np.uint32)
        return Image.fromarray(((samples * 255 + 32767) // 65535).astype(np.uint8)).convert("RGB")
    if mode == "F":
        samples = np.nan_to_num(np.asarray(image, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        return Image.fromarray(np.rint(np.clip(samples, 0.0, 1.0) * 255).astype(np.uint8)).convert("RGB")
    if mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, _WHITE), rgba).convert("RGB")
    return image.convert("RGB")
