"""tlops: transfer learning as a Kubeflow pipeline, from a pretrained vision backbone to a registered classifier."""

__version__ = "0.1.0"
