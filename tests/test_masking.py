"""Tests for mdm_jax.masking: time sampling and the forward masking process."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdm_jax import masking


@pytest.mark.parametrize("batch_size", [1, 7, 64, 1000])
def test_antithetic_times_are_stratified(batch_size):
  for seed in range(5):
    t = np.asarray(masking.sample_times(jax.random.key(seed), batch_size))
    assert t.shape == (batch_size,) and t.dtype == np.float32
    assert np.all(t > 0) and np.all(t <= 1)
    # Exactly one time in each bin (i/B, (i+1)/B].
    bins = np.ceil(t.astype(np.float64) * batch_size) - 1
    np.testing.assert_array_equal(np.sort(bins), np.arange(batch_size))


def test_antithetic_offset_is_uniform():
  # The shared offset must be uniform: the smallest time, times B, is U(0, 1].
  keys = jax.random.split(jax.random.key(0), 2000)
  t_min = jax.jit(jax.vmap(lambda k: masking.sample_times(k, 8).min()))(keys)
  v = np.asarray(t_min) * 8
  assert abs(v.mean() - 0.5) < 4 * np.sqrt(1 / 12 / v.size)
  assert abs(np.mean(v < 0.25) - 0.25) < 4 * np.sqrt(0.25 * 0.75 / v.size)


def test_antithetic_lowers_variance_of_batch_mean():
  keys = jax.random.split(jax.random.key(1), 500)
  both = jax.jit(jax.vmap(lambda k: (masking.sample_times(k, 16).mean(),
                                    masking.sample_times(k, 16, antithetic=False).mean())))
  anti, iid = both(keys)
  assert abs(float(anti.mean()) - 0.5) < 0.01
  assert abs(float(iid.mean()) - 0.5) < 4 * np.sqrt(1 / 12 / 16 / 500)
  assert float(anti.var()) < 0.1 * float(iid.var())


def test_iid_times_in_range_and_uniform():
  t = np.asarray(masking.sample_times(jax.random.key(3), 20000, antithetic=False))
  assert np.all(t > 0) and np.all(t <= 1)
  assert abs(t.mean() - 0.5) < 4 * np.sqrt(1 / 12 / t.size)
  hist, _ = np.histogram(t, bins=10, range=(0, 1))
  assert np.all(np.abs(hist - 2000) < 4 * np.sqrt(2000 * 0.9))


def test_times_deterministic_in_key():
  a = masking.sample_times(jax.random.key(5), 9)
  b = masking.sample_times(jax.random.key(5), 9)
  c = masking.sample_times(jax.random.key(6), 9)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_t_min_respected():
  t = masking.sample_times(jax.random.key(0), 4, t_min=0.2)
  assert float(t.min()) >= 0.2


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "4"])
def test_sample_times_bad_batch(bad):
  with pytest.raises(ValueError, match="batch_size"):
    masking.sample_times(jax.random.key(0), bad)


@pytest.mark.parametrize("num_steps", [1, 4, 10])
def test_discrete_times_on_grid_and_stratified(num_steps):
  for seed in range(3):
    t = np.asarray(masking.sample_discrete_times(jax.random.key(seed), num_steps, num_steps))
    i = t.astype(np.float64) * num_steps
    np.testing.assert_allclose(i, np.round(i), atol=1e-5)
    # B == T: every grid time 1/T..1 exactly once.
    np.testing.assert_array_equal(np.sort(np.round(i)), np.arange(1, num_steps + 1))


def test_discrete_times_uniform_iid():
  t = np.asarray(masking.sample_discrete_times(jax.random.key(0), 8000, 4, antithetic=False))
  counts = np.array([np.sum(np.isclose(t, k / 4)) for k in range(1, 5)])
  assert counts.sum() == 8000
  assert np.all(np.abs(counts - 2000) < 4 * np.sqrt(8000 * 0.25 * 0.75))


def test_discrete_bad_steps():
  with pytest.raises(ValueError, match="num_steps"):
    masking.sample_discrete_times(jax.random.key(0), 4, 0)


def _data(b, l, seed=0, p_maskable=0.7):
  rng = np.random.default_rng(seed)
  x0 = rng.integers(0, 9, size=(b, l)).astype(np.int32)
  maskable = rng.random((b, l)) < p_maskable
  return jnp.asarray(x0), jnp.asarray(maskable)


def test_masked_share_matches_one_minus_alpha():
  b, l = 6, 20000
  x0, maskable = _data(b, l)
  alpha = jnp.array([0.0, 0.1, 0.35, 0.5, 0.9, 1.0], jnp.float32)
  xt, masked = masking.mask_tokens(jax.random.key(0), x0, maskable, alpha, 9)
  masked, maskable_np = np.asarray(masked), np.asarray(maskable)
  for row in range(b):
    n = maskable_np[row].sum()
    share = masked[row].sum() / n
    p = 1.0 - float(alpha[row])
    std = np.sqrt(p * (1 - p) / n)
    assert abs(share - p) <= 5 * std + 1e-9, (row, share, p)


def test_never_masks_non_maskable_and_writes_mask_id():
  x0, maskable = _data(16, 64, seed=1)
  alpha = jnp.full((16,), 0.0)  # mask everything that may be masked
  xt, masked = masking.mask_tokens(jax.random.key(2), x0, maskable, alpha, 9)
  xt, masked, x0, maskable = map(np.asarray, (xt, masked, x0, maskable))
  assert masked.dtype == np.bool_ and xt.dtype == x0.dtype
  np.testing.assert_array_equal(masked, maskable)
  for a in [0.3, 0.7]:
    xt, masked = masking.mask_tokens(jax.random.key(3), jnp.asarray(x0), jnp.asarray(maskable),
                                     jnp.full((16,), a), 9)
    xt, masked = np.asarray(xt), np.asarray(masked)
    assert not np.any(masked & ~maskable)
    np.testing.assert_array_equal(xt == 9, masked)
    np.testing.assert_array_equal(xt[~masked], x0[~masked])


def test_masks_independent_across_positions():
  # Pairs of positions: P(both masked) = p^2 when masks are independent.
  b, l = 4, 40000
  x0 = jnp.zeros((b, l), jnp.int32)
  maskable = jnp.ones((b, l), bool)
  _, masked = masking.mask_tokens(jax.random.key(4), x0, maskable, jnp.full((b,), 0.5), 1)
  m = np.asarray(masked).reshape(b, -1, 2)
  both = np.mean(m[..., 0] & m[..., 1])
  assert abs(both - 0.25) < 5 * np.sqrt(0.25 * 0.75 / (b * l / 2))


def test_mask_tokens_deterministic_and_jittable():
  x0, maskable = _data(4, 32)
  alpha = jnp.full((4,), 0.5)
  f = jax.jit(masking.mask_tokens, static_argnums=4)
  a = f(jax.random.key(0), x0, maskable, alpha, 9)
  b = masking.mask_tokens(jax.random.key(0), x0, maskable, alpha, 9)
  c = masking.mask_tokens(jax.random.key(1), x0, maskable, alpha, 9)
  np.testing.assert_array_equal(np.asarray(a[1]), np.asarray(b[1]))
  np.testing.assert_array_equal(np.asarray(a[0]), np.asarray(b[0]))
  assert not np.array_equal(np.asarray(b[1]), np.asarray(c[1]))


def test_mask_tokens_validation():
  x0, maskable = _data(4, 8)
  key, alpha = jax.random.key(0), jnp.full((4,), 0.5)
  with pytest.raises(ValueError, match="x0_BxL"):
    masking.mask_tokens(key, x0.astype(jnp.float32), maskable, alpha, 9)
  with pytest.raises(ValueError, match="x0_BxL"):
    masking.mask_tokens(key, x0[0], maskable, alpha, 9)
  with pytest.raises(ValueError, match="maskable_BxL"):
    masking.mask_tokens(key, x0, maskable.astype(jnp.int32), alpha, 9)
  with pytest.raises(ValueError, match="maskable_BxL"):
    masking.mask_tokens(key, x0, maskable[:, :4], alpha, 9)
  with pytest.raises(ValueError, match="alpha_B"):
    masking.mask_tokens(key, x0, maskable, jnp.full((3,), 0.5), 9)
  with pytest.raises(ValueError, match="mask_id"):
    masking.mask_tokens(key, x0, maskable, alpha, -1)
