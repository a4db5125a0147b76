"""The ten methods of graftkit: where each lives and which hub modules carry its experiments and commands.

A method's experiments module (``graftkit.experiments.<key>``) registers its experiments when imported;
its command module (``graftkit.commands.<key>``) adds ``graftkit <key> ...`` subcommands. A method whose
modules do not exist yet is listed as ``planned``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    key: str
    title: str
    paper: str
    home: str

    @property
    def experiments_module(self) -> str:
        return f"graftkit.experiments.{self.key}"

    @property
    def commands_module(self) -> str:
        return f"graftkit.commands.{self.key}"

    @property
    def available(self) -> bool:
        return importlib.util.find_spec(self.experiments_module) is not None

    @property
    def has_commands(self) -> bool:
        return importlib.util.find_spec(self.commands_module) is not None


METHODS: tuple[Method, ...] = (
    Method("tupe", "TUPE", "Ke et al., Rethinking Positional Encoding in Language Pre-training (ICLR 2021)",
           "hf_models, plugins"),
    Method("tnf", "TNF", "Wu et al., Taking Notes on the Fly Helps Language Pre-Training (ICLR 2021)",
           "hf_models, plugins"),
    Method("mcbert", "MC-BERT", "Xu et al., MC-BERT: Efficient Language Pre-Training via a Meta Controller "
           "(2020)", "hf_models, plugins"),
    Method("preln", "Pre-LN", "Xiong et al., On Layer Normalization in the Transformer Architecture "
           "(ICML 2020)", "hf_models, plugins"),
    Method("bertfused", "BERT-fused", "Zhu et al., Incorporating BERT into Neural Machine Translation "
           "(ICLR 2020)", "plugins"),
    Method("graphnorm", "GraphNorm", "Cai et al., GraphNorm: A Principled Approach to Accelerating Graph "
           "Neural Network Training (ICML 2021)", "graph_ext"),
    Method("irn", "IRN", "Xiao et al., Invertible Image Rescaling (ECCV 2020)", "vision_ext"),
    Method("macer", "MACER", "Zhai et al., MACER: Attack-free and Scalable Robust Training via Maximizing "
           "Certified Radius (ICLR 2020)", "vision_ext"),
    Method("td", "TD", "Feng et al., Transferred Discrepancy: Quantifying the Difference Between "
           "Representations (2020)", "vision_ext"),
    Method("cleit", "CLEIT", "He & Xie, Cross-level information transmission network for hierarchical "
           "omics data integration (Bioinformatics 2021)", "omics_ext"),
)


def method(key: str) -> Method:
    for m in METHODS:
        if m.key == key:
            return m
    raise KeyError(key)
