"""Bytes to text: the encoding detected per file, binary files refused, and the one normalisation every text gets.

UTF-32/UTF-16/UTF-8 byte-order marks decide first; then strict UTF-8; then charset-normalizer's best guess
(Western European, cp1252, when that is nearly as plausible); Latin-1 (which decodes any bytes) last. NUL bytes
outside a UTF-16/32 file, or a text that is mostly control characters, mean a binary file.
"""

from __future__ import annotations

import codecs
import hashlib
import unicodedata
from dataclasses import dataclass

# Byte-order marks, longest first (the UTF-32 LE mark begins with the UTF-16 LE one).
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_CONTROL_SHARE = 0.1  # a decoded text with more control characters than this (tabs and newlines aside) is binary
_ALLOWED_CONTROLS = frozenset("\t\n\r\f\v")
_WESTERN, _CLOSE_CALL = "cp1252", 0.2  # charset-normalizer's name and how much more "chaos" it may show


class BinaryText(ValueError):
    """Bytes that are not text: the reason, for the quarantine list."""


@dataclass(frozen=True)
class Decoded:
    """A decoded file: its text (not yet normalised) and the encoding it was read with."""

    text: str
    encoding: str


def decode_text(data: bytes) -> Decoded:
    """Decode one file's bytes, detecting the encoding.

    Raises:
        BinaryText: for NUL bytes, bytes invalid for the encoding their byte-order mark declares, or a text that
            is mostly control characters.
    """
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return _checked(Decoded(data.decode(encoding), encoding))
            except UnicodeDecodeError as error:
                raise BinaryText(f"not valid {encoding} despite its byte-order mark ({error.reason})") from None
    if b"\x00" in data:
        raise BinaryText("binary file (NUL bytes), not text")
    try:
        return _checked(Decoded(data.decode("utf-8"), "utf-8"))
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes  # only for the rare file that is not UTF-8

    matches = from_bytes(data)
    best = matches.best()
    if best is not None:
        # On short texts its guesses among the Latin code pages are close calls (cp1257 for French): prefer the
        # most common one, Western European, when it is nearly as plausible.
        western = next((m for m in matches if m.encoding == _WESTERN and m.chaos <= best.chaos + _CLOSE_CALL), None)
        best = western or best
        return _checked(Decoded(str(best), best.encoding))
    return _checked(Decoded(data.decode("latin-1"), "latin-1"))


def _checked(decoded: Decoded) -> Decoded:
    sample = decoded.text[:65536]
    controls = sum(1 for c in sample if unicodedata.category(c) == "Cc" and c not in _ALLOWED_CONTROLS)
    if sample and controls > _CONTROL_SHARE * len(sample):
        raise BinaryText(f"binary file ({controls} control characters in its first {len(sample)}), not text")
    return decoded


def normalise_text(text: str) -> str:
    """NFC, CRLF and CR as LF, surrounding whitespace stripped: the text that is stored, hashed and trained on."""
    return unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n")).strip()


def text_sha256(text: str) -> str:
    """The hex sha256 of a normalised text's UTF-8 bytes: its row id in the feature cache and its dedup key."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
