"""The file MLflow loads the served model from ("models from code"): no pickled object is involved."""

from mlflow.models import set_model

from tlops.serving.model import ImageClassifier

set_model(ImageClassifier())
