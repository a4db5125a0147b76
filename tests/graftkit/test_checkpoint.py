import fractions
import os
import pickle
import random

import pytest
import torch

from graftkit.checkpoint import atomic_write, check_writable, load_checkpoint, save_checkpoint
from graftkit.errors import GraftkitError


def test_round_trip(tmp_path):
    path = save_checkpoint({"w": torch.arange(3.0), "step": 7}, tmp_path / "sub" / "ck.pt")
    state = load_checkpoint(path)
    assert state["step"] == 7 and torch.equal(state["w"], torch.arange(3.0))
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o644)


def test_interrupted_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint({"step": 1}, path)

    def half_write(handle):
        handle.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half_write)
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


def test_missing_and_corrupt_checkpoints_are_named(tmp_path):
    with pytest.raises(GraftkitError, match="checkpoint not found: .*nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(GraftkitError, match="cannot read .*bad.pt: not a graftkit checkpoint"):
        load_checkpoint(bad)


def _unreadable_files(tmp_path):
    """(file, the reason the message must give) for each way a .pt file can fail to load."""
    good = save_checkpoint({"w": torch.arange(3.0)}, tmp_path / "good.pt").read_bytes()
    cases = {
        "empty.pt": (b"", "the file is empty"),
        "random.pt": (bytes(random.Random(0).randrange(256) for _ in range(4096)),
                      "not a file written by torch.save"),
        "pickle.pt": (pickle.dumps({"a": 1}), "not a file written by torch.save"),
        "truncated.pt": (good[: len(good) // 2], "a damaged or truncated torch.save archive"),
    }
    for name, (data, _) in cases.items():
        (tmp_path / name).write_bytes(data)
    torch.save({"ratio": fractions.Fraction(1, 3)}, tmp_path / "object.pt")
    cases["object.pt"] = (None, "it holds a Python object of type fractions.Fraction")
    return {tmp_path / name: reason for name, (_, reason) in cases.items()}


def test_unreadable_files_say_why_and_never_advise_weights_only_false(tmp_path):
    """torch's own message advises re-running with weights_only=False, which runs any code the file holds."""
    for path, reason in _unreadable_files(tmp_path).items():
        with pytest.raises(GraftkitError) as info:
            load_checkpoint(path, kind="fairseq checkpoint")
        message = str(info.value)
        assert message.startswith(f"cannot read {path}: not a fairseq checkpoint ({reason}"), message
        assert "weights_only" not in message and "\n" not in message
        assert info.value.__cause__ is None and info.value.__suppress_context__


def test_allowed_classes_are_loaded_and_nothing_else(tmp_path):
    torch.save({"ratio": fractions.Fraction(1, 3)}, tmp_path / "fraction.pt")
    state = load_checkpoint(tmp_path / "fraction.pt", allowed_classes=[fractions.Fraction])
    assert state["ratio"] == fractions.Fraction(1, 3)
    with pytest.raises(GraftkitError, match="fractions.Fraction"):
        load_checkpoint(tmp_path / "fraction.pt")  # the allowance does not outlive the call


def test_allowing_a_class_keeps_what_was_allowed_process_wide(tmp_path):
    torch.save({"ratio": fractions.Fraction(1, 3)}, tmp_path / "fraction.pt")
    with torch.serialization.safe_globals([fractions.Fraction]):  # allowed before, as fairseq_compat does
        load_checkpoint(tmp_path / "fraction.pt", allowed_classes=[fractions.Fraction])
        assert fractions.Fraction in torch.serialization.get_safe_globals()


def test_check_writable_refuses_what_atomic_write_could_not_write(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("keep")
    assert check_writable(tmp_path / "new" / "deeper" / "out.csv") == tmp_path / "new" / "deeper" / "out.csv"
    assert check_writable(tmp_path / "new" / "folder", folder=True)
    assert check_writable(blocker)  # overwriting a file is what an output does
    with pytest.raises(GraftkitError, match=r"--out .*file is an existing file, not a folder"):
        check_writable(blocker, folder=True, what="--out")
    with pytest.raises(GraftkitError, match=r"is a folder, not a file"):
        check_writable(tmp_path)
    with pytest.raises(GraftkitError, match=r"cannot write output .*: .*file is a file, not a folder"):
        check_writable(blocker / "sub" / "out.csv")
    with pytest.raises(GraftkitError, match=r"cannot write output /proc/nope/x: .* in /proc"):
        check_writable("/proc/nope/x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"], "a check creates nothing"
    assert blocker.read_text() == "keep"
