"""`graftkit hf-run`, and the path transformers' example scripts (run_mlm.py) take with graftkit's model types:
``CONFIG_MAPPING[model_type]`` + ``--config_overrides``, ``AutoModelForMaskedLM.from_config``, HF's MLM collator,
``Trainer.train/evaluate``, ``save_model``, then a reload in a fresh process without graftkit."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from loopback import WITHOUT_GRAFTKIT

from graftkit.cli import main

REPO = Path(__file__).resolve().parents[2]


def hf_run(tmp_path: Path, script: str, *args: str) -> subprocess.CompletedProcess:
    """``graftkit hf-run SCRIPT ARGS`` in a fresh process, importing graftkit from this checkout."""
    path = tmp_path / "script.py"
    path.write_text(script)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "graftkit.cli", "hf-run", str(path), *args], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)


_PROBE = """
import sys
from transformers import CONFIG_MAPPING, MODEL_FOR_MASKED_LM_MAPPING
print(__name__, sys.argv[1:], sorted(t for t in ("preln_bert", "tupe", "tnf", "mc_bert") if t in CONFIG_MAPPING),
      sorted(c.model_type for c in MODEL_FOR_MASKED_LM_MAPPING.keys() if c.model_type in ("preln_bert", "tupe")))
sys.exit(3)
"""


def test_hf_run_runs_the_script_unchanged_with_the_model_types_registered(tmp_path):
    done = hf_run(tmp_path, _PROBE, "--model_type", "tupe", "--help")
    assert done.returncode == 3, done.stderr[-2000:]  # the script's own exit status
    assert done.stdout.split("\n")[0] == ("__main__ ['--model_type', 'tupe', '--help'] "
                                          "['mc_bert', 'preln_bert', 'tnf', 'tupe'] ['preln_bert', 'tupe']")


def test_hf_run_names_a_missing_script(tmp_path, capsys):
    assert main(["hf-run", str(tmp_path / "run_mlm.py"), "--model_type", "tupe"]) == 2
    assert capsys.readouterr().err == f"graftkit: error: SCRIPT not found: {tmp_path / 'run_mlm.py'}\n"


# run_mlm.py's steps for a model trained from scratch on a text file (--line_by_line), without the datasets
# package: config from CONFIG_MAPPING with --config_overrides (or from --config_name), the tokenizer from
# --tokenizer_name, the model from AutoModelForMaskedLM.from_config (embeddings resized when the tokenizer is
# larger), HF's MLM collator, Trainer.train, save_model, Trainer.evaluate. It never imports graftkit:
# `graftkit hf-run` registered the types.
_RUN_MLM_STEPS = """
import argparse, json, sys, torch
from transformers import (CONFIG_MAPPING, AutoConfig, AutoModelForMaskedLM, AutoTokenizer,
                          DataCollatorForLanguageModeling, Trainer, TrainingArguments, set_seed)

parser = argparse.ArgumentParser()
for name in ("--model_type", "--config_name", "--config_overrides", "--tokenizer_name", "--train_file",
             "--output_dir"):
    parser.add_argument(name)
args = parser.parse_args()
assert "hf_models" in sys.modules
set_seed(0)
if args.config_name:
    config = AutoConfig.from_pretrained(args.config_name)
else:
    config = CONFIG_MAPPING[args.model_type]()
    config.update_from_string(args.config_overrides)
tokenizer = AutoTokenizer.from_pretrained(args.tokenizer_name)
model = AutoModelForMaskedLM.from_config(config)
if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
    model.resize_token_embeddings(len(tokenizer))
lines = [line for line in open(args.train_file).read().splitlines() if line.strip()]
encoded = tokenizer(lines, truncation=True, max_length=32, return_special_tokens_mask=True)
rows = [{"input_ids": ids, "special_tokens_mask": mask}
        for ids, mask in zip(encoded["input_ids"], encoded["special_tokens_mask"])]
collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
training = TrainingArguments(output_dir=args.output_dir, max_steps=6, per_device_train_batch_size=8,
                             learning_rate=1e-3, report_to=[], save_strategy="no", disable_tqdm=True, seed=0)
trainer = Trainer(model=model, args=training, train_dataset=rows[16:], eval_dataset=rows[:16],
                  data_collator=collator, processing_class=tokenizer)
before = {k: v.clone() for k, v in model.state_dict().items()}
trainer.train()
trainer.save_model()
metrics = trainer.evaluate()
model.eval()
probe = tokenizer(lines[:2], padding=True, truncation=True, max_length=32, return_tensors="pt",
                  return_token_type_ids=False)
with torch.no_grad():  # the encoder's features; the masked-LM logits where the model has them (MC-BERT masks)
    out = {"AutoModel": model.base_model(**probe).last_hidden_state.tolist()}
    if config.model_type != "mc_bert":
        out["AutoModelForMaskedLM"] = model(**probe).logits.tolist()
changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
with open(f"{args.output_dir}/run.json", "w") as f:
    json.dump({"eval_loss": metrics["eval_loss"], "outputs": out, "changed": changed}, f)
"""

_RELOAD = WITHOUT_GRAFTKIT + """
import json
import torch, transformers
from transformers import AutoTokenizer
folder = sys.argv[1]
tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
lines = [line for line in open(sys.argv[2]).read().splitlines() if line.strip()]
probe = tokenizer(lines[:2], padding=True, truncation=True, max_length=32, return_tensors="pt",
                  return_token_type_ids=False)
out = {}
for name in sys.argv[3].split(","):
    model = getattr(transformers, name).from_pretrained(folder, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
    with torch.no_grad():
        result = model(**probe)
    out[name] = (result.logits if name == "AutoModelForMaskedLM" else result.last_hidden_state).tolist()
json.dump(out, sys.stdout)
"""

TINY = "hidden_size=32,num_hidden_layers=2,num_attention_heads=4,intermediate_size=64,max_position_embeddings=32"


@pytest.fixture(scope="module")
def corpus_and_tokenizer(tmp_path_factory) -> tuple[Path, Path]:
    from graftkit.data.text import english_sentences
    from graftkit.pretrain import train_tokenizer

    folder = tmp_path_factory.mktemp("data")
    lines = english_sentences()[:120]
    (folder / "train.txt").write_text("\n".join(lines) + "\n")
    tokenizer = train_tokenizer(lines, 500, 32, ["<neither>"])  # [PAD] [UNK] [CLS] [SEP] [MASK] <neither> first
    assert tokenizer.convert_tokens_to_ids(["[MASK]", "<neither>"]) == [4, 5]
    tokenizer.save_pretrained(folder / "tokenizer")
    return folder / "train.txt", folder / "tokenizer"


@pytest.mark.slow
@pytest.mark.parametrize(("model_type", "overrides"), [
    ("preln_bert", ""),
    ("preln_bert", ",layer_norm_position=post"),
    ("tupe", ""),
    ("tupe", ",layer_norm_position=pre"),
    ("tupe", ",position_embedding_type=tupe_relative"),  # --config_overrides of one position field moves both
    ("preln_bert", ",position_embedding_type=tupe_relative"),
    ("mc_bert", ",mc_size_divider=2,mask_token_id=4,neither_token_id=5"),
    ("mc_bert", ",objective=rtd,mc_size_divider=2,mask_token_id=4,position_embedding_type=tupe_absolute"),
])
def test_the_run_mlm_path_trains_saves_and_reloads_without_graftkit(tmp_path, corpus_and_tokenizer, model_type,
                                                                      overrides):
    train_file, tokenizer = corpus_and_tokenizer
    out = tmp_path / "out"
    done = hf_run(tmp_path, _RUN_MLM_STEPS, "--model_type", model_type, "--config_overrides", TINY + overrides,
                  "--tokenizer_name", str(tokenizer), "--train_file", str(train_file), "--output_dir", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    run = json.loads((out / "run.json").read_text())
    assert math.isfinite(run["eval_loss"]) and run["eval_loss"] > 0
    assert "bert.encoder.layers.1.feed_forward.output.weight" in run["changed"] or any(
        k.endswith("encoder.layers.1.feed_forward.output.weight") for k in run["changed"])
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == model_type and config["hidden_size"] == 32 and config["vocab_size"] >= 500
    for field in overrides.split(",")[1:]:
        name, value = field.split("=")
        assert str(config[name]) == value
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": ""}
    (tmp_path / "reload.py").write_text(_RELOAD)
    reload = subprocess.run([sys.executable, str(tmp_path / "reload.py"), str(out), str(train_file),
                             ",".join(run["outputs"])], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert reload.returncode == 0, reload.stderr[-3000:]
    reloaded = json.loads(reload.stdout)
    assert set(reloaded) == set(run["outputs"]) >= {"AutoModel"}
    for name, expected in run["outputs"].items():
        torch.testing.assert_close(torch.tensor(reloaded[name]), torch.tensor(expected), msg=name)


@pytest.mark.slow
def test_tnf_on_the_run_mlm_path_takes_notes_with_the_stock_collator(tmp_path, corpus_and_tokenizer):
    """TNF through run_mlm.py: a config folder with the rare vocabulary (--config_name), HF's stock collator;
    the model finds the rare words itself, and the saved notes show it."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from hf_models import TnfConfig
    from hf_models.tnf import RareVocabulary

    train_file, tokenizer_folder = corpus_and_tokenizer
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
    lines = [line for line in train_file.read_text().splitlines() if line.strip()]
    vocab = RareVocabulary.build(tokenizer, lines, 3, 12)
    fields = dict(field.split("=") for field in TINY.split(","))
    TnfConfig(**{k: int(v) for k, v in fields.items()}, vocab_size=len(tokenizer),
              **vocab.config_fields(tokenizer)).save_pretrained(tmp_path / "tnf-config")
    out = tmp_path / "out"
    done = hf_run(tmp_path, _RUN_MLM_STEPS, "--config_name", str(tmp_path / "tnf-config"), "--tokenizer_name",
                  str(tokenizer_folder), "--train_file", str(train_file), "--output_dir", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "training as its plain backbone" not in done.stderr
    state = load_file(out / "model.safetensors")
    assert state["notes.has_note"].sum() > 0 and state["notes.notes"].abs().sum() > 0  # notes were taken
    run = json.loads((out / "run.json").read_text())
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": ""}
    (tmp_path / "reload.py").write_text(_RELOAD)
    reload = subprocess.run([sys.executable, str(tmp_path / "reload.py"), str(out), str(train_file),
                             "AutoModelForMaskedLM"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert reload.returncode == 0, reload.stderr[-3000:]
    torch.testing.assert_close(torch.tensor(json.loads(reload.stdout)["AutoModelForMaskedLM"]),
                               torch.tensor(run["outputs"]["AutoModelForMaskedLM"]))
