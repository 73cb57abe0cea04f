"""The file MLflow loads the served text model from ("models from code"): no pickled object is involved."""

from mlflow.models import set_model

from tlops.serving.text_model import TextClassifierModel

set_model(TextClassifierModel())
