"""The interface every puzzle task offers, and the task registry.

Training, evaluation and the solve command only ever talk to a `Task`; they never
branch on the task name beyond `get_task`.

Conventions
- `Examples` is a dict of numpy arrays that all share the leading dimension N. What
  keys a task stores is its own business (Sudoku: `puzzle`, `solution`, `order`, ...).
- MDM layout: `tokens` int32[N, L] holds the clean sequence x0; `maskable` bool[N, L]
  is False on prompt (clue) and padding positions, True on answer positions. Generation
  starts from `tokens` with every maskable position set to `mask_id`.
- ARM layout: `tokens` int32[N, L'], `loss_mask` bool[N, L'] (True where the target
  token at that position is part of the answer: the loss for predicting tokens[:, i]
  from tokens[:, :i] counts iff loss_mask[:, i]); `prompt_len` int32[N].
- `check` scores sequences in the MDM layout; `arm_decode` maps ARM outputs there.
"""
from __future__ import annotations

import abc
import dataclasses
from typing import Any, Callable, ClassVar

import numpy as np

Examples = dict[str, np.ndarray]
DEFAULT_SHARD_SIZE = 1_000  # `Task.preferred_shard_size` unless a task says otherwise


@dataclasses.dataclass(frozen=True)
class Layout:
  """Static shape facts of a token layout."""
  seq_len: int
  vocab_size: int  # every token id is in [0, vocab_size); MDM layouts include MASK
  mask_id: int | None = None  # MDM layouts only


class Task(abc.ABC):
  """One puzzle family with fixed parameters (e.g. Sudoku 3x3 boxes)."""

  name: ClassVar[str]
  splits: ClassVar[tuple[str, ...]] = ("train", "test")
  arm_orderings: ClassVar[tuple[str, ...]] = ()

  @abc.abstractmethod
  def params(self) -> dict[str, Any]:
    """JSON-serialisable parameters; `get_task(self.name, **self.params())` rebuilds it."""

  def data_params(self) -> dict[str, Any]:
    """The parameters that change the examples (the data cache's key); default all of
    `params()`. A task drops the ones that only change a layout's tokens."""
    return self.params()

  @abc.abstractmethod
  def generate(self, split: str, num: int, seed: int) -> Examples:
    """`num` examples of `split`, a pure function of (params, split, num, seed)."""

  @abc.abstractmethod
  def mdm_layout(self) -> Layout:
    ...

  @abc.abstractmethod
  def mdm_encode(self, examples: Examples) -> dict[str, np.ndarray]:
    """-> {'tokens': int32[N, L], 'maskable': bool[N, L]}."""

  @abc.abstractmethod
  def check(self, examples: Examples, tokens_NxL: np.ndarray) -> dict[str, np.ndarray]:
    """Scores generated MDM-layout sequences.

    -> {'solved': bool[N] (the whole puzzle is valid and complete),
        'correct': bool[N, L] (per-position correctness; meaningful on maskable positions)}
    """

  def answer_mask(self, examples: Examples) -> np.ndarray:
    """bool[N, L]: the answer (maskable) positions of the MDM layout."""
    return np.asarray(self.mdm_encode(examples)["maskable"], bool)

  def mdm_prompt(self, examples: Examples) -> np.ndarray:
    """int32[N, L]: the MDM-layout tokens with every answer position set to MASK
    (where generation starts)."""
    enc = self.mdm_encode(examples)
    return np.where(enc["maskable"], int(self.mdm_layout().mask_id),
                    enc["tokens"]).astype(np.int32)

  def arm_prompt(self, examples: Examples, ordering: str,
                 rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(tokens int32[N, L'] of the ARM layout with every answer token blanked to 0,
    so that no model sees it; prompt_len int32[N])."""
    enc = self.arm_encode(examples, ordering, rng)
    prompt_len_N = np.asarray(enc["prompt_len"], np.int32)
    tokens_NxLp = np.asarray(enc["tokens"], np.int32)
    iota = np.arange(tokens_NxLp.shape[1])
    return (np.where(iota[None] < prompt_len_N[:, None], tokens_NxLp, 0).astype(np.int32),
            prompt_len_N)

  def answer_grid(self) -> tuple[int, int, np.ndarray, tuple[int, int] | None] | None:
    """(rows, cols, positions int[rows*cols] of the MDM layout in row-major order,
    (box_rows, box_cols) or None) when the answer is drawn as a grid; else None."""
    return None

  def solver_rank(self, examples: Examples) -> np.ndarray | None:
    """int[N, L] in the MDM layout: when the task's own step-by-step solver fills
    each position (0 = first), -1 where it does not; None if the task has no solver
    order. Evaluation compares a decoder's order against it."""
    del examples
    return None

  def position_groups(self) -> np.ndarray | None:
    """None, or int[L, F]: the structure groups of each MDM-layout position (-1 =
    none), e.g. a Sudoku cell's row, column and box; `config.model.structure_embed`
    gives each group id a learned embedding (`TransformerConfig.position_groups`)."""
    return None

  def token_groups(self, objective: str) -> np.ndarray | None:
    """None, or int[V, F]: the structure groups of each token id of the 'mdm' or 'arm'
    layout (-1 = none), in the id space of `position_groups`, e.g. a Sudoku ARM cell
    token's row, column and box."""
    del objective
    return None

  def arm_layout(self, ordering: str) -> Layout:
    raise NotImplementedError(f"task {self.name!r} has no autoregressive layout")

  def arm_encode(self, examples: Examples, ordering: str,
                 rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
    """-> {'tokens': int32[N, L'], 'loss_mask': bool[N, L'], 'prompt_len': int32[N]}."""
    raise NotImplementedError(f"task {self.name!r} has no autoregressive layout")

  def arm_decode(self, examples: Examples, tokens_NxLp: np.ndarray) -> np.ndarray:
    """ARM-layout outputs -> MDM-layout tokens int32[N, L] that `check` can score."""
    raise NotImplementedError(f"task {self.name!r} has no autoregressive layout")

  def arm_legal_fn(self) -> Callable[[Any, Any], Any] | None:
    """None, or a traceable `legal(tokens_BxL, pos) -> bool[B, V]`: the tokens that
    make a well-formed move at position `pos` given `tokens_BxL[:, :pos]` (a cell that
    is still empty, a value), for greedy ARM decoding that writes legal moves only,
    as an MDM only fills masked positions. It says nothing about the puzzle's rules."""
    return None

  def arm_pick_keys(self) -> int | None:
    """K when the ARM layout is (key, value) pairs from position 0, keys the ids
    [0, K) and values the ids >= K, with whole pairs as the prompt: then
    `sampling.ar_pick` can choose which key comes next (`config.eval.arm_pick`).
    None for other layouts."""
    return None

  def rule_mask_fn(self) -> Callable[[Any], Any] | None:
    """None, or a traceable `allowed(tokens_BxL) -> bool[B, L, V]` of the MDM layout:
    the tokens that break none of the puzzle's rules given the tokens already written
    (MASK elsewhere), e.g. a Sudoku digit that no filled peer holds. Decoding with it
    (`config.eval.rule_mask`) hands the model the rules at inference; the paper's
    decoders do not use it."""
    return None

  def augment(self, examples: Examples, rng: np.random.Generator) -> Examples:
    """Random symmetry of the examples (identity unless the task has symmetries)."""
    del rng
    return examples

  def preferred_shard_size(self, split: str) -> int:
    """Examples per stored shard of `split` when none is asked for (config
    `data.shard_size = 0`, or no `--shard-size`): e.g. a whole number of the
    generator's blocks, so that no shard makes examples it throws away."""
    del split
    return DEFAULT_SHARD_SIZE

  def data_identity(self, split: str) -> dict[str, Any]:
    """JSON fields naming how `split` is generated beyond (params, split, num,
    seed), e.g. a generator version: stored datasets record them in their manifest,
    and one whose fields differ is refused. Bump them when generation changes."""
    del split
    return {}

  def validate_split(self, split: str) -> None:
    if split not in self.splits:
      raise ValueError(f"unknown split {split!r} for task {self.name!r}; "
                       f"choose one of {', '.join(self.splits)}")


_REGISTRY: dict[str, Callable[..., Task]] = {}


def register(name: str) -> Callable[[type[Task]], type[Task]]:
  def deco(cls: type[Task]) -> type[Task]:
    _REGISTRY[name] = cls
    return cls
  return deco


def get_task(name: str, **params: Any) -> Task:
  """Builds a registered task, e.g. `get_task('sudoku', box_rows=3, box_cols=3)`."""
  from mdm_jax.data import registry  # noqa: F401  (imports every task module)
  if name not in _REGISTRY:
    raise ValueError(f"unknown task {name!r}; choose one of {', '.join(sorted(_REGISTRY))}")
  try:
    return _REGISTRY[name](**params)
  except TypeError as e:
    raise ValueError(f"bad parameters for task {name!r}: {e}") from None


def task_names() -> list[str]:
  from mdm_jax.data import registry  # noqa: F401
  return sorted(_REGISTRY)
