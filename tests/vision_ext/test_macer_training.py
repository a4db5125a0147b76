"""MACER training loop, checkpoints/resume, DDP with 2 gloo processes, data loading and the CLI."""

import os

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from loopback import free_port, gloo_group

from graftkit.checkpoint import load_checkpoint
from graftkit.cli import main
from graftkit.errors import GraftkitError
from graftkit.runtime import single_thread
from vision_ext.macer import MacerConfig, TrainSettings, train_smoothed
from vision_ext.macer.data import digits_split, load_images, load_npz
from vision_ext.models import LeNet

SPEC = {"arch": "lenet", "in_channels": 1, "num_classes": 10, "input_size": 8}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny LeNet steps: one intra-op thread is as fast and does not fight other processes for the cores."""
    with single_thread():
        yield


def _small_digits(n=64):
    images, labels = digits_split("train")
    return images[:n], labels[:n]


def _train(epochs, checkpoint=None, resume=False, objective="macer", seed=0):
    torch.manual_seed(seed)
    model = LeNet(input_size=8)
    images, labels = _small_digits()
    config = MacerConfig(objective=objective, sigma=0.25, k=4, lbd=0.5, warmup_epochs=1)
    settings = TrainSettings(epochs=epochs, batch_size=16, lr=0.05, milestones=[1], seed=seed)
    history = train_smoothed(model, images, labels, config, settings, checkpoint=checkpoint, resume=resume,
                             model_spec=SPEC, progress=False)
    return model, history


def test_resume_continues_exactly(tmp_path):
    straight, history = _train(3)
    ckpt = tmp_path / "run.pt"
    _train(2, checkpoint=ckpt)
    resumed, resumed_history = _train(3, checkpoint=ckpt, resume=True)
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert [h["epoch"] for h in resumed_history] == [1, 2, 3]
    assert resumed_history[-1]["robustness_loss"] == history[-1]["robustness_loss"]
    assert [h["lr"] for h in history] == pytest.approx([0.05, 0.005, 0.005])
    state = load_checkpoint(ckpt)
    assert state["epoch"] == 3 and state["model_spec"] == SPEC and state["config"]["lbd"] == 0.5
    assert not list(tmp_path.glob(".*tmp"))  # atomic writes leave no temporary files


def test_warmup_switches_lambda_off():
    config = MacerConfig(lbd=3.0, warmup_epochs=2)
    assert [config.at_epoch(e).lbd for e in (1, 2, 3)] == [0.0, 0.0, 3.0]


def test_resume_refuses_a_different_objective(tmp_path):
    ckpt = tmp_path / "run.pt"
    _train(1, checkpoint=ckpt)
    with pytest.raises(GraftkitError, match="config"):
        _train(2, checkpoint=ckpt, resume=True, objective="gaussian")


@pytest.mark.parametrize(("field", "value", "message"), [
    ("lr", 0.0, "lr must be a finite number > 0"), ("momentum", 1.0, r"momentum must be in \[0, 1\)"),
    ("weight_decay", float("nan"), "weight_decay must be a finite number >= 0"),
    ("lr_decay", -0.1, "lr_decay must be a finite number > 0"), ("epochs", 0, "epochs must be an integer >= 1"),
])
def test_bad_optimiser_settings_are_named(field, value, message):
    with pytest.raises(GraftkitError, match=message):
        TrainSettings(**{field: value})


def test_training_rejects_bad_data():
    model = LeNet(input_size=8)
    images, labels = _small_digits(16)
    config, settings = MacerConfig(k=2), TrainSettings(epochs=1)
    with pytest.raises(GraftkitError, match="NaN"):
        train_smoothed(model, images.clone().fill_(float("nan")), labels, config, settings, model_spec=SPEC)
    with pytest.raises(GraftkitError, match="labels must lie"):
        train_smoothed(model, images, labels + 10, config, settings, model_spec=SPEC)
    with pytest.raises(GraftkitError, match="channel"):
        train_smoothed(model, images.repeat(1, 3, 1, 1), labels, config, settings, model_spec=SPEC, progress=False)


def _ddp_worker(rank, world, port, out_dir):
    with gloo_group(rank, world, port):
        torch.manual_seed(0)  # same initial weights (DDP also broadcasts rank 0's)
        model = LeNet(input_size=8)
        images, labels = _small_digits(32)
        history = train_smoothed(model, images, labels, MacerConfig(sigma=0.25, k=4, lbd=0.5),
                                 TrainSettings(epochs=2, batch_size=16, lr=0.05, milestones=[]),
                                 checkpoint=os.path.join(out_dir, "ddp.pt"), model_spec=SPEC, progress=False)
        torch.save({"state": model.state_dict(), "history": history}, os.path.join(out_dir, f"rank{rank}.pt"))


@pytest.mark.distributed
@pytest.mark.slow
def test_ddp_two_gloo_ranks_end_identical(tmp_path):
    mp.spawn(_ddp_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for a, b in zip(r0["state"].values(), r1["state"].values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    initial = LeNet(input_size=8) if torch.manual_seed(0) else None
    assert not torch.equal(initial.conv1.weight, r0["state"]["conv1.weight"])  # it trained
    assert r0["history"] == [dict(h, seconds=h2["seconds"]) for h, h2 in zip(r1["history"], r0["history"])]
    assert load_checkpoint(tmp_path / "ddp.pt")["epoch"] == 2


def test_load_npz_formats_and_errors(tmp_path):
    path = tmp_path / "u8.npz"
    np.savez(path, images=np.full((3, 8, 8), 255, np.uint8), labels=np.array([0, 1, 2]))
    images, labels = load_npz(path)
    assert images.shape == (3, 1, 8, 8) and images.max() == 1.0 and labels.dtype == torch.int64
    np.savez(tmp_path / "nolabels.npz", images=np.zeros((3, 1, 8, 8), np.float32))
    np.savez(tmp_path / "range.npz", images=np.full((2, 1, 8, 8), 3.0), labels=np.array([0, 1]))
    np.savez(tmp_path / "len.npz", images=np.zeros((2, 1, 8, 8)), labels=np.array([0, 1, 2]))
    for name, message in [("nolabels.npz", "lacks"), ("range.npz", r"\[0, 1\]"), ("len.npz", "labels must be"),
                          ("missing.npz", "not found")]:
        with pytest.raises(GraftkitError, match=message):
            load_npz(tmp_path / name)
    with pytest.raises(GraftkitError, match="digits"):
        load_images("mnist")
    train, test = digits_split("train"), digits_split("test")
    assert len(train[0]) == 1347 and len(test[0]) == 450


def test_cli_train_resume_certify(tmp_path, capsys):
    images, labels = digits_split("train")
    data = tmp_path / "small.npz"
    np.savez(data, images=(images[:64, 0].numpy() * 255).astype(np.uint8), labels=labels[:64].numpy())
    ckpt, tsv = tmp_path / "m.pt", tmp_path / "certify.tsv"
    common = ["macer", "train", "--data", str(data), "--out", str(ckpt), "--k", "2", "--lbd", "0.5",
              "--batch-size", "32", "--lr", "0.05", "--no-progress"]
    assert main([*common, "--epochs", "1"]) == 0
    assert main([*common, "--epochs", "1"]) == 2  # exists without --resume
    assert main([*common, "--epochs", "2", "--resume"]) == 0
    assert load_checkpoint(ckpt)["epoch"] == 2
    assert main(["macer", "certify", "--model", str(ckpt), "--data", str(data), "--n0", "10", "--n", "50",
                 "--max", "5", "--batch-size", "25", "--out", str(tsv), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "ACR" in out and "0.25" in out
    lines = tsv.read_text().splitlines()
    assert lines[0].split("\t") == ["idx", "label", "predict", "radius", "correct", "time"]
    assert len(lines) == 6 and tsv.with_suffix(".png").stat().st_size > 0

    wrong = tmp_path / "rgb.npz"
    np.savez(wrong, images=np.zeros((2, 3, 8, 8), np.float32), labels=np.array([0, 1]))
    assert main(["macer", "certify", "--model", str(ckpt), "--data", str(wrong), "--out", str(tsv)]) == 2
    assert "expects images of shape (1, 8, 8)" in capsys.readouterr().err
    for bad in (["--sigma", "0"], ["--n0", "100", "--n", "50"], ["--alpha", "1.5"]):
        assert main(["macer", "certify", "--model", str(ckpt), "--data", str(data), "--out", str(tsv),
                     "--no-progress", *bad]) == 2
    assert main(["macer", "certify", "--model", str(tmp_path / "none.pt"), "--out", str(tsv)]) == 2
