"""A local copy of the cluster's services: a SeaweedFS S3 gateway and an MLflow tracking server on loopback.

``tlops stack up|down|status`` and the test suite's services start, check and stop them through this package.
"""
