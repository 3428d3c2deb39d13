"""Kubeflow Pipelines: the compiler, the API client, the component entry point and snapshot delivery.

Everything of this backend lives here; kfp itself is imported inside functions only.
"""
