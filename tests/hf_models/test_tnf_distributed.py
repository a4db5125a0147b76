"""TNF under torch DDP on 2 CPU ranks (gloo): each rank sees different rare-word occurrences, the per-word note
sums and counts are all-reduced before the EMA, so both ranks hold the same note dictionary after every step,
and the first step's notes equal one process's notes over the concatenated batch."""

import pytest
import torch
import torch.multiprocessing as mp
from loopback import free_port, gloo_group

WORLD, STEPS = 2, 3


def _model():
    from hf_models.tnf import TnfConfig, TnfForMaskedLM

    torch.manual_seed(0)
    return TnfForMaskedLM(TnfConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                    intermediate_size=32, max_position_embeddings=12, num_rare_words=5,
                                    note_half_window=2, hidden_dropout_prob=0.0,
                                    attention_probs_dropout_prob=0.0)).train()


def _batches():
    """Rank r's batch: word 1 on both ranks (twice on rank 0), word 2 only on rank 0, word 3 only on rank 1."""
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(5, 40, (4, 12), generator=gen)
    spans = torch.tensor([[[1, 1, 2], [2, 6, 6]], [[1, 9, 9], [-1, -1, -1]],
                          [[1, 0, 0], [3, 4, 6]], [[-1, -1, -1], [-1, -1, -1]]])
    labels = torch.full_like(ids, -100)
    labels[:, 10] = ids[:, 10]
    mask = torch.ones_like(ids)
    mask[1, 11:] = 0
    return ids, mask, spans, labels


def _step(model, optimizer, ids, mask, spans, labels):
    loss = model(ids, attention_mask=mask, labels=labels, rare_spans=spans).loss
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def _worker(rank, port, out):
    from torch.nn.parallel import DistributedDataParallel

    with gloo_group(rank, WORLD, port):
        tnf = _model()
        # broadcast_buffers=False: DDP must not copy rank 0's notes over; the notes' own all-reduce keeps them equal
        model = DistributedDataParallel(tnf, broadcast_buffers=False)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        ids, mask, spans, labels = (t[2 * rank: 2 * rank + 2] for t in _batches())
        notes = []
        for _ in range(STEPS):
            _step(model, optimizer, ids, mask, spans, labels)
            notes.append(tnf.notes.notes.clone())
        torch.save({"notes": notes, "has_note": tnf.notes.has_note.clone()}, f"{out}/rank{rank}.pt")


@pytest.mark.distributed
@pytest.mark.slow
def test_ddp_ranks_hold_the_same_notes(tmp_path):
    mp.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    for a, b in zip(ranks[0]["notes"], ranks[1]["notes"]):
        assert torch.equal(a, b)
    assert ranks[0]["has_note"].tolist() == [False, True, True, True, False]  # the union of both ranks' words
    single = _model()
    _step(single, torch.optim.SGD(single.parameters(), lr=0.1), *_batches())
    torch.testing.assert_close(ranks[0]["notes"][0], single.notes.notes, rtol=1e-5, atol=1e-6)
    assert not torch.equal(ranks[0]["notes"][0], ranks[0]["notes"][-1])  # later steps moved the notes
