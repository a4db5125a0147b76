"""Helpers shared by the tests that start local processes (gloo groups, fairseq command lines)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

FAIRSEQ_BIN = Path(sys.executable).parent
#: the first lines of a script that runs as on a machine without graftkit installed: importing graftkit,
#: hf_models or plugins fails, so a saved folder must load through its own remote code
WITHOUT_GRAFTKIT = """import importlib.abc
import sys


class HideGraftkit(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"graftkit", "hf_models", "plugins"}:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


sys.meta_path.insert(0, HideGraftkit())
"""
PLUGINS = Path(__file__).resolve().parent.parent / "plugins"


def free_port() -> int:
    """A free TCP port on the loopback interface, for a test's process group rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def gloo_group(rank: int, world: int, port: int) -> Iterator[None]:
    """Make this spawned test worker ``rank`` of a ``world``-process gloo group on the loopback interface.

    When the body succeeds, the worker process ends right here with ``os._exit(0)``: torch's teardown of a
    gloo group that a DDP reducer still references can deadlock on the GIL (seen in CI: ~ProcessGroupGloo
    joining its worker thread while that thread waits for the GIL to free a finished work), which hung the
    test. An exception propagates, so ``mp.spawn`` reports it; collectives time out after two minutes.
    """
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)  # the ranks share a small machine: no thread oversubscription
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(minutes=2))
    yield
    dist.barrier()  # both ranks are done (and their results written) before either leaves
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_fairseq(tool: str, *args: str, user_dir: bool = True) -> subprocess.CompletedProcess:
    """Run a fairseq command-line tool of this environment, with graftkit's plugins as ``--user-dir``."""
    cmd = [str(FAIRSEQ_BIN / tool), *args] + (["--user-dir", str(PLUGINS)] if user_dir else [])
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def run_fairseq_ok(tool: str, *args: str, user_dir: bool = True) -> subprocess.CompletedProcess:
    """:func:`run_fairseq`, asserting it succeeded (the end of its stderr is the failure message)."""
    done = run_fairseq(tool, *args, user_dir=user_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


# fairseq-train (``fairseq_cli.train.cli_main``) with one addition: when the process ends, every rank saves its
# model's weights to <first argument>/rank<r>.pt (fairseq's checkpoints hold rank 0's only)
_FAIRSEQ_TRAIN_SAVING_EVERY_RANK = """
import atexit, sys, torch
from fairseq.trainer import Trainer
from fairseq_cli.train import cli_main

out = sys.argv.pop(1)
trainer_init = Trainer.__init__

def init_and_save_at_exit(self, *args, **kwargs):
    trainer_init(self, *args, **kwargs)
    path = f"{out}/rank{self.data_parallel_rank}.pt"
    atexit.register(lambda: torch.save(self.model.state_dict(), path))

Trainer.__init__ = init_and_save_at_exit
sys.exit(cli_main())
"""


def run_fairseq_train_on_two_ranks(out: Path, *args: str, timeout: float = 300) -> list[str]:
    """fairseq-train's own distributed training: one process per rank of a 2-rank gloo group on the loopback
    interface, ``legacy_ddp`` (fairseq's CPU-capable DDP), graftkit's plugins as ``--user-dir``. Asserts both
    ranks joined and finished and that they end with identical weights (each rank saves its own to ``out``);
    returns their logs (stdout and stderr). Both processes are killed after ``timeout`` seconds."""
    argv = [sys.executable, "-c", _FAIRSEQ_TRAIN_SAVING_EVERY_RANK, str(out), *args, "--user-dir", str(PLUGINS),
            "--distributed-world-size", "2", "--distributed-init-method", f"tcp://127.0.0.1:{free_port()}",
            "--distributed-backend", "gloo", "--distributed-no-spawn", "--ddp-backend", "legacy_ddp"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    procs = [subprocess.Popen(argv + ["--distributed-rank", str(rank)], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for rank in (0, 1)]
    try:
        logs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    assert "distributed init (rank 1)" in logs[0] + logs[1]
    import torch

    ranks = [torch.load(out / f"rank{rank}.pt") for rank in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys()
    for name in ranks[0]:
        torch.testing.assert_close(ranks[0][name], ranks[1][name], atol=0, rtol=0, msg=name)
    return logs


_TRAINER_SCRIPT = """
import json, os, sys, torch
import torch.distributed as dist
import transformers
from transformers import DataCollatorForLanguageModeling, DataCollatorWithPadding, Trainer, TrainingArguments
import hf_models  # registers graftkit's model types with the Auto classes
from graftkit.data.text import WordVocab, english_sentences

out, auto_class, model_type, fields = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
sentences = english_sentences()[:64]
tokenizer = WordVocab.build(sentences).to_hf_tokenizer(model_max_length=16)
tokenizer.add_special_tokens({"additional_special_tokens": ["<neither>"]})  # MC-BERT's reject option
rows = [{"input_ids": ids} for ids in tokenizer(sentences, truncation=True)["input_ids"]]
fields = {k: tokenizer.convert_tokens_to_ids(v) if k.endswith("_token_id") else v for k, v in fields.items()}
config = transformers.AutoConfig.for_model(
    model_type, vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
    intermediate_size=64, max_position_embeddings=16, pad_token_id=tokenizer.pad_token_id, **fields)
torch.manual_seed(0)
model = getattr(transformers, auto_class).from_config(config)
if os.environ["RANK"] == "0":  # the same weights on both ranks: one writer
    torch.save(model.state_dict(), f"{out}/initial.pt")
args = TrainingArguments(output_dir=out, max_steps=3, per_device_train_batch_size=8, learning_rate=1e-3,
                         report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0,
                         ddp_backend="gloo", ddp_find_unused_parameters=False)
collator = (DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15) if auto_class == "AutoModelForMaskedLM"
            else DataCollatorWithPadding(tokenizer))  # a pre-training model that masks its input itself
trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=collator)
first = next(iter(trainer.get_train_dataloader()))["input_ids"]
trainer.train()
rank = dist.get_rank()
torch.save(model.state_dict(), f"{out}/rank{rank}.pt")
with open(f"{out}/rank{rank}.json", "w") as f:
    json.dump({"world_size": args.world_size, "first_batch": first.tolist()}, f)
"""


def train_with_trainer_on_two_ranks(out: Path, auto_class: str, model_type: str, **fields: object) -> dict:
    """HF ``Trainer`` under ``torch.distributed.run`` on 2 gloo ranks: 3 steps of a tiny ``model_type`` model
    (``auto_class``, e.g. "AutoModelForMaskedLM" with HF's masking collator, or "AutoModelForPreTraining" for a
    model that masks its input itself) on the bundled English text, with ``fields`` added to its config (the
    value of a ``*_token_id`` field is a token, "[MASK]" or "<neither>", and becomes its id). DDP runs
    without its search for unused parameters, so a parameter left without a gradient stops the run. Asserts
    both ranks saw a batch of their own and ended with identical weights; returns {"initial": state dict,
    "final": state dict}."""
    script = out / "train_on_two_ranks.py"
    script.write_text(_TRAINER_SCRIPT)
    run_script_on_two_ranks(script, str(out), auto_class, model_type, json.dumps(fields))
    meta = [json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert meta[0]["world_size"] == meta[1]["world_size"] == 2
    assert meta[0]["first_batch"] != meta[1]["first_batch"]  # each rank trains on its own shard
    import torch

    initial, *ranks = (torch.load(out / f"{name}.pt") for name in ("initial", "rank0", "rank1"))
    assert ranks[0].keys() == ranks[1].keys() == initial.keys()
    for name in initial:
        torch.testing.assert_close(ranks[0][name], ranks[1][name], atol=0, rtol=0, msg=name)
    return {"initial": initial, "final": ranks[0]}


def run_script_on_two_ranks(script: Path, *args: str, timeout: float = 300) -> None:
    """Run a Python script as 2 local ranks under ``torch.distributed.run`` (the launcher HF's ``Trainer``
    and accelerate expect), importing graftkit from this checkout; asserts it succeeded."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(PLUGINS.parent), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             str(script), *args], env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
