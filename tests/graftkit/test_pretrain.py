"""`graftkit pretrain`: every composition builds and trains, bad input is refused before any work, the output
folder loads without graftkit, --resume continues, and 2 gloo processes under torchrun run it unchanged."""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from graftkit.cli import main
from graftkit.pretrain import (
    LAYER_NORM_POSITIONS,
    OBJECTIVES,
    POSITION_EMBEDDING_TYPES,
    PretrainSettings,
    build_model,
    choose_model,
    collator,
    encode,
    rare_vocabulary,
    train_tokenizer,
)
from tests.loopback import WITHOUT_GRAFTKIT, run_script_on_two_ranks

REPO = Path(__file__).resolve().parents[2]
FAST = ["--steps", "4", "--eval-every", "2", "--batch-size", "8", "--vocab-size", "600", "--max-length", "32",
        "--no-progress"]
NOTES = ["--notes", "--rare-min-count", "3", "--rare-max-count", "12"]


@pytest.fixture(scope="module")
def lines() -> list[str]:
    from graftkit.data.text import english_sentences

    return english_sentences()[:160]


@pytest.fixture
def corpus(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# every combination of the contract's options (notes with RTD/MC: mc_bert with TNF's notes in its main model)
COMPOSITIONS = list(itertools.product(OBJECTIVES, POSITION_EMBEDDING_TYPES, LAYER_NORM_POSITIONS, (False, True)))


@pytest.mark.parametrize(("objective", "positions", "layer_norm", "notes"), COMPOSITIONS)
def test_every_composition_builds_and_takes_a_training_step(tmp_path, lines, objective, positions, layer_norm,
                                                             notes):
    settings = PretrainSettings([tmp_path / "corpus.txt"], tmp_path / "out", objective=objective,
                                position_embedding_type=positions, layer_norm_position=layer_norm, notes=notes,
                                max_length=32, rare_min_count=2, rare_max_count=12)
    choice = choose_model(settings)
    expected = ("mc_bert" if objective != "mlm" else "tnf" if notes else "preln_bert" if positions == "absolute"
                else "tupe")
    assert choice.model_type == expected
    tokenizer = train_tokenizer(lines, 600, 32, ["<neither>"] if objective == "mc" else [])
    rare = rare_vocabulary(settings, tokenizer, lines) if notes else None
    model = build_model(settings, choice, tokenizer, rare).train()
    config = model.config
    assert config.layer_norm_position == layer_norm
    assert config.position_embedding_type == positions
    assert config.model_type == expected
    if objective != "mlm":
        assert config.objective == objective
    batch = collator(settings, tokenizer)(encode(settings, tokenizer, lines[:8], rare))
    loss = model(**batch).loss
    assert torch.isfinite(loss)
    loss.backward()
    assert model.get_input_embeddings().weight.grad.abs().sum() > 0
    if notes:
        assert model.notes.has_note.any()  # the rare words of the batch got notes


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("graftkit: error: "), err
    return err[0]


def test_refuses_an_existing_output_folder_before_any_work(tmp_path, corpus, capsys, monkeypatch):
    import graftkit.pretrain

    def no_work(*args, **kwargs):
        raise AssertionError("trained a tokenizer for a run that must be refused")

    monkeypatch.setattr(graftkit.pretrain, "train_tokenizer", no_work)
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    assert main(["pretrain", str(corpus), "--out", str(out), *FAST]) == 2
    assert "exists and is not empty: pass --resume" in _error(capsys)
    assert [p.name for p in out.iterdir()] == ["mine.txt"]


@pytest.mark.parametrize(("args", "message"), [
    (["missing.txt"], "training text file not found: missing.txt"),
    (["{corpus}", "--resume"], "--resume: {out} holds no graftkit pretrain run"),
    (["{corpus}", "--notes", "--rare-min-count", "1000", "--rare-max-count", "2000"],
     "--notes: no word of the training text occurs between --rare-min-count 1000"),
    (["{corpus}", "--steps", "0"], "--steps"),
    (["{corpus}", "--tokenizer", "{tmp}"], "holds no tokenizer.json"),
])
def test_bad_input_is_one_error_line_and_writes_nothing(tmp_path, corpus, capsys, args, message):
    out = tmp_path / "out"
    names = {"corpus": corpus, "out": out, "tmp": tmp_path}
    argv = ["pretrain", "--out", str(out), *FAST, *(a.format(**names) for a in args)]  # args override FAST
    assert main(argv) == 2
    assert message.format(**names) in _error(capsys)
    assert not out.exists()


_LOAD_WITHOUT_GRAFTKIT = WITHOUT_GRAFTKIT + """
import json
import torch, transformers
folder, classes = sys.argv[1], sys.argv[2].split(",")
tokenizer = transformers.AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
batch = tokenizer(["a short line of text to encode", "another line"], padding=True, return_tensors="pt")
batch.pop("token_type_ids", None)
out = {}
for name in classes:
    model = getattr(transformers, name).from_pretrained(folder, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
    with torch.no_grad():
        result = model(**batch)
    out[name] = (result.logits if "logits" in result else result.last_hidden_state).tolist()
json.dump(out, sys.stdout)
"""
ENCODER_CLASSES = ["AutoModel", "AutoModelForSequenceClassification", "AutoModelForTokenClassification"]


def load_without_graftkit(tmp_path: Path, folder: Path, classes: list[str]) -> dict:
    """The outputs of each Auto class loaded from ``folder`` with remote code, in a fresh process that cannot
    import graftkit."""
    script = tmp_path / "load.py"
    script.write_text(_LOAD_WITHOUT_GRAFTKIT)
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": ""}
    done = subprocess.run([sys.executable, str(script), str(folder), ",".join(classes)], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def _card(folder: Path) -> str:
    return (folder / "README.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("options", [
    [],
    ["--position-embedding-type", "tupe_relative", "--layer-norm-position", "pre"],
    ["--objective", "mc"],
    ["--objective", "rtd", "--layer-norm-position", "pre"],
    NOTES,
], ids=["bert", "tupe_r-preln", "mc", "rtd-preln", "tnf"])
def test_writes_a_folder_that_loads_without_graftkit(tmp_path, corpus, capsys, options):
    from safetensors.torch import load_file

    out = tmp_path / "out"
    assert main(["pretrain", str(corpus), "--out", str(out), *FAST, *options]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed
    card = _card(out)
    for needle in ("Method: ", "4 steps", "| train | 152 |", "| held-out eval | 8 |", "\"hidden_size\": 96",
                   f"graftkit pretrain {corpus} --out {out}"):
        assert needle in card, needle
    eval_loss = float(card.split("Final eval loss (held-out lines): ")[1].split()[0].rstrip(","))
    assert math.isfinite(eval_loss) and eval_loss > 0
    if "--objective" in options:  # and each part of MC-BERT's / ELECTRA's loss
        assert ", mlm_loss " in card and ", discriminator_loss " in card
    config = json.loads((out / "config.json").read_text())
    if "--objective" in options:  # MC-BERT / ELECTRA: the pre-training model, and its encoder alone
        assert config["objective"] == options[1]
        encoder = out / "encoder"
        assert "meta_controller" not in "".join(load_file(encoder / "model.safetensors"))
        pretraining = load_without_graftkit(tmp_path, out, ["AutoModel"])
        loaded = load_without_graftkit(tmp_path, encoder, ENCODER_CLASSES)
        assert loaded["AutoModel"] == pretraining["AutoModel"]  # the same encoder weights
    elif "--notes" in options:  # TNF: the notes are in the folder, the backbone alone in encoder/
        assert config["model_type"] == "tnf"
        state = load_file(out / "model.safetensors")
        assert state["notes.has_note"].any() and state["notes.notes"].abs().sum() > 0
        assert (out / "tnf_rare_words.json").is_file()
        assert len(config["rare_word_token_ids"]) == config["num_rare_words"]  # stored with the model
        with_notes = load_without_graftkit(tmp_path, out, ["AutoModel", "AutoModelForMaskedLM"])
        loaded = load_without_graftkit(tmp_path, out / "encoder", [*ENCODER_CLASSES, "AutoModelForMaskedLM"])
        # in eval mode TNF is exactly its backbone: the two folders give the same encoder and masked-LM outputs
        assert with_notes == {name: loaded[name] for name in ("AutoModel", "AutoModelForMaskedLM")}
        assert set(load_without_graftkit(tmp_path, out, ENCODER_CLASSES)) == set(ENCODER_CLASSES)
    else:  # the folder itself is the encoder
        assert not (out / "encoder").exists()
        loaded = load_without_graftkit(tmp_path, out, [*ENCODER_CLASSES, "AutoModelForMaskedLM"])
    assert set(loaded) >= set(ENCODER_CLASSES)
    if (out / "encoder").exists():  # the encoder's own card: what this folder is, not a copy of the parent's
        encoder_card = _card(out / "encoder")
        assert "fine-tuning-ready encoder of that pre-training" in encoder_card
        assert "is in `encoder/`" not in encoder_card
        assert f"graftkit pretrain {corpus} --out {out}" in encoder_card


@pytest.mark.slow
def test_resume_continues_from_the_last_checkpoint_and_refuses_other_settings(tmp_path, corpus, capsys):
    out = tmp_path / "out"
    assert main(["pretrain", str(corpus), "--out", str(out), *FAST]) == 0
    first_tokenizer = (out / "tokenizer.json").read_text()
    capsys.readouterr()
    assert main(["pretrain", str(corpus), "--out", str(out), *FAST, "--resume", "--size", "small"]) == 2
    assert "--resume: --size differs from the run in" in _error(capsys)
    longer = [*FAST[:1], "6", *FAST[2:]]
    assert main(["pretrain", str(corpus), "--out", str(out), *longer, "--resume"]) == 0
    state = json.loads((out / "checkpoints" / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    # steps 5 and 6 only: the log of the resumed run starts after step 4
    assert [entry["step"] for entry in state["log_history"] if "eval_loss" in entry][:3] == [2, 4, 6]
    assert (out / "tokenizer.json").read_text() == first_tokenizer
    assert "6 steps" in _card(out)


_RUN_CLI = """
import sys
from graftkit.cli import main
from graftkit.errors import GraftkitError
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("options", [[], ["--objective", "mc"], NOTES], ids=["bert", "mc", "tnf"])
def test_runs_unchanged_on_two_gloo_processes(tmp_path, corpus, options):
    script = tmp_path / "graftkit_cli.py"
    script.write_text(_RUN_CLI)
    out = tmp_path / "out"
    run_script_on_two_ranks(script, "pretrain", str(corpus), "--out", str(out), *FAST, *options)
    card = _card(out)
    assert "4 steps of\n8 lines per process on 2 processes" in card
    state = json.loads((out / "checkpoints" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    assert state["epoch"] == pytest.approx(4 / math.ceil(152 / (8 * 2)))  # each step read 8 lines on each process


def test_uses_the_given_tokenizer_and_adds_neither_for_mc(tmp_path, corpus, lines):
    """--tokenizer DIR: the run trains no tokenizer, keeps the given vocabulary, and adds MC-BERT's <neither>
    where the tokenizer lacks it."""
    tokenizer = train_tokenizer(lines, 500, 32)
    tokenizer.save_pretrained(tmp_path / "tok")
    assert "<neither>" not in tokenizer.get_vocab()
    out = tmp_path / "out"
    assert main(["pretrain", str(corpus), "--out", str(out), *FAST, "--steps", "2", "--objective", "mc",
                 "--tokenizer", str(tmp_path / "tok")]) == 0
    from transformers import AutoTokenizer

    written = AutoTokenizer.from_pretrained(out, trust_remote_code=True)
    vocab = written.get_vocab()
    assert {k: v for k, v in vocab.items() if k != "<neither>"} == tokenizer.get_vocab()  # the given one
    config = json.loads((out / "config.json").read_text())
    assert config["neither_token_id"] == vocab["<neither>"] and config["vocab_size"] >= len(vocab)


def test_a_folder_stands_for_its_text_files(tmp_path, lines):
    from graftkit.pretrain import read_lines

    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "b.txt").write_text("\n".join(lines[2:4]) + "\n", encoding="utf-8")
    (folder / "a.txt").write_text(lines[0] + "\n\n" + lines[1] + "\n", encoding="utf-8")
    (folder / "notes.md").write_text("not training text\n", encoding="utf-8")
    assert read_lines([folder]) == lines[:4]  # a.txt then b.txt; the .md file left out
