"""Tests for mdm_jax.data.lo_nae_sat."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from mdm_jax.data import get_task, lo_nae_sat

L = lo_nae_sat


@pytest.fixture(scope="module")
def task():
  return get_task("lo_nae_sat", num_latents=25, num_obs=275)


def test_nae_semantics():
  bits = np.array(list(itertools.product([0, 1], repeat=3)), np.int8)  # [8, 3]
  out = L.nae(bits, np.array([[0, 1, 2]]))[:, 0]
  want = [0 if len(set(b.tolist())) == 1 else 1 for b in bits]
  assert out.tolist() == want
  assert out.sum() == 6  # 6 of the 8 assignments are not all equal


def test_triples_fixed_by_seed(task):
  t = task.triples
  assert t.shape == (275, 3)
  assert t.min() >= 0 and t.max() < 25
  assert np.all((t[:, 0] != t[:, 1]) & (t[:, 1] != t[:, 2]) & (t[:, 0] != t[:, 2]))
  again = get_task("lo_nae_sat", num_latents=25, num_obs=275)
  np.testing.assert_array_equal(again.triples, t)
  other = get_task("lo_nae_sat", num_latents=25, num_obs=275, triples_seed=1)
  assert not np.array_equal(other.triples, t)
  # Train and test examples are observations of the same triples.
  for split in ("train", "test"):
    ex = task.generate(split, 50, seed=3)
    g = ex["latents"][:, t]
    np.testing.assert_array_equal(ex["obs"], (g.min(2) != g.max(2)).astype(np.int8))


def test_generate_shapes_determinism_and_disjoint_splits(task):
  a = task.generate("train", 300, seed=0)
  b = task.generate("train", 300, seed=0)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  assert a["latents"].shape == (300, 25) and a["obs"].shape == (300, 275)
  assert set(np.unique(a["latents"])) <= {0, 1}
  assert not np.array_equal(a["latents"], task.generate("train", 300, seed=1)["latents"])
  test = task.generate("test", 300, seed=0)
  train_rows = {r.tobytes() for r in a["latents"]}
  assert not train_rows & {r.tobytes() for r in test["latents"]}
  bucket = L._hash_rows(test["latents"]) % np.uint64(L._SPLIT_BUCKETS)
  assert np.all(bucket == 0)
  assert np.all(L._hash_rows(a["latents"]) % np.uint64(L._SPLIT_BUCKETS) != 0)
  # Latents stay close to uniform despite the split filter.
  assert abs(a["latents"].mean() - 0.5) < 0.02 and abs(test["latents"].mean() - 0.5) < 0.02


def test_mdm_layout_and_padding():
  task = get_task("lo_nae_sat", num_latents=10, num_obs=20, pad_to=40)
  layout = task.mdm_layout()
  assert layout.seq_len == 40 and layout.vocab_size == 4 and layout.mask_id == L.MASK
  ex = task.generate("train", 8, seed=0)
  enc = task.mdm_encode(ex)
  assert enc["maskable"][:, :30].all() and not enc["maskable"][:, 30:].any()
  assert np.all(enc["tokens"][:, 30:] == L.PAD)
  np.testing.assert_array_equal(enc["tokens"][:, :10], ex["latents"])
  out = task.check(ex, enc["tokens"])
  assert out["solved"].all() and out["correct"].all()
  np.testing.assert_array_equal(out["consistent_frac"], 1.0)


def test_check_hand_made():
  task = get_task("lo_nae_sat", num_latents=5, num_obs=4)
  task.triples = np.array([[0, 1, 2], [1, 2, 3], [2, 3, 4], [0, 1, 4]], np.int32)
  latents = np.array([[0, 0, 1, 1, 1]], np.int8)
  obs = np.array([[1, 1, 0, 1]], np.int8)  # NAE of (001), (011), (111), (001)
  ex = {"latents": latents, "obs": obs}
  good = task.mdm_encode(ex)["tokens"]
  out = task.check(ex, good)
  assert out["solved"][0] and out["correct"].all() and out["consistent_frac"][0] == 1
  # One wrong observation (obs 2 says "not all equal" for 1, 1, 1).
  bad = good.copy()
  bad[0, 5 + 2] = 1
  out = task.check(ex, bad)
  assert not out["solved"][0] and out["consistent_frac"][0] == 0.75
  assert out["correct"][0].tolist() == [True, True, False, False, False,
                                        True, True, False, True]
  # A different assignment that satisfies every observation is solved.
  alt = good.copy()
  alt[0, :5] = 1 - latents[0]  # global flip keeps every NAE value
  out = task.check(ex, alt)
  assert out["solved"][0] and out["correct"].all()
  # Flipping latent 3 breaks observation 2 only (1, 0, 1 -> NAE 1 != 0).
  flip = good.copy()
  flip[0, 3] = 0
  out = task.check(ex, flip)
  assert out["consistent_frac"][0] == 0.75 and not out["solved"][0]
  assert out["correct"][0, 5:].tolist() == [True, True, False, True]
  # A masked latent makes every observation reading it inconsistent.
  masked = good.copy()
  masked[0, 0] = L.MASK
  out = task.check(ex, masked)
  assert out["correct"][0].tolist() == [False, False, False, True, False,
                                        False, True, True, False]
  # A non-bit observation is inconsistent.
  masked = good.copy()
  masked[0, 5] = L.PAD
  assert task.check(ex, masked)["consistent_frac"][0] == 0.75


def test_guessing_true_scores_75_percent(task):
  ex = task.generate("test", 2000, seed=5)
  assert abs(ex["obs"].mean() - 0.75) < 0.01
  tokens = task.mdm_encode(ex)["tokens"]
  tokens[:, 25:] = 1  # every observation guessed "true", the latents kept
  frac = task.check(ex, tokens)["consistent_frac"]
  assert abs(frac.mean() - 0.75) < 0.01
  # The same through the per-position error helper (argmax says 1 everywhere).
  x0 = task.mdm_encode(ex)["tokens"]
  probs = np.zeros(x0.shape + (4,))
  probs[..., 1] = 1.0
  err = task.latent_obs_errors(x0, probs, kind="argmax")
  assert abs(err["obs"] - 0.25) < 0.01 and abs(err["latent"] - 0.5) < 0.02


def test_position_errors():
  tokens = np.array([[0, 1, 1], [1, 1, 0]])
  probs = np.zeros((2, 3, 4))
  probs[..., 0] = 0.7
  probs[..., 1] = 0.3
  prob_err = L.position_errors(tokens, probs)
  np.testing.assert_allclose(prob_err, [(0.3 + 0.7) / 2, 0.7, (0.7 + 0.3) / 2])
  arg_err = L.position_errors(tokens, probs, kind="argmax")
  np.testing.assert_allclose(arg_err, [0.5, 1.0, 0.5])
  masked = np.array([[True, False, False], [False, False, True]])
  out = L.position_errors(tokens, probs, masked, kind="argmax")
  assert out[0] == 0.0 and np.isnan(out[1]) and out[2] == 0.0
  with pytest.raises(ValueError, match="kind"):
    L.position_errors(tokens, probs, kind="top")
  with pytest.raises(ValueError, match="probs"):
    L.position_errors(tokens, probs[:, :2])


def test_arm_round_trip_and_augment(task):
  ex = task.generate("train", 20, seed=0)
  enc = task.arm_encode(ex, "natural")
  layout = task.arm_layout("natural")
  assert enc["tokens"].shape == (20, layout.seq_len) and layout.vocab_size == 5
  assert np.all(enc["tokens"][:, 0] == L.BOS) and np.all(enc["prompt_len"] == 1)
  assert not enc["loss_mask"][:, 0].any() and enc["loss_mask"][:, 1:].all()
  np.testing.assert_array_equal(task.arm_decode(ex, enc["tokens"]),
                                task.mdm_encode(ex)["tokens"])
  aug = task.augment(ex, np.random.default_rng(0))
  flipped = np.all(aug["latents"] != ex["latents"], axis=1)
  assert 0 < flipped.sum() < 20
  assert np.all(flipped | np.all(aug["latents"] == ex["latents"], axis=1))
  assert task.check(aug, task.mdm_encode(aug)["tokens"])["solved"].all()


def test_paper_sizes():
  assert len(L.PAPER_SIZES) == 5
  assert all(n + p == 300 for n, p in L.PAPER_SIZES)
  for n, p in L.PAPER_SIZES:
    t = get_task("lo_nae_sat", num_latents=n, num_obs=p, pad_to=300)
    assert t.mdm_layout().seq_len == 300


def test_bad_arguments(task):
  with pytest.raises(ValueError, match="num_latents"):
    get_task("lo_nae_sat", num_latents=2)
  with pytest.raises(ValueError, match="pad_to"):
    get_task("lo_nae_sat", num_latents=10, num_obs=10, pad_to=15)
  with pytest.raises(ValueError, match="split"):
    task.generate("hard", 1, 0)
  with pytest.raises(ValueError, match="tokens"):
    task.check(task.generate("train", 2, 0), np.zeros((2, 7), np.int32))
  with pytest.raises(ValueError, match="ordering"):
    task.arm_layout("solver")
  assert get_task("lo_nae_sat", **task.params()).params() == task.params()
