"""TD across ranks: each of 2 gloo processes streams its shard, the sufficient statistics are all-reduced,
and every rank gets the TD of the whole data set — the same as one process on all of it."""

from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp
from loopback import free_port, gloo_group

from vision_ext.td import model_discrepancy, transferred_discrepancy

WORLD = 2


def data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(301, 6, generator=g)
    b = a[:, :3] @ torch.randn(3, 5, generator=g) + torch.randn(301, 5, generator=g)
    # rank 1's shard holds the only samples of class 4: the one-hot width is agreed across ranks
    labels = torch.randint(0, 4, (301,), generator=g)
    labels[200:210] = 4
    return a, b, labels, torch.randn(301, 2, generator=g)


def worker(rank: int, port: int, out: dict) -> None:
    with gloo_group(rank, WORLD, port):
        a, b, labels, y = data()
        shard = slice(0, 150) if rank == 0 else slice(150, None)  # unequal shards
        cls = transferred_discrepancy(a[shard], b[shard], labels[shard], batch_size=64, distributed=True)
        reg = transferred_discrepancy(a[shard], b[shard], y[shard], distributed=True)
        loader = [(a[shard][i:i + 40], labels[shard][i:i + 40]) for i in range(0, len(a[shard]), 40)]
        proj = torch.nn.Linear(6, 5)
        torch.manual_seed(1)
        proj.reset_parameters()
        models = model_discrepancy(torch.nn.Identity(), proj, loader, distributed=True)
        out[rank] = (cls.as_dict(), cls.per_task.tolist(), reg.as_dict(), models.as_dict())


@pytest.mark.distributed
@pytest.mark.slow
def test_all_reduced_statistics_give_the_single_process_td():
    out = mp.Manager().dict()
    mp.spawn(worker, args=(free_port(), out), nprocs=WORLD, join=True)
    a, b, labels, y = data()
    cls = transferred_discrepancy(a, b, labels)
    reg = transferred_discrepancy(a, b, y)
    proj = torch.nn.Linear(6, 5)
    torch.manual_seed(1)
    proj.reset_parameters()
    with torch.no_grad():
        models = transferred_discrepancy(a, proj(a), labels)
    for rank in range(WORLD):
        got_cls, got_per_task, got_reg, got_models = out[rank]
        assert len(got_per_task) == 5
        for got, want in ((got_cls, cls), (got_reg, reg), (got_models, models)):
            for key, value in want.as_dict().items():
                assert got[key] == (None if value is None else pytest.approx(value, rel=1e-9)), (rank, key)
