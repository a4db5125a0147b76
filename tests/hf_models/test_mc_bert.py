"""mc_bert: the pre-training math of MC-BERT and ELECTRA's RTD (hand-made cases), the HF model type
(config checks, Auto classes, round trip, fine-tuning models without the meta controller, Trainer)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from loopback import WITHOUT_GRAFTKIT
from weight_init import assert_init_sets_every_buffer, assert_init_sets_every_weight

from hf_models import (
    McBertConfig,
    McBertForPreTraining,
    McBertForSequenceClassification,
    McBertForTokenClassification,
    McBertModel,
)
from hf_models.mc_bert import objectives
from hf_models.mc_bert.objectives import (
    LossParts,
    candidate_scores,
    choose_masked_positions,
    multi_choice_candidates,
    pretraining_loss,
    replaced_token_detection_sum,
    sample_negatives,
)

MASK, NEITHER = 4, 5
TINY = dict(vocab_size=40, hidden_size=24, num_hidden_layers=2, num_attention_heads=6, intermediate_size=48,
            max_position_embeddings=16, mask_token_id=MASK, neither_token_id=NEITHER, mc_size_divider=3)


def batch(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(6, 40, (3, 12), generator=gen)
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[2, 7:] = 0
    ids[2, 7:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- the math, on hand-made cases ---------------------------------------------------------------------------

def test_candidate_layout_and_labels_on_a_hand_made_batch():
    original = torch.tensor([[11, 12, 13], [14, 15, 16]])
    corrupted = torch.tensor([[21, 12, 13], [14, 15, 26]])  # (0,0) and (1,2) replaced
    negatives = torch.tensor([[[31, 32, 33], [41, 42, 43], [51, 52, 53]],
                              [[61, 62, 63], [71, 72, 73], [81, 82, 83]]])  # k - 1 = 3 per token
    candidates, labels = multi_choice_candidates(original, corrupted, negatives, NEITHER)
    assert candidates.tolist() == [
        [[NEITHER, 11, 32, 33], [NEITHER, 41, 42, 43], [NEITHER, 51, 52, 53]],
        [[NEITHER, 61, 62, 63], [NEITHER, 71, 72, 73], [NEITHER, 16, 82, 83]]]
    assert labels.tolist() == [[1, 0, 0], [0, 0, 1]]  # c1 where replaced, c0 (<neither>) otherwise


def test_a_sample_equal_to_the_original_is_not_a_replacement():
    original = torch.tensor([7, 8, 9])
    corrupted = torch.tensor([7, 8, 30])  # position 0 was masked but the MC sampled the original back
    negatives = torch.tensor([[20, 21], [22, 23], [24, 25]])
    candidates, labels = multi_choice_candidates(original, corrupted, negatives, NEITHER)
    assert labels.tolist() == [0, 0, 1]
    assert candidates[0].tolist() == [NEITHER, 20, 21]  # no original at c1: the answer is <neither>
    # the model agrees: in its outputs every label is exactly "corrupted != original"
    model = McBertForPreTraining(McBertConfig(**TINY))
    out = model(**batch(), generator=seeded())
    tokens = batch()["attention_mask"].bool()
    assert torch.equal(out.discriminator_labels.bool(), (out.corrupted_input_ids != batch()["input_ids"])[tokens])


def test_candidate_scores_are_the_head_times_candidate_embeddings_plus_bias():
    torch.manual_seed(0)
    features, embedding, bias = torch.randn(5, 8), torch.randn(30, 8), torch.randn(30)
    candidates = torch.randint(0, 30, (5, 4))
    full = features @ embedding.T + bias  # the O(V·d) logits, only to check the O(k·d) gather
    torch.testing.assert_close(candidate_scores(features, candidates, embedding, bias),
                               full.gather(1, candidates))
    candidates[0, 2] = candidates[0, 1]  # a duplicate scores the same
    scores = candidate_scores(features, candidates, embedding, bias)
    assert scores[0, 2] == scores[0, 1]


def test_masking_takes_the_expected_count_of_maskable_tokens():
    maskable = torch.ones(4, 40, dtype=torch.bool)
    maskable[1, 20:] = False
    maskable[2, :5] = False
    masked = choose_masked_positions(maskable, 0.15, seeded(1))
    assert not (masked & ~maskable).any()
    counts = masked.sum(-1)
    n = maskable.sum(-1)
    assert ((counts == (0.15 * n).floor()) | (counts == (0.15 * n).floor() + 1)).all()
    assert torch.equal(masked, choose_masked_positions(maskable, 0.15, seeded(1)))
    assert not torch.equal(masked, choose_masked_positions(maskable, 0.15, seeded(2)))


def negatives(logits: torch.Tensor, num: int, **options) -> torch.Tensor:
    """sample_negatives for hand-made logits: the vocabulary head with features = logits, weight = I."""
    vocab = logits.shape[-1]
    return sample_negatives(logits, torch.eye(vocab), torch.zeros(vocab), num, **options)


def test_negatives_sampling_options():
    logits = torch.full((3, 10), -5.0)
    logits[:, [1, 2, 3]] = 5.0  # almost all mass on tokens 1, 2, 3
    originals = torch.tensor([1, 2, 3])
    distinct = negatives(logits, 3, with_replacement=False, generator=seeded())
    assert [sorted(row) for row in distinct.tolist()] == [[1, 2, 3]] * 3  # without replacement: all three
    excluded = negatives(logits, 5, with_replacement=False, exclude=originals, generator=seeded())
    assert not (excluded == originals[:, None]).any() and all(len(set(r)) == 5 for r in excluded.tolist())
    peaked = torch.full((2, 10), -30.0)
    peaked[:, 7] = 30.0
    repeated = negatives(peaked, 4, with_replacement=True, generator=seeded())
    assert (repeated == 7).all()  # with replacement, the reference's duplicates are kept
    distinct = negatives(peaked, 4, with_replacement=False, generator=seeded())
    assert (distinct[:, 0] == 7).all() and all(len(set(r)) == 4 for r in distinct.tolist())  # Gumbel fallback
    excluded = negatives(peaked, 4, with_replacement=True, exclude=torch.tensor([7, 7]), generator=seeded())
    assert not (excluded == 7).any()
    assert torch.equal(negatives(logits, 3, with_replacement=True, generator=seeded(5)),
                       negatives(logits, 3, with_replacement=True, generator=seeded(5)))


def chi_square(draws: torch.Tensor, probabilities: torch.Tensor) -> float:
    """Pearson's statistic of the token counts of each row of ``draws`` [rows, N] against that row of
    ``probabilities`` [rows, V] (nothing may be drawn outside the support)."""
    counts = torch.stack([torch.bincount(row, minlength=probabilities.shape[-1]) for row in draws]).double()
    expected = probabilities.double() * draws.shape[-1]
    support = expected > 0
    assert (counts[~support] == 0).all()  # never an excluded token, never the last block's padding
    return float(((counts - expected)[support] ** 2 / expected[support]).sum())


def chi_square_bound(probabilities: torch.Tensor) -> float:
    """4.5 standard deviations above the statistic's mean for the degrees of freedom (p < 1e-5)."""
    degrees = int((probabilities > 0).sum()) - len(probabilities)
    return degrees + 4.5 * (2 * degrees) ** 0.5


@pytest.mark.parametrize("block_size, sub_block_size", [(1, 1), (8, 4), (12, 3), (1024, 32)])
def test_vocabulary_head_draws_follow_the_softmax(block_size, sub_block_size):
    torch.manual_seed(0)
    vocab = 37  # 37 blocks of one token (row 1 excludes token 0: its first block has no mass); 4 blocks of 8 and
    # a partial one; 3 blocks of 12 and one of a single token (row 2 excludes it); one block
    features, weight, bias = torch.randn(3, 5), torch.randn(vocab, 5), torch.randn(vocab)
    computed = 2 * torch.randn(2, vocab)  # rows whose logits are at hand (the MLM rows)
    logits = torch.cat([features @ weight.T + bias, computed])
    exclude = torch.tensor([int(logits[0].argmax()), 0, vocab - 1, int(logits[3].argmax()), 5])
    drawn = objectives.sample_from_vocabulary_head(
        features, weight, bias, 20_000, computed_logits=computed, exclude=exclude, generator=seeded(),
        block_size=block_size, sub_block_size=sub_block_size)
    assert drawn.shape == (5, 20_000)
    excluded = logits.index_put((torch.arange(5), exclude), torch.tensor(float("-inf")))
    expected = torch.softmax(excluded, -1)
    assert chi_square(drawn, expected) < chi_square_bound(expected)
    # the statistic tells a 10% change of temperature apart
    assert chi_square(drawn, torch.softmax(1.1 * excluded, -1)) > 3 * chi_square_bound(expected)


def test_negatives_without_replacement_are_successive_draws():
    """P(first = a, second = b) = p_a · p_b / (1 − p_a) over the tokens not excluded, through both the pool of
    draws and the Gumbel top-k of peaked rows, for rows of the vocabulary head and rows of given logits."""
    logits = torch.tensor([3.0, 1.0, 0.0, 0.0, -1.0, 2.0])
    rows = 8_000
    features = logits.repeat(rows, 1)  # with weight = I: the vocabulary head gives these logits
    exclude = torch.full((2 * rows,), 5)
    drawn = sample_negatives(features, torch.eye(6), torch.zeros(6), 2, with_replacement=False,
                             computed_logits=features, exclude=exclude, generator=seeded())
    assert (drawn[:, 0] != drawn[:, 1]).all() and not (drawn == 5).any()
    p = torch.softmax(logits.index_fill(0, torch.tensor([5]), float("-inf")), -1).double()
    pairs = p[:, None] * p[None, :] / (1 - p[:, None])
    pairs.fill_diagonal_(0)
    for half in (drawn[:rows], drawn[rows:]):
        assert chi_square((half[:, 0] * 6 + half[:, 1])[None], pairs.flatten()[None]) < chi_square_bound(
            pairs.flatten()[None])
    # both ways of drawing ran: some pools of 8 draws held a single distinct token
    pool = objectives.sample_from_vocabulary_head(features, torch.eye(6), torch.zeros(6), 8, exclude=exclude[:rows],
                                                  generator=seeded(1))
    assert (objectives._first_distinct(pool, 2)[1] < 2).any()


def test_pretraining_gradients_equal_the_full_vocabulary_computation(monkeypatch):
    """Given the model's own masking, corruption and candidates, its loss and every gradient equal a
    straightforward recomputation: full-vocabulary logits for the MC's MLM loss and for the main model's
    candidate scores. Small vocabulary blocks: the blocked sampling runs over several blocks."""
    monkeypatch.setattr(objectives, "VOCABULARY_BLOCK", 8)
    monkeypatch.setattr(objectives, "SUB_BLOCK", 4)
    torch.manual_seed(0)
    config = McBertConfig(**TINY, mc_loss_weight=7.0)
    model = McBertForPreTraining(config).eval()  # no dropout: the recomputation sees the same network
    inputs = batch(2)
    out = model(**inputs, generator=seeded())
    out.loss.backward()
    ours = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)

    tokens, masked = inputs["attention_mask"].bool(), out.masked_positions
    embedding = model.get_input_embeddings().weight
    mc = model.meta_controller
    mc_hidden = mc(inputs["input_ids"].masked_fill(masked, MASK), model.get_input_embeddings(),
                   inputs["attention_mask"])
    mc_logits = mc.lm_transform(mc_hidden) @ mc.project(embedding).T + model.vocabulary_bias  # [b, s, V]
    mlm = F.cross_entropy(mc_logits[masked], inputs["input_ids"][masked])
    hidden = model.mc_bert(out.corrupted_input_ids, inputs["attention_mask"]).last_hidden_state[tokens]
    vocabulary_scores = model.head(hidden) @ embedding.T + model.vocabulary_bias  # [n, V]
    discriminator = F.cross_entropy(vocabulary_scores.gather(1, out.candidate_ids), out.discriminator_labels)
    loss = mlm + 7.0 * discriminator
    torch.testing.assert_close(out.loss, loss)
    loss.backward()
    assert set(ours) == {name for name, p in model.named_parameters() if p.grad is not None}
    for name, p in model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(ours[name], p.grad, msg=name)
    # the candidates follow the layout with several blocks: distinct negatives, never the original
    negatives = out.candidate_ids[:, 2:]
    assert all(len(set(row)) == len(row) for row in out.candidate_ids[:, 1:].tolist())
    assert not (negatives == inputs["input_ids"][tokens][:, None]).any()


def test_loss_weighting_is_the_references():
    parts = LossParts(mlm_sum=torch.tensor(6.0), n_masked=torch.tensor(3), discriminator_sum=torch.tensor(8.0),
                      n_tokens=torch.tensor(4))
    loss, sample_size = pretraining_loss(parts, weight=20.0)
    assert float(loss) == 6 + 20 * 8 * 3 / 4 and int(sample_size) == 3  # reference: sums, sample size n_masked
    assert float(objectives.mean_pretraining_loss(parts, 20.0)) == 6 / 3 + 20 * 8 / 4  # means per token
    mlm_only = parts._replace(discriminator_sum=None)
    assert float(objectives.mean_pretraining_loss(mlm_only, 20.0)) == 2.0


@pytest.mark.parametrize("objective", ["mc", "rtd", "mlm"])
def test_a_batch_of_padding_only_has_loss_zero(objective):
    """Nothing to mask or discriminate: the reference's "nothing masked" case (loss 0), not a crash in the
    sampling (its vocabulary head gets no rows)."""
    torch.manual_seed(0)
    model = McBertForPreTraining(McBertConfig(**TINY, objective=objective))
    ids = batch()["input_ids"]
    out = model(ids, attention_mask=torch.zeros_like(ids), generator=seeded())
    assert float(out.loss) == 0.0
    out.loss.backward()
    assert objectives.sample_from_vocabulary_head(torch.zeros(0, 5), torch.randn(37, 5), torch.zeros(37), 3,
                                                  block_size=8, sub_block_size=4).shape == (0, 3)


@pytest.mark.parametrize("objective", ["mc", "rtd"])
def test_model_loss_is_mlm_plus_weighted_discriminator_from_its_own_outputs(objective):
    torch.manual_seed(0)
    config = McBertConfig(**TINY, objective=objective, mc_loss_weight=7.0, rtd_loss_weight=3.0)
    model = McBertForPreTraining(config)
    inputs = batch()
    out = model(**inputs, generator=seeded())
    tokens = inputs["attention_mask"].bool()
    if objective == "mc":
        expected_disc = F.cross_entropy(out.logits, out.discriminator_labels)
        assert out.logits.shape == (int(tokens.sum()), config.num_candidates)  # k scores, not V
        weight = 7.0
    else:
        expected_disc = F.binary_cross_entropy_with_logits(out.logits, out.discriminator_labels.float())
        weight = 3.0
    torch.testing.assert_close(out.discriminator_loss, expected_disc)
    torch.testing.assert_close(out.loss, out.mlm_loss + weight * expected_disc)
    masked = out.masked_positions
    assert masked.any() and not (masked & ~tokens).any()
    assert torch.equal(out.corrupted_input_ids[~masked], inputs["input_ids"][~masked])  # only masked change


def test_model_candidates_follow_the_layout():
    torch.manual_seed(0)
    for exclude in (True, False):
        model = McBertForPreTraining(McBertConfig(**TINY, candidates_exclude_original=exclude))
        inputs = batch(3)
        out = model(**inputs, generator=seeded())
        tokens = inputs["attention_mask"].bool()
        original = inputs["input_ids"][tokens]
        candidates, labels = out.candidate_ids, out.discriminator_labels
        assert (candidates[:, 0] == NEITHER).all()
        assert torch.equal(candidates[labels == 1, 1], original[labels == 1])
        unreplaced_negatives = candidates[labels == 0, 1:]
        replaced_negatives = candidates[labels == 1, 2:]
        hits = ((unreplaced_negatives == original[labels == 0, None]).sum()
                + (replaced_negatives == original[labels == 1, None]).sum())
        if exclude:  # the paper: the true token is never a negative
            assert hits == 0
        else:  # the reference: the MC, seeing the unmasked token, samples it back often
            assert hits > 0


def test_rtd_equals_electras_loss_on_a_hand_made_case():
    logits = torch.tensor([2.0, -1.0, 0.5, 0.0])
    replaced = torch.tensor([1, 0, 0, 1])
    by_hand = -(math.log(1 / (1 + math.exp(-2.0))) + math.log(1 - 1 / (1 + math.exp(1.0)))
                + math.log(1 - 1 / (1 + math.exp(-0.5))) + math.log(0.5))
    assert float(replaced_token_detection_sum(logits, replaced)) == pytest.approx(by_hand, rel=1e-6)


def test_rtd_head_and_loss_equal_hf_electra():
    from transformers import ElectraConfig, ElectraForPreTraining

    torch.manual_seed(0)
    electra = ElectraForPreTraining(ElectraConfig(vocab_size=40, embedding_size=24, hidden_size=24,
                                                  num_hidden_layers=1, num_attention_heads=4,
                                                  intermediate_size=32)).eval()
    inputs = batch()
    labels = torch.randint(0, 2, inputs["input_ids"].shape)
    with torch.no_grad():
        hf = electra(**inputs, labels=labels, output_hidden_states=True)
        head = objectives.ReplacedTokenDetectionHead(24, "gelu")
        head.load_state_dict(electra.discriminator_predictions.state_dict())
        torch.testing.assert_close(head(hf.hidden_states[-1]), hf.logits)
    active = inputs["attention_mask"].bool()
    ours = replaced_token_detection_sum(hf.logits[active], labels[active]) / active.sum()
    torch.testing.assert_close(ours, hf.loss)


def test_no_gradient_through_the_sampling():
    torch.manual_seed(0)
    for objective in ("mc", "rtd"):
        model = McBertForPreTraining(McBertConfig(**TINY, objective=objective))
        out = model(**batch(), generator=seeded())
        out.discriminator_loss.backward(retain_graph=True)
        # the discriminator's loss reaches the shared embeddings and bias, never the meta controller
        assert all(p.grad is None for p in model.meta_controller.parameters())
        assert model.mc_bert.embeddings.word_embeddings.weight.grad is not None
        model.zero_grad(set_to_none=True)
        out.mlm_loss.backward()
        # and the meta controller's MLM loss never reaches the main encoder
        assert all(p.grad is None for p in model.mc_bert.encoder.parameters())
        assert all(p.grad is not None for p in model.meta_controller.encoder.parameters())


def test_reproducible_with_a_generator_and_with_the_global_seed():
    torch.manual_seed(0)
    model = McBertForPreTraining(McBertConfig(**TINY)).eval()
    first = model(**batch(), generator=seeded(3))
    second = model(**batch(), generator=seeded(3))
    assert torch.equal(first.candidate_ids, second.candidate_ids) and torch.equal(first.loss, second.loss)
    assert not torch.equal(first.candidate_ids, model(**batch(), generator=seeded(4)).candidate_ids)
    torch.manual_seed(9)
    third = model(**batch())
    torch.manual_seed(9)
    assert torch.equal(third.loss, model(**batch()).loss)


def test_mlm_objective_has_no_meta_controller():
    model = McBertForPreTraining(McBertConfig(**{**TINY, "objective": "mlm", "neither_token_id": None}))
    assert model.meta_controller is None
    out = model(**batch(), generator=seeded())
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, batch()["input_ids"][out.masked_positions]))


def test_meta_controller_sizes_and_shared_embeddings():
    model = McBertForPreTraining(McBertConfig(**TINY))
    mc = model.meta_controller
    assert mc.encoder.config.hidden_size == 8 and mc.encoder.config.intermediate_size == 16
    assert mc.encoder.config.num_attention_heads == 2 and len(mc.encoder.layers) == 2
    assert mc.embeddings.word_embeddings is None  # reads the main model's, through the projection
    assert tuple(mc.embedding_projection.weight.shape) == (8, 24)
    same = McBertForPreTraining(McBertConfig(**{**TINY, "mc_size_divider": 1}))
    assert same.meta_controller.embedding_projection is None


# --- bad input --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value, message", [
    ("num_candidates", 1, "num_candidates .* >= 2"),
    ("num_candidates", 41, "must not exceed vocab_size"),
    ("mc_size_divider", 5, r"mc_size_divider \(5\) must divide hidden_size"),
    ("mc_size_divider", 0, "mc_size_divider must be a positive integer"),
    ("objective", "mlm+", "objective must be one of"),
    ("mask_prob", 1.0, "mask_prob"),
    ("mc_loss_weight", -1.0, "mc_loss_weight"),
    ("neither_token_id", MASK, "must differ"),
    ("mask_token_id", 40, "mask_token_id must be None or in"),
])
def test_bad_config_names_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        McBertConfig(**{**TINY, field: value})


def test_vocabulary_without_mask_or_neither_is_a_clear_error():
    with pytest.raises(ValueError, match="needs a <mask> token"):
        McBertForPreTraining(McBertConfig(**{**TINY, "mask_token_id": None}))
    with pytest.raises(ValueError, match="needs a <neither> token"):
        McBertForPreTraining(McBertConfig(**{**TINY, "neither_token_id": None}))
    McBertForPreTraining(McBertConfig(**{**TINY, "neither_token_id": None, "objective": "rtd"}))  # not needed
    McBertModel(McBertConfig(**{**TINY, "mask_token_id": None, "neither_token_id": None}))  # fine-tuning: fine


# --- HF model type ----------------------------------------------------------------------------------------

def test_registered_with_auto_classes():
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForPreTraining,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
    )

    config = AutoConfig.for_model("mc_bert", **TINY)
    assert isinstance(config, McBertConfig) and McBertConfig().objective == "mc"
    for auto, cls in [(AutoModel, McBertModel), (AutoModelForPreTraining, McBertForPreTraining),
                      (AutoModelForSequenceClassification, McBertForSequenceClassification),
                      (AutoModelForTokenClassification, McBertForTokenClassification)]:
        assert type(auto.from_config(config)) is cls


def test_round_trip_and_fine_tuning_model_without_meta_controller(tmp_path):
    torch.manual_seed(0)
    model = McBertForPreTraining(McBertConfig(**TINY)).eval()
    expected = model(**batch(), generator=seeded(1)).loss
    model.save_pretrained(tmp_path)
    assert (tmp_path / "objectives.py").is_file()  # for trust_remote_code
    loaded = McBertForPreTraining.from_pretrained(tmp_path).eval()
    assert torch.equal(loaded(**batch(), generator=seeded(1)).loss, expected)

    classifier = McBertForSequenceClassification.from_pretrained(tmp_path, num_labels=3).eval()
    keys = set(classifier.state_dict())
    assert not [k for k in keys if k.startswith(("meta_controller", "head", "vocabulary_bias"))]
    main_state = model.mc_bert.state_dict()
    for name, value in classifier.mc_bert.state_dict().items():
        if not name.startswith("pooler"):
            assert torch.equal(value, main_state[name]), name
    encoder = McBertModel.from_pretrained(tmp_path).eval()
    assert not any("meta_controller" in k for k in encoder.state_dict())
    torch.testing.assert_close(encoder(**batch()).last_hidden_state,
                               model.mc_bert(**batch()).last_hidden_state)
    logits = classifier(**batch()).logits
    classifier.save_pretrained(tmp_path / "clf")
    again = McBertForSequenceClassification.from_pretrained(tmp_path / "clf").eval()
    torch.testing.assert_close(again(**batch()).logits, logits)


def _tiny_tokenizer_and_rows(n_sentences: int = 64):
    from graftkit.data.text import WordVocab, english_sentences

    sentences = english_sentences()[:n_sentences]  # the project's bundled English text
    tokenizer = WordVocab.build(sentences).to_hf_tokenizer(model_max_length=16)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<neither>"]})
    rows = [{"input_ids": ids} for ids in tokenizer(sentences, truncation=True, max_length=16)["input_ids"]]
    return tokenizer, rows


def test_trains_with_hf_trainer(tmp_path):
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from graftkit.runtime import single_thread

    tokenizer, rows = _tiny_tokenizer_and_rows()
    config = McBertConfig(**{**TINY, "vocab_size": len(tokenizer), "mask_token_id": tokenizer.mask_token_id,
                             "neither_token_id": tokenizer.convert_tokens_to_ids("<neither>"),
                             "pad_token_id": tokenizer.pad_token_id})
    torch.manual_seed(0)
    model = McBertForPreTraining(config)
    collator = DataCollatorWithPadding(tokenizer)
    probe = collator(rows[:32])

    def probe_loss() -> float:
        model.eval()
        with torch.no_grad():
            return float(model(**probe, generator=seeded()).loss)

    before = probe_loss()
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=20, per_device_train_batch_size=16,
                             learning_rate=3e-3, warmup_steps=0, report_to=[], save_strategy="no",
                             use_cpu=True, disable_tqdm=True, seed=0)
    with single_thread():
        Trainer(model=model, args=args, train_dataset=rows, data_collator=collator).train()
    after = probe_loss()
    assert after < before - 1.0, (before, after)


@pytest.mark.parametrize("field, text, expected", [
    ("mask_token_id", "4", 4), ("neither_token_id", "None", None), ("classifier_dropout", "0.25", 0.25),
    ("num_candidates", "7", 7), ("mc_loss_weight", "50", 50.0), ("candidates_with_replacement", "true", True),
    ("objective", "rtd", "rtd"), ("problem_type", "regression", "regression"), ("pad_token_id", "None", None)])
def test_every_field_can_be_set_with_config_overrides(field, text, expected):
    """run_mlm.py's --config_overrides (config.update_from_string): transformers' parser takes the type from
    the current value and refused every field whose value is None (mask_token_id, neither_token_id, ...)."""
    config = McBertConfig(**{**TINY, "mask_token_id": None, "neither_token_id": None})
    config.update_from_string(f"{field}={text}")
    assert getattr(config, field) == expected and type(getattr(config, field)) is type(expected)


@pytest.mark.parametrize("overrides, message", [
    ("mask_token_id=x", "mask_token_id takes int"), ("mask_token_id=40", "mask_token_id must be None or in"),
    ("num_candidates=41", "must not exceed vocab_size"), ("no_such_field=1", "isn't in the original config"),
    ("hidden_size=25", "must be divisible by num_attention_heads"), ("mask_token_id", "is not key=value")])
def test_a_bad_config_override_names_the_field_and_changes_nothing(overrides, message):
    config = McBertConfig(**TINY)
    before = config.to_dict()
    with pytest.raises(ValueError, match=message):
        config.update_from_string(f"num_candidates=3,{overrides}")
    assert config.to_dict() == before


def test_pretrains_and_evaluates_the_way_run_mlm_drives_the_trainer(tmp_path):
    """run_mlm.py's path: CONFIG_MAPPING[model_type]() + --config_overrides, AutoModelForMaskedLM.from_config,
    DataCollatorForLanguageModeling, Trainer.train and evaluate (eval_loss and its parts), save, reload."""
    from transformers import (
        CONFIG_MAPPING,
        AutoModelForMaskedLM,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainingArguments,
    )

    from graftkit.runtime import single_thread
    from hf_models.mc_bert import pretraining_metrics

    tokenizer, rows = _tiny_tokenizer_and_rows()
    config = CONFIG_MAPPING["mc_bert"]()
    config.update_from_string(
        f"vocab_size={len(tokenizer)},hidden_size=24,num_hidden_layers=2,num_attention_heads=6,"
        f"intermediate_size=48,max_position_embeddings=16,mask_token_id={tokenizer.mask_token_id},"
        f"neither_token_id={tokenizer.convert_tokens_to_ids('<neither>')},pad_token_id={tokenizer.pad_token_id}")
    torch.manual_seed(0)
    model = AutoModelForMaskedLM.from_config(config)
    assert type(model) is McBertForPreTraining
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=10, per_device_train_batch_size=16,
                             per_device_eval_batch_size=16, learning_rate=3e-3, report_to=[], save_strategy="no",
                             use_cpu=True, disable_tqdm=True, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=rows[:48], eval_dataset=rows[48:],
                      data_collator=DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15),
                      compute_metrics=pretraining_metrics)
    with single_thread():
        before = trainer.evaluate()
        trainer.train()
        after = trainer.evaluate()
    for metrics in (before, after):
        assert all(math.isfinite(metrics[f"eval_{name}"]) for name in ("loss", "mlm_loss", "discriminator_loss"))
        assert metrics["eval_loss"] == pytest.approx(
            metrics["eval_mlm_loss"] + config.mc_loss_weight * metrics["eval_discriminator_loss"], rel=1e-5)
    assert after["eval_loss"] < before["eval_loss"]
    trainer.save_model(tmp_path / "out")
    reloaded = AutoModelForMaskedLM.from_pretrained(tmp_path / "out")
    assert type(reloaded) is McBertForPreTraining and reloaded.config.neither_token_id == config.neither_token_id


def test_the_collators_masked_positions_and_originals_are_used():
    """With labels (DataCollatorForLanguageModeling), the masked positions are those with a label and the
    originals the labels, whatever the collator wrote in input_ids there."""
    model = McBertForPreTraining(McBertConfig(**TINY)).eval()
    inputs = batch()
    labels = torch.full_like(inputs["input_ids"], -100)
    labels[0, 1], labels[1, 3], labels[2, 2] = inputs["input_ids"][0, 1], inputs["input_ids"][1, 3], 7
    collated = inputs["input_ids"].clone()
    collated[0, 1], collated[1, 3], collated[2, 2] = MASK, 9, MASK  # <mask>, a random token, <mask>
    out = model(collated, inputs["attention_mask"], labels=labels, generator=seeded())
    assert torch.equal(out.masked_positions, labels != -100)
    originals = torch.where(labels != -100, labels, inputs["input_ids"])
    expected = model.pretrain(originals, labels != -100, inputs["attention_mask"], generator=seeded())
    assert torch.equal(out.loss, expected.loss)
    with pytest.raises(ValueError, match="labels must have the shape"):
        model(collated, labels=labels[:, :5])


def test_evaluates_its_loss_with_a_collator_without_labels(tmp_path):
    """A collator without labels (DataCollatorWithPadding: the model masks): evaluate() reports eval_loss once
    the Trainer is told the batches carry no labels (label_names=[])."""
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    tokenizer, rows = _tiny_tokenizer_and_rows(32)
    config = McBertConfig(**{**TINY, "vocab_size": len(tokenizer), "mask_token_id": tokenizer.mask_token_id,
                             "neither_token_id": tokenizer.convert_tokens_to_ids("<neither>"),
                             "pad_token_id": tokenizer.pad_token_id})
    args = TrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=16, report_to=[],
                             use_cpu=True, disable_tqdm=True, label_names=[])
    metrics = Trainer(model=McBertForPreTraining(config), args=args, eval_dataset=rows,
                      data_collator=DataCollatorWithPadding(tokenizer)).evaluate()
    assert math.isfinite(metrics["eval_loss"])


_REMOTE_LOAD = WITHOUT_GRAFTKIT + """
import torch
from transformers import AutoConfig, AutoModelForMaskedLM, AutoModelForPreTraining
model = AutoModelForPreTraining.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
batch = torch.load(sys.argv[2])
# run_mlm.py --config_name FOLDER --trust_remote_code: a fresh pre-training model from the folder's config
fresh = AutoModelForMaskedLM.from_config(AutoConfig.from_pretrained(sys.argv[1], trust_remote_code=True),
                                         trust_remote_code=True)
torch.save({"module": type(model).__module__, "masked_lm_class": type(fresh).__name__,
            "loss": model(**batch, generator=torch.Generator().manual_seed(1)).loss}, sys.argv[3])
"""


@pytest.mark.slow
def test_loads_with_trust_remote_code_without_graftkit(tmp_path):
    import os
    import subprocess
    import sys

    torch.manual_seed(0)
    model = McBertForPreTraining(McBertConfig(**TINY)).eval()
    model.save_pretrained(tmp_path / "model")
    torch.save(batch(), tmp_path / "batch.pt")
    (tmp_path / "load.py").write_text(_REMOTE_LOAD)
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": ""}
    subprocess.run([sys.executable, str(tmp_path / "load.py"), str(tmp_path / "model"), str(tmp_path / "batch.pt"),
                    str(tmp_path / "out.pt")], cwd=tmp_path, env=env, check=True, capture_output=True, text=True)
    result = torch.load(tmp_path / "out.pt")
    assert result["module"].startswith("transformers_modules.")
    assert result["masked_lm_class"] == "McBertForPreTraining"
    torch.testing.assert_close(result["loss"], model(**batch(), generator=seeded(1)).loss)


ALL_CLASSES = [McBertModel, McBertForPreTraining, McBertForSequenceClassification, McBertForTokenClassification]


@pytest.mark.parametrize("cls, objective", [(cls, "mc") for cls in ALL_CLASSES]
                         + [(McBertForPreTraining, "rtd"), (McBertForPreTraining, "mlm")])
def test_weight_init_sets_every_weight_and_buffer(cls, objective):
    """transformers' common tests test_can_init_all_missing_weights and test_init_weights_can_init_buffers
    (the objective changes the pre-training model only)."""
    config = McBertConfig(**TINY, objective=objective, num_labels=3)
    assert_init_sets_every_weight(cls, config)
    assert_init_sets_every_buffer(cls, config)


def test_pretraining_from_an_encoder_folder_starts_as_a_fresh_head(tmp_path):
    """The head, the meta controller and the vocabulary bias a McBertModel folder lacks get the weight init:
    the loss is finite and equals that of a fresh model holding the same weights."""
    config = McBertConfig(**TINY)
    McBertModel(config).save_pretrained(tmp_path)
    loaded = McBertForPreTraining.from_pretrained(tmp_path)
    assert torch.equal(loaded.vocabulary_bias, torch.zeros(config.vocab_size))
    fresh = McBertForPreTraining(config)
    state = {k: v for k, v in loaded.state_dict().items() if k != "vocabulary_bias"}
    assert fresh.load_state_dict(state, strict=False).missing_keys == ["vocabulary_bias"]
    loss = loaded.eval()(**batch(), generator=seeded(1)).loss
    assert torch.isfinite(loss)
    assert torch.equal(loss, fresh.eval()(**batch(), generator=seeded(1)).loss)


@pytest.mark.parametrize("objective", ["mc", "rtd", "mlm"])
def test_resizing_the_vocabulary_resizes_the_vocabulary_bias(objective):
    model = McBertForPreTraining(McBertConfig(**TINY, objective=objective))
    with torch.no_grad():
        model.vocabulary_bias.copy_(torch.arange(40.0))
    model.resize_token_embeddings(50)
    assert model.config.vocab_size == 50 and model.get_input_embeddings().num_embeddings == 50
    assert torch.equal(model.vocabulary_bias, torch.cat([torch.arange(40.0), torch.zeros(10)]))
    ids = torch.randint(6, 50, (3, 12))
    ids[:, 0] = 49  # a new token
    loss = model(ids, generator=seeded()).loss
    assert torch.isfinite(loss)
    loss.backward()
    assert model.vocabulary_bias.grad.shape == (50,)
    model.resize_token_embeddings(30, pad_to_multiple_of=16)  # shrink: the kept rows keep their values
    assert torch.equal(model.vocabulary_bias.detach(), torch.arange(32.0))
    with pytest.raises(ValueError, match="neither_token_id=5"):
        model.resize_token_embeddings(5)
    assert model.vocabulary_bias.shape == (32,)  # refused before any change


def test_main_model_is_the_cores_base_model_left_padding_included():
    from hf_models.core.modeling import EncoderModel

    torch.manual_seed(0)
    model = McBertModel(McBertConfig(**TINY)).eval()
    assert isinstance(model, EncoderModel)
    ids = torch.randint(5, 40, (1, 6))
    pads = torch.zeros(1, 4, dtype=torch.long)
    right, left = torch.cat([ids, pads], dim=1), torch.cat([pads, ids], dim=1)
    with torch.no_grad():
        right_out = model(right, attention_mask=right.ne(0).long()).last_hidden_state
        left_out = model(left, attention_mask=left.ne(0).long()).last_hidden_state
    torch.testing.assert_close(left_out[:, 4:], right_out[:, :6], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cls", [McBertModel, McBertForSequenceClassification, McBertForTokenClassification])
def test_fine_tuning_models_export_and_compile_to_the_eager_outputs(cls):
    torch.manual_seed(0)
    model = cls(McBertConfig(**TINY, num_labels=3)).eval()
    ids = torch.randint(5, 40, (2, 8))
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, :3] = 0  # one left-padded row
    with torch.no_grad():
        expected = model(ids, attention_mask=mask)
        program = torch.export.export(model, (ids,), kwargs={"attention_mask": mask})
        exported = program.module()(ids, attention_mask=mask)
        torch._dynamo.reset()
        compiled = torch.compile(model, fullgraph=True, backend="eager")(ids, attention_mask=mask)
    for got in (exported, compiled):
        torch.testing.assert_close(got[0], expected[0], atol=1e-6, rtol=1e-6)
