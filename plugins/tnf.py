"""TNF (Wu et al., "Taking Notes on the Fly Helps Language Pre-Training", ICLR 2021) as the fairseq task
``masked_lm_tnf``: fairseq's ``masked_lm`` plus a note dictionary for rare words.

The note math is graftkit's one implementation (:mod:`hf_models.tnf.notes`). This task adds:

- rare words: dictionary symbols whose ``dict.txt`` count lies in [``--tnf-min-count``, ``--tnf-max-count``]
  (the counts fairseq-preprocess wrote over the training split). Each dictionary symbol is one word: use a
  word-level dictionary (a BPE dictionary would make the rare range one over subword pieces);
- training steps mix λ·ND[w] into the rare tokens' input, e = (1 - λ)(scale·tok + pos) + λ ND[w], through
  a forward hook on the encoder's token embedding (RoBERTa adds positions itself, so the hook returns
  tok + λ(ND - scale·tok - pos)/scale), and take notes from the encoder's final output after the forward;
- the notes are the model's submodule ``tnf_notes`` (buffers), so checkpoints carry them and ``fairseq-train``
  resumes exactly; :func:`export_backbone` writes the plain ``masked_lm`` checkpoint (no notes) to fine-tune,
  and ``graftkit tnf convert`` (:mod:`plugins.convert_tnf`) the HF ``TnfForMaskedLM`` with the notes;
- the ``--tnf-*`` note settings are :class:`hf_models.tnf.notes.NoteFields`'s (the HF configs' fields);
- on several ranks every rank starts from rank 0's notes (shared once, before the first mix: a random
  ``--tnf-first-note ema`` start would otherwise differ per rank, as fairseq does not broadcast buffers), and
  a dummy batch (``ignore_grad``) takes no notes while still joining the ranks' note all-reduce.

Validation steps (eval mode) use neither: the model is its plain backbone there.
"""

# no `from __future__ import annotations`: fairseq reads the config dataclass's field types at runtime

import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from fairseq.tasks import register_task
from fairseq.tasks.masked_lm import MaskedLMConfig, MaskedLMTask

from graftkit.errors import GraftkitError
from hf_models.tnf.notes import NoteDictionary, NoteFields, note_inputs_embeds
from hf_models.tnf.vocabulary import check_rare_range


@dataclass
class MaskedLMTnfConfig(MaskedLMConfig):
    tnf_min_count: int = field(default=100, metadata={"help": "rare words: dictionary count >= this (paper 100)"})
    tnf_max_count: int = field(default=500, metadata={"help": "rare words: dictionary count <= this (paper 500)"})
    # the note settings: defaults and meanings of the HF configs' fields (hf_models.tnf.notes.NoteFields)
    tnf_note_weight: float = NoteFields.flag_field("note_weight")
    tnf_note_momentum: float = NoteFields.flag_field("note_momentum")
    tnf_half_window: int = NoteFields.flag_field("note_half_window")
    tnf_first_note: str = NoteFields.flag_field("first_note")
    tnf_mix_masked_words: bool = NoteFields.flag_field("mix_masked_words")


def rare_symbols(counts: Sequence[int], min_count: int, max_count: int, not_words: Iterable[int]) -> torch.Tensor:
    """The task's rare words: [len(counts)] bool, the dictionary symbols whose count lies in [min_count,
    max_count], except ``not_words`` (the special symbols, <mask>). The task and the converter to HF
    (``plugins.convert_tnf``) both ask this."""
    check_rare_range(min_count, max_count)
    counts = torch.tensor(counts)
    rare = (counts >= min_count) & (counts <= max_count)
    rare[list(not_words)] = False
    if not rare.any():
        raise GraftkitError(f"no dictionary word has a count in [{min_count}, {max_count}]: "
                            "set --tnf-min-count/--tnf-max-count for this corpus")
    return rare


@register_task("masked_lm_tnf", dataclass=MaskedLMTnfConfig)
class MaskedLMTnfTask(MaskedLMTask):
    """``masked_lm`` with notes for the rare words (see the module docstring)."""

    cfg: MaskedLMTnfConfig

    def __init__(self, cfg: MaskedLMTnfConfig, dictionary=None) -> None:
        super().__init__(cfg, dictionary)
        NoteFields.from_fairseq(cfg)  # a ValueError naming the --tnf-* flag
        rare = rare_symbols(self.dictionary.count, cfg.tnf_min_count, cfg.tnf_max_count,
                            [*range(self.dictionary.nspecial), self.mask_idx])
        #: dictionary index -> rare-word index (row of ND), -1 for the other symbols
        self.rare_index = torch.full((len(rare),), -1, dtype=torch.long)
        self.rare_index[rare] = torch.arange(int(rare.sum()))
        self._step: dict | None = None  # the current training step's spans, while its forward runs

    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)
        encoder = model.encoder.sentence_encoder
        model.tnf_notes = NoteDictionary(int((self.rare_index >= 0).sum()), encoder.embed_tokens.embedding_dim,
                                         momentum=self.cfg.tnf_note_momentum, half_window=self.cfg.tnf_half_window,
                                         first_note=self.cfg.tnf_first_note)
        encoder.embed_tokens.register_forward_hook(self._mix_notes)
        encoder.register_forward_hook(self._capture_features)
        return model

    def _mix_notes(self, module, inputs, token_embeds):
        if self._step is None:
            return None
        step = self._step
        encoder, notes = step["encoder"], step["notes"]
        (tokens,) = inputs
        scale = encoder.embed_scale
        positions = encoder.embed_positions(tokens) if encoder.embed_positions is not None else None
        mix, vectors = notes.token_notes(step["spans"], tokens.shape[1], step["labels"])
        mixed = note_inputs_embeds(scale * token_embeds, positions, vectors, mix, self.cfg.tnf_note_weight)
        return mixed if scale == 1.0 else mixed / scale

    def _capture_features(self, module, inputs, output):
        if self._step is not None:
            self._step["features"] = output["encoder_out"][0].transpose(0, 1)  # T x B x C -> B x T x C

    def rare_spans(self, tokens: torch.Tensor) -> torch.Tensor:
        """[batch, most rare words in a row, 3] spans (w, i, i) of the rare words in ``tokens``, -1 rows pad."""
        rare = self.rare_index.to(tokens.device)[tokens]
        is_rare = rare >= 0
        width = max(1, int(is_rare.sum(1).max()))
        order = torch.argsort((~is_rare).to(torch.int8), dim=1, stable=True)[:, :width]  # rare first, in order
        words = rare.gather(1, order)
        return torch.stack([words, order, order], -1).masked_fill((words < 0)[..., None], -1)

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        inner = model.module if hasattr(model, "module") else model
        notes = inner.tnf_notes
        source, target = sample["net_input"]["src_tokens"], sample["target"]
        pad = self.dictionary.pad()
        original = torch.where(target.ne(pad), target, source)  # the masked positions' true tokens
        labels = None if self.cfg.tnf_mix_masked_words else torch.where(target.ne(pad), 0, -100)
        spans = self.rare_spans(original)
        # a dummy batch (ignore_grad: fairseq keeps the ranks in step with it) takes no notes, but the rank
        # still joins the update's all-reduce with no occurrences, as the other ranks wait for it
        taken = torch.full_like(spans, -1) if ignore_grad else spans
        self._step = {"encoder": inner.encoder.sentence_encoder, "notes": notes, "spans": spans, "labels": labels}
        try:
            result = super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)
            features = self._step.pop("features")
        finally:
            self._step = None
        notes.update(features, taken, source.ne(pad))
        return result


def export_backbone(checkpoint: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write ``checkpoint`` (of ``masked_lm_tnf``) as a plain ``masked_lm`` checkpoint: the notes removed,
    the task renamed, so fairseq fine-tuning (e.g. ``--restore-file``) loads it as any RoBERTa."""
    checkpoint, out = Path(checkpoint), Path(out)
    if not checkpoint.is_file():
        raise GraftkitError(f"checkpoint not found: {checkpoint}")
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or "model" not in state:
        raise GraftkitError(f"{checkpoint} is not a fairseq checkpoint")
    state["model"] = {k: v for k, v in state["model"].items() if not k.startswith("tnf_notes.")}
    task = state["cfg"]["task"]
    state["cfg"]["task"] = {k: v for k, v in task.items() if not k.startswith("tnf_")} | {"_name": "masked_lm"}
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.")
    os.close(fd)
    torch.save(state, tmp)
    os.replace(tmp, out)
    return out
