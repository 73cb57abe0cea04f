"""Decoding image bytes into RGB pictures, the one way every step does it."""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, ImageOps

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
MAX_IMAGE_PIXELS = 89_478_485  # Pillow's default decompression-bomb limit, set explicitly


@dataclass(frozen=True)
class DecodedImage:
    """An image that decoded fully, with its size after EXIF orientation."""

    image: Image.Image
    width: int
    height: int


def decode_image(data: bytes) -> DecodedImage:
    """Fully decode image bytes into an RGB picture, applying EXIF orientation.

    The format is read from the content, not from a file name.

    Raises:
        ValueError: when the bytes are empty, not an image, truncated or too large to decode safely.
    """
    if not data:
        raise ValueError("empty file")
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            image = ImageOps.exif_transpose(opened)
            rgb = image.convert("RGB")
    except Image.DecompressionBombError as error:
        raise ValueError(f"decompression bomb: {error}") from None
    except Image.UnidentifiedImageError:
        raise ValueError("not an image: the content is no format Pillow can read") from None
    except (OSError, SyntaxError) as error:
        raise ValueError(f"image does not decode fully: {error}") from None
    return DecodedImage(image=rgb, width=rgb.width, height=rgb.height)
