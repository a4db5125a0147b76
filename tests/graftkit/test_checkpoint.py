import os

import pytest
import torch

from graftkit.checkpoint import atomic_write, load_checkpoint, save_checkpoint
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
    with pytest.raises(GraftkitError, match="cannot read checkpoint .*bad.pt"):
        load_checkpoint(bad)
