"""Graph methods for PyTorch Geometric (GraphNorm)."""
