"""The file MLflow loads the served exported (ONNX) model from ("models from code"): nothing is unpickled."""

from mlflow.models import set_model

from tlops.serving.onnx_model import OnnxImageClassifier

set_model(OnnxImageClassifier())
