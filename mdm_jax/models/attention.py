"""Multi-head attention core (no projections): RoPE and scaled dot-product attention.

`dot_product_attention` is the hand-written core tuned for XLA:CPU;
`xla_dot_product_attention` computes the same by the plain path (GPU / TPU);
TransformerConfig.kernels chooses.

Layout choice (CPU speed, see benchmarks/forward.py): the fused q/k/v projection
output [B, L, 3, H, K] is transposed ONCE to [3, B, H, L, K], so that both attention
matmuls are plain batched matmuls over (B, H) with no further copies, and the
softmax normalisation is applied to the [B, H, L, K] output (K < L) instead of the
[B, H, L, L] probabilities.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


def rope_tables(seq_len: int, head_dim: int, base: float = 10000.0
                ) -> tuple[np.ndarray, np.ndarray]:
  """cos, sin tables float32[seq_len, head_dim // 2] for rotary embeddings."""
  if head_dim % 2:
    raise ValueError(f"RoPE needs an even head dimension, got {head_dim}")
  inv_freq = base ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
  angles = np.arange(seq_len, dtype=np.float64)[:, None] * inv_freq[None, :]
  return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def apply_rope(x_BxHxLxK: jax.Array, cos_LxK2: np.ndarray, sin_LxK2: np.ndarray
               ) -> jax.Array:
  """Rotates feature pairs (i, i + K/2) of each head by position-dependent angles.

  Rotate-half convention (GPT-NeoX, LLaMA in HF transformers): with x = [x1, x2],
  out = [x1 cos - x2 sin, x2 cos + x1 sin]. Scores q_m . k_n then depend on the
  positions only through m - n. The length axis is axis -2; computed in float32.
  """
  length = x_BxHxLxK.shape[-2]
  cos, sin = cos_LxK2[:length], sin_LxK2[:length]
  x1, x2 = jnp.split(x_BxHxLxK.astype(jnp.float32), 2, axis=-1)  # rotate in float32
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BxHxLxK.dtype)


def split_heads(qkv_BxLx3D: jax.Array, num_heads: int
                ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """[B, L, 3*H*K] (q, k, v concatenated) -> q, k, v each [B, H, L, K]."""
  b, length, three_d = qkv_BxLx3D.shape
  head_dim = three_d // (3 * num_heads)
  qkv_3xBxHxLxK = qkv_BxLx3D.reshape(b, length, 3, num_heads, head_dim).transpose(
      2, 0, 3, 1, 4)
  # split (not indexing): its transpose is one concatenate instead of three pads + adds
  q, k, v = jnp.split(qkv_3xBxHxLxK, 3, axis=0)
  return q[0], k[0], v[0]


def merge_heads(x_BxHxLxK: jax.Array) -> jax.Array:
  """[B, H, L, K] -> [B, L, H*K]."""
  b, h, length, k = x_BxHxLxK.shape
  return x_BxHxLxK.transpose(0, 2, 1, 3).reshape(b, length, h * k)


def dot_product_attention(
    q_BxHxLxK: jax.Array, k_BxHxLxK: jax.Array, v_BxHxLxK: jax.Array, *,
    causal: bool, dropout_fn: Callable[[jax.Array], jax.Array] | None = None
) -> jax.Array:
  """softmax(q k^T / sqrt(K) [+ causal mask]) v per head -> [B, H, L, K] in q's dtype.

  Scores, exponentials and the normaliser are float32. Computed as
  (exp(s - max s) @ v) / sum exp(s - max s), which equals softmax(s) @ v. If given,
  `dropout_fn` is applied to the unnormalised exponentials, which equals dropout on
  the probabilities (the normaliser is a per-row constant).
  """
  head_dim, length = q_BxHxLxK.shape[-1], q_BxHxLxK.shape[-2]
  dtype = q_BxHxLxK.dtype
  q = q_BxHxLxK * jnp.asarray(1.0 / np.sqrt(head_dim), dtype)
  scores_BxHxLxL = jnp.einsum("bhqd,bhkd->bhqk", q, k_BxHxLxK,
                              preferred_element_type=jnp.float32)
  if causal:
    allowed_LxL = np.tril(np.ones((length, length), dtype=bool))
    scores_BxHxLxL = jnp.where(allowed_LxL, scores_BxHxLxL, -1e30)
  row_max = jax.lax.stop_gradient(jnp.max(scores_BxHxLxL, axis=-1, keepdims=True))
  exp_BxHxLxL = jnp.exp(scores_BxHxLxL - row_max)
  denom_BxHxLx1 = jnp.sum(exp_BxHxLxL, axis=-1, keepdims=True)
  if dropout_fn is not None:
    exp_BxHxLxL = dropout_fn(exp_BxHxLxL)
  out_BxHxLxK = jnp.einsum("bhqk,bhkd->bhqd", exp_BxHxLxL.astype(v_BxHxLxK.dtype),
                           v_BxHxLxK, preferred_element_type=jnp.float32)
  return (out_BxHxLxK / denom_BxHxLx1).astype(dtype)


def xla_dot_product_attention(
    q_BxHxLxK: jax.Array, k_BxHxLxK: jax.Array, v_BxHxLxK: jax.Array, *,
    causal: bool, dropout_fn: Callable[[jax.Array], jax.Array] | None = None
) -> jax.Array:
  """The same function as `dot_product_attention`, by the plain path (GPU / TPU).

  Without dropout: `jax.nn.dot_product_attention` (XLA picks its fused kernels;
  [B, L, H, K] layout outside). With dropout: softmax in float32, `dropout_fn` on
  the probabilities, then the weighted sum, all by autodiff (no hand-written
  normalisation order).
  """
  dtype = q_BxHxLxK.dtype
  if dropout_fn is None:
    out_BxLxHxK = jax.nn.dot_product_attention(
        q_BxHxLxK.swapaxes(1, 2), k_BxHxLxK.swapaxes(1, 2), v_BxHxLxK.swapaxes(1, 2),
        is_causal=causal)
    return out_BxLxHxK.swapaxes(1, 2).astype(dtype)
  head_dim, length = q_BxHxLxK.shape[-1], q_BxHxLxK.shape[-2]
  scores_BxHxLxL = jnp.einsum("bhqd,bhkd->bhqk", q_BxHxLxK, k_BxHxLxK,
                              preferred_element_type=jnp.float32) / np.sqrt(head_dim)
  if causal:
    allowed_LxL = np.tril(np.ones((length, length), dtype=bool))
    scores_BxHxLxL = jnp.where(allowed_LxL, scores_BxHxLxL, -1e30)
  probs_BxHxLxL = dropout_fn(jax.nn.softmax(scores_BxHxLxL, axis=-1))
  out_BxHxLxK = jnp.einsum("bhqk,bhkd->bhqd", probs_BxHxLxL.astype(v_BxHxLxK.dtype),
                           v_BxHxLxK, preferred_element_type=jnp.float32)
  return out_BxHxLxK.astype(dtype)
