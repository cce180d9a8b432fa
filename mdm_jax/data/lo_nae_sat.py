"""L&O-NAE-SAT: uniform binary latents, then not-all-equal observations of triples.

A sequence is N latent bits x (uniform), then P observation bits
obs_j = NAE(x[a_j], x[b_j], x[c_j]) (1 unless the three are equal). The P triples of
distinct latent indices are drawn once per dataset from `triples_seed`, so train
and test share them. For uniform latents P(obs_j = 1) = 3/4: guessing "true" for
every observation scores 75%.

Tokens: 0, 1, PAD 2, MASK 3 (MDM vocab 4); BOS 4 (ARM vocab 5).
MDM layout: [latents (N), observations (P), PAD up to `pad_to`]; every latent and
observation is maskable (no prompt), padding is not. Generation is unconditional.
ARM layout 'natural': [BOS, latents, observations, PAD...], prompt_len 1, the loss on
latents and observations.

`check` scores generated sequences on their own (the reference latents play no part):
- observation j is consistent iff it and its three latents are bits and
  obs_j == NAE(latents); 'consistent_frac' float[N] is the consistent share;
- 'solved': every latent is a bit and every observation is consistent;
- 'correct' per position: an observation iff consistent; a latent iff it is a bit
  and every observation that reads it is consistent; padding iff it is PAD.

Splits: for N >= 16, 'test' sequences are those whose latents hash into bucket 0 of
8 and 'train' sequences the others (disjoint splits); for N < 16 the splits are
only different random streams.

`position_errors` / `LoNaeSatTask.latent_obs_errors` give a denoiser's per-position
error (the paper's Figure 2: latents are much harder than observations).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from mdm_jax.data import base

PAPER_SIZES: tuple[tuple[int, int], ...] = (
    (25, 275), (30, 270), (40, 260), (50, 250), (100, 200))
ZERO, ONE, PAD, MASK, BOS = 0, 1, 2, 3, 4

_SPLITS = ("train", "test")
_SPLIT_BUCKETS = 8
_MIN_LATENTS_FOR_DISJOINT_SPLITS = 16


def draw_triples(num_latents: int, num_obs: int, triples_seed: int) -> np.ndarray:
  """int32[P, 3]: per observation three distinct latent indices (sorted)."""
  if num_latents < 3:
    raise ValueError(f"need num_latents >= 3 for triples, got {num_latents}")
  rng = np.random.default_rng([int(triples_seed), num_latents, num_obs, 0x10AE])
  keys = rng.random((num_obs, num_latents))
  return np.sort(np.argsort(keys, axis=1)[:, :3], axis=1).astype(np.int32)


def nae(latents_NxK: np.ndarray, triples_Px3: np.ndarray) -> np.ndarray:
  """int8[N, P]: 1 where the three latents of a triple are not all equal."""
  g = np.asarray(latents_NxK)[:, triples_Px3]  # [N, P, 3]
  same = (g[..., 0] == g[..., 1]) & (g[..., 1] == g[..., 2])
  return (~same).astype(np.int8)


def _hash_rows(bits_NxK: np.ndarray) -> np.ndarray:
  """uint64[N] hash of 0/1 rows (fixed multipliers and a splitmix64 finaliser)."""
  packed = np.packbits(bits_NxK.astype(np.uint8), axis=1).astype(np.uint64)
  mult = np.random.default_rng(0x5EED).integers(1, 2**63, packed.shape[1],
                                                dtype=np.uint64) | np.uint64(1)
  with np.errstate(over="ignore"):
    h = (packed * mult[None, :]).sum(axis=1, dtype=np.uint64)
    h ^= h >> np.uint64(30)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(27)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(31)
  return h


def position_errors(tokens_NxL: np.ndarray, probs_NxLxV: np.ndarray,
                    masked_NxL: np.ndarray | None = None, *,
                    kind: str = "prob") -> np.ndarray:
  """float64[L]: per-position error of a predictive distribution against `tokens`.

  kind 'prob': 1 - p(true token); 'argmax': the most likely token is wrong. Averaged
  over the examples where `masked_NxL` is True (all if None); NaN where none is.
  """
  tokens_NxL = np.asarray(tokens_NxL)
  probs_NxLxV = np.asarray(probs_NxLxV, np.float64)
  if probs_NxLxV.ndim != 3 or probs_NxLxV.shape[:2] != tokens_NxL.shape:
    raise ValueError(f"probs must be [N, L, V] matching tokens {tokens_NxL.shape}, "
                     f"got {probs_NxLxV.shape}")
  if kind not in ("prob", "argmax"):
    raise ValueError(f"kind must be 'prob' or 'argmax', got {kind!r}")
  if tokens_NxL.min(initial=0) < 0 or tokens_NxL.max(initial=0) >= probs_NxLxV.shape[2]:
    raise ValueError("tokens out of range of the probability vocabulary")
  if masked_NxL is None:
    masked_NxL = np.ones(tokens_NxL.shape, bool)
  masked_NxL = np.asarray(masked_NxL, bool)
  if masked_NxL.shape != tokens_NxL.shape:
    raise ValueError(f"masked must have shape {tokens_NxL.shape}, got {masked_NxL.shape}")
  if kind == "prob":
    err = 1.0 - np.take_along_axis(probs_NxLxV, tokens_NxL[..., None], axis=2)[..., 0]
  else:
    err = (np.argmax(probs_NxLxV, axis=2) != tokens_NxL).astype(np.float64)
  count = masked_NxL.sum(axis=0)
  total = np.where(masked_NxL, err, 0.0).sum(axis=0)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


@base.register("lo_nae_sat")
class LoNaeSatTask(base.Task):
  """N uniform latent bits, then P NAE observations of dataset-fixed triples."""

  name = "lo_nae_sat"
  splits = _SPLITS
  arm_orderings = ("natural",)

  def __init__(self, num_latents: int = 25, num_obs: int = 275, triples_seed: int = 0,
               pad_to: int | None = None):
    for what, x, lo in (("num_latents", num_latents, 3), ("num_obs", num_obs, 1)):
      if not isinstance(x, int) or x < lo:
        raise ValueError(f"{what} must be an int >= {lo}, got {x!r}")
    if not isinstance(triples_seed, int):
      raise ValueError(f"triples_seed must be an int, got {triples_seed!r}")
    if pad_to is not None and (not isinstance(pad_to, int) or
                               pad_to < num_latents + num_obs):
      raise ValueError(f"pad_to must be None or an int >= num_latents + num_obs = "
                       f"{num_latents + num_obs}, got {pad_to!r}")
    self.num_latents, self.num_obs = num_latents, num_obs
    self.triples_seed, self.pad_to = triples_seed, pad_to
    self.triples = draw_triples(num_latents, num_obs, triples_seed)

  def params(self) -> dict[str, Any]:
    return dict(num_latents=self.num_latents, num_obs=self.num_obs,
                triples_seed=self.triples_seed, pad_to=self.pad_to)

  @property
  def data_len(self) -> int:
    return self.num_latents + self.num_obs

  def generate(self, split: str, num: int, seed: int) -> base.Examples:
    """{'latents': int8[num, N], 'obs': int8[num, P]}."""
    self.validate_split(split)
    if not isinstance(num, (int, np.integer)) or num < 0:
      raise ValueError(f"num must be a non-negative int, got {num!r}")
    rng = np.random.default_rng([int(seed), _SPLITS.index(split), 0x10AE])
    disjoint = self.num_latents >= _MIN_LATENTS_FOR_DISJOINT_SPLITS
    blocks, have = [], 0
    while have < num:
      block = rng.integers(0, 2, (max(2 * (num - have), 64), self.num_latents),
                           dtype=np.int8)
      if disjoint:
        in_test = _hash_rows(block) % np.uint64(_SPLIT_BUCKETS) == 0
        block = block[in_test if split == "test" else ~in_test]
      blocks.append(block)
      have += len(block)
    latents = np.concatenate(blocks)[:num] if blocks else np.zeros(
        (0, self.num_latents), np.int8)
    return {"latents": latents, "obs": nae(latents, self.triples)}

  # --- MDM layout ---

  def mdm_layout(self) -> base.Layout:
    return base.Layout(seq_len=self.pad_to or self.data_len, vocab_size=4, mask_id=MASK)

  def mdm_encode(self, examples: base.Examples) -> dict[str, np.ndarray]:
    lat, obs = examples["latents"], examples["obs"]
    n = lat.shape[0]
    seq_len = self.mdm_layout().seq_len
    tokens = np.full((n, seq_len), PAD, np.int32)
    tokens[:, :self.num_latents] = lat
    tokens[:, self.num_latents:self.data_len] = obs
    maskable = np.zeros((n, seq_len), bool)
    maskable[:, :self.data_len] = True
    return {"tokens": tokens, "maskable": maskable}

  def check(self, examples: base.Examples, tokens_NxL: np.ndarray) -> dict[str, np.ndarray]:
    """See the module docstring; `examples` is only used for its size."""
    tokens_NxL = np.asarray(tokens_NxL)
    seq_len = self.mdm_layout().seq_len
    if tokens_NxL.ndim != 2 or tokens_NxL.shape[1] != seq_len:
      raise ValueError(f"expected tokens [N, {seq_len}], got {tokens_NxL.shape}")
    if len(examples["latents"]) != tokens_NxL.shape[0]:
      raise ValueError(f"{len(examples['latents'])} examples but "
                       f"{tokens_NxL.shape[0]} token rows")
    k = self.num_latents
    lat, obs = tokens_NxL[:, :k], tokens_NxL[:, k:self.data_len]
    lat_ok = (lat == ZERO) | (lat == ONE)
    triple_ok = lat_ok[:, self.triples].all(axis=2)
    consistent = triple_ok & ((obs == ZERO) | (obs == ONE)) & (
        obs == nae(lat, self.triples))
    incidence_PxK = np.zeros((self.num_obs, k), np.int32)
    np.add.at(incidence_PxK, (np.arange(self.num_obs)[:, None], self.triples), 1)
    bad_reads = (~consistent).astype(np.int32) @ incidence_PxK  # [N, K]
    correct = np.concatenate(
        [lat_ok & (bad_reads == 0), consistent, tokens_NxL[:, self.data_len:] == PAD],
        axis=1)
    return {"solved": lat_ok.all(axis=1) & consistent.all(axis=1),
            "correct": correct,
            "consistent_frac": consistent.mean(axis=1)}

  def latent_obs_errors(self, tokens_NxL: np.ndarray, probs_NxLxV: np.ndarray,
                        masked_NxL: np.ndarray | None = None, *,
                        kind: str = "prob") -> dict[str, Any]:
    """Per-position error (`position_errors`) and its means over latents / observations.

    -> {'per_position': float64[L], 'latent': float, 'obs': float} (NaN-aware means).
    """
    per = position_errors(tokens_NxL, probs_NxLxV, masked_NxL, kind=kind)
    k = self.num_latents

    def mean(x):
      return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")

    return {"per_position": per, "latent": mean(per[:k]),
            "obs": mean(per[k:self.data_len])}

  # --- ARM layout ---

  def arm_layout(self, ordering: str) -> base.Layout:
    self._validate_ordering(ordering)
    return base.Layout(seq_len=1 + self.mdm_layout().seq_len, vocab_size=5)

  def _validate_ordering(self, ordering: str) -> None:
    if ordering not in self.arm_orderings:
      raise ValueError(f"unknown ordering {ordering!r} for lo_nae_sat; choose "
                       f"{', '.join(self.arm_orderings)}")

  def arm_encode(self, examples: base.Examples, ordering: str,
                 rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
    del rng
    self._validate_ordering(ordering)
    mdm = self.mdm_encode(examples)
    n = mdm["tokens"].shape[0]
    tokens = np.concatenate([np.full((n, 1), BOS, np.int32), mdm["tokens"]], axis=1)
    loss_mask = np.concatenate([np.zeros((n, 1), bool), mdm["maskable"]], axis=1)
    return {"tokens": tokens, "loss_mask": loss_mask,
            "prompt_len": np.ones((n,), np.int32)}

  def arm_decode(self, examples: base.Examples, tokens_NxLp: np.ndarray) -> np.ndarray:
    del examples
    tokens_NxLp = np.asarray(tokens_NxLp)
    if tokens_NxLp.ndim != 2 or tokens_NxLp.shape[1] != 1 + self.mdm_layout().seq_len:
      raise ValueError(f"expected ARM tokens [N, {1 + self.mdm_layout().seq_len}], "
                       f"got {tokens_NxLp.shape}")
    return tokens_NxLp[:, 1:].astype(np.int32)

  def augment(self, examples: base.Examples, rng: np.random.Generator) -> base.Examples:
    """Flips all latents of a sequence with prob 1/2 (NAE is invariant to it)."""
    lat = examples["latents"]
    flip = rng.random(lat.shape[0]) < 0.5
    out = dict(examples)
    out["latents"] = np.where(flip[:, None], 1 - lat, lat).astype(lat.dtype)
    return out
