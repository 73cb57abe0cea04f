"""The served exported classifier: the image pyfunc of :mod:`tlops.serving.model` over an onnxruntime session.

:class:`OnnxImageClassifier` decodes, preprocesses and answers exactly as :class:`~tlops.serving.model.ImageClassifier`
(same input column, same output columns, same calibration temperature); only the network differs: an ONNX graph
(fp32 or int8) run by onnxruntime on the CPU instead of a ``torch.export`` program. Its artifacts are ``network.onnx``
and the same ``preprocessing.json``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tlops.serving.model import NETWORK_ARTIFACT, PREPROCESSING_ARTIFACT, ImageClassifier, ServingConfig
from tlops.serving.outputs import calibrated

ONNX_FILE = "network.onnx"


class OnnxImageClassifier(ImageClassifier):
    """MLflow ``PythonModel`` over an exported ONNX network and the preprocessing of its weights."""

    def load_context(self, context: Any) -> None:
        """Load the ONNX network into an onnxruntime session and the preprocessing from the model's artifacts."""
        from tlops.data.preprocessing import DataConfig, eval_transform
        from tlops.serving.onnx_export import onnx_session

        self.config = ServingConfig.read(context.artifacts[PREPROCESSING_ARTIFACT])
        self.transform = eval_transform(DataConfig.from_dict(self.config.data_config))
        self.session = onnx_session(context.artifacts[NETWORK_ARTIFACT])

    def probabilities(self, tensors: Any) -> np.ndarray:
        """Calibrated class probabilities of a batch of preprocessed ``(N, 3, S, S)`` images."""
        from tlops.serving.onnx_export import onnx_logits

        return calibrated(onnx_logits(self.session, np.asarray(tensors)), self.config.temperature)
