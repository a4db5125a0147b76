"""Omics methods (CLEIT: ``omics_ext.cleit``). Plain PyTorch; no fairseq or transformers imports."""
