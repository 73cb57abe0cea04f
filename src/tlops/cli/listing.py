"""``tlops list strategies|backbones|tasks``: what the registries hold, one line each (backbones: text encoders too)."""

from __future__ import annotations

import argparse


def listing(what: str) -> list[str]:
    """The lines ``tlops list WHAT`` prints: a name, then what it is."""
    if what == "strategies":
        from tlops.train.strategies import STRATEGIES

        aliases = STRATEGIES.aliases()
        rows = []
        for name, strategy in STRATEGIES:
            also = [alias for alias, target in aliases.items() if target == name]
            label = name + (f" (or {', '.join(also)})" if also else "")
            rows.append((label, f"{strategy.kind}: {strategy.summary}"))
    elif what == "backbones":
        from tlops.models.names import BACKBONE_FAMILIES, BUNDLED

        rows = [(name, f"bundled ImageNet weights ({BUNDLED[name][2]} px)") for name in BUNDLED]
        rows += [(f"{name}:NAME", f"{family.summary}, e.g. {family.example}")
                 for name, family in BACKBONE_FAMILIES if name != "bundled"]  # fmt: skip
        from tlops.models.text_names import BUNDLED_TEXT_ENCODERS, TEXT_ENCODER_KINDS

        rows += [(name, f"text: {encoder.summary}") for name, encoder in BUNDLED_TEXT_ENCODERS]
        rows += [(kind.example, f"text: {kind.summary}") for name, kind in TEXT_ENCODER_KINDS if name != "bundled"]
    else:
        from tlops.tasks import TASKS

        rows = [(name, task.summary) for name, task in TASKS]
    width = max(len(label) for label, _ in rows)
    return [f"{label.ljust(width)}  {text}" for label, text in rows]


def command_list(args: argparse.Namespace) -> int:
    """Print :func:`listing` of ``args.what``."""
    print("\n".join(listing(args.what)))
    return 0
