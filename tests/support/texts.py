"""A small real text-classification set: the first sentence of public docstrings of three installed libraries.

Class ``numpy``, ``pandas`` or ``matplotlib``: which library a sentence documents. The sentences are collected in a
fixed order (sorted names), so the set is the same on every run with the same library versions.
"""

from __future__ import annotations

import importlib
import inspect
import re

LIBRARIES = ("numpy", "pandas", "matplotlib.pyplot")
CLASSES = ("numpy", "pandas", "matplotlib")


def first_sentence(docstring: str) -> str | None:
    """The first sentence of a docstring's first paragraph, on one line (``None`` when too short to say much)."""
    paragraph = inspect.cleandoc(docstring).split("\n\n")[0]
    text = " ".join(paragraph.split())
    sentence = re.split(r"(?<=\.)\s", text, maxsplit=1)[0]
    if re.match(r"[\w.]+\(", sentence):  # a signature line (numpy's ufuncs), not a sentence
        return None
    return sentence if 25 <= len(sentence) <= 300 else None


def library_sentences(module_name: str, count: int) -> list[str]:
    """``count`` distinct first sentences of the public functions and classes of a module, by sorted name."""
    module = importlib.import_module(module_name)
    sentences: list[str] = []
    for name in sorted(dir(module)):
        if name.startswith("_"):
            continue
        item = getattr(module, name)
        if not (inspect.isfunction(item) or inspect.isclass(item) or callable(item)) or not item.__doc__:
            continue
        sentence = first_sentence(item.__doc__)
        if sentence and sentence not in sentences:
            sentences.append(sentence)
        if len(sentences) == count:
            return sentences
    raise AssertionError(f"{module_name} has only {len(sentences)} usable docstrings, {count} asked for")


def docstring_texts(per_class: int = 30, val_share: float = 1 / 3) -> tuple[tuple[list[str], list[int]], ...]:
    """``((train_texts, train_targets), (val_texts, val_targets))``: every third sentence of a class to validation.

    Args:
        per_class: Sentences per library.
        val_share: Share of each class held out for validation (every ``1/val_share``-th sentence).
    """
    step = round(1 / val_share)
    train: tuple[list[str], list[int]] = ([], [])
    val: tuple[list[str], list[int]] = ([], [])
    for target, module_name in enumerate(LIBRARIES):
        for index, sentence in enumerate(library_sentences(module_name, per_class)):
            texts, targets = val if index % step == step - 1 else train
            texts.append(sentence)
            targets.append(target)
    return train, val
