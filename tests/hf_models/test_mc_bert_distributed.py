"""MC-BERT pre-training under HF's own distributed engine: ``Trainer`` on 2 CPU ranks (gloo) started by
``torch.distributed.run``. DDP runs with ``find_unused_parameters=False``, so every parameter (meta controller,
main model, head, the shared vocabulary bias) must receive a gradient at every step or DDP stops; the ranks see
different batches and end with identical weights, both the meta controller's and the main model's trained."""

import json
import textwrap

import pytest
import torch
from loopback import run_script_on_two_ranks

_SCRIPT = textwrap.dedent("""
    import json, sys, torch
    import torch.distributed as dist
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments
    from graftkit.data.text import WordVocab, english_sentences
    from hf_models import McBertConfig, McBertForPreTraining

    out, objective = sys.argv[1], sys.argv[2]
    sentences = english_sentences()[:64]
    tokenizer = WordVocab.build(sentences).to_hf_tokenizer(model_max_length=16)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<neither>"]})
    rows = [{"input_ids": ids} for ids in tokenizer(sentences, truncation=True)["input_ids"]]
    config = McBertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                          intermediate_size=64, max_position_embeddings=16, pad_token_id=tokenizer.pad_token_id,
                          mask_token_id=tokenizer.mask_token_id, mc_size_divider=2, num_candidates=4,
                          neither_token_id=tokenizer.convert_tokens_to_ids("<neither>"), objective=objective)
    torch.manual_seed(0)
    model = McBertForPreTraining(config)
    torch.save(model.state_dict(), f"{out}/initial.pt")
    args = TrainingArguments(output_dir=out, max_steps=3, per_device_train_batch_size=8, learning_rate=1e-3,
                             report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0,
                             ddp_backend="gloo", ddp_find_unused_parameters=False)
    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=DataCollatorWithPadding(tokenizer))
    first = next(iter(trainer.get_train_dataloader()))["input_ids"]
    trainer.train()
    rank = dist.get_rank()
    torch.save(model.state_dict(), f"{out}/rank{rank}.pt")
    with open(f"{out}/rank{rank}.json", "w") as f:
        json.dump({"world_size": args.world_size, "first_batch": first.tolist()}, f)
""")


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("objective", ["mc", "rtd"])
def test_trainer_ddp_trains_every_parameter_and_keeps_ranks_identical(tmp_path, objective):
    script = tmp_path / "train.py"
    script.write_text(_SCRIPT)
    run_script_on_two_ranks(script, str(tmp_path), objective)
    meta = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert meta[0]["world_size"] == meta[1]["world_size"] == 2
    assert meta[0]["first_batch"] != meta[1]["first_batch"]  # each rank trains on its own shard
    initial, *ranks = (torch.load(tmp_path / f"{name}.pt") for name in ("initial", "rank0", "rank1"))
    assert ranks[0].keys() == ranks[1].keys() == initial.keys()
    for name in initial:
        torch.testing.assert_close(ranks[0][name], ranks[1][name], atol=0, rtol=0, msg=name)
    for name in ("meta_controller.encoder.layers.1.feed_forward.output.weight",
                 "mc_bert.encoder.layers.1.feed_forward.output.weight", "head.dense.weight", "vocabulary_bias"):
        assert not torch.equal(ranks[0][name], initial[name]), name  # trained
