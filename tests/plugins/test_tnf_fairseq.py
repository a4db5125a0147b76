"""The fairseq task masked_lm_tnf: fairseq-train end to end on a tiny binarized corpus, the notes in the
checkpoint, an exact resume, the plain backbone export, the rare-span marking and bad settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from loopback import run_fairseq_ok as _run

from graftkit.errors import GraftkitError

TINY = ("--task masked_lm_tnf --criterion masked_lm --arch roberta --encoder-layers 1 --encoder-embed-dim 32 "
        "--encoder-ffn-embed-dim 64 --encoder-attention-heads 4 --max-positions 64 --tokens-per-sample 64 "
        "--sample-break-mode complete --batch-size 16 --optimizer adam --lr 1e-3 --no-epoch-checkpoints "
        "--log-format simple --cpu --seed 1 --tnf-min-count 3 --tnf-max-count 12 --tnf-half-window 4 "
        "--disable-validation").split()


@pytest.mark.slow
def test_fairseq_train_takes_notes_resumes_exactly_and_exports(english_mlm_bin, tmp_path):
    _run("fairseq-train", str(english_mlm_bin), *TINY, "--max-update", "4", "--save-interval-updates", "2",
         "--save-dir", str(tmp_path / "a"))
    straight = torch.load(tmp_path / "a/checkpoint_last.pt", weights_only=False)
    notes, has_note = straight["model"]["tnf_notes.notes"], straight["model"]["tnf_notes.has_note"]
    assert has_note.sum() > 0 and notes[has_note].abs().sum() > 0 and (notes[~has_note] == 0).all()
    middle = next((tmp_path / "a").glob("checkpoint_*_2.pt"))
    assert not torch.equal(torch.load(middle, weights_only=False)["model"]["tnf_notes.notes"], notes)
    _run("fairseq-train", str(english_mlm_bin), *TINY, "--max-update", "4", "--restore-file", str(middle),
         "--save-dir", str(tmp_path / "b"))
    resumed = torch.load(tmp_path / "b/checkpoint_last.pt", weights_only=False)["model"]
    for key, value in straight["model"].items():
        assert torch.equal(resumed[key], value), key  # notes and weights: the same two steps again

    from fairseq import checkpoint_utils

    from plugins.tnf import export_backbone

    out = export_backbone(tmp_path / "a/checkpoint_last.pt", tmp_path / "plain.pt")
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([str(out)],
                                                                      arg_overrides={"data": str(english_mlm_bin)})
    assert type(task).__name__ == "MaskedLMTask" and not hasattr(models[0], "tnf_notes")
    assert set(models[0].state_dict()) == {k for k in straight["model"] if not k.startswith("tnf_notes.")}
    with pytest.raises(GraftkitError, match="not found"):
        export_backbone(tmp_path / "missing.pt", tmp_path / "x.pt")


def _task(english_mlm_bin: Path, **overrides):
    from fairseq.tasks import TASK_REGISTRY

    import plugins  # noqa: F401
    from plugins.tnf import MaskedLMTnfConfig

    cfg = MaskedLMTnfConfig(data=str(english_mlm_bin), **{"tnf_min_count": 3, "tnf_max_count": 12, **overrides})
    return TASK_REGISTRY["masked_lm_tnf"].setup_task(cfg)


def test_rare_words_and_spans(english_mlm_bin):
    task = _task(english_mlm_bin)
    d = task.dictionary
    rare = [i for i in range(len(d)) if task.rare_index[i] >= 0]
    assert rare and all(3 <= d.count[i] <= 12 for i in rare) and task.mask_idx not in rare
    assert sorted(task.rare_index[rare].tolist()) == list(range(len(rare)))
    tokens = torch.tensor([[0, rare[0], 5, rare[1], 2], [0, 6, 7, 8, 2]])
    spans = task.rare_spans(tokens)
    assert spans.tolist() == [[[int(task.rare_index[rare[0]]), 1, 1], [int(task.rare_index[rare[1]]), 3, 3]],
                              [[-1, -1, -1], [-1, -1, -1]]]


def test_bad_settings(english_mlm_bin):
    with pytest.raises(GraftkitError, match="min_count"):
        _task(english_mlm_bin, tnf_min_count=20, tnf_max_count=12)
    with pytest.raises(ValueError, match="note-weight"):
        _task(english_mlm_bin, tnf_note_weight=1.5)
    with pytest.raises(ValueError, match="note-momentum"):
        _task(english_mlm_bin, tnf_note_momentum=-0.5)
    from fairseq.tasks import TASK_REGISTRY

    from plugins.tnf import MaskedLMTnfConfig

    with pytest.raises(GraftkitError, match="no dictionary word"):
        TASK_REGISTRY["masked_lm_tnf"].setup_task(MaskedLMTnfConfig(data=str(english_mlm_bin), tnf_min_count=10 ** 6,
                                                                    tnf_max_count=10 ** 7))


def test_fairseq_input_is_the_formula_and_eval_is_the_backbone(english_mlm_bin):
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    import plugins  # noqa: F401

    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [str(english_mlm_bin), *TINY, "--dropout", "0"])
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model).eval()
    encoder = model.encoder.sentence_encoder
    rare = [i for i in range(len(task.dictionary)) if task.rare_index[i] >= 0]
    tokens = torch.tensor([[0, rare[0], 5, rare[1], 2], [0, 6, rare[2], 8, 2]])
    notes = model.tnf_notes
    notes.notes.normal_()
    notes.has_note[task.rare_index[rare[1]]] = True
    notes.has_note[task.rare_index[rare[2]]] = True
    spans = task.rare_spans(tokens)
    sums = []
    encoder.layernorm_embedding.register_forward_pre_hook(lambda module, inputs: sums.append(inputs[0]))
    with torch.no_grad():
        plain = model(tokens, features_only=True)[0]
        task._step = {"encoder": encoder, "notes": notes, "spans": spans, "labels": None}
        try:
            model(tokens, features_only=True)
        finally:
            task._step = None
        tok, pos = encoder.embed_tokens(tokens), encoder.embed_positions(tokens)
    expected = tok + pos
    for b, i, token in ((0, 3, rare[1]), (1, 2, rare[2])):  # rare[0] has no note yet: unchanged
        expected[b, i] = 0.5 * (tok[b, i] + pos[b, i]) + 0.5 * notes.notes[task.rare_index[token]]
    torch.testing.assert_close(sums[1], expected)
    assert torch.equal(sums[0], tok + pos) and not torch.equal(sums[1], sums[0])
    with torch.no_grad():
        assert torch.equal(model(tokens, features_only=True)[0], plain)  # no step: the plain backbone


def _training_setup(english_mlm_bin: Path, seed: int):
    """Task, model (its ``--tnf-first-note ema`` start drawn after ``torch.manual_seed(seed)``), criterion,
    optimizer and a masked batch holding rare words, as fairseq-train builds them."""
    from fairseq import optim, options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    import plugins  # noqa: F401

    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [str(english_mlm_bin), *TINY, "--dropout", "0", "--tnf-first-note",
                                                "ema"])
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    torch.manual_seed(seed)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    optimizer = optim.build_optimizer(cfg.optimizer, list(model.parameters()))
    rare = [i for i in range(len(task.dictionary)) if task.rare_index[i] >= 0]
    original = torch.tensor([[0, rare[0], 5, rare[1], 2], [0, 6, rare[2], 8, 2]])
    source = original.clone()
    source[1, 3] = task.mask_idx
    target = torch.full_like(original, task.dictionary.pad())
    target[1, 3] = original[1, 3]
    sample = {"net_input": {"src_tokens": source, "src_lengths": torch.tensor([5, 5])}, "target": target,
              "ntokens": 10, "nsentences": 2}
    return task, model, criterion, optimizer, sample


def _dummy_batch_worker(rank: int, port: int, data: str, out: str) -> None:
    from loopback import gloo_group

    with gloo_group(rank, 2, port):
        task, model, criterion, optimizer, sample = _training_setup(Path(data), seed=rank)  # different starts
        start = model.tnf_notes.notes.clone()
        task.train_step(sample, model, criterion, optimizer, 0, ignore_grad=rank == 1)  # rank 1: a dummy batch
        torch.save({"start": start, "notes": model.tnf_notes.notes.clone()}, f"{out}/rank{rank}.pt")


def test_a_dummy_batch_takes_no_notes(english_mlm_bin):
    task, model, criterion, optimizer, sample = _training_setup(english_mlm_bin, seed=0)
    start = model.tnf_notes.notes.clone()
    task.train_step(sample, model, criterion, optimizer, 0, ignore_grad=True)
    assert torch.equal(model.tnf_notes.notes, start)
    task.train_step(sample, model, criterion, optimizer, 0)
    assert not torch.equal(model.tnf_notes.notes, start)


@pytest.mark.distributed
@pytest.mark.slow
def test_ranks_start_from_the_same_notes_and_a_dummy_batch_adds_none(english_mlm_bin, tmp_path):
    """2 gloo ranks with different random ``ema`` starts (fairseq broadcasts no buffers): both end the step with
    rank 0's start updated by rank 0's batch alone, as rank 1's batch is a dummy (ignore_grad)."""
    import torch.multiprocessing as mp
    from loopback import free_port

    mp.spawn(_dummy_batch_worker, args=(free_port(), str(english_mlm_bin), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert not torch.equal(ranks[0]["start"], ranks[1]["start"])
    assert torch.equal(ranks[0]["notes"], ranks[1]["notes"])
    task, model, criterion, optimizer, sample = _training_setup(english_mlm_bin, seed=0)
    assert torch.equal(model.tnf_notes.notes, ranks[0]["start"])
    task.train_step(sample, model, criterion, optimizer, 0)  # one process, rank 0's batch
    torch.testing.assert_close(ranks[0]["notes"], model.tnf_notes.notes)


def test_notes_on_the_tupe_encoder_mix_without_position_vectors(english_mlm_bin):
    """--task masked_lm_tnf --arch tupe_tiny (issue 25): a rare token's input is (1 - λ) tok + λ ND[w] (TUPE has no
    position vector in the input); the update takes notes from the TUPE encoder's output."""
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    import plugins  # noqa: F401

    tupe = [w if w != "roberta" else "tupe_tiny" for w in TINY]
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [str(english_mlm_bin), *tupe, "--dropout", "0"])
    task = tasks.setup_task(convert_namespace_to_omegaconf(args).task)
    model = task.build_model(convert_namespace_to_omegaconf(args).model).eval()
    encoder = model.encoder.sentence_encoder
    rare = [i for i in range(len(task.dictionary)) if task.rare_index[i] >= 0]
    tokens = torch.tensor([[0, rare[0], 5, rare[1], 2]])
    notes = model.tnf_notes
    notes.notes.normal_()
    notes.has_note[task.rare_index[rare[1]]] = True
    spans = task.rare_spans(tokens)
    sums = []
    encoder.tupe.embeddings.layer_norm.register_forward_pre_hook(lambda module, inputs: sums.append(inputs[0]))
    with torch.no_grad():
        task._step = {"encoder": encoder, "notes": notes, "spans": spans, "labels": None}
        try:
            model(tokens, features_only=True)
            features = task._step.pop("features")
        finally:
            task._step = None
        tok = encoder.embed_tokens(tokens)
    expected = tok.clone()
    expected[0, 3] = 0.5 * tok[0, 3] + 0.5 * notes.notes[task.rare_index[rare[1]]]  # rare[0]: no note yet
    torch.testing.assert_close(sums[0], expected)
    assert features.shape == (1, 5, encoder.tupe.config.hidden_size)
    before = notes.notes.clone()
    notes.update(features, spans, tokens.ne(task.dictionary.pad()))
    assert not torch.equal(notes.notes[task.rare_index[rare[0]]], before[task.rare_index[rare[0]]])
