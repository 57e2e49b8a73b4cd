"""Checkpoint conversion (PyTorch <-> TF) and frozen-graph export: ``python -m export.from_pytorch|to_pytorch|to_pb``."""
