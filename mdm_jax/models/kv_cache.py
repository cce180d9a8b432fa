"""Key/value-cached inference for causal `Transformer`s (the ARM baselines).

The same network as `transformer.Transformer` (train=False), computed from the same
parameters by the same sub-modules (norms, dense layers, MLP, RoPE, attention
formula), but one position at a time: `prefill` runs the causal network over a whole
sequence once and keeps every layer's keys and values; `decode_step` then feeds one
token at position `pos`, writes its keys and values into the cache at `pos` and
attends over cache slots 0..pos only. A causal model's output at i depends only on
tokens 0..i, so the logits equal the full forward's (up to float rounding), for
learned positions (GPT-2 style) and RoPE (LLaMA style), with or without qk-norm.

Cache layout: a tuple over layers of (keys, values), each [B, H, L, K] in the compute
dtype, L = the sequence length given to `prefill` (<= config.seq_len). Slots not
yet written hold whatever `prefill` saw there; `decode_step` masks every slot > pos.
`sampling.ar_greedy_cached` is the greedy decoder built on these.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mdm_jax.models import attention
from mdm_jax.models import transformer as tfm

Cache = tuple[tuple[jax.Array, jax.Array], ...]


def check_config(config: Any) -> tfm.TransformerConfig:
  """The TransformerConfig of a `Transformer` or config; must be causal."""
  config = getattr(config, "config", config)
  if not isinstance(config, tfm.TransformerConfig):
    raise ValueError("expected a models.Transformer or a TransformerConfig, got "
                     f"{type(config).__name__}")
  if not config.causal:
    raise ValueError("key/value caching needs a causal model (TransformerConfig.causal"
                     "=True): a bidirectional model's outputs depend on later tokens")
  return config


def network_params(params: Any) -> Any:
  """The 'net' parameter tree from params as `Transformer.apply` takes them
  ({'params': {'net': ...}}) or as apply_fn(params, tokens) takes them ({'net': ...})."""
  if "net" not in params and "params" in params:
    params = params["params"]
  if "net" not in params:
    raise ValueError(f"params have no 'net' entry (keys: {sorted(params)}); pass a "
                     "Transformer's parameters")
  return params["net"]


def _dtypes(cfg: tfm.TransformerConfig) -> tuple[Any, Any]:
  return jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)


def _norm(cfg: tfm.TransformerConfig, p: Any, x: jax.Array) -> jax.Array:
  dtype, pdtype = _dtypes(cfg)
  return tfm._Norm(cfg.norm, cfg.norm_eps, cfg.use_bias, dtype, pdtype).apply(  # pylint: disable=protected-access
      {"params": p}, x)


def _dense(cfg: tfm.TransformerConfig, p: Any, x: jax.Array) -> jax.Array:
  dtype, pdtype = _dtypes(cfg)
  features = p["kernel"].shape[-1]
  return tfm._Dense(features, cfg.use_bias, cfg.init_std, dtype, pdtype).apply(  # pylint: disable=protected-access
      {"params": p}, x)


def _embed(cfg: tfm.TransformerConfig, net: Any, tokens_BxT: jax.Array,
           start: jax.Array | int) -> jax.Array:
  """Token (+ learned position, + structure) embeddings of positions start .. start + T - 1."""
  x_BxTxD = jnp.take(net["embed"], tokens_BxT, axis=0)
  if cfg.positional == "learned":
    length = tokens_BxT.shape[1]
    x_BxTxD = x_BxTxD + jax.lax.dynamic_slice_in_dim(net["pos_embed"], start, length, 0)
  if cfg.num_groups:
    by_pos_LxD, by_token_VxD = tfm.group_tables(cfg, net["group_embed"])
    if by_pos_LxD is not None:
      x_BxTxD = x_BxTxD + jax.lax.dynamic_slice_in_dim(
          by_pos_LxD, start, tokens_BxT.shape[1], 0)
    if by_token_VxD is not None:
      x_BxTxD = x_BxTxD + jnp.take(by_token_VxD, tokens_BxT, axis=0)
  return x_BxTxD.astype(_dtypes(cfg)[0])


def _qkv(cfg: tfm.TransformerConfig, p: Any, h_BxTxD: jax.Array,
         start: jax.Array | int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """q, k, v [B, H, T, K] of positions start .. start + T - 1 (qk-norm, RoPE)."""
  q, k, v = attention.split_heads(_dense(cfg, p["qkv"], h_BxTxD), cfg.num_heads)
  if cfg.qk_norm:
    q = _norm(cfg, p["q_norm"], q)
    k = _norm(cfg, p["k_norm"], k)
  if cfg.positional == "rope":
    cos, sin = attention.rope_tables(cfg.seq_len, cfg.head_dim, cfg.rope_base)
    length = h_BxTxD.shape[1]
    cos = jax.lax.dynamic_slice_in_dim(jnp.asarray(cos), start, length, 0)
    sin = jax.lax.dynamic_slice_in_dim(jnp.asarray(sin), start, length, 0)
    q = attention.apply_rope(q, cos, sin)
    k = attention.apply_rope(k, cos, sin)
  return q, k, v


def _attend_cache(q_BxHx1xK: jax.Array, k_BxHxLxK: jax.Array, v_BxHxLxK: jax.Array,
                  pos: jax.Array) -> jax.Array:
  """One query per row over cache slots 0..pos: the formula of
  attention.dot_product_attention with the causal mask of row `pos`."""
  head_dim, length = q_BxHx1xK.shape[-1], k_BxHxLxK.shape[-2]
  dtype = q_BxHx1xK.dtype
  q = q_BxHx1xK * jnp.asarray(1.0 / np.sqrt(head_dim), dtype)
  scores = jnp.einsum("bhqd,bhkd->bhqk", q, k_BxHxLxK, preferred_element_type=jnp.float32)
  scores = jnp.where(jnp.arange(length) <= pos, scores, -1e30)
  row_max = jnp.max(scores, axis=-1, keepdims=True)
  exp = jnp.exp(scores - row_max)
  denom = jnp.sum(exp, axis=-1, keepdims=True)
  out = jnp.einsum("bhqk,bhkd->bhqd", exp.astype(v_BxHxLxK.dtype), v_BxHxLxK,
                   preferred_element_type=jnp.float32)
  return (out / denom).astype(dtype)


def _block_tail(cfg: tfm.TransformerConfig, p: Any, x_BxTxD: jax.Array,
                out_BxHxTxK: jax.Array) -> jax.Array:
  """Attention output projection + residual, then the MLP half of the block."""
  x_BxTxD = x_BxTxD + _dense(cfg, p["attn"]["out"], attention.merge_heads(out_BxHxTxK))
  h_BxTxD = _norm(cfg, p["mlp_norm"], x_BxTxD)
  mlp = tfm._Mlp(cfg).apply({"params": p["mlp"]}, h_BxTxD)  # pylint: disable=protected-access
  return x_BxTxD + mlp


def prefill(config: Any, params: Any, tokens_BxL: jax.Array) -> Cache:
  """The keys and values of every layer for all L positions of `tokens_BxL` (one
  causal forward pass, without the output head)."""
  cfg = check_config(config)
  net = network_params(params)
  tokens_BxL = jnp.asarray(tokens_BxL).astype(jnp.int32)
  x_BxLxD = _embed(cfg, net, tokens_BxL, 0)
  cache = []
  for i in range(cfg.num_layers):
    p = net[f"block_{i}"]
    q, k, v = _qkv(cfg, p["attn"], _norm(cfg, p["attn_norm"], x_BxLxD), 0)
    cache.append((k, v))
    out = attention.dot_product_attention(q, k, v, causal=True)
    x_BxLxD = _block_tail(cfg, p, x_BxLxD, out)
  return tuple(cache)


def decode_step(config: Any, params: Any, cache: Cache, token_B: jax.Array,
                pos: jax.Array) -> tuple[jax.Array, Cache]:
  """Feeds token_B at position `pos` (a scalar, the same for every row): writes its
  keys and values into the cache at `pos` and returns (logits float32[B, V] for
  position pos + 1, the updated cache)."""
  cfg = check_config(config)
  net = network_params(params)
  pos = jnp.asarray(pos, jnp.int32)
  x_Bx1xD = _embed(cfg, net, jnp.asarray(token_B).astype(jnp.int32)[:, None], pos)
  new_cache = []
  for i in range(cfg.num_layers):
    p = net[f"block_{i}"]
    q, k, v = _qkv(cfg, p["attn"], _norm(cfg, p["attn_norm"], x_Bx1xD), pos)
    k_cache, v_cache = cache[i]
    k_cache = jax.lax.dynamic_update_slice_in_dim(k_cache, k.astype(k_cache.dtype), pos, 2)
    v_cache = jax.lax.dynamic_update_slice_in_dim(v_cache, v.astype(v_cache.dtype), pos, 2)
    new_cache.append((k_cache, v_cache))
    x_Bx1xD = _block_tail(cfg, p, x_Bx1xD, _attend_cache(q, k_cache, v_cache, pos))
  x_Bx1xD = _norm(cfg, net["final_norm"], x_Bx1xD)
  logits_Bx1xV = _dense(cfg, net["head"], x_Bx1xD)
  return logits_Bx1xV[:, 0].astype(jnp.float32), tuple(new_cache)


def cache_bytes(config: Any, batch: int, length: int) -> int:
  """Memory of a cache for `batch` sequences of `length` positions."""
  cfg = check_config(config)
  return int(2 * cfg.num_layers * batch * length * cfg.d_model
             * jnp.dtype(cfg.dtype).itemsize)


__all__ = ["Cache", "cache_bytes", "check_config", "decode_step", "network_params",
           "prefill"]
