"""Graph methods for PyTorch Geometric: GraphNorm (Cai et al., ICML 2021).

``GraphNorm`` is importable without touching torch_geometric; the classifiers, the training loop and the
dataset helpers live in ``graph_ext.models``, ``graph_ext.training`` and ``graph_ext.datasets``.
"""

from graph_ext.norm import GraphNorm

__all__ = ["GraphNorm"]
