"""decode_image: format from content, full decode, deterministic RGB conversion, EXIF orientation, bomb limit."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tlops.data.images import DecodedImage, InvalidImageError, decode_image

# --- files written with Pillow (or, for the bombs, by hand) into tmp_path --------------------------------------


def _save(tmp_path: Path, name: str, image: Image.Image, fmt: str, **options: object) -> Path:
    path = tmp_path / name
    image.save(path, fmt, **options)
    return path


def _noise(size: tuple[int, int] = (48, 32), seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _decode(path: Path) -> DecodedImage:
    return decode_image(path.read_bytes())


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _write_bilevel_png(path: Path, width: int, height: int) -> Path:
    """A complete, valid 1-bit PNG of any size, compressed row by row so it never exists in memory."""
    compressor = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)  # filter byte 0, then all-black pixels
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, greyscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))
    return path


# --- what the content is, whatever the name says --------------------------------------------------------------


def test_png_named_jpg_is_accepted_and_reported_as_png(tmp_path: Path) -> None:
    decoded = _decode(_save(tmp_path, "photo.jpg", _noise((48, 32)), "PNG"))

    assert decoded.format == "PNG"
    assert (decoded.width, decoded.height) == (48, 32)
    assert decoded.image.mode == "RGB"
    assert np.array_equal(np.asarray(decoded.image), np.asarray(_noise((48, 32))))  # lossless, pixel for pixel


def test_formats_are_detected_from_content(tmp_path: Path) -> None:
    image = _noise()
    frames = [image, _noise(seed=1)]
    paths = {
        "JPEG": _save(tmp_path, "a.png", image, "JPEG"),
        "BMP": _save(tmp_path, "b.png", image, "BMP"),
        "GIF": _save(tmp_path, "c.png", image.convert("P"), "GIF"),
        "TIFF": _save(tmp_path, "d.png", image, "TIFF"),
        "WEBP": _save(tmp_path, "e.png", image, "WEBP"),
        "MPO": _save(tmp_path, "f.jpg", image, "MPO", save_all=True, append_images=frames[1:]),  # camera JPEGs
    }

    for fmt, path in paths.items():
        decoded = _decode(path)
        assert (decoded.format, decoded.width, decoded.height, decoded.image.mode) == (fmt, 48, 32, "RGB")


def test_text_file_named_png_is_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("these are my notes, not a picture\n")

    with pytest.raises(InvalidImageError, match=r"^not an image"):
        _decode(path)


def test_zero_byte_file_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")

    with pytest.raises(ValueError, match=r"^empty file$"):
        _decode(path)


def test_image_of_an_unsupported_format_is_rejected(tmp_path: Path) -> None:
    # PPM is an image Pillow reads, but no extension tlops lists: only the listed formats are opened.
    path = _save(tmp_path, "portable.png", _noise(), "PPM")

    with pytest.raises(InvalidImageError, match=r"^not an image: the content is none of BMP, GIF, JPEG"):
        _decode(path)


# --- the image must decode fully ------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", [2, 100, "half"])
def test_truncated_jpeg_is_rejected(tmp_path: Path, missing: int | str) -> None:
    data = _save(tmp_path, "full.jpg", _noise((64, 64)), "JPEG", quality=90).read_bytes()
    cut = len(data) // 2 if missing == "half" else len(data) - int(missing)
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[:cut])

    with pytest.raises(InvalidImageError, match="truncated"):
        _decode(path)


@pytest.mark.parametrize("missing", [1, 4, 12, 20, "half"])  # 1 and 4: only IEND's checksum; 12: all of IEND
def test_truncated_png_is_rejected(tmp_path: Path, missing: int | str) -> None:
    data = _save(tmp_path, "full.png", _noise((64, 64)), "PNG").read_bytes()
    cut = len(data) // 2 if missing == "half" else len(data) - int(missing)
    path = tmp_path / "cut.png"
    path.write_bytes(data[:cut])

    with pytest.raises(InvalidImageError, match="truncated"):
        _decode(path)


def test_png_with_bytes_after_iend_is_accepted(tmp_path: Path) -> None:
    data = _save(tmp_path, "full.png", _noise(), "PNG").read_bytes()
    path = tmp_path / "padded.png"
    path.write_bytes(data + b"\x00" * 16)  # some tools pad files; the image itself is complete

    assert _decode(path).format == "PNG"


def test_png_with_a_corrupt_chunk_is_rejected(tmp_path: Path) -> None:
    data = bytearray(_save(tmp_path, "full.png", _noise((64, 64)), "PNG").read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside the compressed pixels
    path = tmp_path / "flipped.png"
    path.write_bytes(bytes(data))

    with pytest.raises(InvalidImageError, match=r"^truncated or corrupt PNG file"):
        _decode(path)


# --- modes become RGB deterministically -----------------------------------------------------------------------


def _pixels(decoded: DecodedImage) -> list[tuple[int, ...]]:
    assert decoded.image.mode == "RGB"
    return [tuple(int(v) for v in pixel) for pixel in np.asarray(decoded.image).reshape(-1, 3)]


def test_16_bit_png_is_rescaled_not_saturated(tmp_path: Path) -> None:
    samples = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    path = _save(tmp_path, "depth.png", Image.fromarray(samples), "PNG")
    assert Image.open(path).mode == "I;16"

    assert _pixels(_decode(path)) == [(0, 0, 0), (1, 1, 1), (128, 128, 128), (255, 255, 255)]


def test_big_endian_16_bit_tiff_is_rescaled(tmp_path: Path) -> None:
    samples = np.array([[0, 257, 32768, 65535]], dtype=">u2")
    path = _save(tmp_path, "depth.tif", Image.frombytes("I;16B", (4, 1), samples.tobytes()), "TIFF")
    assert Image.open(path).mode == "I;16B"

    assert _pixels(_decode(path)) == [(0, 0, 0), (1, 1, 1), (128, 128, 128), (255, 255, 255)]


def test_32_bit_integer_tiff_is_read_as_16_bit_samples(tmp_path: Path) -> None:
    samples = np.array([[-5, 0, 32768, 65535, 70000]], dtype=np.int32)
    path = _save(tmp_path, "int.tif", Image.fromarray(samples), "TIFF")
    assert Image.open(path).mode == "I"

    assert [p[0] for p in _pixels(_decode(path))] == [0, 0, 128, 255, 255]


def test_float_tiff_is_read_on_the_0_to_1_scale(tmp_path: Path) -> None:
    samples = np.array([[np.nan, -1.0, 0.0, 0.5, 1.0, 2.0]], dtype=np.float32)
    path = _save(tmp_path, "float.tif", Image.fromarray(samples), "TIFF")
    assert Image.open(path).mode == "F"

    assert [p[0] for p in _pixels(_decode(path))] == [0, 0, 0, 128, 255, 255]


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_transparent_palette_pixel_becomes_white_not_black(tmp_path: Path, fmt: str) -> None:
    image = Image.new("P", (3, 1))
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255])  # index 0 black (transparent), 1 red, 2 blue
    image.putdata([0, 1, 2])
    path = _save(tmp_path, f"palette.{fmt.lower()}", image, fmt, transparency=0)
    assert Image.open(path).mode == "P"

    assert _pixels(_decode(path)) == [(255, 255, 255), (255, 0, 0), (0, 0, 255)]


def test_palette_without_transparency_keeps_its_colours(tmp_path: Path) -> None:
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 0, 0, 128, 0])
    image.putdata([0, 1])

    assert _pixels(_decode(_save(tmp_path, "palette.png", image, "PNG"))) == [(0, 0, 0), (0, 128, 0)]


def test_rgba_is_composited_over_white(tmp_path: Path) -> None:
    image = Image.new("RGBA", (3, 1))
    image.putdata([(255, 0, 0, 0), (255, 0, 0, 128), (10, 20, 30, 255)])

    transparent, half, opaque = _pixels(_decode(_save(tmp_path, "rgba.png", image, "PNG")))
    assert transparent == (255, 255, 255)
    assert half[0] == 255 and all(abs(v - 127) <= 1 for v in half[1:])
    assert opaque == (10, 20, 30)


def test_grey_with_alpha_is_composited_over_white(tmp_path: Path) -> None:
    image = Image.new("LA", (2, 1))
    image.putdata([(0, 0), (40, 255)])

    assert _pixels(_decode(_save(tmp_path, "la.png", image, "PNG"))) == [(255, 255, 255), (40, 40, 40)]


def test_grey_is_repeated_on_three_channels(tmp_path: Path) -> None:
    image = Image.new("L", (2, 1))
    image.putdata([0, 200])

    assert _pixels(_decode(_save(tmp_path, "grey.png", image, "PNG"))) == [(0, 0, 0), (200, 200, 200)]


def test_cmyk_jpeg_is_converted(tmp_path: Path) -> None:
    image = Image.new("CMYK", (32, 16), (255, 0, 0, 0))  # left: pure cyan
    image.paste((0, 0, 0, 0), (16, 0, 32, 16))  # right: no ink, white
    path = _save(tmp_path, "print.jpg", image, "JPEG", quality=95)
    assert Image.open(path).mode == "CMYK"

    decoded = _decode(path)
    rgb = np.asarray(decoded.image).astype(int)
    assert decoded.format == "JPEG"
    assert np.abs(rgb[8, 4] - (0, 255, 255)).max() <= 8
    assert np.abs(rgb[8, 28] - (255, 255, 255)).max() <= 8


# --- EXIF orientation -----------------------------------------------------------------------------------------


def test_exif_orientation_6_rotates_the_photo(tmp_path: Path) -> None:
    stored = Image.new("RGB", (40, 20), (255, 255, 255))
    stored.paste((255, 0, 0), (0, 0, 8, 8))  # a red mark in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    path = _save(tmp_path, "camera.jpg", stored, "JPEG", quality=95, exif=exif.tobytes())
    assert Image.open(path).getexif()[0x0112] == 6

    decoded = _decode(path)

    assert (decoded.width, decoded.height) == (20, 40)
    rgb = np.asarray(decoded.image).astype(int)
    assert np.abs(rgb[3, 16] - (255, 0, 0)).max() <= 24  # clockwise: top-left went to top-right
    assert np.abs(rgb[3, 3] - (255, 255, 255)).max() <= 24


# --- decompression bombs --------------------------------------------------------------------------------------

# Runs in a fresh interpreter whose address space may grow by only 64 MiB after the imports, so decoding (or
# even allocating) a bomb would fail there with MemoryError instead of being rejected.
_BOMB_CHILD = """
import resource, sys, time
from PIL import Image
from tlops.data.images import decode_image
if sys.argv[2] == "pillow-guard-off":
    Image.MAX_IMAGE_PIXELS = None  # as some libraries do; tlops' own limit must still hold
data = open(sys.argv[1], "rb").read()
vm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmSize:")) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + 64 * 2**20, resource.RLIM_INFINITY))
start = time.perf_counter()
try:
    decode_image(data)
    print("accepted")
except ValueError as error:
    print(error)
print(time.perf_counter() - start)
print(Image.MAX_IMAGE_PIXELS)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="measures the address space through /proc")
@pytest.mark.parametrize(
    ("width", "height", "pillow_guard"),
    [
        (20_000, 20_000, "default"),  # 400 M pixels: above twice the limit, where Pillow itself raises
        (10_000, 9_000, "default"),  # 90 M pixels: just above the limit, where Pillow merely warns
        (10_000, 9_000, "pillow-guard-off"),  # Pillow's global limit disabled elsewhere in the process
    ],
)
def test_decompression_bomb_is_rejected_without_decoding(
    tmp_path: Path, width: int, height: int, pillow_guard: str
) -> None:
    path = _write_bilevel_png(tmp_path / "bomb.png", width, height)
    assert path.stat().st_size < 100_000  # tiny file, huge picture

    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    child = subprocess.run(
        [sys.executable, "-c", _BOMB_CHILD, str(path), pillow_guard],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )

    assert child.returncode == 0, child.stderr
    message, seconds, pillow_limit = child.stdout.splitlines()
    assert message.startswith("decompression bomb"), message
    assert float(seconds) < 2.0
    assert pillow_limit == ("None" if pillow_guard == "pillow-guard-off" else str(Image.MAX_IMAGE_PIXELS))


def test_the_pixel_limit_is_a_parameter(tmp_path: Path) -> None:
    data = _save(tmp_path, "small.png", _noise((100, 50)), "PNG").read_bytes()

    assert decode_image(data, max_pixels=5_000).width == 100
    with pytest.raises(InvalidImageError, match=r"^decompression bomb: 100x50 = 5000 pixels exceeds the limit of 4999"):
        decode_image(data, max_pixels=4_999)
