"""`graftkit pretrain`: pre-train an encoder of graftkit's core on plain text files with the HF ``Trainer``.

The run is a configuration of the core (position encoding x LayerNorm placement x objective x TNF notes):
:func:`choose_model` maps it onto a model type of ``hf_models``, :func:`pretrain` trains a WordPiece tokenizer
when none is given, builds the TNF rare-word vocabulary when notes are on, trains with the ``Trainer`` (so
``torchrun`` / ``accelerate launch`` run it on several processes unchanged), evaluates on a held-out slice,
and writes a folder that the Auto classes load with ``trust_remote_code=True``: the model, its tokenizer, its
code, a model card, and for MC-BERT, ELECTRA and TNF the fine-tuning-ready encoder alone in ``encoder/``.

Every check of the user's input and of the output folder runs before the tokenizer or the model is trained.
"""

from __future__ import annotations

import json
import os
import random
import shlex
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from graftkit.errors import GraftkitError, check_input, check_int, check_number
from graftkit.methods import method

SIZES: dict[str, dict[str, int]] = {
    # every width divisible by MC-BERT's mc_size_divider (3): the same sizes serve every objective
    "tiny": {"hidden_size": 96, "num_hidden_layers": 2, "num_attention_heads": 6, "intermediate_size": 384},
    "small": {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 6, "intermediate_size": 1536},
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
}
OBJECTIVES = ("mlm", "rtd", "mc")
POSITION_EMBEDDING_TYPES = ("absolute", "tupe_absolute", "tupe_relative")
LAYER_NORM_POSITIONS = ("post", "pre")
PAD, UNK, CLS, SEP, MASK, NEITHER = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<neither>"
SETTINGS_FILE = "graftkit_pretrain.json"
CHECKPOINTS = "checkpoints"
ENCODER = "encoder"
#: the Auto classes that load a fine-tuning-ready encoder (named in the model card)
ENCODER_CLASSES = "AutoModel, AutoModelForSequenceClassification, AutoModelForTokenClassification"
MLM_PROBABILITY = 0.15  # BERT's share of masked tokens (MC-BERT's config has its own mask_prob, also 0.15)
# settings that may change between a run and its --resume (the rest decide the model and its data)
_RESUMABLE = ("out", "steps", "resume", "progress")


@dataclass
class PretrainSettings:
    """One ``graftkit pretrain`` run; the fields are its command-line options."""

    train_files: list[Path]
    out: Path
    steps: int = 1000
    size: str = "tiny"
    objective: str = "mlm"
    position_embedding_type: str = "absolute"
    layer_norm_position: str = "post"
    notes: bool = False
    tokenizer: Path | None = None
    resume: bool = False
    vocab_size: int = 8000
    max_length: int = 128
    batch_size: int = 32
    learning_rate: float = 5e-4
    eval_fraction: float = 0.05
    eval_every: int | None = None
    rare_min_count: int = 100
    rare_max_count: int = 500
    seed: int = 0
    progress: bool = True

    def validate(self) -> None:
        """A GraftkitError naming the option when a value is unusable (before any work)."""
        for name, choices in (("size", SIZES), ("objective", OBJECTIVES),
                              ("position_embedding_type", POSITION_EMBEDDING_TYPES),
                              ("layer_norm_position", LAYER_NORM_POSITIONS)):
            if getattr(self, name) not in choices:
                raise GraftkitError(f"--{name.replace('_', '-')} must be one of {', '.join(choices)}, "
                                    f"got {getattr(self, name)!r}")
        for name in ("steps", "vocab_size", "batch_size", "rare_min_count", "rare_max_count"):
            check_int(f"--{name.replace('_', '-')}", getattr(self, name))
        check_int("--max-length", self.max_length, minimum=8)
        check_number("--learning-rate", self.learning_rate, strict=True)
        if not 0 < self.eval_fraction < 1:
            raise GraftkitError(f"--eval-fraction must be in (0, 1), got {self.eval_fraction}")
        if self.eval_every is not None:
            check_int("--eval-every", self.eval_every)
        if self.rare_min_count > self.rare_max_count:
            raise GraftkitError(f"--rare-min-count ({self.rare_min_count}) must be <= --rare-max-count "
                                f"({self.rare_max_count})")
        if not self.train_files:
            raise GraftkitError("no training text file given")
        text_files(self.train_files)
        if self.tokenizer is not None and not (check_input(self.tokenizer, "--tokenizer", folder=True)
                                               / "tokenizer.json").is_file():
            raise GraftkitError(f"--tokenizer {self.tokenizer} holds no tokenizer.json (a save_pretrained folder "
                                "of a fast tokenizer)")
        choose_model(self)  # an unsupported combination is refused now, not after the tokenizer is trained

    def command_line(self) -> list[str]:
        """The ``graftkit pretrain`` arguments of this run: the files, --out, and each option not at its default."""
        argv = [*map(str, self.train_files), "--out", str(self.out)]
        for name, spec in self.__dataclass_fields__.items():
            value = getattr(self, name)
            if name in ("train_files", "out") or value == spec.default:
                continue
            if name == "progress":
                argv.append("--no-progress")
            else:
                flag = f"--{name.replace('_', '-')}"
                argv.extend([flag] if isinstance(value, bool) else [flag, str(value)])
        return argv

    def model_settings(self) -> dict[str, Any]:
        """The settings that decide the model and its data (stored with the run; --resume must match them)."""
        data = {k: v for k, v in asdict(self).items() if k not in _RESUMABLE}
        data["train_files"] = [{"path": str(p.resolve()), "bytes": p.stat().st_size} for p in self.train_files]
        data["tokenizer"] = str(self.tokenizer.resolve()) if self.tokenizer else None
        return data


@dataclass(frozen=True)
class ModelChoice:
    """The model type a run trains and the config fields its choice adds (besides sizes and tokens)."""

    model_type: str
    fields: dict[str, Any]
    method: str  # the model card's one-line description


def _config_class(model_type: str) -> type:
    from transformers import CONFIG_MAPPING

    import hf_models  # noqa: F401  (registers the model types)

    return CONFIG_MAPPING[model_type]


def choose_model(settings: PretrainSettings) -> ModelChoice:
    """The model of the composition: MLM -> ``preln_bert`` (BERT's absolute positions) or ``tupe``; RTD/MC ->
    ``mc_bert`` with that objective (with notes: TNF's notes in the main model's input); MLM with notes -> ``tnf``."""
    pet, ln = settings.position_embedding_type, settings.layer_norm_position
    layer_norm = "Pre-LN (Xiong et al., ICML 2020)" if ln == "pre" else "Post-LN (BERT)"
    positions = {"absolute": "BERT's learned absolute positions",
                 "tupe_absolute": f"TUPE-A positions ({method('tupe').paper})",
                 "tupe_relative": f"TUPE-R positions ({method('tupe').paper})"}[pet]
    encoder = f"{layer_norm} encoder with {positions}"
    notes = f"; with TNF's notes ({method('tnf').paper})" if settings.notes else ""
    if settings.notes and settings.objective == "mlm":
        return ModelChoice("tnf", {"layer_norm_position": ln, "position_embedding_type": pet},
                           f"TNF, Taking Notes on the Fly: {method('tnf').paper}; masked LM on a {encoder}")
    if settings.objective in ("rtd", "mc"):
        name = ("MC-BERT multi-choice cloze" if settings.objective == "mc" else
                "ELECTRA replaced token detection (Clark et al., ICLR 2020; MC-BERT's meta controller as generator)")
        fields = {"objective": settings.objective, "layer_norm_position": ln, "position_embedding_type": pet}
        return ModelChoice("mc_bert", fields, f"{name}: {method('mcbert').paper}; on a {encoder}{notes}")
    bert = "BERT masked LM (Devlin et al., NAACL 2019)"
    if pet == "absolute":
        return ModelChoice("preln_bert", {"layer_norm_position": ln}, f"{bert} on a {encoder}")
    return ModelChoice("tupe", {"layer_norm_position": ln, "position_embedding_type": pet},
                       f"{bert} on a {encoder}")


def check_output(out: Path, resume: bool) -> None:
    """Refuse an existing, non-empty ``out`` unless resuming, and a ``--resume`` of a folder that holds no run."""
    from graftkit.checkpoint import check_writable  # imports torch: not when the CLI only builds its parser

    check_writable(out, folder=True, what="--out")
    if resume:
        if not (out / SETTINGS_FILE).is_file():
            raise GraftkitError(f"--resume: {out} holds no graftkit pretrain run (no {SETTINGS_FILE})")
    elif out.exists() and any(out.iterdir()):
        raise GraftkitError(f"--out {out} exists and is not empty: pass --resume to continue its run, or choose "
                            "a new folder")


def check_resumable(settings: PretrainSettings) -> None:
    """The stored run's model settings equal this run's, else a GraftkitError naming the first that differs."""
    stored = json.loads((settings.out / SETTINGS_FILE).read_text(encoding="utf-8"))
    current = json.loads(json.dumps(settings.model_settings()))
    for name, value in current.items():
        if stored.get(name) != value:
            option = "TRAIN_FILE" if name == "train_files" else f"--{name.replace('_', '-')}"
            raise GraftkitError(f"--resume: {option} differs from the run in {settings.out} "
                                f"({stored.get(name)!r} there, {value!r} now)")


def text_files(paths: Sequence[Path]) -> list[Path]:
    """The training files: each path a text file, or a folder whose ``*.txt`` files (sorted by name) it stands
    for; a GraftkitError naming the path when it is missing or a folder holds none."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.glob("*.txt") if p.is_file())
            if not found:
                raise GraftkitError(f"training text folder {path} holds no .txt files")
            files.extend(found)
        else:
            files.append(check_input(path, "training text file"))
    return files


def read_lines(paths: Sequence[Path]) -> list[str]:
    """The non-blank lines of the files (a folder: its ``*.txt`` files), stripped, in order (one text per line,
    as run_mlm's --line_by_line)."""
    lines: list[str] = []
    for path in text_files(paths):
        try:
            with path.open(encoding="utf-8") as f:
                lines.extend(stripped for line in f if (stripped := line.strip()))
        except UnicodeDecodeError as err:
            raise GraftkitError(f"training file {path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    if len(lines) < 2:
        raise GraftkitError(f"the training files hold {len(lines)} non-blank line(s): at least 2 are needed (one "
                            "is held out for evaluation)")
    return lines


def split_lines(lines: list[str], eval_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(train, held-out eval): a seeded random ``eval_fraction`` of the lines (at least one) held out."""
    order = list(range(len(lines)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, int(len(lines) * eval_fraction))
    held_out = set(order[:n_eval])
    return ([line for i, line in enumerate(lines) if i not in held_out],
            [line for i, line in enumerate(lines) if i in held_out])


def train_tokenizer(lines: Sequence[str], vocab_size: int, max_length: int, extra_special: Sequence[str] = ()):
    """A BERT WordPiece tokenizer (lower-cased, BERT's normalizer and pre-tokenizer, [CLS] x [SEP]) trained on
    ``lines`` with ``tokenizers``: at most ``vocab_size`` tokens, the special tokens first."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    special = [PAD, UNK, CLS, SEP, MASK, *extra_special]
    backend = Tokenizer(models.WordPiece(unk_token=UNK))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece()
    backend.train_from_iterator(lines, trainers.WordPieceTrainer(vocab_size=max(vocab_size, len(special)),
                                                                 special_tokens=special, show_progress=False))
    backend.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}", pair=f"{CLS} $A {SEP} $B:1 {SEP}:1",
        special_tokens=[(CLS, backend.token_to_id(CLS)), (SEP, backend.token_to_id(SEP))])
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token=UNK, pad_token=PAD, cls_token=CLS,
                                   sep_token=SEP, mask_token=MASK, additional_special_tokens=list(extra_special),
                                   model_max_length=max_length)


def load_tokenizer(folder: Path, objective: str, max_length: int):
    """A user's fast tokenizer, checked for what the objective needs ([MASK]; <neither> is added for mc)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, model_max_length=max_length)
    if not tokenizer.is_fast:
        raise GraftkitError(f"--tokenizer {folder} is not a fast (tokenizers-backed) tokenizer")
    for name in ("mask_token", "pad_token"):
        if getattr(tokenizer, name) is None:
            raise GraftkitError(f"--tokenizer {folder} has no {name} (pre-training needs one)")
    if objective == "mc" and NEITHER not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [NEITHER]})  # MC-BERT's reject option
    return tokenizer


def prepare_tokenizer(settings: PretrainSettings, train_lines: list[str]):
    """The run's tokenizer: the user's (--tokenizer), or one trained on ``train_lines``."""
    if settings.tokenizer is not None:
        return load_tokenizer(settings.tokenizer, settings.objective, settings.max_length)
    return train_tokenizer(train_lines, settings.vocab_size, settings.max_length,
                           [NEITHER] if settings.objective == "mc" else [])


def rare_vocabulary(settings: PretrainSettings, tokenizer, train_lines: list[str]):
    """TNF's rare words, counted over the training lines; GraftkitError when none is in the count range."""
    from hf_models.tnf.vocabulary import RareVocabulary

    vocab = RareVocabulary.build(tokenizer, train_lines, settings.rare_min_count, settings.rare_max_count,
                                 corpus={"files": [str(p) for p in settings.train_files]})
    if not len(vocab):
        raise GraftkitError(f"--notes: no word of the training text occurs between --rare-min-count "
                            f"{settings.rare_min_count} and --rare-max-count {settings.rare_max_count} times "
                            f"({vocab.corpus['distinct_words']} distinct words); lower the counts for a small corpus")
    return vocab


def build_model(settings: PretrainSettings, choice: ModelChoice, tokenizer, rare_vocab=None):
    """The pre-training model of ``choice`` at ``settings.size``, sized to the tokenizer, seeded; with notes, the
    rare vocabulary in the config (so it also finds rare words in batches without spans, and its folder loads
    with remote code)."""
    import torch
    from transformers import AutoModelForMaskedLM

    fields = {**SIZES[settings.size], **choice.fields, "vocab_size": len(tokenizer),
              "max_position_embeddings": settings.max_length, "pad_token_id": tokenizer.pad_token_id}
    if choice.model_type == "mc_bert":
        fields["mask_token_id"] = tokenizer.mask_token_id
        if settings.objective == "mc":
            fields["neither_token_id"] = tokenizer.convert_tokens_to_ids(NEITHER)
    if settings.notes:
        fields.update(rare_vocab.config_fields(tokenizer))
    config = _config_class(choice.model_type)(**fields)
    torch.manual_seed(settings.seed)
    return AutoModelForMaskedLM.from_config(config)  # MC-BERT's is its pre-training model


def encode(settings: PretrainSettings, tokenizer, lines: list[str], rare_vocab) -> list[dict[str, Any]]:
    """One example per line, truncated to ``max_length``; with rare-word spans for TNF."""
    if rare_vocab is not None:
        return rare_vocab.tokenize(tokenizer, lines, max_length=settings.max_length)
    encoded = tokenizer(lines, truncation=True, max_length=settings.max_length, return_special_tokens_mask=True,
                        return_token_type_ids=False, return_attention_mask=False)
    return [{"input_ids": ids, "special_tokens_mask": special}
            for ids, special in zip(encoded["input_ids"], encoded["special_tokens_mask"])]


def collator(settings: PretrainSettings, tokenizer):
    """BERT's masking collator (HF's), with the rare-word spans when notes are on. MC-BERT takes its labels as
    the masked positions and masks them all with <mask> itself."""
    from transformers import DataCollatorForLanguageModeling

    from hf_models.tnf.data_collator_tnf import DataCollatorForTnf

    if settings.notes:
        return DataCollatorForTnf(tokenizer, mlm_probability=MLM_PROBABILITY)
    return DataCollatorForLanguageModeling(tokenizer, mlm_probability=MLM_PROBABILITY)


def model_card(settings: PretrainSettings, choice: ModelChoice, config, data: dict[str, int],
               eval_loss: float, eval_parts: dict[str, float], global_step: int, processes: int,
               encoder_folder: bool, in_encoder_folder: bool = False) -> str:
    """README.md of the output folder (or, ``in_encoder_folder``, of its ``encoder/``): method and paper,
    config, data size, steps, final eval loss, command, and which Auto classes load the folder."""
    loss = f"{eval_loss:.4f}" + "".join(f", {name} {value:.4f}" for name, value in eval_parts.items())
    left_out = "meta controller and pre-training head" if choice.model_type == "mc_bert" else "note dictionary"
    encoder_classes = ENCODER_CLASSES + (", AutoModelForMaskedLM" if choice.model_type == "tnf" else "")
    if in_encoder_folder:
        load = (f"This folder is the fine-tuning-ready encoder of that pre-training, without the {left_out} (the "
                f"pre-training model is in the parent folder). Load it with {encoder_classes}")
    else:
        load = "Load this folder with " + {
            "mc_bert": f"AutoModelForMaskedLM or AutoModelForPreTraining (the pre-training model) and "
                       f"{ENCODER_CLASSES} (its encoder)",
            "tnf": f"AutoModelForMaskedLM (the masked LM with its note dictionary and rare vocabulary, to continue "
                   f"pre-training) and {ENCODER_CLASSES} (the encoder, the notes left out)"}.get(
            choice.model_type, f"AutoModelForMaskedLM, {ENCODER_CLASSES}")
    encoder = ""
    if encoder_folder and not in_encoder_folder:
        encoder = (f"\nThe fine-tuning-ready encoder alone (without the {left_out}) is in `{ENCODER}/`: load it "
                   f"with {encoder_classes} and `trust_remote_code=True`.\n")
    shown = {k: v for k, v in config.to_dict().items()
             if k not in ("_name_or_path", "architectures", "auto_map", "transformers_version")}
    return f"""---
library_name: transformers
tags:
- graftkit
- {choice.model_type}
- pretraining
---

# {choice.model_type} pre-trained with graftkit

Method: {choice.method}.

Pre-trained from scratch by `graftkit pretrain` with the HF Trainer: {global_step} steps of
{settings.batch_size} lines per process on {processes} process{"es" if processes > 1 else ""}, learning rate
{settings.learning_rate}, lines of at most {settings.max_length} tokens, seed {settings.seed}.

| data | lines | tokens |
|---|---:|---:|
| train | {data['train_lines']} | {data['train_tokens']} |
| held-out eval | {data['eval_lines']} | {data['eval_tokens']} |

Final eval loss (held-out lines): {loss}

{load}, passing `trust_remote_code=True` (the model code is in the folder; graftkit is not needed to
load it).
{encoder}
## Command

```
{shlex.join(['graftkit', 'pretrain', *settings.command_line()])}
```

## Config

```json
{json.dumps(shown, indent=2, sort_keys=True)}
```
"""


def _write_text(path: Path, text: str) -> None:
    from graftkit.checkpoint import atomic_write

    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def pretrain(settings: PretrainSettings) -> dict[str, Any]:
    """Run one pre-training (see the module docstring); returns {"eval_loss", "global_step", "out"}.

    Under ``torchrun`` every process runs this; the main process writes the tokenizer, the rare vocabulary,
    the settings and the final folders, the others read them.
    """
    settings.validate()
    choice = choose_model(settings)
    # every process checks the folder before any writes to it (the barrier below), so no rank sees another's files
    check_output(settings.out, settings.resume)
    if settings.resume:
        check_resumable(settings)
    import torch
    from accelerate import PartialState
    from transformers import AutoTokenizer, PreTrainedConfig, Trainer, TrainingArguments
    from transformers.trainer_utils import get_last_checkpoint

    from hf_models.mc_bert import pretraining_metrics
    from hf_models.tnf.vocabulary import FILE_NAME as RARE_WORDS_FILE
    from hf_models.tnf.vocabulary import RareVocabulary

    eval_every = settings.eval_every or max(1, settings.steps // 10)
    several_cpu_processes = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    args = TrainingArguments(
        output_dir=str(settings.out / CHECKPOINTS), max_steps=settings.steps,
        per_device_train_batch_size=settings.batch_size, per_device_eval_batch_size=settings.batch_size,
        learning_rate=settings.learning_rate, weight_decay=0.01, warmup_steps=int(0.06 * settings.steps),
        eval_strategy="steps", eval_steps=eval_every, save_strategy="steps", save_steps=eval_every,
        save_total_limit=2, logging_steps=eval_every, report_to=[], seed=settings.seed,
        disable_tqdm=not settings.progress, dataloader_pin_memory=torch.cuda.is_available(),
        # several processes without a GPU (torchrun on CPUs): accelerate makes them one group only when told
        # to use the CPU, and with gloo; with GPUs it picks the device and backend itself
        use_cpu=several_cpu_processes, ddp_backend="gloo" if several_cpu_processes else None)
    args._setup_devices  # starts the process group under torchrun: the barrier needs it  # noqa: B018
    state = PartialState()
    state.wait_for_everyone()

    lines = read_lines(settings.train_files)
    train_lines, eval_lines = split_lines(lines, settings.eval_fraction, settings.seed)
    with state.main_process_first():  # the main process writes the run's files, then the others read them
        if state.is_main_process and not settings.resume:
            tokenizer = prepare_tokenizer(settings, train_lines)
            rare_vocab = rare_vocabulary(settings, tokenizer, train_lines) if settings.notes else None
            settings.out.mkdir(parents=True, exist_ok=True)
            tokenizer.save_pretrained(settings.out)
            if rare_vocab is not None:
                rare_vocab.save(settings.out / RARE_WORDS_FILE)
            _write_text(settings.out / SETTINGS_FILE, json.dumps(settings.model_settings(), indent=2))
        else:
            # config given: AutoTokenizer would read OUT/config.json, which the run writes only at its end
            tokenizer = AutoTokenizer.from_pretrained(settings.out, config=PreTrainedConfig())
            rare_vocab = RareVocabulary.load(settings.out, tokenizer) if settings.notes else None

    train_set = encode(settings, tokenizer, train_lines, rare_vocab)
    eval_set = encode(settings, tokenizer, eval_lines, rare_vocab)
    data = {"train_lines": len(train_set), "eval_lines": len(eval_set),
            "train_tokens": sum(len(e["input_ids"]) for e in train_set),
            "eval_tokens": sum(len(e["input_ids"]) for e in eval_set)}
    model = build_model(settings, choice, tokenizer, rare_vocab)
    if state.is_main_process:
        print(f"graftkit pretrain: {choice.model_type} ({settings.size}, {model.num_parameters():,} parameters), "
              f"{data['train_lines']} training lines ({data['train_tokens']} tokens), {data['eval_lines']} held "
              f"out; {settings.steps} steps, evaluation every {eval_every}", flush=True)
    # MC-BERT's evaluation also reports each part of its loss (the meta controller's MLM, the discriminator's)
    metrics_of_parts = pretraining_metrics if choice.model_type == "mc_bert" else None
    trainer = Trainer(model=model, args=args, train_dataset=train_set, eval_dataset=eval_set,
                      data_collator=collator(settings, tokenizer), processing_class=tokenizer,
                      compute_metrics=metrics_of_parts)
    last = get_last_checkpoint(args.output_dir) if settings.resume and Path(args.output_dir).is_dir() else None
    if settings.resume and last is None and state.is_main_process:
        print(f"graftkit pretrain: --resume: no checkpoint in {args.output_dir} yet, starting from step 0", flush=True)
    trainer.train(resume_from_checkpoint=last)
    metrics = trainer.evaluate()
    eval_loss = metrics["eval_loss"]
    eval_parts = {k.removeprefix("eval_"): v for k, v in metrics.items()
                  if k in ("eval_mlm_loss", "eval_discriminator_loss")}
    global_step = trainer.state.global_step

    trainer.save_model(str(settings.out))  # the main process writes (weights, config, code, tokenizer)
    if state.is_main_process:
        model = trainer.model
        encoder_folder = choice.model_type in ("mc_bert", "tnf")
        card = model_card(settings, choice, model.config, data, eval_loss, eval_parts, global_step,
                          args.world_size, encoder_folder)
        if encoder_folder:
            encoder = model.mc_bert if choice.model_type == "mc_bert" else model.backbone()
            encoder.save_pretrained(settings.out / ENCODER)
            tokenizer.save_pretrained(settings.out / ENCODER)
            _write_text(settings.out / ENCODER / "README.md",
                        model_card(settings, choice, model.config, data, eval_loss, eval_parts, global_step,
                                   args.world_size, encoder_folder, in_encoder_folder=True))
        _write_text(settings.out / "README.md", card)
        print(f"graftkit pretrain: wrote {settings.out}" + (f" and {settings.out / ENCODER}" if encoder_folder else "")
              + f" after {global_step} steps; held-out eval loss {eval_loss:.4f}", flush=True)
    state.wait_for_everyone()
    return {"eval_loss": eval_loss, "global_step": global_step, "out": settings.out}
