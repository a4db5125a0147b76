"""GIN and GCN graph classifiers as in the GraphNorm paper, with a choice of normalization.

GIN follows Xu et al. (2019) as used by the GraphNorm reference (lsj2408/GraphNorm): ``num_layers`` counts the
input layer, so 5 layers = 4 GIN convolutions; each convolution's update is a 2-layer MLP with a norm after
its hidden Linear, then a norm after the MLP, each followed by ReLU; the readout sums, over ALL layers
including the input, a Linear of the sum-pooled node representations (dropout on each). The GCN classifier
stacks GCNConv → norm → ReLU and mean-pools the last layer.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn import GCNConv, MessagePassing, global_add_pool, global_mean_pool
from torch_geometric.nn.norm import InstanceNorm

from graftkit.errors import GraftkitError
from graph_ext.norm import GraphNorm, check_batch_size

NormKind = Literal["graph", "batch", "layer", "instance", "none"]
NORM_KINDS: tuple[str, ...] = ("graph", "batch", "layer", "instance", "none")


class NodeWiseNorm(torch.nn.Module):
    """Adapts a norm that ignores graph membership (BatchNorm1d, LayerNorm, Identity) to ``(x, batch)``."""

    def __init__(self, norm: torch.nn.Module) -> None:
        super().__init__()
        self.norm = norm

    def forward(self, x: Tensor, batch: Tensor | None = None, batch_size: int | None = None) -> Tensor:
        return self.norm(x)


def make_norm(kind: str, channels: int) -> torch.nn.Module:
    """A norm layer called as ``norm(x, batch, batch_size)``.

    ``graph``: GraphNorm; ``batch``: BatchNorm over all nodes of the mini-batch; ``layer``: LayerNorm over
    each node's features; ``instance``: InstanceNorm per graph and feature (PyG's, affine); ``none``: identity.
    """
    if kind == "graph":
        return GraphNorm(channels)
    if kind == "batch":
        return NodeWiseNorm(torch.nn.BatchNorm1d(channels))
    if kind == "layer":
        return NodeWiseNorm(torch.nn.LayerNorm(channels))
    if kind == "instance":
        return InstanceNorm(channels, affine=True)
    if kind == "none":
        return NodeWiseNorm(torch.nn.Identity())
    raise GraftkitError(f"unknown norm {kind!r}; choose one of {', '.join(NORM_KINDS)}")


class SumNeighbors(MessagePassing):
    """GIN aggregation ``(1 + eps) * x_i + sum_{j in N(i)} x_j`` (eps fixed at 0 as in the reference)."""

    def __init__(self, eps: float = 0.0) -> None:
        super().__init__(aggr="add")
        self.eps = eps

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        return (1 + self.eps) * x + self.propagate(edge_index, x=x)

    def message(self, x_j: Tensor) -> Tensor:
        return x_j


class GINLayer(torch.nn.Module):
    """One GIN layer: aggregate, Linear → norm → ReLU → Linear, then norm → ReLU."""

    def __init__(self, in_channels: int, hidden: int, norm: str) -> None:
        super().__init__()
        self.aggregate = SumNeighbors()
        self.lin1 = torch.nn.Linear(in_channels, hidden)
        self.norm1 = make_norm(norm, hidden)
        self.lin2 = torch.nn.Linear(hidden, hidden)
        self.norm2 = make_norm(norm, hidden)

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor, batch_size: int) -> Tensor:
        h = self.aggregate(x, edge_index)
        h = F.relu(self.norm1(self.lin1(h), batch, batch_size))
        return F.relu(self.norm2(self.lin2(h), batch, batch_size))


def _check_config(num_layers: int, hidden: int, dropout: float, norm: str) -> None:
    if num_layers < 2:
        raise GraftkitError(f"num_layers must be >= 2 (it counts the input layer), got {num_layers}")
    if hidden < 1:
        raise GraftkitError(f"hidden must be >= 1, got {hidden}")
    if not 0.0 <= dropout < 1.0:
        raise GraftkitError(f"dropout must be in [0, 1), got {dropout}")
    if norm not in NORM_KINDS:
        raise GraftkitError(f"unknown norm {norm!r}; choose one of {', '.join(NORM_KINDS)}")


class GINClassifier(torch.nn.Module):
    """GIN graph classifier with sum readout over all layers (paper: 5 layers, hidden 64, dropout 0.5)."""

    def __init__(self, in_channels: int, num_classes: int, hidden: int = 64, num_layers: int = 5,
                 norm: NormKind = "graph", dropout: float = 0.5) -> None:
        super().__init__()
        _check_config(num_layers, hidden, dropout, norm)
        self.in_channels, self.norm = in_channels, norm
        self.layers = torch.nn.ModuleList(
            GINLayer(in_channels if i == 0 else hidden, hidden, norm) for i in range(num_layers - 1))
        self.heads = torch.nn.ModuleList(
            torch.nn.Linear(in_channels if i == 0 else hidden, num_classes) for i in range(num_layers))
        self.dropout = dropout

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor | None = None,
                batch_size: int | None = None) -> Tensor:
        batch, batch_size = _batch_or_single(x, batch, batch_size, self.in_channels)
        h, score = x, 0.0
        for i, head in enumerate(self.heads):
            if i > 0:
                h = self.layers[i - 1](h, edge_index, batch, batch_size)
            pooled = global_add_pool(h, batch, batch_size)
            score = score + F.dropout(head(pooled), self.dropout, self.training)
        return score


class GCNClassifier(torch.nn.Module):
    """GCN graph classifier: ``num_layers`` × (GCNConv → norm → ReLU), mean pooling, Linear."""

    def __init__(self, in_channels: int, num_classes: int, hidden: int = 64, num_layers: int = 5,
                 norm: NormKind = "graph", dropout: float = 0.5) -> None:
        super().__init__()
        _check_config(num_layers, hidden, dropout, norm)
        self.in_channels, self.norm = in_channels, norm
        self.convs = torch.nn.ModuleList(
            GCNConv(in_channels if i == 0 else hidden, hidden) for i in range(num_layers))
        self.norms = torch.nn.ModuleList(make_norm(norm, hidden) for _ in range(num_layers))
        self.head = torch.nn.Linear(hidden, num_classes)
        self.dropout = dropout

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor | None = None,
                batch_size: int | None = None) -> Tensor:
        batch, batch_size = _batch_or_single(x, batch, batch_size, self.in_channels)
        h = x
        for conv, norm in zip(self.convs, self.norms):
            h = F.relu(norm(conv(h, edge_index), batch, batch_size))
        pooled = global_mean_pool(h, batch, batch_size)
        return self.head(F.dropout(pooled, self.dropout, self.training))


def _batch_or_single(x: Tensor, batch: Tensor | None, batch_size: int | None,
                     in_channels: int) -> tuple[Tensor, int]:
    if x.dim() != 2 or x.size(1) != in_channels:
        raise GraftkitError(f"node features must be [num_nodes, {in_channels}], got {tuple(x.shape)}")
    if batch is None:
        return x.new_zeros(x.size(0), dtype=torch.long), 1
    if batch_size is None:
        batch_size = int(batch.max()) + 1 if batch.numel() else 1
    # the pooling allocates batch_size rows: a wrong 10**12 must be named, not end in an allocator error
    return batch, check_batch_size(batch_size, x.size(0), "graph classifier")


def build_classifier(arch: Literal["gin", "gcn"], in_channels: int, num_classes: int, **kwargs) -> torch.nn.Module:
    """``GINClassifier`` or ``GCNClassifier`` by name."""
    if arch == "gin":
        return GINClassifier(in_channels, num_classes, **kwargs)
    if arch == "gcn":
        return GCNClassifier(in_channels, num_classes, **kwargs)
    raise GraftkitError(f"unknown architecture {arch!r}; choose 'gin' or 'gcn'")
