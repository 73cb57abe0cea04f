"""The transfer strategies: registered objects that say what they train (no torch import, for the CLI).

Feature-based strategies keep the backbone frozen and fit a head on cached features; parameter-based ones train
some or all backbone blocks, starting from the probe head; ``auto`` decides between them from evidence
(:mod:`tlops.train.auto`). Add a strategy by registering a :class:`Strategy` in :data:`STRATEGIES`: the CLI's
choices, ``tlops list strategies`` and the tests that parametrize over the registry pick it up.

A strategy also says which tasks it belongs to (:attr:`Strategy.tasks`): ``lora`` adapts a text encoder and trains
no image backbone, the block-wise ones (``partial``, ``surgical``, ``gradual``) and ``auto`` are image strategies;
object detection trains its detector ``frozen`` (the FPN and heads on a frozen backbone), ``partial`` or ``full``;
:meth:`Strategy.check_task` refuses a strategy for a task it does not belong to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from tlops.data.prepared import IMAGE_CLASSIFICATION, OBJECT_DETECTION, TEXT_CLASSIFICATION
from tlops.registry import Registry
from tlops.settings import SettingError

if TYPE_CHECKING:
    from tlops.train.config import TrainConfig

SURGICAL_BLOCKS: tuple[str, ...] = ("first", "middle", "last")

# The task names (the registered names of tlops.tasks, which imports this layer, not the other way round).
BOTH_TASKS: tuple[str, ...] = (IMAGE_CLASSIFICATION, TEXT_CLASSIFICATION)
ALL_TASKS: tuple[str, ...] = (*BOTH_TASKS, OBJECT_DETECTION)


class BlockChoice(Protocol):
    """Which backbone blocks train in an epoch, given the block count and the settings."""

    def __call__(self, num_blocks: int, config: TrainConfig, epoch: int) -> list[int]:
        """Indices of the trained blocks, input block first."""
        ...


@dataclass(frozen=True)
class Strategy:
    """A way to transfer a pretrained backbone.

    Attributes:
        name: What ``--strategy`` takes.
        summary: One line for ``--help`` and ``tlops list strategies``.
        kind: ``feature-based`` (frozen backbone, head on cached features), ``parameter-based`` (backbone blocks
            train) or ``decides`` (``auto``).
        needs_features: Fits on the cached features of extract-features.
        blocks: For parameter-based strategies, the blocks that train in an epoch (the head always trains).
        tasks: The tasks (registered task names) whose runs may use it.
    """

    name: str
    summary: str
    kind: str
    needs_features: bool = False
    blocks: BlockChoice | None = None
    tasks: tuple[str, ...] = (IMAGE_CLASSIFICATION,)

    @property
    def trains_backbone(self) -> bool:
        """Whether backbone weights change (parameter-based transfer)."""
        return self.blocks is not None

    def trained_blocks(self, num_blocks: int, config: TrainConfig, epoch: int = 1) -> list[int]:
        """Indices of the blocks this strategy trains in ``epoch`` (from 1), input block first.

        Raises:
            TlopsError: when the settings ask for more blocks than the backbone has.
            ValueError: for a strategy that trains no backbone block.
        """
        if self.blocks is None:
            raise ValueError(f"{self.name!r} does not fine-tune the backbone")
        return self.blocks(num_blocks, config, epoch)

    def check_task(self, task: str) -> None:
        """Refuse this strategy for a task it does not belong to.

        Raises:
            SettingError: naming the strategy, the task and the strategies the task takes.
        """
        if task not in self.tasks:
            raise SettingError(
                ("train.strategy",),
                "{0} " + f"{self.name} is for {' and '.join(self.tasks)} runs, not {task}: use one of "
                f"{', '.join(strategies_for(task))}",
            )


STRATEGIES: Registry[Strategy] = Registry("strategy", "--strategy")


def strategies_for(task: str) -> tuple[str, ...]:
    """The registered strategies a task's runs may use, in registration order."""
    return tuple(name for name, entry in STRATEGIES if task in entry.tasks)


def check_unfreeze_blocks(count: int, num_blocks: int) -> None:
    """Refuse to unfreeze more blocks than the backbone has.

    Raises:
        SettingError: naming the block count and the fix.
    """
    if count > num_blocks:
        raise SettingError(
            ("train.unfreeze_blocks", "train.strategy"),
            "{0} " + f"{count} is more than the backbone's {num_blocks} blocks: use at most {num_blocks} (or "
            "{1} lp-ft to train every block)",
        )


def _top_blocks(num_blocks: int, config: TrainConfig, epoch: int) -> list[int]:
    check_unfreeze_blocks(config.unfreeze_blocks, num_blocks)
    return list(range(num_blocks - config.unfreeze_blocks, num_blocks))


def _surgical_blocks(num_blocks: int, config: TrainConfig, epoch: int) -> list[int]:
    count = config.unfreeze_blocks
    check_unfreeze_blocks(count, num_blocks)
    start = {"first": 0, "middle": (num_blocks - count) // 2, "last": num_blocks - count}[config.surgical_blocks]
    return list(range(start, start + count))


def _every_block(num_blocks: int, config: TrainConfig, epoch: int) -> list[int]:
    return list(range(num_blocks))


def _no_block(num_blocks: int, config: TrainConfig, epoch: int) -> list[int]:
    return []


def _one_more_per_epoch(num_blocks: int, config: TrainConfig, epoch: int) -> list[int]:
    return list(range(max(0, num_blocks - epoch), num_blocks))


STRATEGIES.add(
    "auto",
    Strategy(
        "auto",
        "decide on estimates with their errors: the probe by cross-validation on small data, fine-tuning tried "
        "from 100 images a class and kept only when it beats the probe on validation beyond one standard error",
        "decides",
        needs_features=True,
        tasks=ALL_TASKS,
    ),
)
STRATEGIES.add(
    "linear-probe",
    Strategy(
        "linear-probe",
        "frozen backbone + logistic-regression head on cached features",
        "feature-based",
        tasks=BOTH_TASKS,
    ),
)
STRATEGIES.add(
    "mlp-probe",
    Strategy(
        "mlp-probe",
        "frozen backbone + one hidden layer with dropout on cached features",
        "feature-based",
        True,
        tasks=BOTH_TASKS,
    ),
)
STRATEGIES.add(
    "partial",
    Strategy("partial", "fine-tune the top --unfreeze-blocks blocks from the probe head (detection: with the FPN "
             "and heads)", "parameter-based", blocks=_top_blocks, tasks=(IMAGE_CLASSIFICATION, OBJECT_DETECTION)),
)  # fmt: skip
STRATEGIES.add(
    "surgical",
    Strategy("surgical", "fine-tune --unfreeze-blocks blocks chosen by --surgical-blocks (first, middle, last)",
             "parameter-based", blocks=_surgical_blocks),
)  # fmt: skip
STRATEGIES.add(
    "lp-ft",
    Strategy(
        "lp-ft",
        "fine-tune every block from the probe head (LP-FT; detection: every block with the FPN and heads)",
        "parameter-based",
        blocks=_every_block,
        tasks=ALL_TASKS,
    ),
    aliases=("full",),
)
STRATEGIES.add(
    "gradual",
    Strategy("gradual", "unfreeze one more block per epoch from the top (ULMFiT)", "parameter-based",
             blocks=_one_more_per_epoch),
)  # fmt: skip
STRATEGIES.add(
    "frozen",
    Strategy("frozen", "object detection: the backbone stays frozen, the FPN and the detector's heads train",
             "parameter-based", blocks=_no_block, tasks=(OBJECT_DETECTION,)),
)  # fmt: skip
STRATEGIES.add(
    "lora",
    Strategy("lora", "text: low-rank adapters (LoRA) on every encoder layer's attention query and value, and the "
             "head, from the probe head; merged into the encoder when trained", "parameter-based",
             blocks=_every_block, tasks=(TEXT_CLASSIFICATION,)),
)  # fmt: skip
