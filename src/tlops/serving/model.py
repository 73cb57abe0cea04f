"""The served image classifier: raw image bytes (or pixels) in, label and calibrated probabilities out.

:class:`ImageClassifier` is an MLflow ``PythonModel`` loaded from code (``served_model.py``), never unpickled.
Its artifacts are the network as a ``torch.export`` program (``network.pt2``) and ``preprocessing.json`` (classes,
the weights' preprocessing, the fitted temperature). Every image is decoded exactly as training decoded it
(:func:`tlops.data.images.decode_image`: content-detected format, EXIF orientation, transparency over white,
16-bit grey rescaled, pixel limit) and resized and cropped by the same evaluation transform.

Input: a DataFrame with an ``image`` column whose cells are encoded image bytes, their base64 text (what the
scoring server's JSON carries, handed over undecoded so that one bad cell fails only its row) or ``(H, W, 3)``
uint8 arrays; in process, an ``(N, H, W, 3)`` uint8 array too.
Output: one row per image with ``label``, ``probability`` (of that label), ``probabilities`` (class -> calibrated
probability), ``top_k`` (the ``k`` most probable classes) and ``error`` (why a row could not be classified;
then the other columns are empty). A bad row never fails the batch.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

from tlops.serving.outputs import answer_row, calibrated, error_row, output_frame

IMAGE_COLUMN = "image"
NETWORK_ARTIFACT = "network"
PREPROCESSING_ARTIFACT = "preprocessing"
NETWORK_FILE = "network.pt2"
PREPROCESSING_FILE = "preprocessing.json"


@dataclass(frozen=True)
class ServingConfig:
    """What the served model needs besides the network.

    Attributes:
        classes: Class names in the order of the network's outputs.
        data_config: The weights' preprocessing as a dict (``input_size``, ``mean``, ``std``, ...).
        temperature: Temperature the logits are divided by before the softmax (fitted on the validation split).
        top_k: How many classes ``top_k`` lists.
        batch_size: Images per forward pass.
        max_pixels: Largest width x height decoded; larger images get a per-row error.
    """

    classes: list[str]
    data_config: dict[str, Any]
    temperature: float = 1.0
    top_k: int = 5
    batch_size: int = 32
    max_pixels: int = 89_478_485

    def write(self, path: Path) -> Path:
        """Write as JSON."""
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def read(cls, path: Path | str) -> ServingConfig:
        """Read what :meth:`write` wrote."""
        return cls(**json.loads(Path(path).read_text()))


class ImageClassifier(PythonModel):
    """MLflow ``PythonModel`` over an exported network and the preprocessing of its weights."""

    # The signature logged with the model (an ``image`` column of any type) is what MLflow validates the input
    # against; each cell is checked here, row by row.
    _skip_type_hint_validation = True

    def load_context(self, context: Any) -> None:
        """Load the network and the preprocessing from the model's artifacts."""
        import torch

        from tlops.data.preprocessing import DataConfig, eval_transform

        self.config = ServingConfig.read(context.artifacts[PREPROCESSING_ARTIFACT])
        self.transform = eval_transform(DataConfig.from_dict(self.config.data_config))
        self.network = torch.export.load(context.artifacts[NETWORK_ARTIFACT]).module()

    def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Classify each image of ``model_input``; a row that cannot be read gets an ``error`` instead.

        Args:
            context: MLflow's model context (unused: :meth:`load_context` read the artifacts).
            model_input: DataFrame with an ``image`` column (bytes or ``(H, W, 3)`` uint8 arrays), a list of
                those, or an ``(N, H, W, 3)`` uint8 array.
            params: Unused.
        """
        images = _images_of(model_input)
        rows: list[dict[str, Any]] = [{}] * len(images)
        batch: list[tuple[int, Any]] = []
        for index, image in enumerate(images):
            try:
                batch.append((index, self.transform(_picture(image, self.config.max_pixels))))
            except Exception as error:  # a bad row is reported in its row: never fails the batch
                rows[index] = error_row(error)
            if len(batch) == self.config.batch_size:
                self._classify(batch, rows)
                batch = []
        if batch:
            self._classify(batch, rows)
        return output_frame(rows)

    def probabilities(self, tensors: Any) -> np.ndarray:
        """Calibrated class probabilities of a batch of preprocessed ``(N, 3, S, S)`` images."""
        import torch

        with torch.inference_mode():
            logits = self.network(tensors).float()
        return calibrated(logits.numpy(), self.config.temperature)

    def _classify(self, batch: list[tuple[int, Any]], rows: list[dict[str, Any]]) -> None:
        import torch

        probabilities = self.probabilities(torch.stack([tensor for _, tensor in batch]))
        for (index, _), row in zip(batch, probabilities, strict=True):
            rows[index] = answer_row(row, self.config.classes, self.config.top_k)


def _images_of(model_input: Any) -> list[Any]:
    if isinstance(model_input, pd.DataFrame):
        if IMAGE_COLUMN not in model_input.columns:
            raise ValueError(f"the input has no {IMAGE_COLUMN!r} column (columns: {list(model_input.columns)})")
        return list(model_input[IMAGE_COLUMN])
    if isinstance(model_input, np.ndarray) and model_input.ndim == 4:
        return list(model_input)
    if isinstance(model_input, list | tuple | pd.Series):
        return list(model_input)
    raise ValueError(
        f"cannot read images from {type(model_input).__name__}: pass a DataFrame with an {IMAGE_COLUMN!r} column "
        "of image bytes, or an (N, H, W, 3) uint8 array"
    )


def _picture(image: Any, max_pixels: int) -> Any:
    """An RGB PIL image from encoded bytes (decoded as in training) or an ``(H, W, 3)`` uint8 array."""
    from PIL import Image

    from tlops.data.images import decode_image

    if isinstance(image, str):
        image = _base64(image)
    if isinstance(image, bytes | bytearray | memoryview):
        return decode_image(bytes(image), max_pixels=max_pixels).image
    if image is None or (isinstance(image, float) and np.isnan(image)):
        raise ValueError("the row has no image (null): send the image file's bytes (base64-encoded in JSON)")
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"an image array must be (H, W, 3) uint8 RGB, got {array.shape} {array.dtype}")
    if array.shape[0] * array.shape[1] > max_pixels:
        raise ValueError(f"image of {array.shape[0] * array.shape[1]} pixels is over the limit of {max_pixels}")
    return Image.fromarray(array, mode="RGB")


def _base64(text: str) -> bytes:
    """The bytes a base64 cell encodes (line breaks allowed, as ``base64.encodebytes`` writes them)."""
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as error:
        shown = text if len(text) <= 20 else f"{text[:20]}..."
        raise ValueError(
            f"the row's text {shown!r} is not valid base64 ({error}): send the image file's bytes, base64-encoded"
        ) from None
