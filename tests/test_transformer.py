"""Tests for mdm_jax.models (transformer presets, attention, FLOP count)."""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdm_jax.models import attention
from mdm_jax.models import transformer as tfm

VOCAB, LENGTH = 11, 12
LLAMA_STYLE = dict(positional="rope", norm="rmsnorm", mlp="swiglu", use_bias=False,
                   qk_norm=True)


def _tiny(**overrides):
  return tfm.preset("tiny", vocab_size=VOCAB, seq_len=LENGTH, **overrides)


@functools.lru_cache(maxsize=None)
def _cached_params(config):
  tokens = jnp.zeros((1, config.seq_len), jnp.int32)
  return jax.jit(tfm.Transformer(config).init)(jax.random.key(0), tokens)


def _init(config, batch=2, seed=0):
  """Model, params and random tokens; params are shared between configs that differ
  only in options without parameters (initialisation is slow on CPU)."""
  model = tfm.Transformer(config)
  tokens = jax.random.randint(jax.random.key(seed + 1), (batch, config.seq_len), 0,
                              config.vocab_size)
  shape_config = dataclasses.replace(config, causal=False, dropout=0.0,
                                     dtype="float32", batch_chunk=0, kernels="auto")
  return model, _cached_params(shape_config), tokens


def _param_shapes(config):
  model = tfm.Transformer(config)
  return jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, config.seq_len), jnp.int32)))


def _expected_params(c: tfm.TransformerConfig) -> int:
  """Closed-form count written from the architecture description."""
  d, m, v = c.d_model, c.mlp_dim, c.vocab_size
  bias = 1 if c.use_bias else 0
  norm = d * (2 if (c.norm == "layernorm" and c.use_bias) else 1)
  attn = 4 * d * d + bias * 4 * d
  mlp = (3 * d * m + bias * (2 * m + d)) if c.mlp == "swiglu" else (
      2 * d * m + bias * (m + d))
  qk = 0
  if c.qk_norm:
    qk = 2 * c.head_dim * (2 if (c.norm == "layernorm" and c.use_bias) else 1)
  layer = attn + mlp + 2 * norm + qk
  pos = max(c.max_positions, c.seq_len) * d if c.positional == "learned" else 0
  return c.num_layers * layer + v * d + pos + norm + d * v + bias * v


@pytest.mark.parametrize("name,vocab,length", [
    ("gpt2-6m", 11, 81), ("llama-19m", 128, 512), ("arm-42m", 11, 243),
    ("tiny", 11, 81)])
def test_param_count_matches_architecture(name, vocab, length):
  config = tfm.preset(name, vocab_size=vocab, seq_len=length)
  assert tfm.count_params(_param_shapes(config)["params"]) == _expected_params(config)


@pytest.mark.parametrize("name,vocab,length,target,tol", [
    # 3 x (width 384, MLP 1536) blocks with GPT-2's 1024-row position table.
    ("gpt2-6m", 11, 81, 6e6, 0.10),
    ("llama-19m", 128, 512, 19e6, 0.10),
    ("arm-42m", 11, 243, 42e6, 0.10)])
def test_preset_sizes_near_paper(name, vocab, length, target, tol):
  config = tfm.preset(name, vocab_size=vocab, seq_len=length)
  n = tfm.count_params(_param_shapes(config)["params"])
  assert abs(n - target) / target < tol, n


def test_logits_shape_dtype_and_finite():
  model, params, tokens = _init(_tiny())
  logits = model.apply(params, tokens)
  assert logits.shape == (2, LENGTH, VOCAB) and logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits))


@pytest.mark.parametrize("style", [{}, "llama"], ids=["gpt2", "llama"])
def test_causal_mask(style):
  base = LLAMA_STYLE if style == "llama" else {}
  causal_cfg, bidir_cfg = _tiny(causal=True, **base), _tiny(causal=False, **base)
  model, params, tokens = _init(causal_cfg)
  i = 5
  changed = tokens.at[:, i + 1:].set((tokens[:, i + 1:] + 1) % VOCAB)
  out, out_changed = model.apply(params, tokens), model.apply(params, changed)
  np.testing.assert_allclose(out[:, :i + 1], out_changed[:, :i + 1], atol=1e-6)
  assert np.abs(out[:, i + 1:] - out_changed[:, i + 1:]).max() > 1e-4
  bidir = tfm.Transformer(bidir_cfg)  # same parameter tree
  diff = bidir.apply(params, tokens)[:, :i + 1] - bidir.apply(params, changed)[:, :i + 1]
  assert np.abs(diff).max() > 1e-4


def _reference_attention(q, k, v, causal):
  s = np.einsum("bhqd,bhkd->bhqk", q, k) / np.sqrt(q.shape[-1])
  if causal:
    s = np.where(np.tril(np.ones(s.shape[-2:], bool)), s, -np.inf)
  p = np.exp(s - s.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  return np.einsum("bhqk,bhkd->bhqd", p, v)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_matches_reference(causal):
  rng = np.random.default_rng(0)
  q, k, v = (rng.standard_normal((2, 3, 7, 8)).astype(np.float32) * 2 for _ in range(3))
  out = attention.dot_product_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v),
                                        causal=causal)
  np.testing.assert_allclose(out, _reference_attention(q, k, v, causal), atol=1e-5)


def test_split_and_merge_heads_roundtrip():
  x = jnp.arange(2 * 5 * 3 * 8, dtype=jnp.float32).reshape(2, 5, 24)
  q, k, v = attention.split_heads(x, num_heads=2)
  assert q.shape == (2, 2, 5, 4)
  # head h of q at position l is x[b, l, h*4:(h+1)*4]; k, v follow q.
  np.testing.assert_array_equal(q[1, 1, 3], x[1, 3, 4:8])
  np.testing.assert_array_equal(v[0, 0, 2], x[0, 2, 16:20])
  np.testing.assert_array_equal(
      jnp.concatenate([attention.merge_heads(t) for t in (q, k, v)], -1), x)


def test_rope_scores_depend_only_on_offset():
  rng = np.random.default_rng(1)
  length, dim = 10, 8
  cos, sin = attention.rope_tables(length, dim)
  q_vec, k_vec = rng.standard_normal((2, dim)).astype(np.float32)
  q = attention.apply_rope(jnp.broadcast_to(q_vec, (1, 1, length, dim)), cos, sin)[0, 0]
  k = attention.apply_rope(jnp.broadcast_to(k_vec, (1, 1, length, dim)), cos, sin)[0, 0]
  s = np.asarray(q @ k.T)
  # Toeplitz: s[m, n] == s[m + 1, n + 1] for every offset ...
  np.testing.assert_allclose(s[1:, 1:], s[:-1, :-1], atol=1e-4)
  # ... but different offsets give different scores, and norms are preserved.
  assert np.abs(s[0, 1:] - s[0, 0]).min() > 1e-4
  np.testing.assert_allclose(np.linalg.norm(q, axis=-1), np.linalg.norm(q_vec), rtol=1e-5)
  # position 0 is not rotated
  np.testing.assert_allclose(q[0], q_vec, atol=1e-6)


@pytest.mark.parametrize("style", [{}, LLAMA_STYLE], ids=["gpt2", "llama"])
def test_bfloat16_compute_close_to_float32(style):
  config = _tiny(**style)
  model, params, tokens = _init(config)
  out32 = model.apply(params, tokens)
  bf16_model = tfm.Transformer(_tiny(dtype="bfloat16", **style))
  out16 = bf16_model.apply(params, tokens)
  assert out16.dtype == jnp.float32
  bf16_params = jax.eval_shape(bf16_model.init, jax.random.key(0), tokens)
  assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(bf16_params))
  scale = np.abs(out32).max()
  assert 0 < np.abs(out16 - out32).max() < 0.05 * scale


def test_dropout_only_in_training_and_seeded():
  model, params, tokens = _init(_tiny(dropout=0.3))
  no_drop = tfm.Transformer(_tiny(dropout=0.0))
  evals = model.apply(params, tokens)
  np.testing.assert_array_equal(evals, model.apply(params, tokens))
  np.testing.assert_allclose(evals, no_drop.apply(params, tokens), atol=1e-6)
  train = lambda seed: model.apply(params, tokens, train=True,
                                   rngs={"dropout": jax.random.key(seed)})
  np.testing.assert_array_equal(train(3), train(3))
  assert np.abs(train(3) - train(4)).max() > 1e-3
  assert np.abs(train(3) - evals).max() > 1e-3
  # without dropout configured, train=True is the eval function (no rng needed)
  np.testing.assert_allclose(no_drop.apply(params, tokens, train=True), evals, atol=1e-6)


def test_batch_chunking_is_the_same_function():
  config = _tiny()
  model, params, _ = _init(config)
  tokens = jax.random.randint(jax.random.key(7), (7, LENGTH), 0, VOCAB)
  chunked = tfm.Transformer(_tiny(batch_chunk=3))  # 7 = 3 + 3 + 1 (padded)
  np.testing.assert_allclose(chunked.apply(params, tokens), model.apply(params, tokens),
                             atol=1e-5)
  # gradients flow through the scan and agree too
  loss = lambda m: jax.jit(jax.grad(lambda p: jnp.sum(m.apply(p, tokens) ** 2)))
  g1, g2 = loss(model)(params), loss(chunked)(params)
  for a, b in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_batch_chunking_with_sharded_batch():
  devices = np.array(jax.devices())
  if devices.size < 2:
    pytest.skip("needs several (virtual) devices; see tests/conftest.py")
  mesh = jax.sharding.Mesh(devices, ("data",))
  batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  model, params, _ = _init(_tiny())
  chunked = tfm.Transformer(_tiny(batch_chunk=devices.size))
  tokens = jax.random.randint(jax.random.key(3), (2 * devices.size, LENGTH), 0, VOCAB)
  out = jax.jit(chunked.apply)(params, jax.device_put(tokens, batch_sharding))
  np.testing.assert_allclose(out, jax.jit(model.apply)(params, tokens), atol=1e-5)


def _dot_flops(jaxpr) -> int:
  """2 * multiply-adds of every dot_general in a (nested) jaxpr."""
  total = 0
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      (lhs_contract, _), _ = eqn.params["dimension_numbers"]
      lhs_shape = eqn.invars[0].aval.shape
      k = int(np.prod([lhs_shape[a] for a in lhs_contract]))
      total += 2 * k * int(np.prod(eqn.outvars[0].aval.shape))
    for p in eqn.params.values():
      for sub in (p if isinstance(p, (list, tuple)) else [p]):
        if hasattr(sub, "jaxpr") and hasattr(sub.jaxpr, "eqns"):
          total += _dot_flops(sub.jaxpr)
        elif hasattr(sub, "eqns"):
          total += _dot_flops(sub)
  return total


@pytest.mark.parametrize("overrides", [{}, dict(LLAMA_STYLE, causal=True)],
                         ids=["gpt2", "llama"])
def test_flops_per_token_counts_every_matmul(overrides):
  config = _tiny(**overrides)
  model, params, tokens = _init(config, batch=3)
  jaxpr = jax.make_jaxpr(lambda p, t: model.apply(p, t))(params, tokens)
  assert _dot_flops(jaxpr.jaxpr) == tfm.flops_per_token(config) * 3 * LENGTH


def test_preset_defaults_and_overrides():
  arm = tfm.preset("arm-42m", vocab_size=11, seq_len=243)
  assert arm.causal and arm.qk_norm and arm.dropout == 0.2
  assert not tfm.preset("gpt2-6m", vocab_size=11, seq_len=81).causal
  assert tfm.preset("gpt2-6m", vocab_size=11, seq_len=81, causal=True).causal
  assert tfm.preset("tiny", vocab_size=5, seq_len=4, dtype="bfloat16").dtype == "bfloat16"
  assert set(tfm.PRESETS) >= {"gpt2-6m", "llama-19m", "arm-42m", "tiny"}


@pytest.mark.parametrize("kwargs", [
    dict(num_heads=5), dict(norm="batchnorm"), dict(mlp="relu"),
    dict(positional="alibi"), dict(dropout=1.0), dict(dtype="float16"),
    dict(batch_chunk=-2), dict(d_model=0)])
def test_bad_config_raises_value_error(kwargs):
  with pytest.raises(ValueError):
    _tiny(**kwargs)


def test_bad_inputs_raise_value_error():
  with pytest.raises(ValueError, match="unknown model preset"):
    tfm.preset("gpt5", vocab_size=3, seq_len=3)
  with pytest.raises(ValueError, match="unknown TransformerConfig"):
    _tiny(width=3)
  model, params, tokens = _init(_tiny())
  with pytest.raises(ValueError, match="exceeds"):
    model.apply(params, jnp.zeros((1, LENGTH + 1), jnp.int32))
  with pytest.raises(ValueError, match="batch, length"):
    model.apply(params, jnp.zeros((LENGTH,), jnp.int32))
  with pytest.raises(ValueError, match="integers"):
    model.apply(params, jnp.zeros((1, LENGTH), jnp.float32))


def test_shorter_sequences_use_position_prefix():
  model, params, tokens = _init(_tiny(causal=True))
  # with a causal mask, the prefix's outputs are the same with or without the rest
  np.testing.assert_allclose(model.apply(params, tokens[:, :5]),
                             model.apply(params, tokens)[:, :5], atol=1e-5)


def test_hash_dropout_keeps_one_minus_rate_scaled_and_uncorrelated():
  rate, shape = 0.1, (64, 81, 200)
  x = jnp.ones(shape, jnp.float32)
  out = np.asarray(tfm.hash_dropout(x, rate, jax.random.PRNGKey(0)))
  keep = out != 0
  n = keep.size
  assert abs(keep.mean() - (1 - rate)) < 4 * np.sqrt(rate * (1 - rate) / n)
  np.testing.assert_allclose(out[keep], 1 / (1 - rate), rtol=1e-6)
  flat = keep.reshape(-1).astype(np.float64)
  for lag in (1, 2, 200, 81 * 200):  # neighbours along every axis
    corr = np.corrcoef(flat[:-lag], flat[lag:])[0, 1]
    assert abs(corr) < 4 / np.sqrt(n), (lag, corr)
  same = np.asarray(tfm.hash_dropout(x, rate, jax.random.PRNGKey(0)))
  other = np.asarray(tfm.hash_dropout(x, rate, jax.random.PRNGKey(1)))
  np.testing.assert_array_equal(out, same)
  agree = np.mean((other != 0) == keep)  # independent masks agree w.p. 0.82
  assert abs(agree - (rate**2 + (1 - rate)**2)) < 0.01
  assert tfm.hash_dropout(x, 0.0, jax.random.PRNGKey(0)) is x


@pytest.mark.parametrize("shape_in, rows, cols, dtype", [
    ((3, 5, 8), 8, 24, "float32"),    # kernel wider than tall: x^T dy directly
    ((3, 5, 24), 24, 8, "float32"),   # taller than wide: (dy^T x)^T
    ((7, 16), 16, 16, "bfloat16"),
])
def test_dense_matmul_vjp_matches_autodiff(shape_in, rows, cols, dtype):
  kx, kw, kd = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(kx, shape_in).astype(dtype)
  w = jax.random.normal(kw, (rows, cols)).astype(dtype)
  dy = jax.random.normal(kd, shape_in[:-1] + (cols,)).astype(dtype)
  y, vjp = jax.vjp(tfm.dense_matmul, x, w)
  y_ref, vjp_ref = jax.vjp(jnp.dot, x, w)
  tol = dict(rtol=2e-2, atol=2e-1) if dtype == "bfloat16" else dict(rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.float32(y), np.float32(y_ref), **tol)
  for got, want in zip(jax.jit(vjp)(dy), vjp_ref(dy)):
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(np.float32(got), np.float32(want), **tol)


@pytest.mark.parametrize("style", ["gpt2", "llama"])
def test_model_gradients_match_plain_autodiff(style, monkeypatch):
  config = _tiny(**(LLAMA_STYLE if style == "llama" else {}))
  model, params, tokens = _init(config)
  if style == "llama":
    params = model.init(jax.random.key(0), tokens)
  loss = lambda p: jnp.sum(jnp.sin(model.apply(p, tokens)))
  grads = jax.jit(jax.grad(loss))(params)
  monkeypatch.setattr(tfm, "dense_matmul", jnp.dot)
  grads_ref = jax.jit(jax.grad(loss))(params)
  for a, b in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(grads_ref)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_kernels_auto_is_cpu_on_the_cpu_backend_and_checked():
  assert jax.default_backend() == "cpu"
  assert tfm.kernels_for("auto") == "cpu"
  assert tfm.kernels_for("xla") == "xla" and tfm.kernels_for("cpu") == "cpu"
  with pytest.raises(ValueError, match="kernels"):
    _tiny(kernels="gpu")


@pytest.mark.parametrize("style,causal,train", [
    ("gpt2", False, False), ("gpt2", True, True), ("llama", False, True),
    ("llama", True, False)])
def test_cpu_and_xla_kernels_give_the_same_logits_and_gradients(style, causal, train):
  base = dict(LLAMA_STYLE if style == "llama" else {}, causal=causal, dropout=0.1)
  out = {}
  for kernels in ("cpu", "xla"):
    config = _tiny(kernels=kernels, **base)
    model, params, tokens = _init(config)
    if style == "llama":
      params = model.init(jax.random.key(0), tokens)
    rngs = {"dropout": jax.random.key(3)}
    apply = lambda p: model.apply(p, tokens, train=train, rngs=rngs)  # pylint: disable=cell-var-from-loop
    loss = lambda p: jnp.sum(jnp.sin(apply(p)))  # pylint: disable=cell-var-from-loop
    out[kernels] = jax.jit(lambda p: (apply(p), jax.grad(loss)(p)))(params)  # pylint: disable=cell-var-from-loop
  (logits_cpu, grads_cpu), (logits_xla, grads_xla) = out["cpu"], out["xla"]
  np.testing.assert_allclose(logits_cpu, logits_xla, rtol=1e-5, atol=1e-5)
  assert float(jnp.std(logits_cpu)) > 1e-3  # not a constant output
  leaves_cpu, leaves_xla = jax.tree.leaves(grads_cpu), jax.tree.leaves(grads_xla)
  assert jax.tree.structure(grads_cpu) == jax.tree.structure(grads_xla)
  for a, b in zip(leaves_cpu, leaves_xla):  # float32 sums in another order
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


def test_auto_batch_chunk_rule_and_override():
  six = tfm.preset("gpt2-6m", vocab_size=10, seq_len=81)
  assert six.batch_chunk == tfm.AUTO_CHUNK
  assert tfm.inference_batch_chunk(six, 256, 81, backend="cpu") == 8
  assert tfm.inference_batch_chunk(six, 8, 81, backend="cpu") == 0  # fits already
  assert tfm.inference_batch_chunk(six, 256, 81, backend="gpu") == 0
  tiny = tfm.preset("tiny", vocab_size=10, seq_len=81)
  assert tfm.inference_batch_chunk(tiny, 256, 81, backend="cpu") == 32
  arm = tfm.preset("tiny", vocab_size=11, seq_len=243, causal=True)
  assert tfm.inference_batch_chunk(arm, 64, 243, backend="cpu") == 4  # scores dominate
  fixed = tfm.preset("gpt2-6m", vocab_size=10, seq_len=81, batch_chunk=16)
  assert tfm.inference_batch_chunk(fixed, 256, 81, backend="gpu") == 16  # as given
  assert tfm.inference_batch_chunk(
      dataclasses.replace(six, batch_chunk=0), 256, 81, backend="cpu") == 0


def test_auto_batch_chunk_is_the_same_function():
  config = _tiny(batch_chunk=tfm.AUTO_CHUNK)
  model, params, _ = _init(config)
  chunk = tfm.inference_batch_chunk(config, 300, LENGTH)
  assert 0 < chunk < 300  # the auto rule really chunks this batch on CPU (256 + 44)
  tokens = jax.random.randint(jax.random.key(2), (300, LENGTH), 0, VOCAB)
  unchunked = tfm.Transformer(dataclasses.replace(config, batch_chunk=0))
  np.testing.assert_allclose(jax.jit(model.apply)(params, tokens),
                             jax.jit(unchunked.apply)(params, tokens), atol=1e-5)


def test_structure_groups_add_their_embedding_sums_to_positions_and_tokens():
  pos_groups = tuple((i % 4, 4 + i // 4, -1) for i in range(LENGTH))
  tok_groups = tuple((v % 3 + 1,) if v < 7 else (-1,) for v in range(VOCAB))
  cfg = _tiny(dropout=0.0, position_groups=pos_groups, token_groups=tok_groups)
  assert cfg.num_groups == 7 and _tiny().num_groups == 0
  model, params, tokens = _init(cfg, batch=3)
  group_GxD = np.asarray(params["params"]["net"]["group_embed"])
  assert group_GxD.shape == (7, cfg.d_model)
  # The same network without groups, the sums folded into its two tables by hand.
  plain = jax.tree_util.tree_map(np.array, params)
  net = plain["params"]["net"]
  del net["group_embed"]
  pad = np.concatenate([np.zeros_like(group_GxD[:1]), group_GxD])
  net["pos_embed"][:LENGTH] += pad[np.asarray(pos_groups) + 1].sum(1)
  net["embed"] += pad[np.asarray(tok_groups) + 1].sum(1)
  expected = tfm.Transformer(_tiny(dropout=0.0)).apply(plain, tokens)
  np.testing.assert_allclose(model.apply(params, tokens), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kwargs", [
    dict(position_groups=((0,),) * (LENGTH - 1)),  # one row short
    dict(position_groups=((0,),) * (LENGTH - 1) + ((0, 1),)),  # ragged
    dict(token_groups=((-2,),) * VOCAB)])  # below -1
def test_bad_structure_groups_raise_value_error(kwargs):
  with pytest.raises(ValueError, match="groups must be"):
    _tiny(**kwargs)
