"""One Flax transformer denoiser with the presets of Kim et al. 2025 (arXiv 2502.06768).

GPT-2 style (LayerNorm, GELU, learned positions) and LLaMA style (RMSNorm, SwiGLU,
RoPE) are options of the same module. Bidirectional for masked diffusion, causal for
the autoregressive baselines. No time input.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mdm_jax.models import attention

_POSITIONAL = ("learned", "rope")
_NORMS = ("layernorm", "rmsnorm")
_MLPS = ("gelu", "swiglu")
_DTYPES = ("float32", "bfloat16")
KERNELS = ("auto", "cpu", "xla")
AUTO_CHUNK = -1  # TransformerConfig.batch_chunk: choose by `inference_batch_chunk`
# Activation budget of one inference chunk on CPU: the largest per-layer activation
# (MLP hidden, fused q/k/v, float32 attention scores) of a chunk's sequences. See
# `inference_batch_chunk` for the measurement behind it.
CHUNK_CACHE_BYTES = 4 << 20


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Hyper-parameters of `Transformer` (hashable: usable as a jit static arg)."""
  vocab_size: int
  seq_len: int
  num_layers: int
  d_model: int
  num_heads: int
  mlp_dim: int
  positional: str = "learned"  # 'learned' | 'rope'
  # Rows of the learned position table (0 = seq_len). GPT-2 keeps a 1024-row table
  # whatever the data's length (its n_positions); positions >= seq_len go unused.
  max_positions: int = 0
  norm: str = "layernorm"  # 'layernorm' | 'rmsnorm'
  mlp: str = "gelu"  # 'gelu' (tanh approximation, as GPT-2) | 'swiglu'
  qk_norm: bool = False  # normalise q and k per head (config.norm type) before RoPE
  dropout: float = 0.0  # embeddings, attention probabilities, residual branches
  causal: bool = False
  dtype: str = "float32"  # compute dtype; params stay `param_dtype`, logits float32
  param_dtype: str = "float32"
  use_bias: bool = True  # biases in dense layers and LayerNorm
  norm_eps: float = 1e-5
  rope_base: float = 10000.0
  init_std: float = 0.02
  # CPU inference speed option (benchmarks/forward.py): with train=False, run the
  # network on chunks of this many sequences in a lax.scan (same function, shared
  # params) so that activations stay in cache; 0 = off. Chunks take every n-th
  # sequence, so a batch sharded over devices stays sharded inside each chunk. 8
  # suits ~81-token sequences on CPU. Training ignores it: a scan's backward pass
  # runs after the whole forward, so chunks leave the cache; use
  # config.train.grad_accum (forward + backward per micro-batch) instead.
  # AUTO_CHUNK (-1, the default) picks it per call: `inference_batch_chunk`.
  batch_chunk: int = -1
  # Matmul and attention kernels: 'cpu' = the hand-written ones tuned for XLA:CPU
  # (`dense_matmul`'s VJP, `attention.dot_product_attention`); 'xla' = the plain
  # ones (jnp.dot with autodiff, jax.nn.dot_product_attention), for GPU / TPU;
  # 'auto' = 'cpu' on the CPU backend, else 'xla' (`kernels_for`).
  kernels: str = "auto"
  # Structure embeddings: one learned vector per group id (`group_embed`, rows
  # 0..num_groups-1), summed into the embedding of each position that belongs to it
  # (`position_groups[i]`: the group ids of position i, -1 = none) and of each token
  # id (`token_groups[v]`). Sudoku: a cell's row, column and box (Task.position_groups,
  # Task.arm_token_groups). () = off, as in the paper's models.
  position_groups: tuple[tuple[int, ...], ...] = ()
  token_groups: tuple[tuple[int, ...], ...] = ()

  def __post_init__(self):
    for name in ("vocab_size", "seq_len", "num_layers", "d_model", "num_heads",
                 "mlp_dim"):
      value = getattr(self, name)
      if not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"TransformerConfig.{name} must be a positive int, got {value!r}")
    if self.d_model % self.num_heads:
      raise ValueError(f"d_model={self.d_model} must be divisible by "
                       f"num_heads={self.num_heads}")
    if self.positional not in _POSITIONAL:
      raise ValueError(f"positional={self.positional!r}; choose one of {_POSITIONAL}")
    if self.positional == "rope" and self.head_dim % 2:
      raise ValueError(f"RoPE needs an even head dim, got {self.head_dim}")
    if self.norm not in _NORMS:
      raise ValueError(f"norm={self.norm!r}; choose one of {_NORMS}")
    if self.mlp not in _MLPS:
      raise ValueError(f"mlp={self.mlp!r}; choose one of {_MLPS}")
    if self.dtype not in _DTYPES or self.param_dtype not in _DTYPES:
      raise ValueError(f"dtype={self.dtype!r}, param_dtype={self.param_dtype!r}; "
                       f"choose from {_DTYPES}")
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
    if self.max_positions and self.max_positions < self.seq_len:
      raise ValueError(f"max_positions={self.max_positions} is below "
                       f"seq_len={self.seq_len}")
    if self.max_positions < 0:
      raise ValueError(f"max_positions must be >= 0, got {self.max_positions}")
    if self.kernels not in KERNELS:
      raise ValueError(f"kernels={self.kernels!r}; choose one of {KERNELS}")
    if self.batch_chunk < AUTO_CHUNK:
      raise ValueError(f"batch_chunk must be >= 0, or {AUTO_CHUNK} (auto), got "
                       f"{self.batch_chunk}")
    for name, rows in (("position_groups", self.seq_len), ("token_groups", self.vocab_size)):
      groups = getattr(self, name)
      if not groups:
        continue
      widths = {len(g) for g in groups}
      if (len(groups) != rows or len(widths) != 1 or 0 in widths
          or any(int(i) < -1 for g in groups for i in g)):
        raise ValueError(f"{name} must be {rows} equal-length tuples of group ids >= -1 "
                         f"(one per {'position' if rows == self.seq_len else 'token id'}), "
                         f"got {len(groups)} with widths {sorted(widths)}")

  @property
  def head_dim(self) -> int:
    return self.d_model // self.num_heads

  @property
  def num_groups(self) -> int:
    """Rows of the `group_embed` table (0: no structure embeddings)."""
    ids = [int(i) for groups in (self.position_groups, self.token_groups)
           for g in groups for i in g]
    return max(ids, default=-1) + 1


def group_tables(config: TransformerConfig, group_GxD: jax.Array
                 ) -> tuple[jax.Array | None, jax.Array | None]:
  """(per-position [seq_len, D], per-token-id [vocab_size, D]) sums of the structure
  embeddings `group_GxD` (None where the config has no such groups)."""
  padded_G1xD = jnp.concatenate([jnp.zeros_like(group_GxD[:1]), group_GxD])  # id -1 -> 0
  def table(groups):
    if not groups:
      return None
    return jnp.take(padded_G1xD, np.asarray(groups, np.int32) + 1, axis=0).sum(-2)
  return table(config.position_groups), table(config.token_groups)


PRESETS: dict[str, dict[str, Any]] = {
    # Sudoku MDM: GPT-2 style, 3 x 384, 12 heads, MLP 4x, dropout 0.1, GPT-2's
    # 1024-row position table: 5.72M parameters for 81 tokens (the paper's "6M").
    "gpt2-6m": dict(num_layers=3, d_model=384, num_heads=12, mlp_dim=1536,
                    positional="learned", max_positions=1024, norm="layernorm",
                    mlp="gelu", dropout=0.1, use_bias=True),
    # Zebra / L&O-NAE-SAT MDM: LLaMA style (SMDM 19M), 8 x 384, 6 heads.
    "llama-19m": dict(num_layers=8, d_model=384, num_heads=6, mlp_dim=1536,
                      positional="rope", norm="rmsnorm", mlp="swiglu",
                      dropout=0.0, use_bias=False, norm_eps=1e-6),
    # ARM baseline (Shah et al.): causal, 8 x 576, 8 heads, MLP 3456, qk-norm.
    "arm-42m": dict(num_layers=8, d_model=576, num_heads=8, mlp_dim=3456,
                    positional="learned", norm="layernorm", mlp="gelu",
                    qk_norm=True, dropout=0.2, use_bias=True, causal=True),
    # Tests.
    "tiny": dict(num_layers=2, d_model=64, num_heads=4, mlp_dim=256,
                 positional="learned", norm="layernorm", mlp="gelu",
                 dropout=0.1, use_bias=True),
}


def preset(name: str, *, vocab_size: int, seq_len: int, causal: bool | None = None,
           **overrides: Any) -> TransformerConfig:
  """A named config (see `PRESETS`) for a task's vocabulary and sequence length.

  `causal` defaults to the preset's own value (True for 'arm-42m', else False).
  """
  if name not in PRESETS:
    raise ValueError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}")
  fields = {f.name for f in dataclasses.fields(TransformerConfig)}
  unknown = set(overrides) - fields
  if unknown:
    raise ValueError(f"unknown TransformerConfig fields {sorted(unknown)}")
  kwargs = dict(PRESETS[name])
  if causal is not None:
    kwargs["causal"] = causal
  kwargs.update(overrides)
  return TransformerConfig(vocab_size=vocab_size, seq_len=seq_len, **kwargs)


def inference_batch_chunk(config: "TransformerConfig", batch: int, length: int,
                          backend: str | None = None) -> int:
  """The batch chunk an inference (train=False) forward uses; 0 = the whole batch.

  An explicit config.batch_chunk >= 0 is used as given. AUTO_CHUNK: on CPU, the
  largest power of two n such that n sequences' largest per-layer activation
  (length x max(MLP hidden, 3 d_model) in the compute dtype, or the float32
  attention scores heads x length^2) fit in CHUNK_CACHE_BYTES = 4 MiB (the cache of
  a CPU core pair: 2 x 1 MiB L2 + a share of L3 here), and 0 when the batch is not
  larger than that; 0 on accelerators (a scan would only serialise the batch).
  Measured (benchmarks/forward.py --clock=cpu, 2-core EPYC, batch 256 x 81): the
  6M preset peaks at chunks 4-8 (n = 8 here: 498 kB/sequence) and is 1.3-1.7x
  slower unchunked or at 16+; the tiny preset is flat over 8-32 (n = 32: 105
  kB/sequence, attention scores), 2.7x faster than unchunked, and slower at 64.
  """
  if config.batch_chunk != AUTO_CHUNK:
    return int(config.batch_chunk)
  if (backend or jax.default_backend()) != "cpu":
    return 0
  itemsize = jnp.dtype(config.dtype).itemsize
  hidden = (2 if config.mlp == "swiglu" else 1) * config.mlp_dim
  per_sequence = max(itemsize * length * max(hidden, 3 * config.d_model),
                     4 * config.num_heads * length * length)
  fit = max(1, CHUNK_CACHE_BYTES // per_sequence)
  chunk = 1 << (int(fit).bit_length() - 1)
  return chunk if batch > chunk else 0


def count_params(params: Any) -> int:
  """Number of scalars in a parameter pytree."""
  return int(sum(np.prod(np.shape(x)) for x in jax.tree_util.tree_leaves(params)))


def flops_per_token(config: TransformerConfig) -> float:
  """Forward matmul FLOPs per token (2 per multiply-add), attention included.

  With d = d_model, m = mlp_dim, L = seq_len, V = vocab_size, per layer:
    q, k, v, output projections  8 d^2
    scores q k^T and probs @ v   4 L d   (full L x L: the causal mask is applied to a
                                          dense score matrix, so it costs the same)
    MLP                          4 d m (GELU) or 6 d m (SwiGLU: gate, up, down)
  plus the output head 2 d V. Embedding lookups, norms, softmax and activations are
  not matmuls and are not counted.
  """
  d, m, length = config.d_model, config.mlp_dim, config.seq_len
  mlp = (6 if config.mlp == "swiglu" else 4) * d * m
  per_layer = 8 * d * d + 4 * length * d + mlp
  return float(config.num_layers * per_layer + 2 * d * config.vocab_size)


def _mix32(x: jax.Array) -> jax.Array:
  """A 32-bit integer hash (lowbias32 finaliser): avalanches every input bit."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x7FEB352D)
  x = x ^ (x >> 15)
  x = x * jnp.uint32(0x846CA68B)
  return x ^ (x >> 16)


def hash_dropout(x: jax.Array, rate: float, key: jax.Array) -> jax.Array:
  """Inverted dropout whose keep mask is a keyed hash of each element's index.

  Same distribution as `flax.linen.Dropout` (keep with prob 1 - rate, scale by
  1 / (1 - rate); rate resolved to 2^-32), about 10x cheaper on CPU than drawing
  threefry bits per element: the key is drawn from once (two words), and each
  element's bits are two rounds of a 32-bit hash of its flat index mixed with them.
  The index is a global iota, so the mask does not depend on how x is sharded.
  """
  if rate <= 0.0:
    return x
  seed = jax.random.bits(key, (2,), jnp.uint32)
  index = jax.lax.iota(jnp.uint32, x.size).reshape(x.shape)  # row-major flat index
  bits = _mix32(_mix32(index ^ seed[0]) + seed[1])
  threshold = jnp.uint32(min(int(round(rate * 2.0**32)), 2**32 - 1))
  keep = bits >= threshold
  scale = jnp.asarray(1.0 / (1.0 - rate), x.dtype)  # a multiply: cheaper than a divide
  return jnp.where(keep, x * scale, jnp.zeros((), x.dtype))


class _Dropout(nn.Module):
  """`hash_dropout` with a key from the module's 'dropout' rng stream."""
  rate: float

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    if not train or self.rate <= 0.0:
      return x
    return hash_dropout(x, self.rate, self.make_rng("dropout"))


@jax.custom_vjp
def dense_matmul(x_NxI: jax.Array, kernel_IxO: jax.Array) -> jax.Array:
  """x @ kernel over x's last axis (any leading axes), with a hand-written VJP.

  The VJP is two explicit dot_generals: dx = dy kernel^T, and the kernel gradient
  x^T dy contracted over every token. For a kernel with more rows than columns
  (the MLP's down projection, [4d, d]) it is computed as (dy^T x)^T: XLA's CPU GEMM
  is much slower when the contraction output is tall and narrow, and autodiff's own
  transposes add layout copies. With this, benchmarks/train.py (6M Sudoku MDM, CPU)
  went from MFU 0.72 to 0.79. Values agree with autodiff (tests/test_transformer.py).
  """
  return jnp.dot(x_NxI, kernel_IxO)


def _dense_matmul_fwd(x_NxI: jax.Array, kernel_IxO: jax.Array):
  return jnp.dot(x_NxI, kernel_IxO), (x_NxI, kernel_IxO)


def _dense_matmul_bwd(residuals, dy_NxO: jax.Array):
  x_NxI, kernel_IxO = residuals
  rows, cols = kernel_IxO.shape
  dx_NxI = jax.lax.dot_general(dy_NxO, kernel_IxO, (((dy_NxO.ndim - 1,), (1,)), ((), ())))
  x_TxI, dy_TxO = x_NxI.reshape(-1, rows), dy_NxO.reshape(-1, cols)  # T = all tokens
  if rows > cols:
    # The barrier keeps XLA from folding the transpose back into the dot.
    dkernel_OxI = jax.lax.optimization_barrier(
        jax.lax.dot_general(dy_TxO, x_TxI, (((0,), (0,)), ((), ()))))
    dkernel_IxO = dkernel_OxI.T
  else:
    dkernel_IxO = jax.lax.dot_general(x_TxI, dy_TxO, (((0,), (0,)), ((), ())))
  return dx_NxI.astype(x_NxI.dtype), dkernel_IxO.astype(kernel_IxO.dtype)


dense_matmul.defvjp(_dense_matmul_fwd, _dense_matmul_bwd)


def kernels_for(kernels: str) -> str:
  """'cpu' or 'xla' for TransformerConfig.kernels ('auto': by jax.default_backend())."""
  if kernels == "auto":
    return "cpu" if jax.default_backend() == "cpu" else "xla"
  return kernels


def _kernel_init(std: float) -> nn.initializers.Initializer:
  return nn.initializers.normal(stddev=std)


class _Norm(nn.Module):
  """LayerNorm or RMSNorm over the last axis, statistics in float32."""
  kind: str
  eps: float
  use_bias: bool
  dtype: Any
  param_dtype: Any

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    features = x.shape[-1]
    x32 = x.astype(jnp.float32)
    if self.kind == "layernorm":
      mean = jnp.mean(x32, axis=-1, keepdims=True)
      x32 = x32 - mean
    var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
    y = x32 * jax.lax.rsqrt(var + self.eps)
    scale = self.param("scale", nn.initializers.ones, (features,), self.param_dtype)
    y = y * scale.astype(jnp.float32)
    if self.kind == "layernorm" and self.use_bias:
      bias = self.param("bias", nn.initializers.zeros, (features,), self.param_dtype)
      y = y + bias.astype(jnp.float32)
    return y.astype(self.dtype)


class _Dense(nn.Module):
  """y = x @ W (+ b) on the last axis, computed in `dtype`."""
  features: int
  use_bias: bool
  std: float
  dtype: Any
  param_dtype: Any
  kernels: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", _kernel_init(self.std),
                        (x.shape[-1], self.features), self.param_dtype)
    matmul = dense_matmul if kernels_for(self.kernels) == "cpu" else jnp.dot
    y = matmul(x.astype(self.dtype), kernel.astype(self.dtype))
    if self.use_bias:
      bias = self.param("bias", nn.initializers.zeros, (self.features,),
                        self.param_dtype)
      y = y + bias.astype(self.dtype)
    return y


class _Attention(nn.Module):
  """Multi-head self-attention with one fused q/k/v projection."""
  config: TransformerConfig

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array, *, train: bool) -> jax.Array:
    cfg = self.config
    dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    qkv_BxLx3D = _Dense(3 * cfg.d_model, cfg.use_bias, cfg.init_std, dtype, pdtype,
                        name="qkv", kernels=cfg.kernels)(x_BxLxD)
    q, k, v = attention.split_heads(qkv_BxLx3D, cfg.num_heads)  # each [B, H, L, K]
    if cfg.qk_norm:
      q = _Norm(cfg.norm, cfg.norm_eps, cfg.use_bias, dtype, pdtype, name="q_norm")(q)
      k = _Norm(cfg.norm, cfg.norm_eps, cfg.use_bias, dtype, pdtype, name="k_norm")(k)
    if cfg.positional == "rope":
      cos, sin = attention.rope_tables(cfg.seq_len, cfg.head_dim, cfg.rope_base)
      q = attention.apply_rope(q, cos, sin)
      k = attention.apply_rope(k, cos, sin)
    dropout_fn = None
    if train and cfg.dropout > 0:
      dropout_fn = lambda e: _Dropout(cfg.dropout, name="probs_dropout")(e, train=True)
    core = (attention.dot_product_attention if kernels_for(cfg.kernels) == "cpu"
            else attention.xla_dot_product_attention)
    out_BxHxLxK = core(q, k, v, causal=cfg.causal, dropout_fn=dropout_fn)
    out_BxLxD = attention.merge_heads(out_BxHxLxK)
    resid_std = cfg.init_std / math.sqrt(2 * cfg.num_layers)
    return _Dense(cfg.d_model, cfg.use_bias, resid_std, dtype, pdtype,
                  name="out", kernels=cfg.kernels)(out_BxLxD)


class _Mlp(nn.Module):
  config: TransformerConfig

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
    cfg = self.config
    dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    resid_std = cfg.init_std / math.sqrt(2 * cfg.num_layers)
    if cfg.mlp == "swiglu":
      gate_up = _Dense(2 * cfg.mlp_dim, cfg.use_bias, cfg.init_std, dtype, pdtype,
                       name="gate_up", kernels=cfg.kernels)(x_BxLxD)
      gate, up = jnp.split(gate_up, 2, axis=-1)
      hidden = jax.nn.silu(gate) * up
    else:
      hidden = _Dense(cfg.mlp_dim, cfg.use_bias, cfg.init_std, dtype, pdtype,
                      name="fc1", kernels=cfg.kernels)(x_BxLxD)
      hidden = jax.nn.gelu(hidden, approximate=True)
    return _Dense(cfg.d_model, cfg.use_bias, resid_std, dtype, pdtype,
                  name="fc2", kernels=cfg.kernels)(hidden)


class _Block(nn.Module):
  """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""
  config: TransformerConfig

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array, *, train: bool) -> jax.Array:
    cfg = self.config
    dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    h = _Norm(cfg.norm, cfg.norm_eps, cfg.use_bias, dtype, pdtype, name="attn_norm")(x_BxLxD)
    attn = _Attention(cfg, name="attn")(h, train=train)
    x_BxLxD = x_BxLxD + _Dropout(cfg.dropout, name="attn_dropout")(attn, train=train)
    h = _Norm(cfg.norm, cfg.norm_eps, cfg.use_bias, dtype, pdtype, name="mlp_norm")(x_BxLxD)
    mlp = _Mlp(cfg, name="mlp")(h)
    return x_BxLxD + _Dropout(cfg.dropout, name="mlp_dropout")(mlp, train=train)


class _Network(nn.Module):
  """Embeddings -> blocks -> final norm -> vocabulary head (float32 logits).

  Written as a scan body, (carry, tokens) -> (carry, logits), so that it can run
  over batch chunks; the carry is unused.
  """
  config: TransformerConfig
  train: bool

  @nn.compact
  def __call__(self, carry: Any, tokens_BxL: jax.Array) -> tuple[Any, jax.Array]:
    cfg, train = self.config, self.train
    dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    length = tokens_BxL.shape[1]
    embed_VxD = self.param("embed", _kernel_init(cfg.init_std),
                           (cfg.vocab_size, cfg.d_model), pdtype)
    x_BxLxD = jnp.take(embed_VxD, tokens_BxL, axis=0)
    if cfg.positional == "learned":
      pos_LxD = self.param("pos_embed", _kernel_init(cfg.init_std),
                           (max(cfg.max_positions, cfg.seq_len), cfg.d_model), pdtype)
      x_BxLxD = x_BxLxD + pos_LxD[:length]
    if cfg.num_groups:
      group_GxD = self.param("group_embed", _kernel_init(cfg.init_std),
                             (cfg.num_groups, cfg.d_model), pdtype)
      by_pos_LxD, by_token_VxD = group_tables(cfg, group_GxD)
      if by_pos_LxD is not None:
        x_BxLxD = x_BxLxD + by_pos_LxD[:length]
      if by_token_VxD is not None:
        x_BxLxD = x_BxLxD + jnp.take(by_token_VxD, tokens_BxL, axis=0)
    x_BxLxD = x_BxLxD.astype(dtype)
    x_BxLxD = _Dropout(cfg.dropout, name="embed_dropout")(x_BxLxD, train=train)
    for i in range(cfg.num_layers):
      x_BxLxD = _Block(cfg, name=f"block_{i}")(x_BxLxD, train=train)
    x_BxLxD = _Norm(cfg.norm, cfg.norm_eps, cfg.use_bias, dtype, pdtype,
                    name="final_norm")(x_BxLxD)
    logits = _Dense(cfg.vocab_size, cfg.use_bias, cfg.init_std, dtype, pdtype,
                    name="head", kernels=cfg.kernels)(x_BxLxD)
    return carry, logits.astype(jnp.float32)


class Transformer(nn.Module):
  """Token denoiser: `tokens_BxL` int -> `logits_BxLxV` float32.

  Dropout (train=True with config.dropout > 0) draws from the 'dropout' rng.
  """
  config: TransformerConfig

  @nn.compact
  def __call__(self, tokens_BxL: jax.Array, *, train: bool = False) -> jax.Array:
    cfg = self.config
    if jnp.ndim(tokens_BxL) != 2:
      raise ValueError(f"tokens must be [batch, length], got shape {jnp.shape(tokens_BxL)}")
    if not jnp.issubdtype(jnp.result_type(tokens_BxL), jnp.integer):
      raise ValueError(f"tokens must be integers, got {jnp.result_type(tokens_BxL)}")
    b, length = tokens_BxL.shape
    if length > cfg.seq_len:
      raise ValueError(f"sequence length {length} exceeds config.seq_len={cfg.seq_len}")
    chunk = 0 if train else inference_batch_chunk(cfg, b, length)
    if chunk and b > chunk:
      num_chunks = -(-b // chunk)
      pad = num_chunks * chunk - b
      tokens = jnp.pad(tokens_BxL, ((0, pad), (0, 0))) if pad else tokens_BxL
      # sequence i * num_chunks + j goes to chunk j (strided chunks)
      scan = nn.scan(_Network, variable_broadcast="params",
                     split_rngs={"params": False, "dropout": True},
                     in_axes=1, out_axes=1, length=num_chunks)
      _, logits_CxNxLxV = scan(cfg, train, name="net")(
          None, tokens.reshape(chunk, num_chunks, length))
      logits_BxLxV = logits_CxNxLxV.reshape(num_chunks * chunk, length, -1)[:b]
    else:
      logits_BxLxV = _Network(cfg, train, name="net")(None, tokens_BxL)[1]
    chex.assert_shape(logits_BxLxV, (b, length, cfg.vocab_size))
    return logits_BxLxV
