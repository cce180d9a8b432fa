"""Tests of mdm_jax.sampling on tiny hand-made logits functions (no model)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mdm_jax import sampling, schedules

ORDERED = ("random", "top_prob", "margin", "entropy")


def _fixed_fn(logits_LxV):
  """logits_fn whose per-position distributions ignore the input."""
  logits_LxV = jnp.asarray(logits_LxV, jnp.float32)
  vocab = logits_LxV.shape[-1]
  return lambda tokens_BxL: jnp.broadcast_to(logits_LxV, tokens_BxL.shape + (vocab,))


def _np_scores(logits_LxV, mask_id, strategy):
  """Reference scores (higher first) from the paper's definitions, MASK excluded."""
  logits = np.delete(np.asarray(logits_LxV, np.float64), mask_id, axis=-1)
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  top2 = np.sort(p, axis=-1)[:, ::-1][:, :2]
  if strategy == "top_prob":
    return top2[:, 0]
  if strategy == "margin":
    return top2[:, 0] - top2[:, 1]
  if strategy == "entropy":
    return np.sum(p * np.log(p), axis=-1)
  raise ValueError(strategy)


def _counts_per_step(order_BxL, num_steps):
  return np.stack([(np.asarray(order_BxL) == i).sum(-1) for i in range(num_steps)], -1)


def _expected_counts(num_masked, num_steps, schedule="linear"):
  """K per step from the spec: round(m p_i), at least 1, all at the last step."""
  p = sampling.unmask_probs(schedule, num_steps)
  counts, m = [], num_masked
  for i in range(num_steps):
    k = 0 if m == 0 else min(max(int(np.round(np.float32(m) * p[i])), 1), m)
    counts.append(k)
    m -= k
  return np.array(counts)


@pytest.mark.parametrize("schedule", ["linear", "cosine", "poly2"])
def test_unmask_probs_match_formula(schedule):
  num_steps = 20
  p = sampling.unmask_probs(schedule, num_steps)
  t = 1.0 - np.arange(num_steps) / num_steps
  s = t - 1.0 / num_steps
  alpha = {"linear": lambda u: 1 - u, "cosine": lambda u: 1 - np.cos(np.pi / 2 * (1 - u)),
           "poly2": lambda u: 1 - u ** 2}[schedule]
  want = (alpha(s) - alpha(t)) / (1 - alpha(t))
  np.testing.assert_allclose(p[:-1], want[:-1], atol=1e-3)
  assert p[-1] == 1.0
  if schedule == "linear":
    np.testing.assert_allclose(p, 1.0 / (num_steps - np.arange(num_steps)), atol=1e-3)


@pytest.mark.parametrize("strategy", ["top_prob", "margin", "entropy"])
def test_decodes_in_score_order(strategy):
  length, vocab, mask_id = 12, 6, 5
  rng = np.random.default_rng(0)
  logits_LxV = rng.normal(size=(length, vocab)) * rng.uniform(0.3, 3.0, size=(length, 1))
  logits_LxV[:, mask_id] = 50.0  # must be ignored
  score_L = _np_scores(logits_LxV, mask_id, strategy)
  assert np.min(np.diff(np.sort(score_L))) > 1e-4  # no near-ties
  tokens = np.full((2, length), mask_id, np.int32)
  # num_steps = #masks: one position per step, so `order` is the rank by score.
  out = sampling.sample(_fixed_fn(logits_LxV), tokens, jax.random.key(0), mask_id=mask_id,
                        strategy=strategy, num_steps=length)
  want_order = np.argsort(np.argsort(-score_L))
  np.testing.assert_array_equal(out.order, np.broadcast_to(want_order, (2, length)))
  want_tokens = np.argmax(np.delete(logits_LxV, mask_id, -1), -1)  # mask_id is last
  np.testing.assert_array_equal(out.tokens, np.broadcast_to(want_tokens, (2, length)))


def test_strategies_disagree_where_scores_disagree():
  mask_id = 4
  probs = np.array([
      [0.46, 0.44, 0.10, 0.00],  # top 0.46, margin 0.02, entropy 0.93
      [0.40, 0.20, 0.20, 0.20],  # top 0.40, margin 0.20, entropy 1.33
      [0.50, 0.125, 0.125, 0.25],  # top 0.50, margin 0.25, entropy 1.21
  ]) + 1e-9
  logits_LxV = np.concatenate([np.log(probs), np.zeros((3, 1))], -1)
  tokens = np.full((1, 3), mask_id, np.int32)
  orders = {}
  for strategy in ("top_prob", "margin", "entropy"):
    out = sampling.sample(_fixed_fn(logits_LxV), tokens, jax.random.key(0),
                          mask_id=mask_id, strategy=strategy, num_steps=3)
    orders[strategy] = list(np.asarray(out.order[0]))
  assert orders["top_prob"] == [1, 2, 0]  # 0.50 > 0.46 > 0.40
  assert orders["margin"] == [2, 1, 0]  # 0.25 > 0.20 > 0.02
  assert orders["entropy"] == [0, 2, 1]  # 0.93 < 1.21 < 1.33


@pytest.mark.parametrize("strategy,gumbel,schedule", [
    ("top_prob", 0.0, "linear"), ("margin", 0.5, "cosine"), ("entropy", 0.0, "cosine"),
    ("random", 0.0, "linear"), ("margin", 0.0, "poly2")])
def test_exactly_k_per_step_with_ties(strategy, gumbel, schedule):
  length, vocab, mask_id, num_steps = 30, 4, 3, 10
  num_masked = [30, 17, 5, 1, 0]
  rng = np.random.default_rng(1)
  tokens = rng.integers(0, 3, size=(len(num_masked), length)).astype(np.int32)
  for b, m in enumerate(num_masked):
    tokens[b, rng.permutation(length)[:m]] = mask_id
  out = sampling.sample(_fixed_fn(np.zeros((length, vocab))), tokens, jax.random.key(3),
                        mask_id=mask_id, strategy=strategy, num_steps=num_steps,
                        schedule=schedule, gumbel=gumbel)
  counts = _counts_per_step(out.order, num_steps)
  for b, m in enumerate(num_masked):
    want = _expected_counts(m, num_steps, schedule)
    np.testing.assert_array_equal(counts[b], want, err_msg=f"row {b} ({m} masks)")
    assert out.steps[b] == np.count_nonzero(want)
  if strategy != "random" and gumbel == 0.0:
    # All scores tie: positions are taken left to right.
    for b in range(len(num_masked)):
      gen = np.asarray(out.order[b])[tokens[b] == mask_id]
      assert np.all(np.diff(gen) >= 0)


@pytest.mark.parametrize("strategy", ["top_prob", "margin", "entropy"])
def test_log_score_space_keeps_the_order_without_noise(strategy):
  length, vocab, mask_id = 12, 6, 5
  rng = np.random.default_rng(4)
  logits_LxV = rng.normal(size=(length, vocab)) * rng.uniform(0.3, 3.0, size=(length, 1))
  tokens = np.full((2, length), mask_id, np.int32)
  orders = [np.asarray(sampling.sample(
      _fixed_fn(logits_LxV), tokens, jax.random.key(0), mask_id=mask_id,
      strategy=strategy, num_steps=length, score_space=space).order)
            for space in ("prob", "log")]
  np.testing.assert_array_equal(orders[0], orders[1])


@pytest.mark.parametrize("gumbel_schedule,score_space", [
    ("constant", "prob"), ("annealed", "prob"), ("constant", "log"), ("annealed", "log")])
def test_gumbel_noise_scale_per_step(gumbel_schedule, score_space):
  """Three masks, three steps, one fixed per step. Position 0 is far more confident,
  so it goes first; at step 1 positions 1 and 2 (top prob 0.60 vs 0.55) compete under
  fresh noise: position 2 wins with probability sigmoid(-d / scale), where the
  Gumbel difference is logistic and scale = gumbel (constant) or gumbel * (1 - 1/3)
  (annealed at step 1 of 3), d the score gap in the chosen space."""
  gumbel, rows = 0.05, 4000
  top_L = np.array([0.999, 0.60, 0.55])
  probs = np.stack([top_L, 1 - top_L], -1)
  logits_LxV = np.concatenate([np.log(probs), np.zeros((3, 1))], -1)  # MASK = 2
  tokens = np.full((rows, 3), 2, np.int32)
  out = sampling.sample(_fixed_fn(logits_LxV), tokens, jax.random.key(7), mask_id=2,
                        strategy="top_prob", num_steps=3, gumbel=gumbel,
                        gumbel_schedule=gumbel_schedule, score_space=score_space)
  order = np.asarray(out.order)
  first = order[:, 0] == 0
  assert first.mean() > 0.99
  flipped = (order[first, 2] == 1).mean()
  score = np.log(top_L) if score_space == "log" else top_L
  scale = gumbel * (2.0 / 3.0 if gumbel_schedule == "annealed" else 1.0)
  want = 1.0 / (1.0 + np.exp((score[1] - score[2]) / scale))
  sd = math.sqrt(want * (1 - want) / first.sum())
  assert abs(flipped - want) < 4 * sd, (flipped, want)


def test_config_options_defaults_and_overrides():
  opts = sampling.config_options({"gumbel": 0.5, "num_steps": 20}, num_steps=None,
                                 score_space="log")
  assert opts["gumbel"] == 0.5 and opts["num_steps"] == 20 and opts["score_space"] == "log"
  assert opts["gumbel_schedule"] == "constant" and opts["remask"] is False
  assert set(opts) == set(sampling.CONFIG_OPTIONS)
  with pytest.raises(ValueError, match="unknown sampler options"):
    sampling.config_options({}, steps=3)
  # A config holds every adaptive option; only its k_mode's own one is passed on.
  config = dict(sampling.CONFIG_OPTIONS, k_mode="factor", factor=2.0)
  opts = sampling.config_options(config)
  assert opts["factor"] == 2.0 and opts["threshold"] is None
  assert opts["entropy_budget"] is None
  assert sampling.config_options({})["threshold"] is None
  assert sampling.config_options({"k_mode": "threshold"})["threshold"] == 0.9
  sampling.make_sampler(lambda p, t: t, mask_id=4, **opts)  # accepted
  # ... but an explicit override for another k_mode is kept, and then rejected.
  opts = sampling.config_options(config, threshold=0.5)
  with pytest.raises(ValueError, match="only used by k_mode='threshold'"):
    sampling.make_sampler(lambda p, t: t, mask_id=4, **opts)


@pytest.mark.parametrize("length", [20, 300])  # pairwise ranks / sorted ranks
def test_select_top_is_exact_with_ties_and_infinite_scores(length):
  rng = np.random.default_rng(9)
  batch = 64
  score = rng.integers(0, 4, size=(batch, length)).astype(np.float32)  # many ties
  score[rng.random((batch, length)) < 0.1] = -np.inf
  score[rng.random((batch, length)) < 0.05] = np.nan
  candidates = rng.random((batch, length)) < 0.7
  count = rng.integers(0, length + 3, size=batch).astype(np.int32)
  select_top = jax.jit(sampling._select_top)  # pylint: disable=protected-access
  got = np.asarray(select_top(score, candidates, count))
  for b in range(batch):
    cand = np.flatnonzero(candidates[b])
    neg = np.nan_to_num(-score[b, cand], nan=np.inf, posinf=np.inf)  # NaN, -inf last
    best = cand[np.lexsort((cand, neg))][:count[b]]  # score, then position
    want = np.zeros(length, bool)
    want[best] = True
    np.testing.assert_array_equal(got[b], want, err_msg=f"row {b}")
  # The same on a batch sharded over 8 devices, without gathering it.
  sharding = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), P("data"))
  args = [jax.device_put(x, sharding) for x in (score, candidates, count)]
  compiled = select_top.lower(*args).compile()
  assert "all-gather" not in compiled.as_text()
  np.testing.assert_array_equal(compiled(*args), got)


@pytest.mark.parametrize("strategy,remask,k_mode", [
    (s, False, "deterministic") for s in sampling.STRATEGIES] + [
    (s, True, "deterministic") for s in ORDERED] + [  # vanilla has no remask variant
    ("margin", False, "threshold"), ("top_prob", True, "threshold"),
    ("random", False, "factor"), ("margin", True, "factor"),
    ("entropy", False, "entropy_bounded"), ("margin", True, "entropy_bounded")])
def test_givens_kept_and_no_mask_left(strategy, remask, k_mode):
  length, vocab, mask_id = 20, 7, 6
  rng = np.random.default_rng(2)
  tokens = rng.integers(0, 6, size=(4, length)).astype(np.int32)
  masked = rng.random((4, length)) < 0.6
  masked[0] = True
  tokens[masked] = mask_id
  table = jnp.asarray(rng.normal(size=(vocab, vocab)), jnp.float32).at[:, mask_id].set(30.0)

  def logits_fn(tokens_BxL):  # depends on the input (neighbour to the left)
    return table[jnp.roll(tokens_BxL, 1, axis=1)]

  out = sampling.sample(logits_fn, tokens, jax.random.key(5), mask_id=mask_id,
                        strategy=strategy, num_steps=8, gumbel=0.5, temperature=1.0,
                        remask=remask, k_mode=k_mode)
  got = np.asarray(out.tokens)
  np.testing.assert_array_equal(got[~masked], tokens[~masked])
  assert not np.any(got == mask_id)
  order = np.asarray(out.order)
  assert np.all(order[~masked] == -1)
  assert np.all((order[masked] >= 0) & (order[masked] < 8))
  assert np.all(order.max(-1) < np.asarray(out.steps))


@pytest.mark.parametrize("strategy,k_mode", [("vanilla", "deterministic"),
                                             ("random", "binomial")])
def test_random_counts_follow_schedule_mean(strategy, k_mode):
  batch, length, mask_id = 1024, 16, 2
  num_steps = length
  tokens = np.full((batch, length), mask_id, np.int32)
  out = sampling.sample(_fixed_fn(np.zeros((length, 3))), tokens, jax.random.key(7),
                        mask_id=mask_id, strategy=strategy, num_steps=num_steps,
                        k_mode=k_mode)
  counts = _counts_per_step(out.order, num_steps)  # [B, T]
  # Linear schedule, T = L: each step unmasks one position on average.
  np.testing.assert_allclose(counts.mean(0)[:-1], 1.0, atol=0.2)
  # Given m_i masks before step i, the unmasked fraction is p_i = 1 / (T - i).
  before = length - np.concatenate([np.zeros((batch, 1)), np.cumsum(counts, -1)[:, :-1]], -1)
  for i in range(num_steps - 1):
    n, p = before[:, i].sum(), 1.0 / (num_steps - i)
    assert abs(counts[:, i].sum() / n - p) < 5 * math.sqrt(p * (1 - p) / n) + 1e-3, i
  assert np.all(counts.sum(-1) == length)
  assert len(np.unique(counts[:, 0])) > 1  # the counts really are random per row


def test_stops_early_when_all_decoded():
  length, mask_id, num_steps = 10, 3, 50
  calls = []

  def logits_fn(tokens_BxL):
    jax.debug.callback(lambda: calls.append(1))
    return jnp.zeros(tokens_BxL.shape + (4,))

  tokens = np.full((3, length), mask_id, np.int32)
  tokens[1, :4] = 0  # 6 masks
  tokens[2, :9] = 1  # 1 mask
  out = sampling.sample(logits_fn, tokens, jax.random.key(0), mask_id=mask_id,
                        strategy="margin", num_steps=num_steps)
  jax.block_until_ready(out)
  jax.effects_barrier()
  np.testing.assert_array_equal(out.steps, [10, 6, 1])  # one position per step
  assert len(calls) == 10 < num_steps  # the loop itself stopped after 10 forwards
  assert int(np.max(out.order)) == 9


def test_make_sampler_traces_once():
  traces = []
  mask_id = 4

  def apply_fn(params, tokens_BxL):
    traces.append(tokens_BxL.shape)
    return params["w"][tokens_BxL]

  params = {"w": jax.random.normal(jax.random.key(0), (5, 5))}
  fn = sampling.make_sampler(apply_fn, mask_id=mask_id, strategy="margin", num_steps=6,
                             gumbel=0.5)
  tokens = np.full((2, 8), mask_id, np.int32)
  first = fn(params, tokens, jax.random.key(0))
  n = len(traces)
  assert n >= 1
  tokens2 = tokens.copy()
  tokens2[:, 0] = 1
  for seed in range(3):
    out = fn(params, tokens2 if seed else tokens, jax.random.key(seed))
  params2 = {"w": params["w"] * 2.0}
  fn(params2, tokens, jax.random.key(9))
  assert len(traces) == n  # new keys, tokens and params: no retrace
  np.testing.assert_array_equal(fn(params, tokens, jax.random.key(0)).tokens, first.tokens)
  assert not np.any(np.asarray(out.tokens) == mask_id)
  fn(params, np.full((3, 8), mask_id, np.int32), jax.random.key(0))
  assert len(traces) > n  # a new shape traces again


def test_sample_inside_user_jit_matches_eager():
  mask_id = 4
  table = jax.random.normal(jax.random.key(1), (5, 5))
  fn = lambda t: table[t]  # noqa: E731
  tokens = jnp.full((3, 9), mask_id, jnp.int32).at[:, 0].set(2)
  kwargs = dict(mask_id=mask_id, strategy="entropy", num_steps=5, gumbel=0.5)
  eager = sampling.sample(fn, tokens, jax.random.key(2), **kwargs)
  jitted = jax.jit(lambda t, k: sampling.sample(fn, t, k, **kwargs))(tokens, jax.random.key(2))
  np.testing.assert_array_equal(eager.tokens, jitted.tokens)
  np.testing.assert_array_equal(eager.order, jitted.order)

  class Unhashable:  # defining __eq__ without __hash__: cannot be a jit static arg
    def __eq__(self, other):
      return self is other

    def __call__(self, t):
      return fn(t)

  other = sampling.sample(Unhashable(), tokens, jax.random.key(2), **kwargs)
  np.testing.assert_array_equal(other.tokens, eager.tokens)


def _mixing_fn(length, vocab, seed):
  """Per-row, input-dependent logits with exact arithmetic (sharding-proof)."""
  rng = np.random.default_rng(seed)
  pos_LxV = jnp.asarray(rng.normal(size=(length, vocab)), jnp.float32)
  mix_VxV = jnp.asarray(rng.integers(-3, 4, size=(vocab, vocab)), jnp.float32)

  def logits_fn(tokens_BxL):
    counts_BxV = jax.nn.one_hot(tokens_BxL, vocab).sum(1)
    return pos_LxV[None] + 0.25 * (counts_BxV @ mix_VxV)[:, None, :]

  return logits_fn


@pytest.mark.parametrize("options", [
    dict(strategy="margin", gumbel=0.5, temperature=1.0),
    dict(strategy="vanilla", temperature=0.7),
    dict(strategy="entropy", remask=True, gumbel=0.5, k_mode="binomial"),
    dict(strategy="margin", k_mode="threshold", threshold=0.5, temperature=1.0),
    dict(strategy="top_prob", k_mode="factor", factor=0.8, gumbel=0.5),
    dict(strategy="entropy", k_mode="entropy_bounded", entropy_budget=0.3, remask=True),
    dict(strategy="margin", block_length=4, gumbel=0.5, remask=True),
    dict(strategy="top_prob", block_length=6, k_mode="threshold", threshold=0.3),
    dict(strategy="random", temperature=1.0, top_k=3, top_p=0.9),
])
def test_sharded_batch_matches_single_device(options):
  devices = jax.devices()
  assert len(devices) == 8, "tests/conftest.py should give 8 virtual CPU devices"
  batch, length, vocab, mask_id = 16, 12, 6, 5
  rng = np.random.default_rng(4)
  tokens = rng.integers(0, 5, size=(batch, length)).astype(np.int32)
  tokens[rng.random((batch, length)) < 0.7] = mask_id
  logits_fn = _mixing_fn(length, vocab, 0)
  kwargs = dict(mask_id=mask_id, num_steps=6, **options)
  key = jax.random.key(11)
  sample_fn = jax.jit(lambda t, k: sampling.sample(logits_fn, t, k, **kwargs))
  single = sample_fn(jax.device_put(tokens, devices[0]), key)

  mesh = Mesh(np.array(devices), ("data",))
  sharding = NamedSharding(mesh, P("data"))
  tokens_sharded = jax.device_put(tokens, sharding)
  compiled = sample_fn.lower(tokens_sharded, key).compile()
  hlo = compiled.as_text()
  assert "all-gather" not in hlo and "all-to-all" not in hlo  # no gathering of the batch
  sharded = compiled(tokens_sharded, key)
  for name in ("tokens", "order", "steps"):
    np.testing.assert_array_equal(getattr(sharded, name), getattr(single, name), err_msg=name)
  assert sharded.tokens.sharding.is_equivalent_to(sharding, 2)
  if options["strategy"] == "margin":  # the same through make_sampler
    fn = sampling.make_sampler(lambda p, t: logits_fn(t) * p, **kwargs)
    via_sampler = fn(jnp.float32(1.0), tokens_sharded, key)
    np.testing.assert_array_equal(via_sampler.tokens, single.tokens)
    np.testing.assert_array_equal(via_sampler.order, single.order)
    assert via_sampler.tokens.sharding.is_equivalent_to(sharding, 2)


@pytest.mark.parametrize("strategy,temperature", [("random", 1.0), ("margin", 0.5),
                                                  ("vanilla", 1.0), ("top_prob", 0.0)])
def test_temperature_sampling_frequencies(strategy, temperature):
  batch, length, mask_id = 64, 64, 4
  probs = np.array([0.1, 0.2, 0.3, 0.4])
  logits_fn = _fixed_fn(np.tile(np.append(np.log(probs), 20.0), (length, 1)))
  tokens = np.full((batch, length), mask_id, np.int32)
  out = sampling.sample(logits_fn, tokens, jax.random.key(8), mask_id=mask_id,
                        strategy=strategy, num_steps=3, temperature=temperature)
  freq = np.bincount(np.asarray(out.tokens).ravel(), minlength=5) / tokens.size
  if temperature == 0.0:
    want = np.eye(4)[3]  # argmax everywhere
  else:  # softmax(log(p) / temperature)
    want = probs ** (1 / temperature) / np.sum(probs ** (1 / temperature))
  assert freq[mask_id] == 0
  np.testing.assert_allclose(freq[:4], want, atol=0.03)  # ~4 standard errors


def _misleading_fn(tokens_BxL):
  """Position 1 predicts 0 (confidently, wrongly) until position 2 is decoded, then 1."""
  mask_id, big = 3, 10.0
  batch = tokens_BxL.shape[0]
  pos2_known_B = tokens_BxL[:, 2] != mask_id
  logits1_BxV = jnp.where(pos2_known_B[:, None], jnp.array([0.0, big, 0.0, 0.0]),
                          jnp.array([big, 0.0, 0.0, 0.0]))
  logits0_BxV = jnp.broadcast_to(jnp.array([0.0, 0.0, 1.0, 0.0]), (batch, 4))  # unsure
  logits2_BxV = jnp.broadcast_to(jnp.array([0.0, 0.0, 3.0, 0.0]), (batch, 4))  # fairly sure
  return jnp.stack([logits0_BxV, logits1_BxV, logits2_BxV], axis=1)


@pytest.mark.parametrize("strategy", ["top_prob", "margin"])
def test_remask_fixes_wrong_early_prediction(strategy):
  tokens = np.full((2, 3), 3, np.int32)
  kwargs = dict(mask_id=3, strategy=strategy, num_steps=3)
  plain = sampling.sample(_misleading_fn, tokens, jax.random.key(0), **kwargs)
  np.testing.assert_array_equal(plain.order, [[2, 0, 1]] * 2)
  np.testing.assert_array_equal(plain.tokens, [[2, 0, 2]] * 2)  # stuck with the error
  fixed = sampling.sample(_misleading_fn, tokens, jax.random.key(0), remask=True, **kwargs)
  np.testing.assert_array_equal(fixed.tokens, [[2, 1, 2]] * 2)
  np.testing.assert_array_equal(fixed.order, [[2, 2, 1]] * 2)  # position 1 re-fixed last


def test_ar_greedy_follows_rule_and_keeps_prompt():
  vocab, length = 7, 10

  def logits_fn(tokens_BxL):  # causal: next = (x[i] + x[i-1] + 1) mod V
    prev_BxL = jnp.pad(tokens_BxL, ((0, 0), (1, 0)))[:, :-1]
    return jax.nn.one_hot((tokens_BxL + prev_BxL + 1) % vocab, vocab) * 5.0

  rng = np.random.default_rng(6)
  tokens = rng.integers(0, vocab, size=(4, length)).astype(np.int32)
  prompt_len = np.array([1, 3, 5, 10], np.int32)
  out = np.asarray(sampling.ar_greedy(logits_fn, tokens, prompt_len))
  want = tokens.copy()
  for b in range(4):
    for j in range(prompt_len[b], length):
      prev = want[b, j - 2] if j >= 2 else 0
      want[b, j] = (want[b, j - 1] + prev + 1) % vocab
  np.testing.assert_array_equal(out, want)
  np.testing.assert_array_equal(out[3], tokens[3])


def test_bad_inputs_raise_value_error():
  fn = _fixed_fn(np.zeros((4, 5)))
  tokens = np.full((2, 4), 4, np.int32)
  key = jax.random.key(0)
  cases = [
      (dict(tokens=tokens.astype(np.float32)), "integer"),
      (dict(tokens=tokens[0]), "rank 2"),
      (dict(tokens=tokens[None]), "rank 2"),
      (dict(strategy="top-prob"), "unknown strategy"),
      (dict(num_steps=0), "num_steps"),
      (dict(num_steps=2.5), "num_steps"),
      (dict(tokens=np.zeros((2, 4), np.int32)), "no MASK"),
      (dict(mask_id=7, tokens=np.full((2, 4), 7, np.int32)), "out of range"),
      (dict(mask_id=-1), "mask_id"),
      (dict(k_mode="poisson"), "k_mode"),
      (dict(temperature=-1.0), "temperature"),
      (dict(gumbel=float("nan")), "gumbel"),
      (dict(schedule="quadratic"), "schedule"),
      (dict(strategy="vanilla", remask=True), "remask"),
      (dict(key=np.zeros(3, np.uint32)), "key"),
      (dict(gumbel_schedule="linear"), "gumbel_schedule"),
      (dict(score_space="logit"), "score_space"),
      (dict(k_mode="threshold", threshold=0.0), "threshold"),
      (dict(k_mode="threshold", threshold=1.5), "threshold"),
      (dict(k_mode="threshold", threshold=float("nan")), "threshold"),
      (dict(k_mode="factor", factor=0.0), "factor"),
      (dict(k_mode="factor", factor=-1.0), "factor"),
      (dict(k_mode="entropy_bounded", entropy_budget=-0.1), "entropy_budget"),
      (dict(k_mode="entropy_bounded", entropy_budget="0.1"), "entropy_budget"),
      (dict(threshold=0.9), "only used by k_mode='threshold'"),
      (dict(k_mode="factor", threshold=0.9), "only used by k_mode='threshold'"),
      (dict(k_mode="threshold", factor=1.0), "only used by k_mode='factor'"),
      (dict(k_mode="binomial", entropy_budget=0.1), "only used by k_mode='entropy_bounded'"),
      (dict(strategy="vanilla", k_mode="threshold"), "ordering strategy"),
      (dict(block_length=3), "does not divide the sequence length 4"),
      (dict(block_length=8), "does not divide"),
      (dict(block_length=-2), "block_length"),
      (dict(block_length=2.0), "block_length"),
      (dict(block_length=1, num_steps=6), "multiple of the number of blocks 4"),
      (dict(top_k=-1, temperature=1.0), "top_k"),
      (dict(top_k=2.0, temperature=1.0), "top_k"),
      (dict(top_p=0.0, temperature=1.0), "top_p"),
      (dict(top_p=1.5, temperature=1.0), "top_p"),
      (dict(top_k=3), "need temperature > 0"),
      (dict(top_p=0.9), "need temperature > 0"),
  ]
  for overrides, pattern in cases:
    args = dict(tokens=tokens, key=key, mask_id=4, strategy="margin", num_steps=4)
    args.update(overrides)
    with pytest.raises(ValueError, match=pattern):
      sampling.sample(fn, args.pop("tokens"), args.pop("key"), **args)
  # Under the user's jit: the static checks still give ValueErrors.
  with pytest.raises(ValueError, match="unknown strategy"):
    jax.jit(lambda t: sampling.sample(fn, t, key, mask_id=4, strategy="best"))(tokens)
  with pytest.raises(ValueError, match="out of range"):
    jax.jit(lambda t: sampling.sample(fn, t, key, mask_id=9))(tokens)
  with pytest.raises(ValueError, match="unknown sampler options"):
    sampling.make_sampler(lambda p, t: fn(t), mask_id=4, steps=3)
  with pytest.raises(ValueError, match="mask_id"):
    sampling.make_sampler(lambda p, t: fn(t), strategy="margin")
  with pytest.raises(ValueError, match="only used by k_mode='factor'"):
    sampling.make_sampler(lambda p, t: fn(t), mask_id=4, factor=2.0)
  with pytest.raises(ValueError, match="threshold"):
    sampling.make_sampler(lambda p, t: fn(t), mask_id=4, k_mode="threshold", threshold=2)
  blocked = sampling.make_sampler(lambda p, t: fn(t), mask_id=4, num_steps=4,
                                  block_length=3)
  with pytest.raises(ValueError, match="does not divide"):
    blocked(None, tokens, key)
  sampler = sampling.make_sampler(lambda p, t: fn(t), mask_id=4)
  with pytest.raises(ValueError, match="no MASK"):
    sampler(None, np.zeros((2, 4), np.int32), key)
  with pytest.raises(ValueError, match="prompt_len"):
    sampling.ar_greedy(fn, tokens, np.array([0, 2], np.int32))
  with pytest.raises(ValueError, match="prompt_len"):
    sampling.ar_greedy(fn, tokens, np.array([2], np.int32))
  with pytest.raises(ValueError, match="schedule"):
    sampling.sample(fn, tokens, key, mask_id=4, schedule=schedules.Schedule)


# ----------------------------------------------------------------------------------
# Adaptive k_modes: threshold, factor, entropy_bounded.


def _np_probs(logits_xV, mask_id):
  logits = np.asarray(logits_xV, np.float64).copy()
  logits[..., mask_id] = -np.inf
  p = np.exp(logits - logits.max(-1, keepdims=True))
  return p / p.sum(-1, keepdims=True)


def _np_strategy_score(p_xV, strategy):
  top2 = -np.sort(-p_xV, axis=-1)[..., :2]
  if strategy == "top_prob":
    return top2[..., 0]
  if strategy == "margin":
    return top2[..., 0] - top2[..., 1]
  if strategy == "entropy":
    return np.sum(np.where(p_xV > 0, p_xV * np.log(np.where(p_xV > 0, p_xV, 1)), 0), -1)
  raise ValueError(strategy)


def _simulate_adaptive(p_LxV, masked_L, *, strategy, k_mode, value, num_steps):
  """Reference decode of one row under input-independent logits (argmax values)."""
  conf = p_LxV.max(-1)
  ent = -np.sum(np.where(p_LxV > 0, p_LxV * np.log(np.where(p_LxV > 0, p_LxV, 1)), 0), -1)
  score = _np_strategy_score(p_LxV, strategy)
  masked = masked_L.copy()
  order = np.full(masked.shape, -1)
  for step in range(num_steps):
    cand = np.flatnonzero(masked)
    if cand.size == 0:
      break
    by_score = cand[np.lexsort((cand, -score[cand]))]
    if k_mode == "threshold":
      sel = cand[conf[cand] >= value]
    elif k_mode == "factor":
      by_conf = cand[np.lexsort((cand, -conf[cand]))]
      n = np.arange(1, by_conf.size + 1)
      sel = by_conf[(n + 1) * (1 - conf[by_conf]) < value]
    else:
      e = ent[by_score]
      sel = by_score[np.cumsum(e) - np.maximum.accumulate(e) <= value]
    if sel.size == 0:
      sel = by_score[:1]
    if step == num_steps - 1:
      sel = cand
    order[sel] = step
    masked[sel] = False
  return order


def _table_fn(logits_BxLxV):
  table = jnp.asarray(logits_BxLxV, jnp.float32)
  return lambda tokens_BxL: table


@pytest.mark.parametrize("strategy", ["top_prob", "margin", "entropy"])
@pytest.mark.parametrize("k_mode,value", [("threshold", 0.6), ("threshold", 0.97),
                                          ("factor", 1.0), ("factor", 0.3),
                                          ("entropy_bounded", 0.5),
                                          ("entropy_bounded", 0.0)])
def test_adaptive_k_modes_fix_the_positions_their_rule_defines(strategy, k_mode, value):
  batch, length, vocab, mask_id, num_steps = 6, 24, 6, 5, 30
  rng = np.random.default_rng(12)
  logits = rng.normal(size=(batch, length, vocab)) * rng.uniform(0.2, 4.0, (batch, length, 1))
  logits[..., mask_id] = 30.0  # ignored
  tokens = rng.integers(0, 5, size=(batch, length)).astype(np.int32)
  masked = rng.random((batch, length)) < 0.75
  masked[0] = True
  tokens[masked] = mask_id
  option = sampling.ADAPTIVE_K_MODES[k_mode]
  out = sampling.sample(_table_fn(logits), tokens, jax.random.key(0), mask_id=mask_id,
                        strategy=strategy, num_steps=num_steps, k_mode=k_mode,
                        **{option: value})
  p = _np_probs(logits, mask_id)
  for b in range(batch):
    want = _simulate_adaptive(p[b], masked[b], strategy=strategy, k_mode=k_mode,
                              value=value, num_steps=num_steps)
    np.testing.assert_array_equal(out.order[b], want, err_msg=f"row {b}")
    assert out.steps[b] == want.max() + 1
  np.testing.assert_array_equal(out.tokens, np.where(masked, p.argmax(-1), tokens))


def test_threshold_ties_fallback_and_last_step():
  """tau = 0.5: a 50/50 position (p exactly 0.5) is fixed; positions below tau are
  fixed one per step, best strategy score first; the last step fixes all that is
  left."""
  mask_id = 3
  probs = np.array([[0.5, 0.5, 0.0],  # conf 0.5 = tau: fixed at step 0
                    [0.9, 0.1, 0.0],  # fixed at step 0
                    [0.4, 0.3, 0.3],  # below: top 0.40, margin 0.10
                    [0.45, 0.45, 0.1],  # below: top 0.45, margin 0.00
                    [0.42, 0.3, 0.28]])  # below: top 0.42, margin 0.12
  logits = np.concatenate([np.log(probs + 1e-30), np.zeros((5, 1))], -1)
  logits[0, :2] = 0.0  # exactly 0.5 each
  tokens = np.full((1, 5), mask_id, np.int32)
  run = lambda **kw: np.asarray(sampling.sample(  # noqa: E731
      _fixed_fn(logits), tokens, jax.random.key(0), mask_id=mask_id, k_mode="threshold",
      **kw).order[0])
  np.testing.assert_array_equal(run(strategy="top_prob", threshold=0.5, num_steps=10),
                                [0, 0, 3, 1, 2])
  np.testing.assert_array_equal(run(strategy="margin", threshold=0.5, num_steps=10),
                                [0, 0, 2, 3, 1])
  np.testing.assert_array_equal(run(strategy="top_prob", threshold=0.5, num_steps=2),
                                [0, 0, 1, 1, 1])
  # None qualifies at tau = 0.95: exactly one (the best score) per step.
  np.testing.assert_array_equal(run(strategy="top_prob", threshold=0.95, num_steps=10),
                                [1, 0, 4, 2, 3])


def test_factor_rule_with_tied_confidences():
  """c = 0.9, 0.75, 0.75, 0.6 with f = 0.9: n = 1: 2 x 0.1 = 0.2 < f; n = 2: 3 x 0.25
  = 0.75 < f; n = 3: 4 x 0.25 = 1.0 >= f. So two: 0.9 and the first 0.75 (the tie goes
  to the lower position), whatever the strategy's order."""
  mask_id = 2
  conf = np.array([0.6, 0.75, 0.9, 0.75])
  logits = np.stack([np.log(conf), np.log(1 - conf), np.zeros(4)], -1)
  tokens = np.full((1, 4), mask_id, np.int32)
  for strategy in ("top_prob", "margin", "random"):
    out = sampling.sample(_fixed_fn(logits), tokens, jax.random.key(1), mask_id=mask_id,
                          strategy=strategy, k_mode="factor", factor=0.9, num_steps=10)
    assert list(np.flatnonzero(np.asarray(out.order[0]) == 0)) == [1, 2], strategy
  # A large factor fixes everything at once; a tiny one one position per step.
  out = sampling.sample(_fixed_fn(logits), tokens, jax.random.key(1), mask_id=mask_id,
                        strategy="margin", k_mode="factor", factor=100.0)
  np.testing.assert_array_equal(out.order[0], [0, 0, 0, 0])
  out = sampling.sample(_fixed_fn(logits), tokens, jax.random.key(1), mask_id=mask_id,
                        strategy="top_prob", k_mode="factor", factor=1e-3)
  np.testing.assert_array_equal(out.order[0], [3, 1, 0, 2])


def test_entropy_bounded_prefix_in_strategy_order():
  """Entropies (nats) H = [0.1, 0.2, 0.3, 0.65] ordered by -entropy: prefix sums
  minus max: 0, 0.1, 0.3, 0.6. gamma = 0.35 fixes three; gamma = 0 one per step."""
  mask_id = 2

  def two_way(h):  # p with binary entropy h (nats)
    from scipy.optimize import brentq  # pylint: disable=g-import-not-at-top
    q = brentq(lambda q: -q * np.log(q) - (1 - q) * np.log(1 - q) - h, 1e-12, 0.5)
    return np.log([1 - q, q])

  ent = np.array([0.3, 0.1, 0.65, 0.2])
  logits = np.stack([np.append(two_way(h), 0.0) for h in ent])
  tokens = np.full((1, 4), mask_id, np.int32)
  out = sampling.sample(_fixed_fn(logits), tokens, jax.random.key(0), mask_id=mask_id,
                        strategy="entropy", k_mode="entropy_bounded", entropy_budget=0.35,
                        num_steps=10)
  np.testing.assert_array_equal(out.order[0], [0, 0, 1, 0])
  out = sampling.sample(_fixed_fn(logits), tokens, jax.random.key(0), mask_id=mask_id,
                        strategy="entropy", k_mode="entropy_bounded", entropy_budget=0.0,
                        num_steps=10)
  np.testing.assert_array_equal(out.order[0], [2, 0, 3, 1])


@pytest.mark.parametrize("length", [20, 300])  # pairwise / sorted prefixes
def test_prefix_sum_max_matches_numpy(length):
  rng = np.random.default_rng(3)
  batch = 16
  key = rng.integers(0, 6, size=(batch, length)).astype(np.float32)  # ties
  key[rng.random((batch, length)) < 0.2] = np.inf
  values = rng.random((batch, length)).astype(np.float32)
  total, most = jax.jit(sampling._prefix_sum_max)(key, values)  # pylint: disable=protected-access
  for b in range(batch):
    perm = np.lexsort((np.arange(length), key[b]))
    want_total, want_most = np.empty(length), np.empty(length)
    want_total[perm] = np.cumsum(values[b, perm])
    want_most[perm] = np.maximum.accumulate(values[b, perm])
    np.testing.assert_allclose(total[b], want_total, rtol=1e-5)
    np.testing.assert_array_equal(most[b], want_most)


def test_threshold_uses_the_written_value_probability():
  """With temperature 1 a position whose p is (0.7, 0.3) is fixed at the first step
  (tau = 0.6) exactly when the sampled value is the likely one."""
  rows, mask_id = 2000, 2
  logits = np.array([[np.log(0.7), np.log(0.3), 0.0],
                     [np.log(0.99), np.log(0.01), 0.0]])  # always qualifies
  tokens = np.full((rows, 2), mask_id, np.int32)
  out = sampling.sample(_fixed_fn(logits), tokens, jax.random.key(4), mask_id=mask_id,
                        strategy="top_prob", k_mode="threshold", threshold=0.6,
                        num_steps=5, temperature=1.0)
  order, values = np.asarray(out.order), np.asarray(out.tokens)
  at_first = order[:, 0] == 0  # by the rule only (a fallback would take position 1)
  assert np.all(values[at_first, 0] == 0)
  assert abs(at_first.mean() - 0.7) < 0.04  # P(the first draw is the likely value)


def test_strategy_options_for_vanilla():
  opts = sampling.config_options({"k_mode": "threshold", "remask": True})
  van = sampling.strategy_options("vanilla", opts)
  assert van["k_mode"] == "deterministic" and van["threshold"] is None and not van["remask"]
  assert sampling.strategy_options("margin", opts) == opts
  sampling.make_sampler(lambda p, t: t, mask_id=4, strategy="vanilla", **van)


# ----------------------------------------------------------------------------------
# Semi-autoregressive blocks.


@pytest.mark.parametrize("strategy,k_mode", [("top_prob", "deterministic"),
                                             ("margin", "binomial"),
                                             ("vanilla", "deterministic"),
                                             ("entropy", "threshold"),
                                             ("margin", "entropy_bounded")])
def test_blocks_decode_left_to_right_with_a_schedule_per_block(strategy, k_mode):
  batch, length, block, mask_id, num_steps = 5, 12, 4, 3, 6  # 3 blocks x 2 steps
  rng = np.random.default_rng(8)
  # Later positions are far more confident: without blocks they would go first.
  logits = rng.normal(size=(length, 4)) + np.linspace(0, 8, length)[:, None] * np.eye(4)[0]
  tokens = rng.integers(0, 3, size=(batch, length)).astype(np.int32)
  masked = rng.random((batch, length)) < 0.6
  masked[0] = True
  masked[1, 4:8] = False  # block 1 all given: skipped
  tokens[masked] = mask_id
  out = sampling.sample(_fixed_fn(logits), tokens, jax.random.key(2), mask_id=mask_id,
                        strategy=strategy, k_mode=k_mode, num_steps=num_steps,
                        block_length=block)
  order = np.asarray(out.order)
  assert not np.any(np.asarray(out.tokens) == mask_id)
  for b in range(batch):
    blocks = [order[b, j * block:(j + 1) * block][masked[b, j * block:(j + 1) * block]]
              for j in range(length // block)]
    blocks = [o for o in blocks if o.size]
    for earlier, later in zip(blocks, blocks[1:]):
      assert earlier.max() < later.min(), (b, order[b])  # a block at a time
    for o in blocks:  # at most S = 2 steps per block, consecutive
      assert o.max() - o.min() <= 1, (b, order[b])
    assert out.steps[b] == order[b].max() + 1
  if k_mode == "deterministic" and strategy != "vanilla":
    # K schedule within each block: m masks -> round(m / 2) (>= 1), then the rest.
    for b in range(batch):
      for j in range(length // block):
        o = order[b, j * block:(j + 1) * block][masked[b, j * block:(j + 1) * block]]
        if o.size:
          counts = np.bincount(o - o.min(), minlength=2)
          np.testing.assert_array_equal(counts, _expected_counts(o.size, 2))


def test_block_length_equal_to_length_is_no_blocks():
  length, mask_id = 12, 5
  logits_fn = _mixing_fn(length, 6, 1)
  rng = np.random.default_rng(3)
  tokens = rng.integers(0, 5, size=(4, length)).astype(np.int32)
  tokens[rng.random((4, length)) < 0.7] = mask_id
  kwargs = dict(mask_id=mask_id, strategy="margin", num_steps=5, gumbel=0.5,
                gumbel_schedule="annealed", temperature=1.0, remask=True)
  a = sampling.sample(logits_fn, tokens, jax.random.key(1), **kwargs)
  b = sampling.sample(logits_fn, tokens, jax.random.key(1), block_length=length, **kwargs)
  for name in ("tokens", "order", "steps"):
    np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_blocks_with_remask_stay_in_the_block():
  tokens = np.full((2, 6), 3, np.int32)
  logits = np.tile(np.array([[0.0, 2.0, 1.0, 0.0]]), (6, 1))
  out = sampling.sample(_fixed_fn(logits), tokens, jax.random.key(0), mask_id=3,
                        strategy="top_prob", num_steps=6, block_length=2, remask=True)
  np.testing.assert_array_equal(out.order, [[0, 1, 2, 3, 4, 5]] * 2)
  np.testing.assert_array_equal(out.tokens, np.ones((2, 6)))


# ----------------------------------------------------------------------------------
# Reused logits after steps that fix nothing; SampleOutput.nfe.


@pytest.mark.parametrize("strategy,k_mode,block_length", [
    ("vanilla", "deterministic", 0), ("margin", "binomial", 0),
    ("vanilla", "deterministic", 4), ("top_prob", "binomial", 4)])
def test_forwards_after_steps_that_fix_nothing_are_skipped(strategy, k_mode, block_length):
  batch, length, mask_id, num_steps = 4, 8, 3, 40  # p_i = 1 / (40 - i): mostly nothing
  calls = []
  table = _mixing_fn(length, 4, 2)

  def logits_fn(tokens_BxL):
    jax.debug.callback(lambda: calls.append(1))
    return table(tokens_BxL)

  rng = np.random.default_rng(5)
  tokens = rng.integers(0, 3, size=(batch, length)).astype(np.int32)
  tokens[rng.random((batch, length)) < 0.7] = mask_id
  tokens[0] = mask_id
  kwargs = dict(mask_id=mask_id, strategy=strategy, num_steps=num_steps, k_mode=k_mode,
                temperature=1.0, block_length=block_length)
  out = sampling.sample(logits_fn, tokens, jax.random.key(3), **kwargs)
  jax.block_until_ready(out)
  jax.effects_barrier()
  order, steps, nfe = np.asarray(out.order), np.asarray(out.steps), np.asarray(out.nfe)
  needed = set()  # global steps at which some row needed a forward
  for b in range(batch):
    # A forward at the row's first step and after each step that fixed something
    # (the row's last step fixes its last MASK).
    fixing = np.unique(order[b][order[b] >= 0])
    assert nfe[b] == len(fixing), b
    needed |= {0} | {i + 1 for i in fixing if i + 1 < steps[b]}
  assert np.all(nfe <= steps) and np.any(nfe < steps)
  assert len(calls) == len(needed) < steps.max()  # the model really was called less
  # Same results as calling the model at every step.
  full = sampling._sample_loop(  # pylint: disable=protected-access
      table, jnp.asarray(tokens), jax.random.key(3), schedule=schedules.get_schedule(
          "linear"), gumbel=0.0, remask=False, reuse_logits=False, **kwargs)
  for name in ("tokens", "order", "steps"):
    np.testing.assert_array_equal(getattr(out, name), getattr(full, name), err_msg=name)
  np.testing.assert_array_equal(full.nfe, steps)


@pytest.mark.parametrize("options", [dict(strategy="margin"),
                                     dict(strategy="top_prob", k_mode="threshold"),
                                     dict(strategy="entropy", remask=True)])
def test_nfe_equals_steps_when_every_step_fixes(options):
  tokens = np.full((3, 10), 3, np.int32)
  tokens[1, :4] = 0
  out = sampling.sample(_mixing_fn(10, 4, 0), tokens, jax.random.key(0), mask_id=3,
                        num_steps=7, **options)
  np.testing.assert_array_equal(out.nfe, out.steps)
  assert out.nfe.dtype == jnp.int32 and out.nfe.shape == (3,)


# ----------------------------------------------------------------------------------
# Value sampling: top-k, top-p, float32 Gumbel noise.


def _value_frequencies(logits_V, *, rows=64, length=1024, seed=8, **options):
  """Frequencies of the written values over rows x length positions (one step)."""
  vocab = len(logits_V) + 1  # + MASK
  mask_id = vocab - 1
  table = np.tile(np.append(np.asarray(logits_V, np.float64), 0.0), (length, 1))
  tokens = np.full((rows, length), mask_id, np.int32)
  out = sampling.sample(_fixed_fn(table), tokens, jax.random.key(seed), mask_id=mask_id,
                        strategy="random", num_steps=1, **options)
  got = np.asarray(out.tokens).ravel()
  assert got.min() >= 0 and got.max() < mask_id  # never MASK, never out of range
  return np.bincount(got, minlength=vocab)[:mask_id] / got.size, got.size


def _assert_frequencies(freq, want, n, sds=5.0):
  want = np.asarray(want, np.float64)
  sd = np.sqrt(want * (1 - want) / n) + 1e-12
  assert np.all(np.abs(freq - want) <= sds * sd + 1e-9), (freq, want)


@pytest.mark.parametrize("options,want", [
    (dict(top_k=2), [0, 0, 3 / 7, 4 / 7]),
    (dict(top_p=0.5), [0, 0, 3 / 7, 4 / 7]),  # 0.4 + 0.3 reach 0.5
    (dict(top_p=0.75), [0, 2 / 9, 3 / 9, 4 / 9]),  # 0.4 + 0.3 < 0.75: + 0.2
    (dict(top_p=0.35), [0, 0, 0, 1]),  # 0.4 alone reaches it
    (dict(top_k=3, top_p=0.7), [0, 0, 3 / 7, 4 / 7]),  # p after top-3: .44, .33, .22
    (dict(top_k=1), [0, 0, 0, 1]),
    (dict(top_k=9), [0.1, 0.2, 0.3, 0.4]),  # k >= V: all
    (dict(top_p=1.0), [0.1, 0.2, 0.3, 0.4]),
])
def test_top_k_top_p_sampling_frequencies(options, want):
  freq, n = _value_frequencies(np.log([0.1, 0.2, 0.3, 0.4]), rows=16, length=1024,
                               temperature=1.0, **options)
  _assert_frequencies(freq, want, n)


def test_top_p_applies_to_the_tempered_distribution():
  # temperature 0.5: p ~ p^2 = (1, 4, 9, 16) / 30; top_p 0.6: 16/30 < 0.6 -> + 9/30.
  freq, n = _value_frequencies(np.log([0.1, 0.2, 0.3, 0.4]), rows=16, temperature=0.5,
                               top_p=0.6)
  _assert_frequencies(freq, [0, 0, 9 / 25, 16 / 25], n)


@pytest.mark.parametrize("vocab", [7, 40])  # pairwise ranks / sorts over the vocabulary
def test_truncate_keeps_exactly_the_top_k_and_the_nucleus(vocab):
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 5, vocab)).astype(np.float32) * 2
  logits[0, 0, :4] = 1.5  # ties: lower token ids first
  logits[..., -1] = -np.inf  # a MASK column
  for top_k, top_p in [(3, 1.0), (0, 0.8), (5, 0.5), (1, 0.99)]:
    for pairwise_max in (0, 64):
      got = np.asarray(sampling._truncate(  # pylint: disable=protected-access
          jnp.asarray(logits), top_k=top_k, top_p=top_p, pairwise_max=pairwise_max))
      for idx in np.ndindex(3, 5):
        row = logits[idx].astype(np.float64)
        order = np.lexsort((np.arange(vocab), -row))
        keep = np.zeros(vocab, bool)
        keep[order[:top_k or vocab]] = True
        p = np.where(keep, np.exp(row - row.max()), 0.0)
        p /= p.sum()
        ahead = np.cumsum(p[order]) - p[order]
        keep[order[ahead >= top_p]] = False
        np.testing.assert_array_equal(np.isfinite(got[idx]), keep & np.isfinite(row),
                                      err_msg=f"{idx} k={top_k} p={top_p}")
        np.testing.assert_array_equal(got[idx][keep], row[keep].astype(np.float32))


def test_gumbel_noise_is_finite_at_the_extreme_uniforms():
  tiny = np.finfo(np.float32).tiny
  u = jnp.asarray([tiny, 2.0 ** -23, 0.5, 1.0 - 2.0 ** -23], jnp.float32)
  g = np.asarray(sampling._gumbel(u))  # pylint: disable=protected-access
  assert np.all(np.isfinite(g))
  np.testing.assert_allclose(g, [-np.log(-np.log(np.float64(tiny))), -np.log(23 * np.log(2)),
                                 -np.log(np.log(2)), 15.942385], rtol=1e-5)
  # The uniforms the loop draws never reach 1: 1 - u >= 2^-23, so -log u > 0.
  draws = jax.random.uniform(jax.random.key(0), (1 << 22,), minval=tiny, maxval=1.0)
  assert float(draws.max()) <= 1.0 - 2.0 ** -23 and float(draws.min()) >= tiny
  noise = sampling._gumbel(draws)  # pylint: disable=protected-access
  assert bool(jnp.all(jnp.isfinite(noise)))
  # Quantiles of the standard Gumbel: P(G <= x) = exp(-exp(-x)).
  for x in (-1.0, 0.0, 1.0, 3.0, 6.0):
    emp = float(jnp.mean(noise <= x))
    want = np.exp(-np.exp(-x))
    assert abs(emp - want) < 5 * np.sqrt(want * (1 - want) / draws.size) + 1e-6, x


@pytest.mark.parametrize("logits,temperature", [
    ([0.0, -6.9, -6.9], 1.0),  # peaked: p ~ (0.998, 0.001, 0.001)
    ([0.0, -10.0], 1.0),  # very peaked: p(1) = 4.5e-5 (the Gumbel upper tail)
    ([0.0, -1.0], 0.1),  # low temperature: p(1) = e^-10 / (1 + e^-10)
    (list(np.zeros(50)), 1.0),  # flat over 50 tokens
    (list(np.linspace(0, 1, 30)), 100.0),  # nearly flat: high temperature
])
def test_gumbel_max_frequencies_on_peaked_and_flat_distributions(logits, temperature):
  z = np.asarray(logits, np.float64) / temperature
  want = np.exp(z - z.max())
  want /= want.sum()
  freq, n = _value_frequencies(logits, rows=64, length=4096, seed=3,
                               temperature=temperature)
  _assert_frequencies(freq, want, n)


def test_gumbel_max_far_tail_matches_exactly_computed_probability():
  """Gap 12 (p = 6.1e-6): the tail beyond ~12 of a Gumbel is where float32 uniforms
  near 1 are coarse; 2^24 draws still match the exact probability."""
  tiny = np.finfo(np.float32).tiny
  key0, key1 = jax.random.split(jax.random.key(5))
  n = 1 << 24

  @jax.jit
  def wins(k0, k1):
    g = lambda k: sampling._gumbel(jax.random.uniform(k, (n,), minval=tiny))  # noqa: E731
    return jnp.sum(g(k1) - 12.0 > g(k0))

  count = int(wins(key0, key1))
  want = n / (1 + np.exp(12.0))
  assert abs(count - want) < 5 * np.sqrt(want), (count, want)


def _stream_case(seed=0, rows=11, length=12, vocab=6):
  rng = np.random.default_rng(seed)
  mask_id = vocab - 1
  tokens = rng.integers(0, mask_id, size=(rows, length)).astype(np.int32)
  tokens[rng.random((rows, length)) < rng.uniform(0.2, 0.9, (rows, 1))] = mask_id
  tokens[3] = rng.integers(0, mask_id, length)  # a row with nothing to generate
  return jnp.asarray(tokens), mask_id, _mixing_fn(length, vocab, seed + 1)


@pytest.mark.parametrize("options", [
    dict(strategy="margin"),
    dict(strategy="top_prob", k_mode="threshold", threshold=0.4),
    dict(strategy="entropy", k_mode="entropy_bounded", entropy_budget=0.5),
    dict(strategy="margin", k_mode="factor", factor=1.0),
    dict(strategy="margin", block_length=4, num_steps=12),
    dict(strategy="entropy", remask=True, num_steps=6),
])
@pytest.mark.parametrize("slots", [1, 4, 11, 16])
def test_streaming_equals_the_whole_batch_without_noise(options, slots):
  tokens, mask_id, logits_fn = _stream_case()
  kwargs = dict(mask_id=mask_id, num_steps=10)
  kwargs.update(options)
  key = jax.random.key(0)
  whole = sampling.sample(logits_fn, tokens, key, **kwargs)
  stream = sampling.sample(logits_fn, tokens, key, slots=slots, **kwargs)
  for name in ("tokens", "order", "steps", "nfe"):
    np.testing.assert_array_equal(getattr(stream, name), getattr(whole, name), err_msg=name)
  assert int(whole.steps[3]) == 0 and int(stream.nfe[3]) == 0


@pytest.mark.parametrize("options", [
    dict(strategy="margin", gumbel=0.5, temperature=1.0),
    dict(strategy="vanilla", temperature=0.7, num_steps=30),
    dict(strategy="random", k_mode="binomial"),
])
def test_streamed_rows_do_not_depend_on_the_slots(options):
  tokens, mask_id, logits_fn = _stream_case(seed=2)
  kwargs = dict(mask_id=mask_id, num_steps=8)
  kwargs.update(options)
  key = jax.random.key(5)
  outs = [sampling.sample(logits_fn, tokens, key, slots=s, **kwargs) for s in (1, 3, 11)]
  for out in outs[1:]:
    for name in ("tokens", "order", "steps", "nfe"):
      np.testing.assert_array_equal(getattr(out, name), getattr(outs[0], name),
                                    err_msg=name)
  t = np.asarray(outs[0].tokens)
  assert not (t == mask_id).any()
  given = np.asarray(tokens) != mask_id
  np.testing.assert_array_equal(t[given], np.asarray(tokens)[given])


def test_streaming_keeps_every_slot_busy():
  """With threshold decoding rows finish at different steps; streamed, the loop runs
  about sum(nfe) / slots iterations instead of waiting for each batch's slowest row."""
  tokens, mask_id, logits_fn = _stream_case(seed=3, rows=40)
  calls = []

  def counting_fn(t):
    jax.debug.callback(lambda: calls.append(1))
    return logits_fn(t)

  kwargs = dict(mask_id=mask_id, num_steps=12, strategy="top_prob", k_mode="threshold",
                threshold=0.95)
  key = jax.random.key(1)
  out = sampling.sample(counting_fn, tokens, key, slots=8, **kwargs)
  jax.effects_barrier()
  streamed_calls, calls[:] = len(calls), []
  nfe = np.asarray(out.nfe)
  assert streamed_calls <= int(np.ceil(nfe.sum() / 8)) + int(nfe.max())
  for i in range(0, 40, 8):  # the same rows in batches of 8
    sampling.sample(counting_fn, tokens[i:i + 8], key, **kwargs)
  jax.effects_barrier()
  assert len(calls) == sum(int(nfe[i:i + 8].max()) for i in range(0, 40, 8))
  assert nfe.min() < nfe.max() and streamed_calls < len(calls)


def test_streaming_rejects_bad_slots():
  tokens, mask_id, logits_fn = _stream_case()
  for bad in (-1, 2.5, True, "4"):
    with pytest.raises(ValueError, match="slots"):
      sampling.sample(logits_fn, tokens, jax.random.key(0), mask_id=mask_id, slots=bad)
