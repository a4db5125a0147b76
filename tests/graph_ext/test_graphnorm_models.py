"""GraphNorm inside PyG models, the paper's GIN/GCN classifiers, the training loop and the offline TU data."""

import pytest
import torch
from torch_geometric.data import Batch, Data
from torch_geometric.nn import MessagePassing
from torch_geometric.nn.models import GIN

from graftkit.errors import GraftkitError
from graph_ext import GraphNorm
from graph_ext.datasets import load_mutag, load_tu_dataset, regular_graphs
from graph_ext.models import NORM_KINDS, GCNClassifier, GINClassifier, build_classifier, make_norm
from graph_ext.training import accuracy, epochs_to_reach, train_graph_classifier


def _random_graph(num_nodes, channels, seed):
    gen = torch.Generator().manual_seed(seed)
    edges = torch.randint(0, num_nodes, (2, 3 * num_nodes), generator=gen)
    return Data(x=torch.randn(num_nodes, channels, generator=gen), edge_index=edges, y=torch.tensor([seed % 2]))


def test_pyg_gin_passes_batch_to_graphnorm():
    torch.manual_seed(0)
    model = GIN(in_channels=5, hidden_channels=16, num_layers=3, norm=GraphNorm(16)).eval()
    assert model.supports_norm_batch and all(isinstance(n, GraphNorm) for n in model.norms[:2])
    seen = []
    model.norms[0].register_forward_pre_hook(lambda mod, args: seen.append(args))
    graphs = [_random_graph(n, 5, s) for s, n in enumerate((6, 9, 4))]
    batch = Batch.from_data_list(graphs)
    joint = model(batch.x, batch.edge_index, batch=batch.batch, batch_size=3)
    assert seen and torch.equal(seen[0][1], batch.batch) and seen[0][2] == 3
    # per-graph statistics: batching graphs together must not change any graph's output
    start = 0
    for g in graphs:
        alone = model(g.x, g.edge_index)
        torch.testing.assert_close(joint[start:start + g.num_nodes], alone, rtol=1e-5, atol=1e-5)
        start += g.num_nodes


class _MeanConvWithNorm(MessagePassing):
    """A hand-written MessagePassing layer that normalizes its output with GraphNorm."""

    def __init__(self, channels):
        super().__init__(aggr="mean")
        self.lin = torch.nn.Linear(channels, channels)
        self.norm = GraphNorm(channels)

    def forward(self, x, edge_index, batch):
        return self.norm(self.lin(x) + self.propagate(edge_index, x=x), batch)

    def message(self, x_j):
        return x_j


def test_graphnorm_in_handwritten_message_passing():
    torch.manual_seed(1)
    layer = _MeanConvWithNorm(4)
    graphs = [_random_graph(n, 4, s) for s, n in enumerate((5, 7))]
    batch = Batch.from_data_list(graphs)
    out = layer(batch.x, batch.edge_index, batch.batch)
    out.sum().backward()
    assert layer.norm.mean_scale.grad is not None and layer.lin.weight.grad is not None
    torch.testing.assert_close(out[:5], layer(graphs[0].x, graphs[0].edge_index, None), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["gin", "gcn"])
@pytest.mark.parametrize("norm", NORM_KINDS)
def test_classifiers_with_every_norm(arch, norm):
    torch.manual_seed(2)
    model = build_classifier(arch, 3, 4, hidden=8, norm=norm)
    batch = Batch.from_data_list([_random_graph(n, 3, s) for s, n in enumerate((4, 6, 1))])
    logits = model(batch.x, batch.edge_index, batch.batch, batch.num_graphs)
    assert logits.shape == (3, 4) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


def test_gin_follows_paper_layout():
    model = GINClassifier(7, 2)  # defaults: 5 layers, hidden 64, dropout 0.5, norm graph
    assert len(model.layers) == 4 and len(model.heads) == 5  # readout over the input + 4 GIN layers
    assert sum(isinstance(m, GraphNorm) for m in model.modules()) == 8
    assert model.heads[0].in_features == 7 and model.heads[1].in_features == 64
    assert len(GCNClassifier(7, 2, hidden=300).convs) == 5


def test_bad_model_configs():
    with pytest.raises(GraftkitError, match="unknown norm"):
        make_norm("group", 8)
    with pytest.raises(GraftkitError, match="unknown norm"):
        GINClassifier(3, 2, norm="bn")
    with pytest.raises(GraftkitError, match="num_layers"):
        GCNClassifier(3, 2, num_layers=1)
    with pytest.raises(GraftkitError, match="architecture"):
        build_classifier("gat", 3, 2)
    with pytest.raises(GraftkitError, match=r"\[num_nodes, 3\]"):
        GINClassifier(3, 2)(torch.randn(4, 5), torch.zeros(2, 0, dtype=torch.long))


@pytest.mark.parametrize("norm", ["graph", "batch"])
def test_batch_size_beyond_the_node_count_is_named(norm):
    # the pooling (and GraphNorm) allocated rows for every graph: 10**12 ended in an allocator error
    model = GINClassifier(3, 2, norm=norm)
    with pytest.raises(GraftkitError, match="batch_size=1000000000000"):
        model(torch.randn(4, 3), torch.zeros(2, 0, dtype=torch.long), torch.zeros(4, dtype=torch.long), 10**12)


def _write_tu(root, name, graphs):
    """Write ``graphs`` (list of (edges, node_labels, label)) in the TU text format."""
    raw = root / name / "raw"
    raw.mkdir(parents=True)
    a, indicator, node_labels, labels, offset = [], [], [], [], 0
    for gid, (edges, nodes, label) in enumerate(graphs, start=1):
        for u, v in edges:
            a += [f"{u + offset + 1}, {v + offset + 1}", f"{v + offset + 1}, {u + offset + 1}"]
        indicator += [str(gid)] * len(nodes)
        node_labels += [str(n) for n in nodes]
        labels.append(str(label))
        offset += len(nodes)
    for suffix, lines in (("A", a), ("graph_indicator", indicator), ("node_labels", node_labels),
                          ("graph_labels", labels)):
        (raw / f"{name}_{suffix}.txt").write_text("\n".join(lines) + "\n")


def test_tu_loader_offline_on_written_dataset(tmp_path):
    triangle = ([(0, 1), (1, 2), (2, 0)], [0, 1, 1], 1)
    path = ([(0, 1), (1, 2), (2, 3)], [2, 0, 0, 1], -1)
    _write_tu(tmp_path, "TOY", [triangle, path, triangle, path])
    ds = load_tu_dataset(tmp_path, "TOY")
    assert len(ds) == 4 and ds.num_classes == 2 and ds.num_node_features == 3  # one-hot node labels
    assert ds[0].num_nodes == 3 and ds[1].num_nodes == 4 and ds[0].num_edges == 6
    assert ds[0].y.item() == 1 and ds[1].y.item() == 0  # labels -1/1 mapped to 0/1 by PyG


def test_tu_loader_without_node_labels_uses_degree(tmp_path):
    _write_tu(tmp_path, "NOLAB", [([(0, 1), (1, 2)], [0, 0, 0], 0), ([(0, 1)], [0, 0], 1)])
    (tmp_path / "NOLAB" / "raw" / "NOLAB_node_labels.txt").unlink()
    ds = load_tu_dataset(tmp_path, "NOLAB")
    assert ds[0].x.shape == (3, 3)  # one-hot degree 0..2


def test_tu_loader_missing_files_error(tmp_path):
    (tmp_path / "GONE" / "raw").mkdir(parents=True)
    with pytest.raises(GraftkitError, match="GONE_A.txt"):
        load_tu_dataset(tmp_path, "GONE")


def test_mutag_from_grakel(tmp_path):
    ds = load_mutag(tmp_path)
    assert len(ds) == 188 and ds.num_classes == 2 and ds.num_node_features == 7
    assert int(ds.y.sum()) == 125  # 125 mutagenic, 63 not
    assert sorted(p.name for p in (tmp_path / "MUTAG" / "raw").iterdir()) == [
        "MUTAG_A.txt", "MUTAG_edge_labels.txt", "MUTAG_graph_indicator.txt", "MUTAG_graph_labels.txt",
        "MUTAG_node_labels.txt"]


def test_regular_graphs_collapse_under_instance_norm():
    data = regular_graphs(degrees=(3, 4), num_nodes=10, per_class=2, seed=0)
    assert len(data) == 4 and all(int(g.edge_index.size(1)) == 10 * d for g, d in zip(data, (3, 3, 4, 4)))
    batch = Batch.from_data_list(data)
    h = torch.nn.Linear(1, 4)(batch.x * (1 + torch.tensor([3.0, 3, 4, 4]).repeat_interleave(10)[:, None]))
    instance = make_norm("instance", 4)
    assert torch.allclose(instance(h, batch.batch), torch.zeros_like(h), atol=1e-3)  # every node -> beta = 0
    with pytest.raises(GraftkitError, match="regular"):
        regular_graphs(degrees=(3,), num_nodes=7)


def test_training_loop_learns_and_reports(single_thread):
    torch.manual_seed(0)
    data = regular_graphs(degrees=(3, 4), num_nodes=10, per_class=8, seed=1)
    # no dropout: with 0.5 on 16 degenerate graphs (constant features) whether 30 epochs reach 100% hinged on
    # float rounding (PyG's own GraphNorm got there for 13 of 16 seeds); without it, for every seed tried
    model = GINClassifier(1, 2, hidden=16, norm="graph", dropout=0.0)
    history = train_graph_classifier(model, data, epochs=30, lr=1e-3, batch_size=8, seed=0,
                                     eval_sets={"heldout": data[:4]}, progress=False)
    assert set(history) == {"loss", "step_loss", "train_acc", "heldout_acc"} and len(history["train_acc"]) == 30
    assert len(history["step_loss"]) == 30 * 2  # 16 graphs in batches of 8: two steps per epoch
    assert history["loss"][0] == pytest.approx(sum(history["step_loss"][:2]) / 2)  # equal batches: plain mean
    assert history["train_acc"][-1] == 1.0 and accuracy(model, [Batch.from_data_list(data)]) == 1.0
    assert epochs_to_reach(history["train_acc"], 1.0) <= 30
    assert epochs_to_reach([0.1, 0.5], 0.9) is None
    with pytest.raises(GraftkitError, match="empty"):
        train_graph_classifier(model, [], epochs=1)
