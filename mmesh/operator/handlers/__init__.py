"""The kopf handlers (thin: parse -> decide -> act -> report). Importing this package
registers them all with kopf's default registry."""

from mmesh.operator.handlers import configmap, inferenceservices, lifecycle, namespaces, runtimes

__all__ = ["configmap", "inferenceservices", "lifecycle", "namespaces", "runtimes"]
