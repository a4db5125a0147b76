"""Offline graph-classification data: TU datasets through PyG's ``TUDataset``, MUTAG from the ``grakel``
wheel, random regular graphs with constant features, and random graphs labelled by their mean degree (both
SYNTHETIC)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import torch

from graftkit.errors import GraftkitError

# The files PyG's read_tu_data looks for (`<name>_<suffix>.txt`); A and graph_indicator are required.
TU_REQUIRED = ("A", "graph_indicator")
TU_OPTIONAL = ("graph_labels", "node_labels", "edge_labels", "node_attributes", "edge_attributes",
               "graph_attributes")


def load_tu_dataset(root: str | Path, name: str):
    """``TUDataset(root, name)`` from files already in ``root/name/raw/`` (never downloads).

    Graphs without node features get a one-hot degree encoding, as the GraphNorm reference does for the
    social-network datasets.
    """
    from torch_geometric.datasets import TUDataset
    from torch_geometric.transforms import OneHotDegree
    from torch_geometric.utils import degree

    raw = Path(root) / name / "raw"
    missing = [f"{name}_{s}.txt" for s in (*TU_REQUIRED, "graph_labels") if not (raw / f"{name}_{s}.txt").is_file()]
    if missing:
        raise GraftkitError(f"TU dataset {name!r}: missing {', '.join(missing)} in {raw} (no download is attempted)")
    try:
        dataset = TUDataset(str(root), name)
    except (ValueError, RuntimeError, IndexError) as err:
        raise GraftkitError(f"TU dataset {name!r} in {raw} could not be read: {err}") from err
    if dataset.num_node_features == 0:
        max_degree = max(int(degree(g.edge_index[0], g.num_nodes).max()) if g.num_edges else 0 for g in dataset)
        dataset = TUDataset(str(root), name, transform=OneHotDegree(max_degree))
    return dataset


def grakel_mutag_dir() -> Path:
    """The MUTAG TU files bundled inside the installed ``grakel`` wheel."""
    spec = importlib.util.find_spec("grakel")
    if spec is None or spec.origin is None:
        raise GraftkitError("MUTAG comes from the `grakel` package (pinned GraKeL==0.1.11), which is not installed")
    folder = Path(spec.origin).parent / "tests" / "data" / "MUTAG"
    if not (folder / "MUTAG_A.txt").is_file():
        raise GraftkitError(f"the installed grakel has no MUTAG files in {folder}")
    return folder


def prepare_mutag(root: str | Path) -> Path:
    """Copy grakel's MUTAG files into ``root/MUTAG/raw/`` (the layout PyG's TUDataset reads); returns root."""
    source, raw = grakel_mutag_dir(), Path(root) / "MUTAG" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for suffix in (*TU_REQUIRED, *TU_OPTIONAL):
        name = f"MUTAG_{suffix}.txt"
        if (source / name).is_file() and not (raw / name).is_file():
            tmp = raw / f".{name}.tmp"
            shutil.copyfile(source / name, tmp)
            tmp.replace(raw / name)  # atomic: a half-copied file never looks complete to TUDataset
    return Path(root)


def load_mutag(root: str | Path):
    """MUTAG (188 molecules, 2 classes, 7 one-hot atom types) as a PyG ``TUDataset``, built offline."""
    return load_tu_dataset(prepare_mutag(root), "MUTAG")


def regular_graphs(degrees: tuple[int, ...] = (3, 4, 5, 6), num_nodes: int = 20, per_class: int = 40,
                   seed: int = 0) -> list:
    """Random ``d``-regular graphs (networkx), every node feature the constant 1, label = index of ``d``.

    All graphs have the same size, so only the degree separates the classes: a per-graph norm that subtracts
    the full mean (InstanceNorm, GraphNorm with α = 1) maps every node to β and the classes collapse.
    """
    import networkx as nx
    from torch_geometric.data import Data
    from torch_geometric.utils import from_networkx

    if any(num_nodes * d % 2 or d >= num_nodes for d in degrees):
        raise GraftkitError(f"no {degrees}-regular graphs on {num_nodes} nodes (n·d must be even, d < n)")
    graphs = []
    for label, d in enumerate(degrees):
        for i in range(per_class):
            g = from_networkx(nx.random_regular_graph(d, num_nodes, seed=seed * 100_003 + label * 1009 + i))
            graphs.append(Data(x=torch.ones(num_nodes, 1), edge_index=g.edge_index, y=torch.tensor([label])))
    return graphs


def mean_degree_graphs(num_graphs: int = 200, max_degree: int = 8, seed: int = 0) -> list:
    """SYNTHETIC: Erdős–Rényi graphs of 10-30 nodes with edge probability drawn from [0.05, 0.35], node
    features one-hot degrees (capped at ``max_degree``, as the reference encodes featureless graphs), label 1
    when the graph's mean degree exceeds the median over the set (balanced classes).

    The label is a graph-level statistic: the per-graph mean of the degree feature. A norm that subtracts
    each graph's full mean (InstanceNorm, GraphNorm with α = 1) removes it from the normalized features;
    GraphNorm's learned α can keep part of it.
    """
    import networkx as nx
    from torch_geometric.data import Data
    from torch_geometric.utils import degree, from_networkx

    if num_graphs < 2:
        raise GraftkitError(f"mean_degree_graphs needs num_graphs >= 2, got {num_graphs}")
    generator = torch.Generator().manual_seed(seed)
    graphs, means = [], []
    for i in range(num_graphs):
        nodes = int(torch.randint(10, 31, (1,), generator=generator))
        p = 0.05 + 0.3 * float(torch.rand(1, generator=generator))
        edge_index = from_networkx(nx.gnp_random_graph(nodes, p, seed=seed * 100_003 + i)).edge_index
        deg = degree(edge_index[0], nodes).long()
        x = torch.nn.functional.one_hot(deg.clamp(max=max_degree), max_degree + 1).float()
        graphs.append(Data(x=x, edge_index=edge_index))
        means.append(float(deg.float().mean()))
    median = float(torch.tensor(means).median())
    for graph, mean in zip(graphs, means):
        graph.y = torch.tensor([int(mean > median)])
    return graphs
