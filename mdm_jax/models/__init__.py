"""Flax denoisers: one transformer with the paper's presets."""
from mdm_jax.models.transformer import PRESETS
from mdm_jax.models.transformer import Transformer
from mdm_jax.models.transformer import TransformerConfig
from mdm_jax.models.transformer import count_params
from mdm_jax.models.transformer import flops_per_token
from mdm_jax.models.transformer import preset

__all__ = ["PRESETS", "Transformer", "TransformerConfig", "count_params",
           "flops_per_token", "preset"]
