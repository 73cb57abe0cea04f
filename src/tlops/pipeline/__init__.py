"""The Kubeflow Pipelines layer: thin components over the core steps, the pipeline, compiling and local runs."""
