"""The file MLflow loads the served object detector from ("models from code"): no pickled object is involved."""

from mlflow.models import set_model

from tlops.serving.detection_model import ObjectDetector

set_model(ObjectDetector())
