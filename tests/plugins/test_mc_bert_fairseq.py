"""MC-BERT in fairseq: archs, the criterion's reference weighting against the HF model, and fairseq-train
end to end with --task mc_bert --criterion mc_bert --arch mc_bert_small on a tiny binarized corpus."""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import pytest
import torch
from loopback import run_fairseq_ok as _run
from loopback import run_fairseq_train_on_two_ranks

TINY = ("--encoder-layers 2 --encoder-embed-dim 32 --encoder-ffn-embed-dim 64 --encoder-attention-heads 4 "
        "--tokens-per-sample 64 --sample-break-mode complete --batch-size 16 --optimizer adam --lr 1e-3 "
        "--no-epoch-checkpoints --log-format simple --log-interval 1 --cpu --seed 1 --num-candidates 4").split()


def test_archs_have_the_reference_sizes():
    from plugins import mc_bert

    base = argparse.Namespace()
    mc_bert.mc_bert_base(base)
    assert (base.encoder_layers, base.encoder_embed_dim, base.encoder_ffn_embed_dim, base.encoder_attention_heads,
            base.mc_size_divider, base.num_candidates, base.mc_loss_weight) == (12, 768, 3072, 12, 3, 10, 20.0)
    small = argparse.Namespace(num_candidates=5)
    mc_bert.mc_bert_small(small)
    assert (small.encoder_layers, small.encoder_embed_dim, small.encoder_attention_heads,
            small.mc_size_divider, small.num_candidates) == (12, 256, 4, 2, 5)


@pytest.mark.parametrize("objective, weight", [("mc", 20.0), ("rtd", 50.0)])
def test_criterion_is_the_references_sum_and_matches_the_hf_loss(objective, weight):
    from hf_models import McBertConfig, McBertForPreTraining
    from plugins.mc_bert import McBertCriterion, McBertFairseqModel

    torch.manual_seed(0)
    config = McBertConfig(vocab_size=30, hidden_size=24, num_hidden_layers=1, num_attention_heads=6,
                          intermediate_size=48, max_position_embeddings=16, pad_token_id=1, mask_token_id=4,
                          neither_token_id=5, type_vocab_size=0, objective=objective)
    model = McBertFairseqModel(McBertForPreTraining(config)).eval()
    target = torch.randint(6, 30, (2, 10))
    target[1, 7:] = 1  # right padding
    src = target.clone()
    src[0, [2, 5]] = 4
    src[1, 3] = 4
    sample = {"net_input": {"src_tokens": src, "src_lengths": torch.tensor([10, 7])}, "target": target,
              "ntokens": 17, "nsentences": 2}
    criterion = McBertCriterion(SimpleNamespace(target_dictionary=SimpleNamespace(pad=lambda: 1)))
    torch.manual_seed(5)
    loss, sample_size, log = criterion(model, sample)
    assert sample_size == 3 and log["n_tokens"] == 17
    torch.manual_seed(5)
    hf = model.pretraining.pretrain(target, src.eq(4), target.ne(1).long())
    torch.testing.assert_close(loss / sample_size, hf.loss)
    torch.testing.assert_close(loss, hf.loss_parts.mlm_sum + weight * hf.loss_parts.discriminator_sum * 3 / 17)


def test_task_rejects_random_or_kept_masked_tokens(english_mlm_bin):
    from plugins.mc_bert import McBertTask, McBertTaskConfig

    with pytest.raises(ValueError, match="must be 0 for the mc_bert task"):
        McBertTask(McBertTaskConfig(data=str(english_mlm_bin), random_token_prob=0.1, seed=1))
    task = McBertTask.setup_task(McBertTaskConfig(data=str(english_mlm_bin), tokens_per_sample=32, seed=1))
    assert task.dictionary[task.neither_idx] == "<neither>" and task.dictionary[task.mask_idx] == "<mask>"
    task.load_dataset("valid")
    dataset = task.datasets["valid"]
    batch = dataset.collater([dataset[i] for i in range(4)])
    source, target = batch["net_input"]["src_tokens"], batch["target"]
    masked = source.eq(task.mask_idx)
    assert masked.any() and torch.equal(source[~masked], target[~masked])  # the target is the whole original
    assert not target.eq(task.mask_idx).any()


@pytest.mark.slow
def test_fairseq_train_end_to_end(english_mlm_bin, tmp_path):
    save = tmp_path / "ck"
    done = _run("fairseq-train", str(english_mlm_bin), "--task", "mc_bert", "--criterion", "mc_bert", "--arch",
                "mc_bert_small", *TINY, "--max-update", "4", "--save-dir", str(save))
    log = done.stdout + done.stderr
    assert "disc_acc" in log and "| valid |" in log
    state = torch.load(save / "checkpoint_last.pt", weights_only=False)
    keys = set(state["model"])
    assert any(k.startswith("pretraining.meta_controller.encoder.layers.1.") for k in keys)
    assert state["cfg"]["model"].encoder_embed_dim == 32 and state["cfg"]["model"].mc_size_divider == 2
    head = state["model"]["pretraining.head.dense.weight"]
    assert head.shape == (32, 32)


@pytest.mark.slow
@pytest.mark.distributed
def test_fairseq_distributed_training_with_two_cpu_processes(english_mlm_bin, tmp_path):
    """fairseq's own distributed training (2 processes, gloo, legacy_ddp): the task masks per example, fairseq
    all-reduces the criterion's sums and sample sizes; 3 updates, and both ranks end with identical weights."""
    logs = run_fairseq_train_on_two_ranks(tmp_path, str(english_mlm_bin), "--task", "mc_bert", "--criterion",
                                          "mc_bert", "--arch", "mc_bert_small", *TINY, "--max-update", "3",
                                          "--save-dir", str(tmp_path / "ddp"))
    assert "num_updates 3" in logs[0] and "disc_acc" in logs[0]
    state = torch.load(tmp_path / "ddp" / "checkpoint_last.pt", weights_only=False)
    assert state["cfg"]["distributed_training"]["distributed_world_size"] == 2


@pytest.mark.parametrize("positions", ["tupe_absolute", "tupe_relative"])
def test_the_position_encoding_is_a_flag_for_both_encoders(english_mlm_bin, positions):
    """--position-embedding-type reaches the HF config: TUPE's term in the main model and the meta controller,
    no position vectors in the input (issue 25: the mc_bert task on the TUPE encoder)."""
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    import plugins  # noqa: F401

    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [str(english_mlm_bin), "--task", "mc_bert", "--criterion", "mc_bert",
                                                "--arch", "mc_bert_small", *TINY, "--position-embedding-type",
                                                positions, "--tupe-relative-buckets", "16"])
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    pretraining = task.build_model(cfg.model).pretraining
    config = pretraining.config
    assert (config.position_embedding_type, config.untie_cls, config.relative_attention_num_buckets) == (
        positions, True, 16)
    main = pretraining.mc_bert
    assert main.embeddings.position_embeddings is None and main.positional_bias is not None
    assert pretraining.meta_controller.embeddings.position_embeddings is None
    task.load_dataset("valid")
    dataset = task.datasets["valid"]
    batch = dataset.collater([dataset[i] for i in range(4)])
    source, target = batch["net_input"]["src_tokens"], batch["target"]
    loss = pretraining.pretrain(target, source.eq(task.mask_idx), target.ne(task.dictionary.pad()).long()).loss
    assert torch.isfinite(loss)
