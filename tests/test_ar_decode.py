"""Key/value-cached greedy and beam decoding (sampling.ar_greedy_cached,
ar_beam_cached, models.kv_cache) against the full-recompute references
sampling.ar_greedy / ar_beam, on tiny causal models; beam search against an
exhaustive search."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdm_jax import sampling
from mdm_jax.models import kv_cache
from mdm_jax.models import transformer as tfm

VOCAB, LENGTH = 11, 30
STYLES = {
    # GPT-2 style: learned positions (table longer than the data), LayerNorm, GELU.
    "gpt2": dict(positional="learned", max_positions=64),
    # LLaMA style: RoPE, RMSNorm, SwiGLU, no biases.
    "llama": dict(positional="rope", norm="rmsnorm", mlp="swiglu", use_bias=False),
    # The arm-42m recipe: learned positions with qk-norm.
    "arm": dict(positional="learned", qk_norm=True),
    # Structure embeddings on positions and on token ids (config.model.structure_embed).
    "groups": dict(positional="rope",
                   position_groups=tuple((i % 3, 3 + i % 5) for i in range(LENGTH)),
                   token_groups=tuple((8 + v % 2, -1) if v < 6 else (-1, -1)
                                      for v in range(VOCAB))),
}


def _model(style, **overrides):
  # A larger init std than training's 0.02 so that random models have clear argmaxes.
  config = tfm.preset("tiny", vocab_size=VOCAB, seq_len=LENGTH, causal=True,
                      dropout=0.0, init_std=0.3, **dict(STYLES[style], **overrides))
  model = tfm.Transformer(config)
  params = jax.jit(model.init)(jax.random.key(len(style)),
                               jnp.zeros((1, LENGTH), jnp.int32))["params"]
  return model, params


def _prompts(batch, seed, lengths):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, VOCAB, size=(batch, LENGTH)).astype(np.int32)
  prompt_len = np.asarray(lengths, np.int32)
  tokens = np.where(np.arange(LENGTH)[None] < prompt_len[:, None], tokens, 0)
  return tokens.astype(np.int32), prompt_len


@pytest.mark.parametrize("style", sorted(STYLES))
def test_decode_step_logits_match_the_full_forward(style):
  model, params = _model(style)
  tokens, _ = _prompts(4, 0, [LENGTH] * 4)
  full = np.asarray(jax.jit(model.apply)({"params": params}, tokens))
  cache = kv_cache.prefill(model, params, jnp.zeros_like(tokens))  # slots overwritten
  step = jax.jit(lambda c, t, p: kv_cache.decode_step(model.config, params, c, t, p))
  for pos in range(LENGTH):
    logits, cache = step(cache, tokens[:, pos], pos)
    np.testing.assert_allclose(logits, full[:, pos], atol=2e-4, rtol=1e-4, err_msg=pos)
  # The prefilled cache holds the same keys / values as step-by-step writes.
  prefilled = kv_cache.prefill(model, {"params": params}, tokens)
  for (k1, v1), (k2, v2) in zip(prefilled, cache):
    # float32: a whole-sequence and a one-token matmul round differently (~1e-5 on
    # keys of size ~1); a wrong slot or position would differ by O(1).
    np.testing.assert_allclose(k1, k2, atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(v1, v2, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("style", sorted(STYLES))
@pytest.mark.parametrize("seed", [0, 1])
def test_cached_greedy_equals_full_recompute_token_for_token(style, seed):
  model, params = _model(style)
  # Different prompt lengths per row, including 1 (nothing but the first token) and
  # L (nothing to decode).
  tokens, prompt_len = _prompts(6, seed, [1, 3, 7, LENGTH, 12, 5])
  apply = lambda t: model.apply({"params": params}, t)  # noqa: E731
  want = np.asarray(sampling.ar_greedy(apply, tokens, prompt_len))
  got = np.asarray(sampling.ar_greedy_cached(model, params, tokens, prompt_len))
  np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(got[prompt_len[:, None] > np.arange(LENGTH)],
                                tokens[prompt_len[:, None] > np.arange(LENGTH)])
  assert len(np.unique(got[0])) > 2  # a non-trivial continuation
  # Traceable inside a user's jit, and a shorter sequence than seq_len works.
  jitted = jax.jit(lambda t, n: sampling.ar_greedy_cached(model.config, params, t, n))
  np.testing.assert_array_equal(jitted(tokens, prompt_len), want)
  short = np.minimum(prompt_len, 20)
  np.testing.assert_array_equal(
      sampling.ar_greedy_cached(model, params, tokens[:, :20], short),
      sampling.ar_greedy(apply, tokens[:, :20], short))


def _no_repeat(tokens_BxL, pos):
  """A legal_fn: any token not yet in the row (ties broken towards the argmax)."""
  seen_BxV = jnp.any((tokens_BxL[..., None] == jnp.arange(VOCAB))
                     & (jnp.arange(tokens_BxL.shape[1]) < pos)[None, :, None], axis=1)
  return ~seen_BxV


def test_legal_fn_restricts_both_decoders_the_same_way():
  model, params = _model("gpt2")
  tokens, prompt_len = _prompts(4, 3, [1, 2, 3, 4])
  apply = lambda t: model.apply({"params": params}, t)  # noqa: E731
  short = tokens[:, :VOCAB]  # at most VOCAB positions: a distinct token for each
  want = np.asarray(sampling.ar_greedy(apply, short, prompt_len, _no_repeat))
  got = np.asarray(sampling.ar_greedy_cached(model, params, short, prompt_len, _no_repeat))
  np.testing.assert_array_equal(got, want)
  for row, n in zip(got, prompt_len):
    assert all(row[p] not in row[:p] for p in range(n, len(row)))
  free = np.asarray(sampling.ar_greedy(apply, short, prompt_len))
  assert any(len(set(r.tolist())) < len(r) for r in free)  # unrestricted: repeats
  with pytest.raises(ValueError, match="legal_fn"):
    sampling.ar_greedy(apply, short, prompt_len, legal_fn=3)
  with pytest.raises(ValueError, match="legal_fn returned shape"):
    sampling.ar_greedy(apply, short, prompt_len, lambda t, p: jnp.ones((1, 2), bool))


def test_cached_greedy_in_bfloat16_matches_its_logits():
  model, params = _model("llama", dtype="bfloat16")
  tokens, prompt_len = _prompts(3, 2, [4, 9, 2])
  out = np.asarray(sampling.ar_greedy_cached(model, params, tokens, prompt_len))
  assert out.shape == tokens.shape and out.min() >= 0 and out.max() < VOCAB


def test_cached_greedy_bad_inputs():
  model, params = _model("gpt2")
  tokens, prompt_len = _prompts(2, 0, [3, 4])
  bidirectional = tfm.Transformer(tfm.preset("tiny", vocab_size=VOCAB, seq_len=LENGTH))
  with pytest.raises(ValueError, match="causal"):
    sampling.ar_greedy_cached(bidirectional, params, tokens, prompt_len)
  with pytest.raises(ValueError, match="Transformer"):
    sampling.ar_greedy_cached(lambda t: t, params, tokens, prompt_len)
  with pytest.raises(ValueError, match="prompt_len"):
    sampling.ar_greedy_cached(model, params, tokens, np.array([0, 2], np.int32))
  with pytest.raises(ValueError, match="exceeds"):
    sampling.ar_greedy_cached(model, params, np.zeros((2, 40), np.int32), prompt_len)
  with pytest.raises(ValueError, match="'net'"):
    sampling.ar_greedy_cached(model, {"w": 1}, tokens, prompt_len)


def test_evaluate_greedy_with_the_cache_gives_the_reference_tokens():
  from mdm_jax import data  # pylint: disable=g-import-not-at-top
  from mdm_jax import evaluate as ev  # pylint: disable=g-import-not-at-top
  task = data.get_task("zebra", min_houses=3, max_houses=3, min_attrs=3, max_attrs=3)
  examples = task.generate("test", 6, seed=1)
  lay = task.arm_layout("solver")
  config = tfm.preset("tiny", vocab_size=lay.vocab_size, seq_len=lay.seq_len,
                      causal=True, dropout=0.0, init_std=0.3)
  model = tfm.Transformer(config)
  params = model.init(jax.random.key(0), jnp.zeros((1, lay.seq_len), jnp.int32))["params"]
  apply_fn = lambda p, t: model.apply({"params": p}, t)  # noqa: E731
  kwargs = dict(key=jax.random.PRNGKey(0), apply_fn=apply_fn, params=params,
                strategies=("greedy",), arm_ordering="solver", batch_size=4)
  cached = ev.evaluate_strategies(task, examples, arm_model=model, **kwargs)["greedy"]
  full = ev.evaluate_strategies(task, examples, **kwargs)["greedy"]
  np.testing.assert_array_equal(cached.tokens_NxL, full.tokens_NxL)
  assert cached.mean_nfe == cached.mean_steps == full.mean_steps


def _seq_logp(apply, tokens_NxL, start):
  """Sum of log p(token_i | tokens_<i) over positions >= start."""
  logp = jax.nn.log_softmax(np.asarray(apply(tokens_NxL), np.float64), axis=-1)
  picked = np.take_along_axis(np.asarray(logp)[:, :-1], tokens_NxL[:, 1:, None], -1)[..., 0]
  return picked[:, start - 1:].sum(-1)


@pytest.mark.parametrize("style", ["gpt2", "groups"])
def test_beam_search_cached_equals_reference_and_width_one_is_greedy(style):
  model, params = _model(style)
  tokens, prompt_len = _prompts(6, 4, [1, 3, 7, LENGTH, 12, 5])
  apply = lambda t: model.apply({"params": params}, t)  # noqa: E731
  for width in (1, 3):
    want = np.asarray(sampling.ar_beam(apply, tokens, prompt_len, width))
    got = np.asarray(sampling.ar_beam_cached(model, params, tokens, prompt_len, width))
    np.testing.assert_array_equal(got, want, err_msg=width)
    kept = prompt_len[:, None] > np.arange(LENGTH)
    np.testing.assert_array_equal(got[kept], tokens[kept])
  np.testing.assert_array_equal(
      np.asarray(sampling.ar_beam_cached(model, params, tokens, prompt_len, 1)),
      np.asarray(sampling.ar_greedy(apply, tokens, prompt_len)))
  legal = np.asarray(sampling.ar_beam_cached(model, params, tokens[:, :VOCAB],
                                             np.minimum(prompt_len, 4), 3, _no_repeat))
  np.testing.assert_array_equal(
      legal, np.asarray(sampling.ar_beam(apply, tokens[:, :VOCAB],
                                         np.minimum(prompt_len, 4), 3, _no_repeat)))
  for row, n in zip(legal, np.minimum(prompt_len, 4)):
    assert all(row[p] not in row[:p] for p in range(n, len(row)))


def test_wide_beam_finds_the_most_probable_sequence():
  # 3 free positions over VOCAB tokens: width VOCAB**2 keeps every prefix, so the
  # beam's answer is the exhaustive argmax; greedy misses it on some rows.
  model, params = _model("llama")
  apply = lambda t: model.apply({"params": params}, t)  # noqa: E731
  rng = np.random.default_rng(0)
  prompts = rng.integers(0, VOCAB, size=(12, 3)).astype(np.int32)
  tokens = np.concatenate([prompts, np.zeros((12, 3), np.int32)], axis=1)
  prompt_len = np.full(12, 3, np.int32)
  beam = np.asarray(sampling.ar_beam_cached(model, params, tokens, prompt_len, VOCAB**2))
  greedy = np.asarray(sampling.ar_greedy(apply, tokens, prompt_len))
  tails = np.array(list(itertools.product(range(VOCAB), repeat=3)), np.int32)
  greedy_worse = 0
  for b in range(12):
    every = np.concatenate([np.repeat(prompts[b:b + 1], len(tails), 0), tails], axis=1)
    scores = _seq_logp(apply, every, 3)
    np.testing.assert_array_equal(beam[b], every[np.argmax(scores)], err_msg=b)
    greedy_worse += _seq_logp(apply, greedy[b:b + 1], 3)[0] < scores.max() - 1e-6
  assert greedy_worse > 0


def test_beam_bad_width():
  model, params = _model("gpt2")
  tokens, prompt_len = _prompts(2, 0, [3, 4])
  for width in (0, 2.5, True):
    with pytest.raises(ValueError, match="beam width"):
      sampling.ar_beam_cached(model, params, tokens, prompt_len, width)


# (key, value) pair layouts for ar_pick: keys 0..5, values 6..9, six pairs.
PAIR_KEYS, PAIR_VOCAB = 6, 10
PAIR_LEN = 2 * PAIR_KEYS


def _pair_prompts(lengths, seed=0):
  """Rows whose first lengths[b] positions are whole (distinct key, value) pairs."""
  rng = np.random.default_rng(seed)
  tokens = np.zeros((len(lengths), PAIR_LEN), np.int32)
  for b, n in enumerate(lengths):
    keys = rng.permutation(PAIR_KEYS)[:n // 2]
    tokens[b, 0:n:2] = keys
    tokens[b, 1:n:2] = rng.integers(PAIR_KEYS, PAIR_VOCAB, size=n // 2)
  return tokens, np.asarray(lengths, np.int32)


@pytest.mark.parametrize("style", ["gpt2", "llama"])
@pytest.mark.parametrize("score", sampling.PICK_SCORES)
def test_cached_pick_equals_full_recompute(style, score):
  config = tfm.preset("tiny", vocab_size=PAIR_VOCAB, seq_len=PAIR_LEN, causal=True,
                      dropout=0.0, init_std=0.3,
                      **dict(STYLES[style], max_positions=PAIR_LEN)
                      if style == "gpt2" else STYLES[style])
  model = tfm.Transformer(config)
  params = model.init(jax.random.key(3), jnp.zeros((1, PAIR_LEN), jnp.int32))["params"]
  apply = lambda t: model.apply({"params": params}, t)  # noqa: E731
  tokens, plen = _pair_prompts([0, 2, 4, PAIR_LEN, 6, 2], seed=1)
  want = np.asarray(sampling.ar_pick(apply, tokens, plen, num_keys=PAIR_KEYS, score=score))
  got = np.asarray(sampling.ar_pick_cached(model, params, tokens, plen,
                                           num_keys=PAIR_KEYS, score=score))
  np.testing.assert_array_equal(got, want)
  kept = plen[:, None] > np.arange(PAIR_LEN)
  np.testing.assert_array_equal(got[kept], tokens[kept])
  for row in got:  # every key once, every value slot a value
    assert sorted(row[0::2].tolist()) == list(range(PAIR_KEYS))
    assert row[1::2].min() >= PAIR_KEYS
  # Traceable inside a user's jit.
  jitted = jax.jit(lambda t, n: sampling.ar_pick_cached(model.config, params, t, n,
                                                        num_keys=PAIR_KEYS, score=score))
  np.testing.assert_array_equal(jitted(tokens, plen), want)


# How sure a toy model is of each key's value (value 6 + key % 4): keys in order of
# confidence are 1, 3, 2, 4, 0, 5.
_STRENGTH = jnp.asarray([1.0, 5.0, 3.0, 4.0, 2.0, 0.5])


def _confidence_model(tokens_BxL):
  """logits[:, i] at a key slot i: strength[key] * one_hot(6 + key % 4)."""
  keys_BxL = jnp.clip(tokens_BxL, 0, PAIR_KEYS - 1)
  logits_BxLxV = (_STRENGTH[keys_BxL][..., None]
                  * jax.nn.one_hot(PAIR_KEYS + keys_BxL % 4, PAIR_VOCAB))
  is_key_L = jnp.arange(tokens_BxL.shape[1]) % 2 == 0
  return jnp.where(is_key_L[None, :, None], logits_BxLxV, 0.0)


@pytest.mark.parametrize("score", sampling.PICK_SCORES)
def test_pick_writes_the_most_confident_key_first(score):
  tokens, plen = _pair_prompts([0, 0], seed=0)
  plen = np.array([0, 2], np.int32)
  tokens[1, :2] = [3, 9]  # row 1's prompt: key 3 given
  out = np.asarray(sampling.ar_pick(_confidence_model, tokens, plen,
                                    num_keys=PAIR_KEYS, score=score))
  np.testing.assert_array_equal(out[0, 0::2], [1, 3, 2, 4, 0, 5])
  np.testing.assert_array_equal(out[1, 0::2], [3, 1, 2, 4, 0, 5])
  np.testing.assert_array_equal(out[0, 1::2], PAIR_KEYS + np.array([1, 3, 2, 4, 0, 5]) % 4)
  assert out[1, 1] == 9  # the prompt's value is kept


def test_pick_legal_values_are_renormalised():
  # Values 6 and 7 illegal: keys 0, 1, 4, 5 (best value 6 or 7) see a uniform choice
  # between 8 and 9, so they come last, lowest key first, each with value 8.
  def legal(tokens_BxL, pos):
    del tokens_BxL
    values = jnp.arange(PAIR_VOCAB) >= 8
    return jnp.broadcast_to(jnp.where(pos % 2 == 1, values, jnp.arange(PAIR_VOCAB) < 6),
                            (2, PAIR_VOCAB))
  tokens, plen = _pair_prompts([0, 0])
  out = np.asarray(sampling.ar_pick(_confidence_model, tokens, plen, num_keys=PAIR_KEYS,
                                    score="top_prob", legal_fn=legal))
  np.testing.assert_array_equal(out[0, 0::2], [3, 2, 0, 1, 4, 5])
  np.testing.assert_array_equal(out[0, 1::2], [9, 8, 8, 8, 8, 8])


def test_pick_bad_inputs():
  tokens, plen = _pair_prompts([2, 4])
  kwargs = dict(num_keys=PAIR_KEYS)
  with pytest.raises(ValueError, match="even"):
    sampling.ar_pick(_confidence_model, tokens, np.array([2, 3], np.int32), **kwargs)
  with pytest.raises(ValueError, match="even"):
    sampling.ar_pick(_confidence_model, tokens[:, :11], plen, **kwargs)
  with pytest.raises(ValueError, match="score"):
    sampling.ar_pick(_confidence_model, tokens, plen, score="greedy", **kwargs)
  with pytest.raises(ValueError, match="num_keys"):
    sampling.ar_pick(_confidence_model, tokens, plen, num_keys=0)
  with pytest.raises(ValueError, match="prompt_len"):
    sampling.ar_pick(_confidence_model, tokens, np.array([2, 14], np.int32), **kwargs)
  model, params = _model("gpt2")  # vocab 11 < num_keys 15
  with pytest.raises(ValueError, match="no value ids"):
    sampling.ar_pick_cached(model, params, np.zeros((2, 30), np.int32), plen,
                            num_keys=15)
