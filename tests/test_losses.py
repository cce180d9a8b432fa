"""Tests for mdm_jax.losses: the MDM ELBO is unbiased, AR/pi-learner losses are right."""
import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdm_jax import losses
from mdm_jax import masking
from mdm_jax import schedules


def _log_softmax_np(x):
  x = np.asarray(x, np.float64)
  m = x.max(-1, keepdims=True)
  return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


# ----------------------------------------------------------------------------------
# KEY test: with the true denoiser, the Monte Carlo NELBO equals the data entropy.


@dataclasses.dataclass(frozen=True)
class _UnitWeight(schedules.Schedule):
  """A deliberately wrong ELBO weight (1 instead of -alpha'/(1-alpha))."""

  def weight(self, t):
    return jnp.ones_like(jnp.asarray(t, jnp.float32))


V, L, MASK = 5, 8, 5  # data values 0..4, MASK = 5, logits have V + 1 columns
B, NUM_BATCHES = 32, 1500


@functools.lru_cache(maxsize=None)
def _independent_source():
  rng = np.random.default_rng(0)
  p_LxV = rng.dirichlet(np.full(V, 0.7), size=L)
  maskable_L = np.ones(L, bool)
  maskable_L[:2] = False  # a two-token prompt that is never masked
  h_L = -(p_LxV * np.log(p_LxV)).sum(-1)
  entropy = h_L[maskable_L].mean()  # nats per maskable token
  return p_LxV, maskable_L, float(entropy)


def _mc_losses(schedule, num_steps=None, seed=0, loss_schedule=None):
  """Per-batch NELBO estimates with the exact denoiser log p_i (which ignores x_t).

  Times are continuous, or discrete with `num_steps`; the masks follow `schedule`.
  `loss_schedule` (if given) replaces the loss with `mdm_loss` under that schedule.

  Runs op by op (no jit): the per-op compilations are shared by every schedule.
  """
  p_LxV, maskable_L, _ = _independent_source()
  rng = np.random.default_rng(seed)
  n = NUM_BATCHES * B
  x0_NxL = (rng.random((n, L, 1)) > np.cumsum(p_LxV, -1)).sum(-1).astype(np.int32)
  x0_NxL = jnp.asarray(np.minimum(x0_NxL, V - 1))
  maskable_NxL = jnp.broadcast_to(jnp.asarray(maskable_L), (n, L))
  k_time, k_mask = jax.random.split(jax.random.key(seed))
  keys = jax.random.split(k_time, NUM_BATCHES)
  if num_steps is None:
    t_N = jax.vmap(lambda k: masking.sample_times(k, B))(keys).reshape(n)
  else:
    t_N = jax.vmap(lambda k: masking.sample_discrete_times(k, B, num_steps))(keys).reshape(n)
  _, masked_NxL = masking.mask_tokens(k_mask, x0_NxL, maskable_NxL, schedule.alpha(t_N), MASK)
  # The MASK column is part of the model output; the true model never predicts it.
  logp_LxV = np.log(p_LxV).astype(np.float32)
  logits_LxV1 = jnp.asarray(np.concatenate([logp_LxV, np.full((L, 1), -1e9, np.float32)], 1))
  logits_BxLxV = jnp.broadcast_to(logits_LxV1, (B, L, V + 1))
  per_batch = lambda a: a.reshape((NUM_BATCHES, B) + a.shape[1:])

  def loss_fn(x0_BxL, masked_BxL, maskable_BxL, t_B):
    if loss_schedule is not None:
      return losses.mdm_loss(logits_BxLxV, x0_BxL, masked_BxL, maskable_BxL, t_B,
                             loss_schedule)[0]
    if num_steps is None:
      return losses.mdm_loss(logits_BxLxV, x0_BxL, masked_BxL, maskable_BxL, t_B, schedule)[0]
    return losses.mdm_discrete_loss(logits_BxLxV, x0_BxL, masked_BxL, maskable_BxL, t_B,
                                    schedule, num_steps)[0]

  out = jax.vmap(loss_fn)(per_batch(x0_NxL), per_batch(masked_NxL), per_batch(maskable_NxL),
                          per_batch(t_N))
  return np.asarray(out, np.float64)


def _mean_se(x):
  return x.mean(), x.std(ddof=1) / math.sqrt(x.size)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_continuous_nelbo_equals_entropy_for_exact_denoiser(name):
  _, _, entropy = _independent_source()
  mean, se = _mean_se(_mc_losses(schedules.get_schedule(name)))
  assert se < 0.015 * entropy  # the test has power
  assert abs(mean - entropy) < 4 * se, (mean, entropy, se)
  # The same estimator with a wrong weight is detectably biased.
  wrong_mean, wrong_se = _mean_se(_mc_losses(_UnitWeight(name)))
  assert abs(wrong_mean - entropy) > 10 * max(se, wrong_se)


@pytest.mark.parametrize("name,num_steps", [("linear", 4), ("cosine", 4), ("cosine", 25)])
def test_discrete_nelbo_equals_entropy_for_exact_denoiser(name, num_steps):
  _, _, entropy = _independent_source()
  s = schedules.get_schedule(name)
  mean, se = _mean_se(_mc_losses(s, num_steps=num_steps))
  assert se < 0.015 * entropy
  assert abs(mean - entropy) < 4 * se, (mean, entropy, se)
  # Same samples, weight 1 instead of T (alpha_s - alpha_t) / (1 - alpha_t): biased.
  wrong_mean, _ = _mean_se(_mc_losses(s, num_steps=num_steps, loss_schedule=_UnitWeight(name)))
  assert abs(wrong_mean - entropy) > 10 * se


def test_discrete_weight_values():
  # Linear: T (alpha_s - alpha_t)/(1 - alpha_t) = 1/t on the grid.
  t = jnp.arange(1, 5, dtype=jnp.float32) / 4
  np.testing.assert_allclose(np.asarray(losses.discrete_weight("linear", t, 4)), 1 / np.asarray(t),
                             rtol=5e-4)  # alpha_1 is clipped to eps = 1e-4
  # Cosine, against the formula in float64 (alpha clipped to [eps, 1-eps], alpha_0 = 1).
  a = lambda x: np.where(x > 0, np.clip(1 - np.cos(np.pi / 2 * (1 - x)), 1e-4, 1 - 1e-4), 1.0)
  tt = np.arange(1, 5) / 4
  expected = 4 * (a(tt - 0.25) - a(tt)) / (1 - a(tt))
  np.testing.assert_allclose(np.asarray(losses.discrete_weight("cosine", t, 4)), expected,
                             rtol=1e-5)
  # E_t[w (1 - alpha_t)] = alpha_0 - alpha_1 ~ 1 (each token counted once).
  s = schedules.get_schedule("poly3")
  w = np.asarray(losses.discrete_weight(s, t, 4))
  assert abs(np.mean(w * np.asarray(s.mask_prob(t))) - 1.0) < 1e-3


# ----------------------------------------------------------------------------------
# mdm_loss details.


# Jitted once per shape: the small tests share compilations (eager dispatch compiles
# every op separately). Argument checks run at trace time, so they still raise.
_mdm = jax.jit(losses.mdm_loss, static_argnames=("schedule", "mask_id"))
_ar = jax.jit(losses.ar_loss)
_pi = jax.jit(losses.pi_learner_loss)


def _small_case(seed=0, b=2, l=5, v=4, dtype=jnp.float32):
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=(b, l, v)).astype(np.float32) * 2
  x0 = rng.integers(0, v - 1, size=(b, l)).astype(np.int32)
  maskable = rng.random((b, l)) < 0.8
  maskable[0, 0] = True
  masked = (rng.random((b, l)) < 0.6) | ~maskable  # some masked-but-not-maskable entries
  masked[0, 0] = True
  t = rng.uniform(0.1, 1.0, size=b).astype(np.float32)
  return (jnp.asarray(logits, dtype), jnp.asarray(x0), jnp.asarray(masked),
          jnp.asarray(maskable), jnp.asarray(t))


def test_mdm_loss_hand_computed():
  logits, x0, masked, maskable, t = _small_case()
  loss, metrics = _mdm(logits, x0, masked, maskable, t, schedules.get_schedule("linear"))
  lp = _log_softmax_np(logits)
  ce = -np.take_along_axis(lp, np.asarray(x0)[..., None], -1)[..., 0]
  on = np.asarray(masked) & np.asarray(maskable)
  w = 1.0 / np.asarray(t, np.float64)
  expected = (w[:, None] * ce * on).sum() / np.asarray(maskable).sum()
  assert float(loss) == pytest.approx(expected, rel=1e-5)
  assert float(metrics["nats_per_token"]) == pytest.approx(expected, rel=1e-5)
  assert float(metrics["bits_per_token"]) == pytest.approx(expected / math.log(2), rel=1e-5)
  assert float(metrics["masked_ce"]) == pytest.approx(ce[on].mean(), rel=1e-5)
  acc = (lp.argmax(-1) == np.asarray(x0))[on].mean()
  assert float(metrics["masked_accuracy"]) == pytest.approx(acc)
  assert float(metrics["mask_rate"]) == pytest.approx(on.sum() / np.asarray(maskable).sum())
  for v in metrics.values():
    assert v.shape == () and v.dtype == jnp.float32


def test_mdm_loss_ignores_unmasked_and_unmaskable_positions():
  logits, x0, masked, maskable, t = _small_case(1)
  s = schedules.get_schedule("cosine")
  base, _ = _mdm(logits, x0, masked, maskable, t, s)
  off = ~(masked & maskable)
  noise = 100.0 * np.random.default_rng(0).normal(size=logits.shape).astype(np.float32)
  noisy = jnp.where(off[..., None], noise, logits)
  other, _ = _mdm(noisy, x0, masked, maskable, t, s)
  assert float(other) == pytest.approx(float(base), rel=1e-6)
  # ... but a masked maskable position does count.
  i = np.argwhere(np.asarray(~off))[0]
  changed = logits.at[i[0], i[1]].add(jnp.array([5.0, -5.0, 3.0, 0.0]))
  assert abs(float(_mdm(changed, x0, masked, maskable, t, s)[0]) - float(base)) > 1e-3


def test_mdm_loss_normalised_per_maskable_token():
  logits, x0, masked, maskable, t = _small_case(2)
  s = schedules.get_schedule("linear")
  base, _ = _mdm(logits, x0, masked, maskable, t, s)
  cat = lambda a: jnp.concatenate([a, a], 0)
  doubled, _ = _mdm(cat(logits), cat(x0), cat(masked), cat(maskable), cat(t), s)
  assert float(doubled) == pytest.approx(float(base), rel=1e-6)
  # Adding unmasked maskable tokens dilutes the per-token loss.
  extra_l = jnp.concatenate([logits, logits], 1)
  pad = lambda a, fill: jnp.concatenate([a, jnp.full_like(a, fill)], 1)
  diluted, _ = _mdm(extra_l, pad(x0, 0), pad(masked, False), pad(maskable, True), t, s)
  n = float(maskable.sum())
  assert float(diluted) == pytest.approx(float(base) * n / (n + maskable.size), rel=1e-5)


def test_flat_weighting_is_mean_masked_ce():
  logits, x0, masked, maskable, t = _small_case(4)
  s = schedules.get_schedule("linear")
  elbo, m_elbo = losses.mdm_loss(logits, x0, masked, maskable, t, s)
  flat, m_flat = losses.mdm_loss(logits, x0, masked, maskable, t, s, weighting="flat")
  lp = _log_softmax_np(logits)
  ce = -np.take_along_axis(lp, np.asarray(x0)[..., None], -1)[..., 0]
  on = np.asarray(masked) & np.asarray(maskable)
  assert float(flat) == pytest.approx(ce[on].mean(), rel=1e-5)
  assert float(flat) != pytest.approx(float(elbo), rel=1e-3)
  # The ELBO estimate is still reported, and t no longer scales the loss.
  assert float(m_flat["nats_per_token"]) == pytest.approx(float(elbo), rel=1e-6)
  flat_half, _ = losses.mdm_loss(logits, x0, masked, maskable, t / 2, s, weighting="flat")
  assert float(flat_half) == pytest.approx(float(flat), rel=1e-6)
  d_flat, _ = losses.mdm_discrete_loss(logits, x0, masked, maskable, t, s, 10,
                                       weighting="flat")
  assert float(d_flat) == pytest.approx(float(flat), rel=1e-6)
  with pytest.raises(ValueError, match="weighting"):
    losses.mdm_loss(logits, x0, masked, maskable, t, s, weighting="uniform")


def test_mdm_loss_weight_depends_on_t():
  logits, x0, masked, maskable, t = _small_case(3)
  s = schedules.get_schedule("linear")
  base, _ = _mdm(logits, x0, masked, maskable, t, s)
  double, _ = _mdm(logits, x0, masked, maskable, t / 2, s)  # w = 1/t doubles
  assert float(double) == pytest.approx(2 * float(base), rel=1e-5)


def test_mask_id_excludes_mask_logit():
  logits, x0, masked, maskable, t = _small_case(4, v=4)
  s = schedules.get_schedule("linear")
  ref, _ = _mdm(logits[..., :3], x0, masked, maskable, t, s)
  big = logits.at[..., 3].set(50.0)  # a model that loves MASK
  with_id, m = _mdm(big, x0, masked, maskable, t, s, mask_id=3)
  assert float(with_id) == pytest.approx(float(ref), rel=1e-5)
  without_id, _ = _mdm(big, x0, masked, maskable, t, s)
  assert float(without_id) > float(ref) + 10
  grads = jax.grad(lambda z: _mdm(z, x0, masked, maskable, t, s, mask_id=3)[0])(big)
  assert np.all(np.isfinite(np.asarray(grads)))
  # With MASK excluded, the prediction is the argmax over the three real tokens.
  on = np.asarray(masked & maskable)
  hits = np.argmax(np.asarray(logits)[..., :3], axis=-1) == np.asarray(x0)
  assert float(m["masked_accuracy"]) == pytest.approx(hits[on].mean(), abs=1e-6)


def test_bf16_logits_use_float32_math():
  logits, x0, masked, maskable, t = _small_case(5)
  s = schedules.get_schedule("linear")
  bf = logits.astype(jnp.bfloat16)
  loss_bf, metrics = losses.mdm_loss(bf, x0, masked, maskable, t, s)
  loss_f32, _ = losses.mdm_loss(bf.astype(jnp.float32), x0, masked, maskable, t, s)
  assert loss_bf.dtype == jnp.float32 and metrics["bits_per_token"].dtype == jnp.float32
  assert float(loss_bf) == pytest.approx(float(loss_f32), rel=1e-6)


def test_mdm_loss_jit_and_string_schedule():
  logits, x0, masked, maskable, t = _small_case(6)
  s = schedules.get_schedule("cosine")
  f = jax.jit(losses.mdm_loss, static_argnums=5)
  a, _ = f(logits, x0, masked, maskable, t, s)
  b, _ = losses.mdm_loss(logits, x0, masked, maskable, t, "cosine")
  g = jax.jit(losses.mdm_discrete_loss, static_argnums=(5, 6))
  c, _ = g(logits, x0, masked, maskable, jnp.array([0.5, 1.0]), s, 4)
  assert float(a) == pytest.approx(float(b), rel=1e-6)
  assert np.isfinite(float(c))


def test_mdm_loss_no_maskable_tokens_is_zero():
  logits, x0, masked, maskable, t = _small_case(7)
  loss, m = _mdm(logits, x0, masked, jnp.zeros_like(maskable), t, "linear")
  assert float(loss) == 0.0 and all(np.isfinite(float(v)) for v in m.values())


def test_mdm_loss_validation():
  logits, x0, masked, maskable, t = _small_case(8)
  s = "linear"
  cases = [
      ((logits[0], x0, masked, maskable, t, s), "logits"),
      ((logits.astype(jnp.int32), x0, masked, maskable, t, s), "logits"),
      ((logits, x0.astype(jnp.float32), masked, maskable, t, s), "x0_BxL"),
      ((logits, x0[:1], masked, maskable, t, s), "x0_BxL"),
      ((logits, x0[:, :3], masked, maskable, t, s), "x0_BxL"),
      ((logits, x0, masked.astype(jnp.int32), maskable, t, s), "masked_BxL"),
      ((logits, x0, masked, maskable[:, :2], t, s), "maskable_BxL"),
      ((logits, x0, masked, maskable, t[:1], s), "t_B"),
      ((logits, x0, masked, maskable, t, "cos"), "linear"),
  ]
  for args, match in cases:
    with pytest.raises(ValueError, match=match):
      losses.mdm_loss(*args)
  with pytest.raises(ValueError, match="mask_id"):
    losses.mdm_loss(logits, x0, masked, maskable, t, s, mask_id=4)
  with pytest.raises(ValueError, match="num_steps"):
    losses.mdm_discrete_loss(logits, x0, masked, maskable, t, s, 0)


def test_bits_is_nats_over_ln2():
  assert float(losses.nats_to_bits(math.log(2))) == pytest.approx(1.0)
  assert float(losses.nats_to_bits(1.0)) == pytest.approx(1.0 / math.log(2))


# ----------------------------------------------------------------------------------
# AR and pi-learner losses.


def test_ar_loss_hand_computed_with_shift_and_mask():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 4, 3)).astype(np.float32)
  tokens = np.array([[0, 2, 1, 1], [1, 0, 0, 2]], np.int32)
  loss_mask = np.array([[True, False, True, True], [False, True, True, False]])
  lp = _log_softmax_np(logits)
  terms, correct = [], []
  for b in range(2):
    for j in range(1, 4):  # target j predicted by logits at j - 1
      if loss_mask[b, j]:
        terms.append(-lp[b, j - 1, tokens[b, j]])
        correct.append(lp[b, j - 1].argmax() == tokens[b, j])
  loss, metrics = _ar(jnp.asarray(logits), jnp.asarray(tokens), jnp.asarray(loss_mask))
  assert float(loss) == pytest.approx(np.mean(terms), rel=1e-5)
  assert float(metrics["accuracy"]) == pytest.approx(np.mean(correct))
  assert float(metrics["bits_per_token"]) == pytest.approx(np.mean(terms) / math.log(2), rel=1e-5)
  assert float(metrics["num_tokens"]) == len(terms)


def test_ar_loss_only_uses_logits_that_predict_counted_targets():
  rng = np.random.default_rng(1)
  logits = jnp.asarray(rng.normal(size=(1, 5, 4)).astype(np.float32))
  tokens = jnp.array([[3, 1, 2, 0, 1]], jnp.int32)
  loss_mask = jnp.array([[True, True, False, True, True]])
  base, _ = _ar(logits, tokens, loss_mask)
  # Last position predicts nothing; position 1 predicts target 2 (not counted).
  for pos in (4, 1):
    other, _ = _ar(logits.at[0, pos].add(7.0 * jnp.arange(4.0)), tokens, loss_mask)
    assert float(other) == pytest.approx(float(base), rel=1e-6)
  other, _ = _ar(logits.at[0, 2].add(7.0 * jnp.arange(4.0)), tokens, loss_mask)
  assert abs(float(other) - float(base)) > 1e-3
  # loss_mask[:, 0] is never a target.
  other, _ = _ar(logits, tokens, loss_mask.at[0, 0].set(False))
  assert float(other) == pytest.approx(float(base), rel=1e-6)


def test_ar_loss_perfect_predictor():
  tokens = jnp.array([[0, 1, 2, 3, 0, 1]], jnp.int32)
  # logits[:, i] = one-hot of tokens[:, i+1]
  nxt = jnp.concatenate([tokens[:, 1:], tokens[:, :1]], 1)
  logits = 30.0 * jax.nn.one_hot(nxt, 4)
  loss, m = _ar(logits, tokens, jnp.ones((1, 6), bool))
  assert float(loss) < 1e-6 and float(m["accuracy"]) == 1.0


def test_ar_loss_validation_and_empty_mask():
  logits = jnp.zeros((2, 4, 3))
  tokens = jnp.zeros((2, 4), jnp.int32)
  loss, m = losses.ar_loss(logits, tokens, jnp.zeros((2, 4), bool))
  assert float(loss) == 0.0 and np.isfinite(float(m["accuracy"]))
  with pytest.raises(ValueError, match="tokens_BxL"):
    losses.ar_loss(logits, tokens[:, :3], jnp.ones((2, 4), bool))
  with pytest.raises(ValueError, match="loss_mask_BxL"):
    losses.ar_loss(logits, tokens, jnp.ones((2, 4), jnp.int32))
  with pytest.raises(ValueError, match="length"):
    losses.ar_loss(logits[:, :1], tokens[:, :1], jnp.ones((2, 1), bool))


def _transposition_distance(perm):
  """Minimum number of transpositions from the identity: L - number of cycles."""
  seen, cycles = np.zeros(len(perm), bool), 0
  for i in range(len(perm)):
    if not seen[i]:
      cycles += 1
      j = i
      while not seen[j]:
        seen[j] = True
        j = perm[j]
  return len(perm) - cycles


@pytest.mark.parametrize("length", [1, 2, 10, 81, 300])
def test_pi_permutation_kinds(length):
  for seed in range(3):
    perms = {k: losses.pi_permutation(k, length, seed) for k in losses.PI_KINDS}
    for k, p in perms.items():
      assert p.dtype == np.int32 and p.shape == (length,)
      np.testing.assert_array_equal(np.sort(p), np.arange(length))
      np.testing.assert_array_equal(p, losses.pi_permutation(k, length, seed))
    np.testing.assert_array_equal(perms["identity"], np.arange(length))
    assert _transposition_distance(perms["much_closer"]) <= round(math.sqrt(length))
    assert _transposition_distance(perms["closer"]) <= length // 10
  if length >= 81:
    u = [losses.pi_permutation("uniform", length, s) for s in range(3)]
    assert not np.array_equal(u[0], u[1])
    # A uniform permutation is far from the identity; "much closer" moves some positions.
    assert _transposition_distance(u[0]) > length // 2
    mc = losses.pi_permutation("much_closer", length, 0)
    assert 0 < _transposition_distance(mc)
    assert not np.array_equal(mc, losses.pi_permutation("much_closer", length, 1))


def test_pi_permutation_validation():
  with pytest.raises(ValueError, match="identity"):
    losses.pi_permutation("random", 10, 0)
  with pytest.raises(ValueError, match="length"):
    losses.pi_permutation("uniform", 0, 0)


def test_pi_learner_loss_reads_in_permuted_order():
  rng = np.random.default_rng(0)
  l, v = 7, 5
  tokens = jnp.asarray(rng.integers(0, v - 1, size=(3, l)).astype(np.int32))
  loss_mask = jnp.asarray(rng.random((3, l)) < 0.7)
  perm = losses.pi_permutation("uniform", l, 3)
  seq = np.asarray(tokens)[:, perm]  # the order the pi-learner reads
  np.testing.assert_array_equal(np.asarray(losses.apply_permutation(tokens, perm)), seq)
  # The model reads the start token, then seq shifted right by one.
  inputs = np.asarray(losses.pi_learner_inputs(tokens, perm, v - 1))
  np.testing.assert_array_equal(inputs[:, 0], v - 1)
  np.testing.assert_array_equal(inputs[:, 1:], seq[:, :-1])
  # A model perfect on the permuted sequence: logits[:, j] -> seq[:, j], the first too.
  logits = 30.0 * jax.nn.one_hot(jnp.asarray(seq), v)
  loss, m = _pi(logits, tokens, loss_mask, perm)
  assert float(loss) < 1e-6 and float(m["accuracy"]) == 1.0
  # Every counted position counts, the first in pi's order included.
  assert float(m["num_tokens"]) == np.asarray(loss_mask).sum()
  # The same model is poor in the original order.
  _, m_id = _pi(logits, tokens, loss_mask, np.arange(l))
  assert float(m_id["accuracy"]) < 1.0
  # Identity permutation: the AR loss on [start] + tokens, every masked token counted.
  ident = losses.pi_permutation("identity", l, 0)
  logits = jnp.asarray(rng.normal(size=(3, l, v)).astype(np.float32))
  a, _ = _pi(logits, tokens, loss_mask, ident)
  full = jnp.concatenate([jnp.full((3, 1), v - 1, jnp.int32), tokens], 1)
  pad = jnp.concatenate([logits, jnp.zeros((3, 1, v))], 1)
  b, _ = _ar(pad, full, jnp.concatenate([jnp.zeros((3, 1), bool), loss_mask], 1))
  assert float(a) == pytest.approx(float(b), rel=1e-6)


def test_pi_learner_loss_jit_and_validation():
  tokens = jnp.zeros((2, 4), jnp.int32)
  logits = jnp.zeros((2, 4, 3))
  mask = jnp.ones((2, 4), bool)
  perm = jnp.array([2, 0, 3, 1], jnp.int32)
  a, _ = jax.jit(losses.pi_learner_loss)(logits, tokens, mask, perm)
  assert float(a) == pytest.approx(math.log(3), rel=1e-5)
  with pytest.raises(ValueError, match="permutation"):
    losses.pi_learner_loss(logits, tokens, mask, np.array([0, 0, 1, 2]))
  with pytest.raises(ValueError, match="perm_L"):
    losses.pi_learner_loss(logits, tokens, mask, np.arange(3))
