"""GIN+GraphNorm under torch DDP on 2 CPU ranks (gloo): GraphNorm's statistics are per graph, so each rank's
half of the mini-batch gives exactly the gradient of the full batch, and the replicas stay identical."""

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from loopback import free_port, gloo_group
from torch_geometric.data import Batch, Data

WORLD, STEPS = 2, 3


def _graphs():
    gen = torch.Generator().manual_seed(7)
    graphs = []
    for i in range(8):
        n = 4 + i % 5
        edges = torch.randint(0, n, (2, 2 * n), generator=gen)
        graphs.append(Data(x=torch.randn(n, 3, generator=gen), edge_index=edges, y=torch.tensor([i % 2])))
    return graphs


def _model():
    from graph_ext.models import GINClassifier

    torch.manual_seed(0)
    return GINClassifier(3, 2, hidden=16, num_layers=3, norm="graph", dropout=0.0).double()


def _train(model, batch):
    """STEPS of SGD on one batch; returns the first step's gradients and the final parameters."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    first_grads = None
    for _ in range(STEPS):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(batch.x.double(), batch.edge_index, batch.batch, batch.num_graphs), batch.y)
        loss.backward()
        if first_grads is None:
            first_grads = [p.grad.detach().clone() for p in model.parameters()]
        optimizer.step()
    return first_grads, [p.detach().clone() for p in model.parameters()]


def _worker(rank, port, out):
    from torch.nn.parallel import DistributedDataParallel

    with gloo_group(rank, WORLD, port):
        model = DistributedDataParallel(_model())
        graphs = _graphs()
        local = Batch.from_data_list(graphs[rank * 4:(rank + 1) * 4])
        grads, params = _train(model, local)
        torch.save({"grads": grads, "params": params}, f"{out}/rank{rank}.pt")


@pytest.mark.distributed
@pytest.mark.slow
def test_ddp_two_ranks_match_full_batch(tmp_path):
    mp.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    for a, b in zip(ranks[0]["params"], ranks[1]["params"]):
        assert torch.equal(a, b)  # replicas identical after every all-reduce
    grads, params = _train(_model(), Batch.from_data_list(_graphs()))
    for ddp_grad, full_grad in zip(ranks[0]["grads"], grads):
        torch.testing.assert_close(ddp_grad, full_grad, rtol=1e-9, atol=1e-10)
    for ddp_param, full_param in zip(ranks[0]["params"], params):
        torch.testing.assert_close(ddp_param, full_param, rtol=1e-9, atol=1e-10)
