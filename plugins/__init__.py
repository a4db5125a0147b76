"""graftkit's fairseq plugins: pass this folder as ``--user-dir`` (or import ``plugins``).

Importing the package registers graftkit's fairseq models, architectures, tasks and criterions; the
registered names are prefixed so they never collide with fairseq's own.
"""

import argparse

import torch

# fairseq 0.12 stores argparse.Namespace in checkpoints; torch >= 2.6 loads with weights_only=True by default
# and refuses it ("Unsupported global"), which breaks fairseq-train's resume and fairseq-generate.
torch.serialization.add_safe_globals([argparse.Namespace])
