"""MC-BERT pre-training under HF's own distributed engine: ``Trainer`` on 2 CPU ranks (gloo) started by
``torch.distributed.run`` (tests/loopback.py). DDP runs without its search for unused parameters, so every
parameter (meta controller, main model, head, the shared vocabulary bias) must receive a gradient at every
step or DDP stops; the ranks see different batches and end with identical weights, both the meta controller's
and the main model's trained."""

import pytest
import torch
from loopback import train_with_trainer_on_two_ranks


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("objective", ["mc", "rtd"])
def test_trainer_ddp_trains_every_parameter_and_keeps_ranks_identical(tmp_path, objective):
    states = train_with_trainer_on_two_ranks(tmp_path, "AutoModelForPreTraining", "mc_bert", objective=objective,
                                             mask_token_id="[MASK]", neither_token_id="<neither>",
                                             mc_size_divider=2, num_candidates=4)
    for name in ("meta_controller.encoder.layers.1.feed_forward.output.weight",
                 "mc_bert.encoder.layers.1.feed_forward.output.weight", "head.dense.weight", "vocabulary_bias"):
        assert not torch.equal(states["final"][name], states["initial"][name]), name  # trained
