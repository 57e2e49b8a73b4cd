"""Checkpoint conversion (PyTorch <-> TF) and frozen-graph export:
``python -m export.from_pytorch``, ``python -m export.to_pytorch``, ``python -m export.to_pb``."""
