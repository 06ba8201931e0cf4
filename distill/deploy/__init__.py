"""Deployment: runners (PyTorch, onnxruntime), prediction, export with its parity check."""
