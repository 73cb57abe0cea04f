"""Data-quality audit from cached features: label errors, near-duplicates and outliers.

:mod:`.out_of_fold` gives each example probabilities from a probe that never saw it, :mod:`.confident` finds
likely label errors from them by confident learning, :mod:`.similarity` finds near-duplicates and outliers from
the features' cosine similarities.
"""

LABEL_ISSUE_METHODS = ("prune_by_noise_rate", "confident_joint")
"""How :func:`~tlops.evaluation.audit.confident.find_label_issues` flags label errors (no import: the CLI reads it)."""
