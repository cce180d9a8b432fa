"""Tests for mdm_jax.schedules: formulas, derivatives, clipping, weights, names."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdm_jax import schedules

NAMES = ["linear", "cosine", "poly2", "poly3", "poly5"]


def _raw_alpha(name, t):
  """Independent float64 reference of the unclipped schedules from the paper."""
  t = np.asarray(t, np.float64)
  if name == "linear":
    return 1.0 - t
  if name == "cosine":
    return 1.0 - np.cos(np.pi / 2 * (1.0 - t))
  return 1.0 - t ** int(name[4:])


@pytest.mark.parametrize("name", NAMES)
def test_alpha_matches_formula_in_interior(name):
  s = schedules.get_schedule(name)
  t = np.linspace(0.2, 0.95, 31)
  np.testing.assert_allclose(np.asarray(s.alpha(t)), _raw_alpha(name, t), atol=2e-6)
  np.testing.assert_allclose(np.asarray(s.mask_prob(t)), 1.0 - _raw_alpha(name, t),
                             atol=2e-6)


@pytest.mark.parametrize("name", NAMES)
def test_dalpha_matches_finite_differences(name):
  s = schedules.get_schedule(name)
  t = np.linspace(0.2, 0.95, 31).astype(np.float32)
  h = 3e-3
  fd = (np.asarray(s.alpha(t + h), np.float64) - np.asarray(s.alpha(t - h), np.float64)) / (2 * h)
  # Also against the float64 reference, which has no rounding noise.
  fd64 = (_raw_alpha(name, t.astype(np.float64) + 1e-6)
          - _raw_alpha(name, t.astype(np.float64) - 1e-6)) / 2e-6
  d = np.asarray(s.dalpha(t))
  np.testing.assert_allclose(d, fd, atol=3e-4)
  np.testing.assert_allclose(d, fd64, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_endpoints_range_and_monotone(name):
  eps = 1e-4
  s = schedules.get_schedule(name, eps=eps)
  assert abs(float(s.alpha(0.0)) - 1.0) <= eps + 1e-7
  assert abs(float(s.alpha(1.0))) <= eps + 1e-7
  t = np.linspace(0.0, 1.0, 2001)
  a = np.asarray(s.alpha(t))
  assert a.dtype == np.float32
  assert np.all(a >= eps - 1e-7) and np.all(a <= 1 - eps + 1e-7)
  assert np.all(np.diff(a) <= 0.0)
  # Strictly decreasing away from the clipped ends.
  inner = np.asarray(s.alpha(np.linspace(0.2, 0.9, 101)))
  assert np.all(np.diff(inner) < 0.0)
  assert np.all(np.asarray(s.dalpha(t)) <= 0.0)


def test_linear_weight_is_one_over_t():
  s = schedules.get_schedule("linear")
  t = np.linspace(1e-3, 0.999, 500).astype(np.float32)
  np.testing.assert_allclose(np.asarray(s.weight(t)), 1.0 / t, rtol=1e-5)


@pytest.mark.parametrize("k", [2, 3, 7])
def test_poly_weight_is_k_over_t(k):
  s = schedules.get_schedule(f"poly{k}")
  t = np.linspace(0.3, 0.99, 50).astype(np.float32)
  np.testing.assert_allclose(np.asarray(s.weight(t)), k / t, rtol=1e-4)


def test_cosine_weight_formula():
  s = schedules.get_schedule("cosine")
  t = np.linspace(0.01, 0.99, 99)
  expected = np.pi / 2 * np.tan(np.pi / 2 * (1 - t))
  np.testing.assert_allclose(np.asarray(s.weight(t)), expected, rtol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_weight_positive_and_integrand_integrates_to_one(name):
  s = schedules.get_schedule(name)
  t = np.linspace(0.0, 1.0, 200001)
  w = np.asarray(s.weight(t), np.float64)
  inner = (t > 0) & (t < 1)
  assert np.all(np.isfinite(w)) and np.all(w[inner] > 0)
  # E_t[w(t) (1 - alpha(t))] = alpha(0) - alpha(1) = 1: the ELBO counts each token once.
  integrand = w * np.asarray(s.mask_prob(t), np.float64)
  assert abs(np.trapezoid(integrand, t) - 1.0) < 1e-4


def test_mask_prob_is_accurate_near_zero():
  # 1 - alpha must not suffer from cancellation (else weights near t=0 blow up).
  s = schedules.get_schedule("linear", eps=1e-6)
  t = np.array([1e-5, 3e-5, 1e-4], np.float32)
  np.testing.assert_allclose(np.asarray(s.mask_prob(t)), t, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(s.weight(t)), 1.0 / t, rtol=1e-5)


def test_weight_bounded_by_clip():
  eps = 1e-3
  s = schedules.get_schedule("linear", eps=eps)
  assert float(s.weight(0.0)) == pytest.approx(1.0 / eps, rel=1e-5)
  assert float(s.weight(1e-5)) == pytest.approx(1.0 / eps, rel=1e-5)


def test_poly1_equals_linear():
  t = np.linspace(0, 1, 11)
  a, b = schedules.get_schedule("poly1"), schedules.get_schedule("linear")
  for fn in ("alpha", "dalpha", "weight"):
    np.testing.assert_array_equal(np.asarray(getattr(a, fn)(t)), np.asarray(getattr(b, fn)(t)))


@pytest.mark.parametrize("bad", ["cos", "poly", "poly0", "poly-1", "polyx", "poly2.5", "", 3, None])
def test_unknown_name_lists_valid_names(bad):
  with pytest.raises(ValueError, match="linear.*cosine.*poly"):
    schedules.get_schedule(bad)


@pytest.mark.parametrize("eps", [0.0, -1e-3, 0.5, 2.0, "x"])
def test_bad_eps(eps):
  with pytest.raises(ValueError, match="eps"):
    schedules.get_schedule("linear", eps=eps)


def test_hashable_and_jit_static():
  a = schedules.get_schedule("cosine")
  assert a == schedules.get_schedule("cosine")
  assert hash(a) == hash(schedules.get_schedule("cosine"))
  assert a != schedules.get_schedule("linear")
  assert schedules.get_schedule(a) is a
  with pytest.raises(Exception):
    a.name = "linear"  # frozen

  @jax.jit
  def f(t):
    return a.weight(t)
  g = jax.jit(lambda t, s: s.weight(t), static_argnums=1)
  t = jnp.array([0.25, 0.5], jnp.float32)
  np.testing.assert_allclose(np.asarray(g(t, a)), np.asarray(f(t)), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(g(t, schedules.get_schedule("linear"))),
                             [4.0, 2.0], rtol=1e-6)


def test_accepts_python_floats_and_float64():
  s = schedules.get_schedule("linear")
  assert float(s.alpha(0.25)) == pytest.approx(0.75)
  out = s.weight(np.array([0.5], np.float64))
  assert out.dtype == jnp.float32 and float(out[0]) == pytest.approx(2.0)
  assert math.isfinite(float(s.weight(1.0)))
