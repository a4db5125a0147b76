"""The HF models give the outputs and configs that graftkit's code gave at commit b2e7509, before the core grew
the hooks TUPE and TNF now use (the positional attention bias, the position ids) and the shared config base.

``reference_outputs_b2e7509.pt`` holds what :func:`run_cases` returned at b2e7509 (made by running this file as
a script there: ``python tests/hf_models/test_reference_outputs.py OUT.pt``): seeded default init (so the
weight-init order is pinned too), then a deterministic perturbation, in float64 (platform-independent random
init and tight tolerances) and float32; batches with right padding, left padding, no mask, explicit positions,
token types; TNF's training step with notes; and each config's ``to_dict`` and saved ``config.json``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from hf_models import (
    McBertConfig,
    McBertForSequenceClassification,
    McBertModel,
    PreLNBertConfig,
    PreLNBertForMaskedLM,
    PreLNBertForSequenceClassification,
    PreLNBertForTokenClassification,
    TnfConfig,
    TnfForMaskedLM,
    TupeConfig,
    TupeForMaskedLM,
    TupeForSequenceClassification,
    TupeForTokenClassification,
    TupeModel,
)

REFERENCE = Path(__file__).with_name("reference_outputs_b2e7509.pt")
SIZE = dict(vocab_size=40, hidden_size=24, num_hidden_layers=2, num_attention_heads=3, intermediate_size=48,
            max_position_embeddings=16, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
# not the defaults: every shared field moved, so a field that lost its value would show
CONFIG_FIELDS = dict(vocab_size=77, hidden_size=48, num_hidden_layers=3, num_attention_heads=6,
                     intermediate_size=96, hidden_act="gelu_new", hidden_dropout_prob=0.2,
                     attention_probs_dropout_prob=0.3, max_position_embeddings=33, type_vocab_size=3,
                     initializer_range=0.05, layer_norm_eps=1e-6, embedding_layer_norm=False, pad_token_id=2,
                     classifier_dropout=0.4)
CONFIGS: dict[str, tuple[type, dict]] = {
    "preln_bert": (PreLNBertConfig, dict(layer_norm_position="post", tie_word_embeddings=False)),
    "tupe": (TupeConfig, dict(layer_norm_position="pre", position_mode="relative", untie_cls=False,
                              relative_attention_num_buckets=16, relative_attention_max_distance=40)),
    "mc_bert": (McBertConfig, dict(layer_norm_position="pre", objective="rtd", num_candidates=5,
                                   mc_loss_weight=7.0, rtd_loss_weight=9.0, candidates_with_replacement=True,
                                   candidates_exclude_original=False, mc_size_divider=2, mask_prob=0.25,
                                   mask_token_id=4, neither_token_id=5)),
    "tnf": (TnfConfig, dict(layer_norm_position="pre", num_rare_words=7, note_weight=0.25, note_momentum=0.5,
                            note_half_window=3, first_note="ema", mix_masked_words=True)),
}


def _inputs() -> dict[str, dict[str, torch.Tensor]]:
    """Batches of 3 x 10: right padding only, a left-padded row, no mask, explicit (shifted) positions, types."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(6, 40, (3, 10), generator=gen)
    right = torch.ones(3, 10, dtype=torch.long)
    right[2, 6:] = 0
    left = right.clone()
    left[1, :3] = 0
    types = torch.zeros_like(ids)
    types[:, 5:] = 1
    return {
        "right_padding": {"input_ids": ids, "attention_mask": right},
        "left_padding": {"input_ids": ids, "attention_mask": left},
        "no_mask": {"input_ids": ids},
        "positions": {"input_ids": ids, "attention_mask": right,
                      "position_ids": (torch.arange(10) + 2)[None].expand(3, 10)},
        "types": {"input_ids": ids, "attention_mask": left, "token_type_ids": types},
    }


def _perturb_(model: torch.nn.Module, seed: int) -> None:
    """Add uniform noise (platform-independent) to every weight, so LayerNorms and biases are not 1 / 0."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in sorted(model.named_parameters()):
            param.add_((torch.rand(param.shape, generator=gen, dtype=torch.float64) - 0.5).to(param.dtype) * 0.4)


def _build(cls: type, config, seed: int, dtype: torch.dtype) -> torch.nn.Module:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        torch.manual_seed(seed)
        model = cls(config)
    finally:
        torch.set_default_dtype(previous)
    _perturb_(model, seed + 100)
    return model.eval()


def _outputs(model: torch.nn.Module, inputs: dict[str, torch.Tensor], every_layer: bool) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=every_layer, output_attentions=every_layer, return_dict=True)
    result = {name: getattr(out, name) for name in ("logits", "last_hidden_state", "pooler_output")
              if getattr(out, name, None) is not None}
    if every_layer:
        result["hidden_states"] = torch.stack(out.hidden_states)
        result["attentions"] = torch.stack(out.attentions)
    return result


def _encoder_cases() -> dict[str, Callable[[], dict[str, torch.Tensor]]]:
    tiny = dict(SIZE, num_labels=3)
    mc = dict(tiny, mask_token_id=4, neither_token_id=5)
    models = {
        "preln_pre_mlm": (PreLNBertForMaskedLM, PreLNBertConfig(**tiny)),
        "preln_post_sequence": (PreLNBertForSequenceClassification,
                                PreLNBertConfig(**tiny, layer_norm_position="post")),
        "preln_post_token": (PreLNBertForTokenClassification, PreLNBertConfig(**tiny, layer_norm_position="post")),
        "tupe_absolute_model": (TupeModel, TupeConfig(**tiny)),
        "tupe_absolute_mlm": (TupeForMaskedLM, TupeConfig(**tiny)),
        "tupe_relative_mlm": (TupeForMaskedLM, TupeConfig(**tiny, position_mode="relative",
                                                         relative_attention_num_buckets=8,
                                                         relative_attention_max_distance=12)),
        "tupe_relative_plain_pre_sequence": (TupeForSequenceClassification,
                                             TupeConfig(**tiny, position_mode="relative", untie_cls=False,
                                                        layer_norm_position="pre")),
        "tupe_absolute_no_types_token": (TupeForTokenClassification, TupeConfig(**tiny, type_vocab_size=0)),
        "mc_bert_model": (McBertModel, McBertConfig(**mc)),
        "mc_bert_sequence": (McBertForSequenceClassification, McBertConfig(**mc, layer_norm_position="pre")),
        "tnf_eval_mlm": (TnfForMaskedLM, TnfConfig(**tiny, num_rare_words=3)),
    }
    cases = {}
    for seed, (name, (cls, config)) in enumerate(models.items()):
        for dtype in (torch.float64, torch.float32):
            def case(cls=cls, config=config, seed=seed, dtype=dtype) -> dict[str, torch.Tensor]:
                # every batch and layer in float64; float32 (the dtype casts) on the two padding batches
                model = _build(cls, config, seed, dtype)
                batches = _inputs() if dtype == torch.float64 else {
                    name: inputs for name, inputs in _inputs().items() if name.endswith("padding")}
                return {f"{batch}/{key}": value for batch, inputs in batches.items()
                        if not (batch == "types" and config.type_vocab_size == 0)
                        for key, value in _outputs(model, inputs, every_layer=batch == "left_padding"
                                                   and dtype == torch.float64).items()}
            cases[f"{name}/{str(dtype)[6:]}"] = case
    return cases


def _tnf_training_case(dtype: torch.dtype, first_note: str) -> dict[str, torch.Tensor]:
    """Two training steps with notes mixed in (the second mixes the notes the first took), then eval."""
    config = TnfConfig(**SIZE, num_rare_words=4, note_half_window=1, first_note=first_note)
    model = _build(TnfForMaskedLM, config, 7, dtype).train()
    inputs = _inputs()
    spans = torch.tensor([[[1, 2, 3], [2, 6, 6], [-1, -1, -1]], [[1, 4, 5], [0, 7, 7], [3, 8, 8]],
                          [[0, 0, 1], [3, 3, 3], [-1, -1, -1]]])
    labels = torch.full((3, 10), -100)
    labels[1, 8] = 9
    labels[0, 1] = 7
    result = {}
    for step, batch in enumerate(("right_padding", "types", "no_mask")):
        out = model(**inputs[batch], labels=labels, rare_spans=spans)
        result[f"step{step}/logits"] = out.logits.detach()
        result[f"step{step}/loss"] = out.loss.detach()
        result[f"step{step}/notes"] = model.notes.notes.clone()
        result[f"step{step}/has_note"] = model.notes.has_note.clone()
    with torch.no_grad():
        result["eval/logits"] = model.eval()(**inputs["right_padding"], rare_spans=spans).logits
    return result


def _config_cases() -> dict[str, str]:
    """Each config's ``to_dict`` (defaults, and every field moved) and its saved config.json, as JSON text."""
    import tempfile

    cases = {}
    for model_type, (cls, own) in CONFIGS.items():
        for variant, kwargs in (("default", {}), ("custom", {**CONFIG_FIELDS, **own})):
            config = cls(**kwargs)
            cases[f"{model_type}/{variant}/to_dict"] = json.dumps(config.to_dict(), sort_keys=True, default=str)
            with tempfile.TemporaryDirectory() as folder:
                config.save_pretrained(folder)
                cases[f"{model_type}/{variant}/config.json"] = (Path(folder) / "config.json").read_text()
    return cases


def fingerprint(tensor: torch.Tensor) -> torch.Tensor:
    """[sum |x|, sum x, 6 fixed random projections of x] in float64: equal fingerprints mean equal tensors but
    for a set of measure zero, in 64 bytes (the file stays small)."""
    flat = tensor.detach().to(torch.float64).flatten()
    gen = torch.Generator().manual_seed(flat.numel())
    projections = torch.rand(6, flat.numel(), generator=gen, dtype=torch.float64) * 2 - 1
    return torch.cat([flat.abs().sum()[None], flat.sum()[None], projections @ flat])


def assert_fingerprint(got: torch.Tensor, shape: list[int], want: torch.Tensor, tolerance: float,
                       name: str) -> None:
    """As ``assert_close(got, reference, atol=rtol=tolerance)`` for the fingerprinted reference: entry-wise
    errors e_i <= tolerance * (1 + |x_i|) move each fingerprint entry by at most tolerance * (n + sum |x|)."""
    assert list(got.shape) == shape, f"{name}: shape {list(got.shape)}, reference {shape}"
    bound = tolerance * (got.numel() + float(want[0]))
    difference = (fingerprint(got) - want).abs().max().item()
    assert difference <= bound, f"{name}: fingerprint differs by {difference:.3g} > {bound:.3g}"


def _prints(tensors: dict[str, dict[str, torch.Tensor]]) -> dict[str, dict]:
    return {case: {"keys": list(outputs), "shapes": [list(value.shape) for value in outputs.values()],
                   "fingerprints": torch.stack([fingerprint(value) for value in outputs.values()])}
            for case, outputs in tensors.items()}


def _tnf_training_cases() -> dict[str, dict[str, torch.Tensor]]:
    return {f"tnf_training_{first_note}/{str(dtype)[6:]}": _tnf_training_case(dtype, first_note)
            for dtype in (torch.float64, torch.float32) for first_note in ("replace", "ema")}


def run_cases() -> dict[str, dict]:
    tensors = {name: case() for name, case in _encoder_cases().items()}
    return {"tensors": _prints({**tensors, **_tnf_training_cases()}), "configs": _config_cases()}


@pytest.fixture(scope="module")
def reference() -> dict[str, dict]:
    return torch.load(REFERENCE, weights_only=True)


def _assert_equal_to_reference(reference: dict, case: str, got: dict[str, torch.Tensor]) -> None:
    # float64 differs across CPUs only by summation order; float32 by that and by the AVX2/AVX-512 normal_
    tolerance = 1e-10 if case.endswith("float64") else 1e-5
    want = reference["tensors"][case]
    assert list(got) == want["keys"]
    for key, shape, prints in zip(want["keys"], want["shapes"], want["fingerprints"]):
        # at b2e7509 a float64 note dictionary's EMA rounded γ · mean to float32 (a Python float times the
        # float32 mean); it is now taken in float64, so float64 notes, and a loss that reads them, agree to 1e-8
        loose = case.startswith("tnf_training") and case.endswith("float64") and key.endswith(("notes", "loss"))
        assert_fingerprint(got[key], shape, prints, 1e-8 if loose else tolerance, f"{case} {key}")


@pytest.mark.parametrize("case", sorted(_encoder_cases()))
def test_encoder_outputs_equal_the_reference(reference, case):
    _assert_equal_to_reference(reference, case, _encoder_cases()[case]())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("first_note", ["replace", "ema"])
def test_tnf_training_steps_equal_the_reference(reference, dtype, first_note):
    case = f"tnf_training_{first_note}/{str(dtype)[6:]}"
    _assert_equal_to_reference(reference, case, _tnf_training_case(dtype, first_note))


#: the fields every config gained when positions became a core setting (docs/compose.md), at their defaults:
#: a config of b2e7509 keeps every field and value and gains only these
COMPOSED_FIELDS = dict(position_embedding_type="absolute", untie_cls=True, relative_attention_num_buckets=32,
                       relative_attention_max_distance=128)


#: fields a model type gained since b2e7509 beyond the composed ones, at their defaults (TNF: the stored rare
#: vocabulary, docs/tnf.md)
ADDED_FIELDS: dict[str, dict[str, object]] = {"tnf": {"rare_word_token_ids": None, "word_boundary_marks": None}}


def _with_composed_fields(saved: str, model_type: str) -> dict:
    """A config's JSON at b2e7509 plus :data:`COMPOSED_FIELDS` (a tupe config had TUPE's fields: it gains
    ``position_embedding_type`` matching its ``position_mode``) and the type's :data:`ADDED_FIELDS`."""
    fields = {**ADDED_FIELDS.get(model_type, {}), **json.loads(saved)}
    if model_type == "tupe":
        return {**fields, "position_embedding_type": f"tupe_{fields.get('position_mode', 'absolute')}"}
    return {**COMPOSED_FIELDS, **fields}


def test_configs_equal_the_reference(reference):
    got = _config_cases()
    assert got.keys() == reference["configs"].keys()
    for case, saved in reference["configs"].items():
        assert json.loads(got[case]) == _with_composed_fields(saved, case.split("/")[0]), case


@pytest.mark.parametrize("model_type", sorted(CONFIGS))
def test_configs_saved_at_b2e7509_load_unchanged(reference, tmp_path, model_type):
    from transformers import AutoConfig

    cls = CONFIGS[model_type][0]
    for variant in ("default", "custom"):
        saved = reference["configs"][f"{model_type}/{variant}/config.json"]
        (tmp_path / "config.json").write_text(saved)
        for loaded in (cls.from_pretrained(tmp_path), AutoConfig.from_pretrained(tmp_path)):
            assert type(loaded) is cls
            fields = {**loaded.to_dict(), "_name_or_path": ""}  # where it was loaded from
            assert json.loads(json.dumps(fields, default=str)) == _with_composed_fields(
                reference["configs"][f"{model_type}/{variant}/to_dict"], model_type)


if __name__ == "__main__":
    torch.save(run_cases(), sys.argv[1])
