"""Every `graftkit` subcommand against bad input: one `graftkit: error:` line, exit 2, no traceback, nothing of an
earlier run changed and nothing new written.

The CLI runs in-process (``graftkit.cli.main``). One module-scoped folder holds valid inputs, the outputs of an
"earlier run" of each command, and the bad files; it is snapshotted (every file's bytes and mtime) around each
case. ``{name}`` in a case's argv is a path in that folder; ``{new}`` a path in the case's own empty folder.
"""

from __future__ import annotations

import argparse
import fractions
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from graftkit.cli import build_parser, main

# --- the shared folder -----------------------------------------------------------------------------------------


def _earlier_run(folder: Path, *names: str) -> None:
    """Stand-ins for an earlier run's outputs: a command that fails must leave them byte for byte."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_text(f"earlier run: {name}\n")


def _npz(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    np.savez(path, images=images, labels=labels)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad_input")
    rng = np.random.default_rng(0)

    # files every command may be handed by mistake
    (root / "random.bin").write_bytes(rng.bytes(2048))
    (root / "empty.bin").write_bytes(b"")
    (root / "text.txt").write_text("hello\n")
    (root / "a_file").write_text("not a folder\n")
    (root / "empty_dir").mkdir()
    torch.save({"weights": torch.zeros(2)}, root / "foreign.pt")  # a torch file of nobody we know
    torch.save({"ratio": fractions.Fraction(1, 3)}, root / "object.pt")  # not loaded: could be any class
    torch.save(torch.zeros(3), root / "tensor.pt")

    # MACER: tiny .npz data sets and a trained checkpoint (one epoch of LeNet on 16 8x8 images)
    images = rng.random((16, 1, 8, 8), dtype=np.float32)
    labels = np.arange(16) % 4
    _npz(root / "macer_ok.npz", images, labels)
    _npz(root / "macer_nan.npz", np.where(images > 0.5, np.nan, images).astype(np.float32), labels)
    _npz(root / "macer_nonsquare.npz", images[:, :, :, :6], labels)
    _npz(root / "macer_flat.npz", images.reshape(16, 64), labels)
    _npz(root / "macer_empty.npz", images[:0], labels[:0])
    _npz(root / "macer_negative_label.npz", images, labels - 1)
    _npz(root / "macer_rgb.npz", rng.random((16, 3, 8, 8), dtype=np.float32), labels)
    np.savez(root / "macer_no_labels.npz", images=images)
    macer = root / "macer"
    assert main(["macer", "train", "--data", str(root / "macer_ok.npz"), "--out", str(macer / "model.pt"),
                 "--epochs", "1", "--k", "2", "--batch-size", "8", "--milestones", "--no-progress"]) == 0
    _earlier_run(macer, "cert.tsv", "cert.png")

    # IRN: a tiny image folder, a trained x2 checkpoint, an earlier downscale/upscale
    irn = root / "irn"
    (irn / "images").mkdir(parents=True)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(irn / "images" / f"{i}.png")
    Image.fromarray(rng.integers(0, 256, (1, 1, 3), dtype=np.uint8)).save(root / "tiny.png")
    (root / "garbage.png").write_bytes(rng.bytes(512))
    (root / "garbage_images").mkdir()
    (root / "garbage_images" / "x.png").write_bytes(rng.bytes(512))
    assert main(["irn", "train", "--images", str(irn / "images"), "--scale", "2", "--out", str(irn / "irn.pt"),
                 "--steps", "1", "--batch-size", "1", "--patch-size", "8", "--blocks", "1",
                 "--growth-channels", "4", "--no-progress"]) == 0
    _earlier_run(irn, "lr.png", "sr.png")

    # CLEIT: synthetic inputs, malformed tables, an earlier run's outputs
    cleit = root / "cleit"
    assert main(["cleit", "synthetic", "--out", str(cleit / "data"), "--samples", "30"]) == 0
    _earlier_run(cleit / "run", "summary.csv", "per_drug.csv", "folds.csv", "config.json")
    _earlier_run(cleit / "synthetic", "expression.csv", "mutation.csv", "response.csv")
    expression = (cleit / "data" / "expression.csv").read_text().splitlines()
    cells = [line.split(",") for line in expression]
    cells[3][2] = "inf"
    (root / "inf.csv").write_text("\n".join(",".join(row) for row in cells) + "\n")
    (root / "empty.csv").write_text("")
    (root / "header_only.csv").write_text("sample,G1\n")

    # BERT-fused: a tiny BERT, a destdir with an earlier prepare, raw text
    from graftkit.data.parallel import ToyLanguagePair
    from plugins.bert_fused.toy import save_tiny_bert

    mono = ToyLanguagePair(0).monolingual_source(40, seed=1)
    save_tiny_bert(root / "bert", mono, hidden=8, layers=1, heads=2)
    _earlier_run(root / "bin", "train.bert.src.bin", "train.bert.src.idx", "bert_side.json")
    (root / "raw").mkdir()
    (root / "raw" / "train.src").write_text("\n".join(mono[:5]) + "\n")
    (root / "raw" / "empty.src").write_text("")
    (root / "raw" / "latin1.src").write_bytes("caf\xe9 ol\xe9\n".encode("latin-1"))
    (root / "junk_bert").mkdir()
    (root / "junk_bert" / "config.json").write_text("{not json")

    # Pre-LN: earlier outputs of gradnorm and convert
    _earlier_run(root / "gradnorm", "gradnorm.json", "gradnorm.png")
    _earlier_run(root / "hf", "config.json", "model.safetensors")
    _earlier_run(root / "reports", "report.md")

    # TNF: a tiny word-level tokenizer and an earlier vocabulary; report: a run folder with garbage results
    from graftkit.data.text import WordVocab, english_sentences

    sentences = english_sentences()[:20]
    WordVocab.build(sentences).to_hf_tokenizer(model_max_length=16).save_pretrained(root / "tokenizer")
    (root / "corpus.txt").write_text("\n".join(sentences) + "\n")
    _earlier_run(root / "tokenizer", "tnf_rare_words.json")
    _earlier_run(root / "bad_run", "results.json")
    return root


def _snapshot(folder: Path) -> dict[str, tuple[int, bytes] | str]:
    """Every file's mtime and bytes, and every folder's name (a folder's own mtime moves with any temporary
    file made and removed in it, which is fine)."""
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes()) if p.is_file() else "folder"
            for p in sorted(folder.rglob("*"))}


# --- the cases: (id, argv, a phrase the one error line must contain) ------------------------------------------

MACER_TRAIN = ["macer", "train", "--data", "{macer_ok.npz}", "--out", "{new}/m.pt", "--epochs", "1", "--k", "2",
               "--no-progress"]
MACER_CERTIFY = ["macer", "certify", "--model", "{macer/model.pt}", "--data", "{macer_ok.npz}", "--out",
                 "{new}/c.tsv", "--n0", "2", "--n", "4", "--no-progress"]
IRN_TRAIN = ["irn", "train", "--images", "{irn/images}", "--scale", "2", "--out", "{new}/irn.pt", "--steps", "1",
             "--batch-size", "1", "--patch-size", "8", "--blocks", "1", "--growth-channels", "4", "--no-progress"]
CLEIT_RUN = ["cleit", "run", "--expression", "{cleit/data/expression.csv}", "--mutation",
             "{cleit/data/mutation.csv}", "--response", "{cleit/data/response.csv}", "--out", "{new}/run",
             "--folds", "2", "--pretrain-epochs", "1", "--transmission-epochs", "1", "--finetune-epochs", "1",
             "--no-progress"]
TNF_VOCAB = ["tnf", "build-vocab", "--tokenizer", "{tokenizer}", "--corpus", "{corpus.txt}", "--min-count", "1",
             "--max-count", "3", "--out", "{new}/vocab.json"]
BERTNMT = ["bertnmt", "prepare", "--bert-model", "{bert}", "--source-lang", "src", "--destdir", "{bin}"]


def _with(base: list[str], *changes: str, drop: tuple[str, ...] = ()) -> list[str]:
    """``base`` with options replaced or added (``--flag value`` pairs; a lone ``--flag`` is a switch)."""
    argv = list(base)
    for flag in drop:
        i = argv.index(flag)
        del argv[i:i + 2]
    changes_list = list(changes)
    while changes_list:
        flag = changes_list.pop(0)
        value = changes_list.pop(0) if changes_list and not changes_list[0].startswith("--") else None
        if flag in argv and value is not None:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag] + ([value] if value is not None else [])
    return argv


CASES = [
    # reproduce
    ("reproduce/unknown", ["reproduce", "nope", "--out", "{new}"], "unknown experiment"),
    ("reproduce/out-is-file", ["reproduce", "graphnorm", "--out", "{a_file}", "--no-progress"], "a_file"),
    ("reproduce/seed-too-large", ["reproduce", "graphnorm", "--seed", str(10**20), "--out", "{new}"],
     "argument --seed: must be an integer in [0, 4294967295]"),
    ("reproduce/seed-negative", ["reproduce", "graphnorm", "--seed", "-1", "--out", "{new}"], "argument --seed"),
    ("reproduce/out-unwritable", ["reproduce", "graphnorm", "--out", "/proc/nope", "--no-progress"], "/proc/nope"),
    # preln gradnorm
    ("gradnorm/depths-negative", ["preln", "gradnorm", "--depths=-2,4", "--out", "{new}"], "--depths"),
    ("gradnorm/depths-one", ["preln", "gradnorm", "--depths", "4", "--out", "{new}"], "--depths"),
    ("gradnorm/seeds-0", ["preln", "gradnorm", "--depths", "2,4", "--seeds", "0", "--out", "{new}"], "seeds"),
    ("gradnorm/d-model-negative", ["preln", "gradnorm", "--depths", "2,4", "--d-model", "-8", "--out", "{new}"],
     "d_model"),
    ("gradnorm/heads-not-dividing", ["preln", "gradnorm", "--depths", "2,4", "--d-model", "10", "--heads", "4",
                                     "--out", "{new}"], "heads"),
    ("gradnorm/seq-len-0", ["preln", "gradnorm", "--depths", "2,4", "--seq-len", "0", "--out", "{new}"], "seq_len"),
    ("gradnorm/batch-negative", ["preln", "gradnorm", "--depths", "2,4", "--batch", "-1", "--out", "{new}"],
     "batch"),
    # sizes no memory holds: one line naming the flag, not the allocator's traceback
    ("gradnorm/d-model-unallocatable", ["preln", "gradnorm", "--depths", "2,4", "--d-model", "1000000000",
                                        "--out", "{new}"], "(--d-model) is too large"),
    ("gradnorm/tokens-unallocatable", ["preln", "gradnorm", "--depths", "2,4", "--batch", "1000000", "--seq-len",
                                       "100000", "--out", "{new}"], "(--batch, --seq-len) is too large"),
    ("gradnorm/seed-negative", ["preln", "gradnorm", "--depths", "2,4", "--seed", "-3", "--out", "{new}"],
     "argument --seed"),
    ("gradnorm/out-is-file", ["preln", "gradnorm", "--depths", "2,4", "--seeds", "1", "--out", "{a_file}"],
     "a_file"),
    ("gradnorm/out-unwritable", ["preln", "gradnorm", "--depths", "2,4", "--seeds", "1", "--out", "/proc/nope"],
     "/proc/nope"),
    ("gradnorm/earlier-out-unwritable", ["preln", "gradnorm", "--depths", "2,4", "--seeds", "1", "--out",
                                         "{a_file}/sub"], "a_file"),
    # preln convert
    ("convert/missing", ["preln", "convert", "{nope.pt}", "{new}/hf"], "not found"),
    ("convert/ckpt-is-folder", ["preln", "convert", "{empty_dir}", "{new}/hf"], "is a folder, not a file"),
    ("convert/dict-is-folder", ["preln", "convert", "{foreign.pt}", "{new}/hf", "--dict", "{empty_dir}"],
     "--dict {empty_dir} is a folder, not a file"),
    ("convert/random-bytes", ["preln", "convert", "{random.bin}", "{new}/hf"], "not a fairseq checkpoint"),
    ("convert/empty", ["preln", "convert", "{empty.bin}", "{new}/hf"], "not a fairseq checkpoint (the file is empty)"),
    ("convert/python-object", ["preln", "convert", "{object.pt}", "{new}/hf"], "not a fairseq checkpoint"),
    ("convert/no-model", ["preln", "convert", "{foreign.pt}", "{new}/hf"], "not a fairseq checkpoint"),
    ("convert/tensor", ["preln", "convert", "{tensor.pt}", "{new}/hf"], "not a fairseq checkpoint"),
    ("convert/out-not-empty", ["preln", "convert", "{foreign.pt}", "{hf}"], "hf"),
    ("convert/out-is-file", ["preln", "convert", "{foreign.pt}", "{a_file}"], "a_file"),
    ("convert/out-unwritable", ["preln", "convert", "{foreign.pt}", "/proc/nope"], "/proc/nope"),
    # bertnmt prepare
    ("bertnmt/no-split", BERTNMT, "nothing to prepare"),
    ("bertnmt/bert-missing", _with(BERTNMT, "--bert-model", "{nope}", "--trainpref", "{raw/train}"),
     "--bert-model not found"),
    ("bertnmt/bert-is-file", _with(BERTNMT, "--bert-model", "{a_file}", "--trainpref", "{raw/train}"),
     "--bert-model {a_file} is a file, not a folder"),
    ("bertnmt/bert-garbage", _with(BERTNMT, "--bert-model", "{junk_bert}", "--trainpref", "{raw/train}"),
     "junk_bert"),
    ("bertnmt/source-missing", _with(BERTNMT, "--trainpref", "{raw/nope}"), "source text not found"),
    ("bertnmt/source-empty", _with(BERTNMT, "--trainpref", "{raw/train}", "--validpref", "{raw/empty}"),
     "source text is empty"),
    ("bertnmt/source-not-utf8", _with(BERTNMT, "--trainpref", "{raw/latin1}"), "not UTF-8"),
    ("bertnmt/destdir-missing", _with(BERTNMT, "--destdir", "{nope}", "--trainpref", "{raw/train}"),
     "--destdir not found"),
    ("bertnmt/destdir-is-file", _with(BERTNMT, "--destdir", "{a_file}", "--trainpref", "{raw/train}"), "a_file"),
    ("bertnmt/destdir-unwritable", _with(BERTNMT, "--destdir", "/proc/self", "--trainpref", "{raw/train}"),
     "/proc/self"),
    ("bertnmt/max-length-negative", _with(BERTNMT, "--trainpref", "{raw/train}", "--max-length", "-5"),
     "--max-length"),
    # bertnmt convert
    ("bertnmt-convert/missing", ["bertnmt", "convert", "{nope.pt}", "{new}/out.pt", "--bert-model", "{bert}"],
     "not found"),
    ("bertnmt-convert/ckpt-is-folder",
     ["bertnmt", "convert", "{empty_dir}", "{new}/out.pt", "--bert-model", "{bert}"], "is a folder, not a file"),
    ("bertnmt-convert/bert-missing",
     ["bertnmt", "convert", "{foreign.pt}", "{new}/out.pt", "--bert-model", "{nope}"], "--bert-model not found"),
    ("bertnmt-convert/garbage", ["bertnmt", "convert", "{random.bin}", "{new}/out.pt", "--bert-model", "{bert}"],
     "random.bin"),
    ("bertnmt-convert/foreign", ["bertnmt", "convert", "{foreign.pt}", "{new}/out.pt", "--bert-model", "{bert}"],
     "foreign.pt"),
    ("bertnmt-convert/out-exists", ["bertnmt", "convert", "{foreign.pt}", "{a_file}", "--bert-model", "{bert}"],
     "a_file"),
    # irn train
    ("irn-train/images-missing", _with(IRN_TRAIN, "--images", "{nope}"), "image folder not found"),
    ("irn-train/images-is-file", _with(IRN_TRAIN, "--images", "{a_file}"), "is a file, not a folder"),
    ("irn-train/images-empty", _with(IRN_TRAIN, "--images", "{empty_dir}"), "no image files"),
    ("irn-train/images-garbage", _with(IRN_TRAIN, "--images", "{garbage_images}"), "not a readable image"),
    ("irn-train/seed-negative", _with(IRN_TRAIN, "--seed", "-1"), "argument --seed"),
    ("irn-train/steps-0", _with(IRN_TRAIN, "--steps", "0"), "steps"),
    ("irn-train/steps-negative", _with(IRN_TRAIN, "--steps", "-5"), "steps"),
    ("irn-train/batch-0", _with(IRN_TRAIN, "--batch-size", "0"), "batch_size"),
    ("irn-train/patch-not-multiple", _with(IRN_TRAIN, "--patch-size", "7"), "patch_size"),
    ("irn-train/patch-too-big", _with(IRN_TRAIN, "--patch-size", "64"), "patch"),
    ("irn-train/lr-nan", _with(IRN_TRAIN, "--lr", "nan"), "lr"),
    ("irn-train/lr-negative", _with(IRN_TRAIN, "--lr", "-1"), "lr"),
    ("irn-train/blocks-0", _with(IRN_TRAIN, "--blocks", "0"), "blocks"),
    ("irn-train/growth-negative", _with(IRN_TRAIN, "--growth-channels", "-4"), "growth"),
    ("irn-train/checkpoint-every-0", _with(IRN_TRAIN, "--checkpoint-every", "0"), "checkpoint_every"),
    ("irn-train/max-seconds-negative", _with(IRN_TRAIN, "--max-seconds", "-1"), "max_seconds"),
    ("irn-train/out-exists", _with(IRN_TRAIN, "--out", "{irn/irn.pt}"), "irn.pt"),
    ("irn-train/out-is-folder", _with(IRN_TRAIN, "--out", "{empty_dir}"), "empty_dir"),
    ("irn-train/out-unwritable", _with(IRN_TRAIN, "--out", "/proc/nope/irn.pt"), "/proc/nope"),
    ("irn-train/resume-random-bytes", _with(IRN_TRAIN, "--out", "{random.bin}", "--resume"),
     "not a graftkit checkpoint"),
    ("irn-train/resume-other-checkpoint", _with(IRN_TRAIN, "--out", "{macer/model.pt}", "--resume"),
     "not an IRN checkpoint"),
    # irn downscale / upscale / eval
    ("irn-down/input-missing", ["irn", "downscale", "{nope.png}", "{new}/lr.png", "--model", "{irn/irn.pt}"],
     "image not found"),
    ("irn-down/input-is-folder", ["irn", "downscale", "{empty_dir}", "{new}/lr.png", "--model", "{irn/irn.pt}"],
     "image {empty_dir} is a folder, not a file"),
    ("irn-down/model-is-folder", ["irn", "downscale", "{irn/images/0.png}", "{new}/lr.png", "--model",
                                  "{empty_dir}"], "--model {empty_dir} is a folder, not a file"),
    ("irn-up/input-is-folder", ["irn", "upscale", "{empty_dir}", "{new}/sr.png", "--model", "{irn/irn.pt}"],
     "is a folder, not a file"),
    ("irn-down/input-garbage", ["irn", "downscale", "{garbage.png}", "{new}/lr.png", "--model", "{irn/irn.pt}"],
     "not a readable image"),
    ("irn-down/input-too-small", ["irn", "downscale", "{tiny.png}", "{new}/lr.png", "--model", "{irn/irn.pt}"],
     "smaller than the scale"),
    ("irn-down/model-missing", ["irn", "downscale", "{irn/images/0.png}", "{new}/lr.png", "--model", "{nope.pt}"],
     "not found"),
    ("irn-down/model-random-bytes", ["irn", "downscale", "{irn/images/0.png}", "{new}/lr.png", "--model",
                                     "{random.bin}"], "not a graftkit checkpoint"),
    ("irn-down/model-empty", ["irn", "downscale", "{irn/images/0.png}", "{new}/lr.png", "--model", "{empty.bin}"],
     "not a graftkit checkpoint (the file is empty)"),
    ("irn-down/model-other", ["irn", "downscale", "{irn/images/0.png}", "{new}/lr.png", "--model",
                              "{macer/model.pt}"], "not an IRN checkpoint"),
    ("irn-down/model-tensor", ["irn", "downscale", "{irn/images/0.png}", "{new}/lr.png", "--model",
                               "{tensor.pt}"], "not an IRN checkpoint"),
    ("irn-down/output-suffix", ["irn", "downscale", "{irn/images/0.png}", "{new}/lr.txt", "--model",
                                "{irn/irn.pt}"], "format"),
    ("irn-down/output-unwritable", ["irn", "downscale", "{irn/images/0.png}", "/proc/nope/lr.png", "--model",
                                    "{irn/irn.pt}"], "/proc/nope"),
    ("irn-down/output-is-folder", ["irn", "downscale", "{irn/images/0.png}", "{empty_dir}", "--model",
                                   "{irn/irn.pt}"], "empty_dir"),
    ("irn-up/input-garbage", ["irn", "upscale", "{garbage.png}", "{new}/sr.png", "--model", "{irn/irn.pt}"],
     "not a readable image"),
    ("irn-up/model-random-bytes", ["irn", "upscale", "{irn/images/0.png}", "{new}/sr.png", "--model",
                                   "{random.bin}"], "not a graftkit checkpoint"),
    ("irn-up/gaussian-scale-nan", ["irn", "upscale", "{irn/images/0.png}", "{new}/sr.png", "--model",
                                   "{irn/irn.pt}", "--gaussian-scale", "nan"], "gaussian-scale"),
    ("irn-up/gaussian-scale-negative", ["irn", "upscale", "{irn/images/0.png}", "{new}/sr.png", "--model",
                                        "{irn/irn.pt}", "--gaussian-scale", "-1"], "gaussian-scale"),
    ("irn-up/output-unwritable", ["irn", "upscale", "{irn/images/0.png}", "/proc/nope/sr.png", "--model",
                                  "{irn/irn.pt}"], "/proc/nope"),
    ("irn-eval/images-missing", ["irn", "eval", "--images", "{nope}", "--model", "{irn/irn.pt}"],
     "image folder not found"),
    ("irn-eval/images-is-file", ["irn", "eval", "--images", "{a_file}", "--model", "{irn/irn.pt}"],
     "is a file, not a folder"),
    ("irn-eval/images-empty", ["irn", "eval", "--images", "{empty_dir}", "--model", "{irn/irn.pt}"],
     "no image files"),
    ("irn-eval/model-random-bytes", ["irn", "eval", "--images", "{irn/images}", "--model", "{random.bin}"],
     "not a graftkit checkpoint"),
    # macer train
    ("macer-train/data-missing", _with(MACER_TRAIN, "--data", "{nope.npz}"), "not found"),
    ("macer-train/data-is-folder", _with(MACER_TRAIN, "--data", "{empty_dir}"), "is a folder, not a file"),
    ("macer-train/data-garbage", _with(MACER_TRAIN, "--data", "{random.bin}"), "random.bin"),
    ("macer-train/data-no-labels", _with(MACER_TRAIN, "--data", "{macer_no_labels.npz}"), "labels"),
    ("macer-train/data-nan", _with(MACER_TRAIN, "--data", "{macer_nan.npz}"), "NaN"),
    ("macer-train/data-flat", _with(MACER_TRAIN, "--data", "{macer_flat.npz}"), "shape"),
    ("macer-train/data-nonsquare", _with(MACER_TRAIN, "--data", "{macer_nonsquare.npz}"), "square"),
    ("macer-train/data-empty", _with(MACER_TRAIN, "--data", "{macer_empty.npz}"), "no images"),
    ("macer-train/data-negative-label", _with(MACER_TRAIN, "--data", "{macer_negative_label.npz}"), "labels"),
    ("macer-train/num-classes-too-few", _with(MACER_TRAIN, "--num-classes", "2"), "labels"),
    ("macer-train/seed-too-large", _with(MACER_TRAIN, "--seed", str(2**32)), "argument --seed"),
    ("macer-train/epochs-0", _with(MACER_TRAIN, "--epochs", "0"), "epochs"),
    ("macer-train/epochs-negative", _with(MACER_TRAIN, "--epochs", "-5"), "epochs"),
    ("macer-train/batch-0", _with(MACER_TRAIN, "--batch-size", "0"), "batch_size"),
    ("macer-train/k-0", _with(MACER_TRAIN, "--k", "0"), "k"),
    ("macer-train/sigma-0", _with(MACER_TRAIN, "--sigma", "0"), "sigma"),
    ("macer-train/sigma-nan", _with(MACER_TRAIN, "--sigma", "nan"), "sigma"),
    ("macer-train/lbd-nan", _with(MACER_TRAIN, "--lbd", "nan"), "lbd"),
    ("macer-train/lr-negative", _with(MACER_TRAIN, "--lr", "-0.1"), "lr"),
    ("macer-train/milestones-negative", _with(MACER_TRAIN, "--milestones", "-5"), "milestones"),
    ("macer-train/milestones-0", _with(MACER_TRAIN, "--milestones", "3", "0"), "milestones"),
    ("macer-train/device-cuda", _with(MACER_TRAIN, "--device", "cuda"), "cuda"),
    ("macer-train/device-bogus", _with(MACER_TRAIN, "--device", "gpu7"), "--device"),
    ("macer-train/threads-negative", _with(MACER_TRAIN, "--threads", "-1"), "--threads"),
    ("macer-train/out-exists", _with(MACER_TRAIN, "--out", "{macer/model.pt}"), "exists"),
    ("macer-train/out-is-folder", _with(MACER_TRAIN, "--out", "{empty_dir}", "--resume"), "empty_dir"),
    ("macer-train/out-unwritable", _with(MACER_TRAIN, "--out", "/proc/nope/m.pt"), "/proc/nope"),
    ("macer-train/resume-random-bytes", _with(MACER_TRAIN, "--out", "{random.bin}", "--resume"),
     "not a graftkit checkpoint"),
    ("macer-train/resume-other-checkpoint", _with(MACER_TRAIN, "--out", "{irn/irn.pt}", "--resume"), "irn.pt"),
    # macer certify
    ("certify/model-missing", _with(MACER_CERTIFY, "--model", "{nope.pt}"), "not found"),
    ("certify/model-is-folder", _with(MACER_CERTIFY, "--model", "{empty_dir}"), "is a folder, not a file"),
    ("certify/model-random-bytes", _with(MACER_CERTIFY, "--model", "{random.bin}"), "not a graftkit checkpoint"),
    ("certify/model-empty", _with(MACER_CERTIFY, "--model", "{empty.bin}"),
     "not a graftkit checkpoint (the file is empty)"),
    ("certify/model-python-object", _with(MACER_CERTIFY, "--model", "{object.pt}"), "fractions.Fraction"),
    ("certify/model-other", _with(MACER_CERTIFY, "--model", "{irn/irn.pt}"), "macer train"),
    ("certify/model-tensor", _with(MACER_CERTIFY, "--model", "{tensor.pt}"), "macer train"),
    ("certify/data-garbage", _with(MACER_CERTIFY, "--data", "{random.bin}"), "random.bin"),
    ("certify/data-wrong-shape", _with(MACER_CERTIFY, "--data", "{macer_rgb.npz}"), "expects images of shape"),
    ("certify/data-nan", _with(MACER_CERTIFY, "--data", "{macer_nan.npz}"), "NaN"),
    ("certify/data-empty", _with(MACER_CERTIFY, "--data", "{macer_empty.npz}"), "no images"),
    ("certify/n-0", _with(MACER_CERTIFY, "--n", "0"), "n"),
    ("certify/n0-negative", _with(MACER_CERTIFY, "--n0", "-1"), "n0"),
    ("certify/alpha-nan", _with(MACER_CERTIFY, "--alpha", "nan"), "alpha"),
    ("certify/alpha-1", _with(MACER_CERTIFY, "--alpha", "1"), "alpha"),
    ("certify/batch-0", _with(MACER_CERTIFY, "--batch-size", "0"), "batch_size"),
    ("certify/skip-0", _with(MACER_CERTIFY, "--skip", "0"), "--skip"),
    ("certify/max-negative", _with(MACER_CERTIFY, "--max", "-3"), "--max"),
    ("certify/sigma-negative", _with(MACER_CERTIFY, "--sigma", "-1"), "sigma"),
    ("certify/sigma-nan", _with(MACER_CERTIFY, "--sigma", "nan"), "sigma"),
    ("certify/device-cuda", _with(MACER_CERTIFY, "--device", "cuda"), "cuda"),
    ("certify/device-cuda-index", _with(MACER_CERTIFY, "--device", "cuda:3"), "cuda:3"),
    ("certify/device-cpu-index-then-bad-model", _with(MACER_CERTIFY, "--device", "cpu:0", "--model",
                                                      "{random.bin}"), "not a graftkit checkpoint"),
    ("certify/out-unwritable", _with(MACER_CERTIFY, "--out", "/proc/nope/c.tsv"), "/proc/nope"),
    ("certify/out-is-folder", _with(MACER_CERTIFY, "--out", "{empty_dir}"), "empty_dir"),
    ("certify/plot-unwritable", _with(MACER_CERTIFY, "--plot", "/proc/nope/c.png"), "/proc/nope"),
    # cleit synthetic
    ("cleit-synthetic/samples-negative", ["cleit", "synthetic", "--out", "{new}/s", "--samples", "-5"], "samples"),
    ("cleit-synthetic/samples-0", ["cleit", "synthetic", "--out", "{new}/s", "--samples", "0"], "samples"),
    ("cleit-synthetic/samples-0-earlier", ["cleit", "synthetic", "--out", "{cleit/synthetic}", "--samples", "0"],
     "samples"),
    ("cleit-synthetic/seed-negative", ["cleit", "synthetic", "--out", "{new}/s", "--seed", "-1"], "seed"),
    ("cleit-synthetic/out-unwritable", ["cleit", "synthetic", "--out", "/proc/nope"], "/proc/nope"),
    ("cleit-synthetic/out-is-file", ["cleit", "synthetic", "--out", "{a_file}"], "a_file"),
    # cleit run
    ("cleit-run/expression-missing", _with(CLEIT_RUN, "--expression", "{nope.csv}"), "not found"),
    ("cleit-run/expression-is-folder", _with(CLEIT_RUN, "--expression", "{empty_dir}"),
     "--expression {empty_dir} is a folder, not a file"),
    ("cleit-run/response-is-folder", _with(CLEIT_RUN, "--response", "{empty_dir}"), "is a folder, not a file"),
    ("cleit-run/expression-garbage", _with(CLEIT_RUN, "--expression", "{random.bin}"), "random.bin"),
    ("cleit-run/expression-empty", _with(CLEIT_RUN, "--expression", "{empty.csv}"), "empty.csv"),
    ("cleit-run/expression-header-only", _with(CLEIT_RUN, "--expression", "{header_only.csv}"), "header_only.csv"),
    ("cleit-run/expression-inf", _with(CLEIT_RUN, "--expression", "{inf.csv}"), "infinite"),
    ("cleit-run/mutation-garbage", _with(CLEIT_RUN, "--mutation", "{random.bin}"), "random.bin"),
    ("cleit-run/mutation-not-binary", _with(CLEIT_RUN, "--mutation", "{cleit/data/expression.csv}"), "mutation"),
    ("cleit-run/response-missing", _with(CLEIT_RUN, "--response", "{nope.csv}"), "not found"),
    ("cleit-run/response-wrong-shape", _with(CLEIT_RUN, "--response", "{cleit/data/mutation.csv}"), "response"),
    ("cleit-run/folds-0", _with(CLEIT_RUN, "--folds", "0"), "folds"),
    ("cleit-run/folds-negative", _with(CLEIT_RUN, "--folds", "-2"), "folds"),
    ("cleit-run/run-folds-out-of-range", _with(CLEIT_RUN, "--run-folds", "5"), "fold"),
    ("cleit-run/run-folds-garbage", _with(CLEIT_RUN, "--run-folds", "a,b"), "--run-folds"),
    ("cleit-run/methods-unknown", _with(CLEIT_RUN, "--methods", "bogus"), "--methods"),
    ("cleit-run/epochs-negative", _with(CLEIT_RUN, "--pretrain-epochs", "-1"), "epochs"),
    ("cleit-run/finetune-epochs-0", _with(CLEIT_RUN, "--finetune-epochs", "0"), "epochs"),
    ("cleit-run/lr-nan", _with(CLEIT_RUN, "--lr", "nan"), "lr"),
    ("cleit-run/patience-negative", _with(CLEIT_RUN, "--patience", "-1"), "patience"),
    ("cleit-run/seed-negative", _with(CLEIT_RUN, "--seed", "-1"), "argument --seed"),
    ("cleit-run/seed-too-large", _with(CLEIT_RUN, "--seed", str(10**20)), "argument --seed"),
    ("cleit-run/out-unwritable", _with(CLEIT_RUN, "--out", "/proc/nope"), "/proc/nope"),
    ("cleit-run/out-is-file", _with(CLEIT_RUN, "--out", "{a_file}"), "a_file"),
    ("cleit-run/out-under-a-file", _with(CLEIT_RUN, "--out", "{a_file}/run"), "a_file"),
    # tnf build-vocab
    ("tnf-vocab/tokenizer-missing", _with(TNF_VOCAB, "--tokenizer", "{new}/nope"), "nope"),
    ("tnf-vocab/tokenizer-empty-folder", _with(TNF_VOCAB, "--tokenizer", "{empty_dir}"), "empty_dir"),
    ("tnf-vocab/corpus-missing", _with(TNF_VOCAB, "--corpus", "{new}/nope.txt"), "nope.txt"),
    ("tnf-vocab/corpus-is-folder", _with(TNF_VOCAB, "--corpus", "{empty_dir}"),
     "corpus file {empty_dir} is a folder, not a file"),
    ("tnf-vocab/tokenizer-is-file", _with(TNF_VOCAB, "--tokenizer", "{a_file}"), "is a file, not a folder"),
    ("tnf-vocab/out-is-folder", _with(TNF_VOCAB, "--out", "{empty_dir}"), "--out {empty_dir} is a folder, not a file"),
    ("tnf-vocab/out-is-folder-force", _with(TNF_VOCAB, "--out", "{empty_dir}", "--force"),
     "--out {empty_dir} is a folder, not a file"),
    # the paper's 100-500 on a 20-line corpus: refused with the counts found, nothing written
    ("tnf-vocab/no-word-in-range", _with(TNF_VOCAB, drop=("--min-count", "--max-count")),
     "no word of the corpus occurs 100 to 500 times"),
    ("tnf-vocab/corpus-empty", _with(TNF_VOCAB, "--corpus", "{empty.bin}"), "no words"),
    ("tnf-vocab/min-above-max", _with(TNF_VOCAB, "--min-count", "5", "--max-count", "2"), "count"),
    ("tnf-vocab/min-negative", _with(TNF_VOCAB, "--min-count", "-1"), "count"),
    ("tnf-vocab/earlier-output", _with(TNF_VOCAB, drop=("--out",)), "tnf_rare_words.json"),
    ("tnf-vocab/out-unwritable", _with(TNF_VOCAB, "--out", "/proc/nope/v.json"), "/proc/nope"),
    ("tnf-vocab/corpus-not-text", _with(TNF_VOCAB, "--corpus", "{random.bin}"), "random.bin"),
    # tupe convert
    ("tupe-convert/missing", ["tupe", "convert", "{new}/nope.pt", "{new}/hf"], "nope.pt"),
    ("tupe-convert/ckpt-is-folder", ["tupe", "convert", "{empty_dir}", "{new}/hf"],
     "CKPT {empty_dir} is a folder, not a file"),
    ("tupe-convert/empty", ["tupe", "convert", "{empty.bin}", "{new}/hf"], "empty.bin"),
    ("tupe-convert/garbage", ["tupe", "convert", "{random.bin}", "{new}/hf"], "random.bin"),
    ("tupe-convert/foreign", ["tupe", "convert", "{foreign.pt}", "{new}/hf"], "foreign.pt"),
    ("tupe-convert/out-earlier", ["tupe", "convert", "{foreign.pt}", "{hf}"], "hf"),
    # mcbert convert
    ("mcbert-convert/missing", ["mcbert", "convert", "{new}/nope.pt", "{new}/hf"], "nope.pt"),
    ("mcbert-convert/ckpt-is-folder", ["mcbert", "convert", "{empty_dir}", "{new}/hf"],
     "CKPT {empty_dir} is a folder, not a file"),
    ("mcbert-convert/empty", ["mcbert", "convert", "{empty.bin}", "{new}/hf"], "the file is empty"),
    ("mcbert-convert/garbage", ["mcbert", "convert", "{random.bin}", "{new}/hf"], "not a fairseq checkpoint"),
    ("mcbert-convert/foreign", ["mcbert", "convert", "{foreign.pt}", "{new}/hf"], "foreign.pt"),
    ("mcbert-convert/out-earlier", ["mcbert", "convert", "{foreign.pt}", "{hf}"], "hf"),
    # tnf convert
    ("tnf-convert/missing", ["tnf", "convert", "{new}/nope.pt", "{new}/hf"], "nope.pt"),
    ("tnf-convert/ckpt-is-folder", ["tnf", "convert", "{empty_dir}", "{new}/hf"],
     "CKPT {empty_dir} is a folder, not a file"),
    ("tnf-convert/empty", ["tnf", "convert", "{empty.bin}", "{new}/hf"], "the file is empty"),
    ("tnf-convert/garbage", ["tnf", "convert", "{random.bin}", "{new}/hf"], "not a fairseq checkpoint"),
    ("tnf-convert/foreign", ["tnf", "convert", "{foreign.pt}", "{new}/hf"], "foreign.pt"),
    ("tnf-convert/dict-is-folder", ["tnf", "convert", "{foreign.pt}", "{new}/hf", "--dict", "{empty_dir}"],
     "--dict {empty_dir} is a folder, not a file"),
    ("tnf-convert/out-earlier", ["tnf", "convert", "{foreign.pt}", "{hf}"], "hf"),
    # pretrain (checked before any tokenizer or model is built)
    ("pretrain/missing", ["pretrain", "{new}/nope.txt", "--out", "{new}/p"], "training text file not found"),
    ("pretrain/folder-without-text", ["pretrain", "{empty_dir}", "--out", "{new}/p"],
     "training text folder {empty_dir} holds no .txt files"),
    ("pretrain/empty", ["pretrain", "{empty.bin}", "--out", "{new}/p"], "0 non-blank line"),
    ("pretrain/steps-0", ["pretrain", "{corpus.txt}", "--out", "{new}/p", "--steps", "0"], "--steps"),
    ("pretrain/out-earlier", ["pretrain", "{corpus.txt}", "--out", "{hf}"], "--resume"),
    ("pretrain/tokenizer-is-file", ["pretrain", "{corpus.txt}", "--out", "{new}/p", "--tokenizer", "{a_file}"],
     "--tokenizer {a_file} is a file, not a folder"),
    ("pretrain/tokenizer-empty", ["pretrain", "{corpus.txt}", "--out", "{new}/p", "--tokenizer", "{empty_dir}"],
     "tokenizer.json"),
    # hf-run
    ("hf-run/missing", ["hf-run", "{new}/nope.py"], "SCRIPT not found"),
    ("hf-run/script-is-folder", ["hf-run", "{empty_dir}"], "SCRIPT {empty_dir} is a folder, not a file"),
    # report
    ("report/missing", ["report", "{new}/nope"], "nope"),
    ("report/a-file", ["report", "{a_file}"], "a_file"),
    ("report/no-results", ["report", "{empty_dir}"], "results.json"),
    ("report/garbage-results", ["report", "{bad_run}", "--markdown"], "results.json"),
]


def _fill(argv: list[str], world: Path, new: Path) -> list[str]:
    def one(word: str) -> str:
        word = word.replace("{new}", str(new))
        if word.startswith("{") and "}" in word:
            name, rest = word[1:].split("}", 1)
            return str(world / name) + rest
        return word

    return [one(w) for w in argv]


@pytest.mark.parametrize("argv, phrase", [pytest.param(argv, phrase, id=name) for name, argv, phrase in CASES])
def test_bad_input_is_one_error_line_and_changes_nothing(world, tmp_path, capsys, argv, phrase):
    new = tmp_path / "new"
    new.mkdir()
    before = _snapshot(world)
    try:
        code = main(_fill(argv, world, new))
    except SystemExit as usage_error:  # argparse refused an argument (e.g. a --seed out of range)
        code = usage_error.code
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("graftkit: error: "), captured.err
    assert re.sub(r"\{([^}]+)\}", lambda m: str(world / m[1]), phrase) in lines[0]  # {name}: a path
    assert "Traceback" not in captured.err + captured.out and "weights_only" not in captured.err
    assert _snapshot(world) == before, "a failed command changed a file of an earlier run"
    assert not any(new.iterdir()), f"a failed command wrote {sorted(p.name for p in new.iterdir())}"


def test_the_matrix_covers_every_subcommand():
    def leaves(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()):
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            yield " ".join(words)
        for action in subs:
            for name, sub in action.choices.items():
                yield from leaves(sub, words + (name,))

    covered = {" ".join(w for w in argv[:2] if not w.startswith(("-", "{"))) for _, argv, _ in CASES}
    covered = {c if c.split()[0] not in ("reproduce",) else "reproduce" for c in covered}
    missing = set(leaves(build_parser())) - covered - {"list", "fairseq-user-dir"}  # these take no input
    assert not missing, f"no bad-input case for: {sorted(missing)}"


def test_world_is_not_left_with_stray_files(world):
    """The fixture's own successful runs leave no temporary or probe files behind."""
    stray = [p for p in world.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    assert not stray, stray

