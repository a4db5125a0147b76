"""CLEIT: cross-level information transmission for drug-response prediction (He & Xie, Bioinformatics 2021).

An expression network, fine-tuned on drug responses, becomes a frozen teacher; a mutation autoencoder is
trained to reconstruct mutations and to match the teacher's code of the same sample (contrastive loss); the
mutation encoder is then fine-tuned to predict drug responses of new genotypes from mutations alone.
"""

from omics_ext.cleit.configuration_cleit import CLEITConfig
from omics_ext.cleit.data import (
    OmicsDataset,
    align_levels,
    load_gdsc,
    make_synthetic,
    read_matrix,
    read_mutation,
    read_responses,
)
from omics_ext.cleit.metrics import per_drug_metrics, summarize
from omics_ext.cleit.modeling_cleit import (
    EncoderRegressor,
    MultiOutputRegressor,
    OmicsAutoEncoder,
    PerDrugLinear,
    contrastive_loss,
    masked_simse,
)
from omics_ext.cleit.pipeline import CVResult, cross_validate
from omics_ext.cleit.trainer_cleit import CLEIT

__all__ = [
    "CLEIT", "CLEITConfig", "CVResult", "EncoderRegressor", "MultiOutputRegressor", "OmicsAutoEncoder",
    "OmicsDataset", "PerDrugLinear", "align_levels", "contrastive_loss", "cross_validate", "load_gdsc",
    "make_synthetic", "masked_simse", "per_drug_metrics", "read_matrix", "read_mutation", "read_responses",
    "summarize",
]
