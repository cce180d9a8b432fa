"""Tests of mdm_jax.evaluate with oracle logits functions and a tiny trained checkpoint."""
import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import matplotlib.image
import numpy as np
import pytest

from mdm_jax import data
from mdm_jax import evaluate as ev

ALL_MDM = ("vanilla", "random", "top_prob", "margin", "entropy")
ADAPTIVE = ("top_prob", "margin", "entropy")
N = 12


def _task(name):
  if name == "zebra":
    return data.get_task("zebra", min_houses=3, max_houses=3, min_attrs=3, max_attrs=3)
  return data.get_task("sudoku", box_rows=2, box_cols=2)


def _tasks():
  names = ["zebra"]
  if "sudoku" in data.task_names():
    names.append("sudoku")
  return names


@pytest.fixture(scope="module", params=_tasks())
def puzzles(request):
  task = _task(request.param)
  examples = task.generate("test", N, seed=3)
  enc = task.mdm_encode(examples)
  return task, examples, np.asarray(enc["tokens"], np.int32), np.asarray(enc["maskable"])


def _match(tokens_BxL, x0_NxL, fixed_NxL):
  """Index of the puzzle each row belongs to: the one whose fixed tokens it shows."""
  table = jnp.asarray(x0_NxL)
  fixed = jnp.asarray(fixed_NxL)
  ok_BxN = jnp.all(~fixed[None] | (tokens_BxL[:, None, :] == table[None]), axis=-1)
  return jnp.argmax(ok_BxN, axis=1)


def _oracle(answers_NxL, x0_NxL, maskable_NxL, vocab):
  """logits_fn: confidently predicts `answers` (its own row's) at every position.

  The confidence grows with the position, so that ordering scores never tie (ties
  up to rounding would make the order depend on how XLA vectorises the batch).
  """
  answers = jnp.asarray(answers_NxL)
  length = answers_NxL.shape[1]
  gap_L = 3.0 + 6.0 * jnp.arange(length) / length

  def logits_fn(tokens_BxL):
    idx = _match(tokens_BxL, x0_NxL, ~maskable_NxL)
    return gap_L[None, :, None] * jax.nn.one_hot(answers[idx], vocab)
  return logits_fn


def _wrong_token(x0_NxL, maskable_NxL, pos_N):
  """A token != the answer at pos that is still a plausible answer token."""
  rows = np.arange(x0_NxL.shape[0])
  answer_tokens = np.unique(x0_NxL[maskable_NxL])
  true = x0_NxL[rows, pos_N]
  return np.where(true == answer_tokens[0], answer_tokens[1], answer_tokens[0])


def test_oracle_solves_every_puzzle_with_every_strategy(puzzles):
  task, examples, x0, maskable = puzzles
  lay = task.mdm_layout()
  fn = _oracle(x0, x0, maskable, lay.vocab_size)
  res = ev.evaluate_strategies(task, examples, key=jax.random.PRNGKey(0), logits_fn=fn,
                               strategies=ALL_MDM, batch_size=8, num_steps=10)
  assert list(res) == list(ALL_MDM)
  for s, r in res.items():
    assert r.num_puzzles == N and r.num_solved == N and r.solved == 1.0, s
    assert r.cell_accuracy == 1.0
    np.testing.assert_array_equal(r.tokens_NxL, x0)
    # Every answer position was decoded at some step, every given kept (-1).
    assert np.all(r.order_NxL[maskable] >= 0) and np.all(r.order_NxL[~maskable] == -1)
    assert np.all(r.order_NxL < 10)
    np.testing.assert_array_equal(r.steps_N, r.order_NxL.max(axis=1) + 1)
    assert r.mean_steps == pytest.approx(np.mean(r.order_NxL.max(axis=1) + 1))
    assert 1.0 <= r.mean_nfe <= r.mean_steps and r.summary()["mean_nfe"] == r.mean_nfe
    assert r.puzzles_per_sec > 0


def test_one_wrong_cell_in_half_the_puzzles_solves_half(puzzles):
  task, examples, x0, maskable = puzzles
  first = np.argmax(maskable, axis=1)  # first answer position of each puzzle
  bad = np.arange(N) % 2 == 0
  answers = x0.copy()
  rows = np.arange(N)[bad]
  answers[rows, first[bad]] = _wrong_token(x0, maskable, first)[bad]
  fn = _oracle(answers, x0, maskable, task.mdm_layout().vocab_size)
  res = ev.evaluate_strategies(task, examples, key=jax.random.PRNGKey(1), logits_fn=fn,
                               strategies=("vanilla", "margin"), batch_size=5,
                               num_steps=6)
  for r in res.values():
    assert r.solved == 0.5 and r.num_solved == N // 2
    np.testing.assert_array_equal(r.solved_N, ~bad)
    assert r.cell_accuracy == pytest.approx(1.0 - bad.sum() / maskable.sum())
    np.testing.assert_array_equal(r.tokens_NxL, answers)


def test_adaptive_order_decodes_the_hard_cell_last(puzzles):
  """The hard cell is right only once every other answer cell is filled.

  Adaptive strategies see its low confidence and leave it for last (solve all);
  vanilla and random order solve exactly the puzzles where it came last.
  """
  task, examples, x0, maskable = puzzles
  vocab = task.mdm_layout().vocab_size
  mask_id = task.mdm_layout().mask_id
  hard = np.argmax(maskable, axis=1)
  wrong = _wrong_token(x0, maskable, hard)
  easy = maskable.copy()
  easy[np.arange(N), hard] = False
  table, easy_j, hard_j, wrong_j = map(jnp.asarray, (x0, easy, hard, wrong))

  def logits_fn(tokens_BxL):
    idx = _match(tokens_BxL, x0, ~maskable)
    target = table[idx]
    logits = 10.0 * jax.nn.one_hot(target, vocab)
    ready = jnp.all(~easy_j[idx] | (tokens_BxL != mask_id), axis=1)
    unsure = jax.nn.one_hot(wrong_j[idx], vocab)  # weakly prefers a wrong value
    at_hard = jnp.arange(x0.shape[1])[None] == hard_j[idx][:, None]
    return jnp.where(at_hard[..., None] & ~ready[:, None, None], unsure[:, None], logits)

  res = ev.evaluate_strategies(task, examples, key=jax.random.PRNGKey(2),
                               logits_fn=logits_fn, strategies=ALL_MDM, batch_size=N,
                               num_steps=50)
  for s in ADAPTIVE:
    assert res[s].solved == 1.0, s
  rows = np.arange(N)
  for s in ("vanilla", "random"):
    r = res[s]
    last_easy = np.where(easy, r.order_NxL, -1).max(axis=1)
    np.testing.assert_array_equal(r.solved_N, r.order_NxL[rows, hard] > last_easy)
    assert r.solved < 1.0, s


def test_apply_fn_path_matches_logits_fn_and_batching(puzzles):
  task, examples, x0, maskable = puzzles
  vocab = task.mdm_layout().vocab_size
  fn = _oracle(x0, x0, maskable, vocab)
  apply_fn = lambda params, tokens: params["scale"] * fn(tokens)
  key = jax.random.PRNGKey(4)
  a = ev.evaluate_strategies(task, examples, key=key, apply_fn=apply_fn,
                             params={"scale": jnp.float32(1.0)}, strategies=("margin",),
                             batch_size=N, num_steps=8)["margin"]
  # Batches of 8 split over the 8 (virtual) devices give the same answers.
  assert ev._batch_sharding(8, True) is not None and ev._batch_sharding(8, None) is None
  d = ev.evaluate_strategies(task, examples, key=key, logits_fn=fn, strategies=("margin",),
                             batch_size=8, num_steps=8, shard=True)["margin"]
  np.testing.assert_array_equal(d.order_NxL, a.order_NxL)
  b = ev.evaluate_strategies(task, examples, key=key, logits_fn=fn, strategies=("margin",),
                             batch_size=N, num_steps=8)["margin"]
  c = ev.evaluate_strategies(task, examples, key=key, logits_fn=fn, strategies=("margin",),
                             batch_size=5, num_steps=8)["margin"]  # padded last batch
  for r in (a, b, c):
    assert r.tokens_NxL.shape == x0.shape and r.solved == 1.0
  np.testing.assert_array_equal(a.order_NxL, b.order_NxL)
  np.testing.assert_array_equal(b.order_NxL, c.order_NxL)  # margin+argmax: no randomness
  e = ev.evaluate_strategies(task, examples, key=key, logits_fn=fn, strategies=("margin",),
                             num_steps=8, slots=3)["margin"]  # streamed, 3 slots
  np.testing.assert_array_equal(e.order_NxL, b.order_NxL)
  np.testing.assert_array_equal(e.tokens_NxL, b.tokens_NxL)
  assert e.mean_nfe == b.mean_nfe


def _arm_oracle(arm_tokens_NxL, prompt_len_N, vocab):
  """Causal oracle: logits[:, i] predicts arm_tokens[:, i + 1] of the matching row."""
  table = jnp.asarray(arm_tokens_NxL)
  plen = jnp.asarray(prompt_len_N)
  iota = jnp.arange(arm_tokens_NxL.shape[1])

  def logits_fn(tokens_BxL):
    in_prompt_NxL = iota[None] < plen[:, None]
    ok = jnp.all(~in_prompt_NxL[None] | (tokens_BxL[:, None] == table[None]), axis=-1)
    target = table[jnp.argmax(ok, axis=1)]
    nxt = jnp.concatenate([target[:, 1:], target[:, -1:]], axis=1)
    return 10.0 * jax.nn.one_hot(nxt, vocab)
  return logits_fn


def test_greedy_arm_oracle_solves_all_and_half_with_a_wrong_token():
  task = _task("zebra")
  examples = task.generate("test", N, seed=5)
  arm = task.arm_encode(examples, "solver")
  vocab = task.arm_layout("solver").vocab_size
  tokens, plen = np.asarray(arm["tokens"]), np.asarray(arm["prompt_len"])
  res = ev.evaluate_strategies(task, examples, key=jax.random.PRNGKey(0),
                               logits_fn=_arm_oracle(tokens, plen, vocab),
                               strategies=("greedy",), arm_ordering="solver", batch_size=5)
  r = res["greedy"]
  assert r.solved == 1.0 and r.cell_accuracy == 1.0 and r.order_NxL is None
  np.testing.assert_array_equal(r.steps_N, tokens.shape[1] - plen)
  # Corrupt the value of the first answer triple in even puzzles.
  bad = np.arange(N) % 2 == 0
  wrong = tokens.copy()
  value_pos = plen + 2
  rows = np.arange(N)
  values = tokens[rows, value_pos]
  other = np.where(values == values.min(), values.min() + 1, values.min())
  wrong[rows[bad], value_pos[bad]] = other[bad]
  r = ev.evaluate_strategies(task, examples, key=jax.random.PRNGKey(0),
                             logits_fn=_arm_oracle(wrong, plen, vocab),
                             strategies=("greedy",), arm_ordering="solver",
                             batch_size=N)["greedy"]
  assert r.solved == 0.5
  np.testing.assert_array_equal(r.solved_N, ~bad)


@pytest.mark.parametrize("task_name,box,vocab", [
    ("sudoku", (2, 3), "shared"), ("sudoku", (3, 3), "shared"),
    ("sudoku", (2, 3), "by_role"), ("sudoku", (2, 3), "cell"), ("sudoku", (2, 3), "joint"),
    ("zebra", None, None)])
def test_arm_pipeline_is_exact_for_every_ordering(task_name, box, vocab):
  """An oracle that returns the true next token solves every puzzle through
  arm_encode -> greedy decoding -> arm_decode -> check, for every ordering (the
  'random' one drawn as evaluate_strategies draws it); and the teacher-forced true
  sequences decode to the solutions."""
  task = (data.get_task("sudoku", box_rows=box[0], box_cols=box[1], arm_vocab=vocab)
          if box else _task(task_name))
  examples = task.generate("test", 6, seed=3)
  key = jax.random.PRNGKey(4)
  for ordering in task.arm_orderings:
    seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
    arm = task.arm_encode(examples, ordering, rng=np.random.default_rng(seed))
    tokens, plen = np.asarray(arm["tokens"]), np.asarray(arm["prompt_len"])
    vocab = task.arm_layout(ordering).vocab_size
    assert tokens.max() < vocab and tokens.shape[1] == task.arm_layout(ordering).seq_len
    decoded = task.arm_decode(examples, tokens)  # teacher forced: the true sequence
    checked = task.check(examples, decoded)
    assert checked["solved"].all() and checked["correct"].all(), ordering
    r = ev.evaluate_strategies(task, examples, key=key,
                               logits_fn=_arm_oracle(tokens, plen, vocab),
                               strategies=("greedy",), arm_ordering=ordering,
                               batch_size=4)["greedy"]
    assert r.solved == 1.0 and r.cell_accuracy == 1.0, ordering
    # The prompt alone (answers blanked) decodes to no solved puzzle.
    blank = np.where(np.arange(tokens.shape[1])[None] < plen[:, None], tokens, 0)
    assert not task.check(examples, task.arm_decode(examples, blank))["solved"].any()


def test_order_correlation_is_spearman_with_ties():
  rank = np.array([[0, 1, 2, 3, 4, -1], [0, 1, 2, 3, 4, 5], [4, 3, 2, 1, 0, -1],
                   [0, 1, 2, -1, -1, -1]])
  order = np.array([[0, 1, 2, 3, 4, 7], [5, 4, 3, 2, 1, 0], [0, 0, 1, 1, 2, 2],
                    [0, 0, 0, 1, 1, 1]])
  corr = ev.order_correlation(order, rank)
  assert corr[0] == pytest.approx(1.0) and corr[1] == pytest.approx(-1.0)
  # Row 2: decoding steps (0, 0, 1, 1, 2) vs ranks (4, 3, 2, 1, 0), ties averaged.
  a = np.array([0.5, 0.5, 2.5, 2.5, 4.0]) - 2.0
  b = np.array([4.0, 3.0, 2.0, 1.0, 0.0]) - 2.0
  assert corr[2] == pytest.approx((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))
  assert np.isnan(corr[3])  # every compared cell decoded at the same step
  rng = np.random.default_rng(0)
  rand = ev.order_correlation(rng.permuted(np.tile(np.arange(60), (400, 1)), axis=1),
                              np.tile(np.arange(60), (400, 1)))
  assert abs(rand.mean()) < 0.03  # random orders: near 0


def test_sudoku_solver_rank_and_example_plot(tmp_path):
  task = data.get_task("sudoku", box_rows=2, box_cols=2)
  examples = task.generate("test", 4, seed=1)
  rank = task.solver_rank(examples)
  blank = np.asarray(examples["puzzle"]) == 0
  assert ((rank >= 0) == blank).all()  # easy puzzles: the solver fills every blank
  for r, b in zip(rank, blank):
    assert sorted(r[b] - r[b].min()) == list(range(b.sum()))
  enc = task.mdm_encode(examples)
  solver_first = np.where(blank, rank, -1).astype(np.int32)
  def follow_solver(tokens):  # confidence = minus the solver's rank: decodes in its order
    del tokens
    return jnp.asarray(np.where(np.arange(5)[None, None] == enc["tokens"][..., None],
                                -solver_first[..., None] * 0.1 + 10.0, 0.0), jnp.float32)
  res = ev.evaluate_strategies(task, examples, key=jax.random.PRNGKey(0),
                               logits_fn=follow_solver, strategies=("top_prob", "random"),
                               num_steps=16, batch_size=4)
  assert res["top_prob"].solved == 1.0
  assert res["top_prob"].extra["order_corr"] == pytest.approx(1.0)
  assert abs(res["random"].extra["order_corr"]) < 0.6
  from mdm_jax import plots
  path = plots.plot_example_orders(
      np.asarray(examples["puzzle"])[:2], {"top prob": res["top_prob"].order_NxL[:2],
                                            "solver": rank[:2]},
      str(tmp_path / "ex.png"), grid_shape=(4, 4), box=(2, 2), title="t")
  import matplotlib.image
  img = matplotlib.image.imread(path)
  assert img.shape[0] > 200 and img.shape[1] > 300 and img[..., :3].std() > 0.05


def test_argument_errors():
  task = _task("zebra")
  examples = task.generate("test", 2, seed=0)
  fn = lambda t: jnp.zeros(t.shape + (task.mdm_layout().vocab_size,))
  key = jax.random.PRNGKey(0)
  cases = [
      (dict(logits_fn=fn, strategies=("bogus",)), "unknown strategy"),
      (dict(logits_fn=fn, strategies=("greedy", "margin")), "cannot be mixed"),
      (dict(logits_fn=fn, strategies=()), "empty"),
      (dict(strategies=("margin",)), "exactly one of"),
      (dict(logits_fn=fn, apply_fn=lambda p, t: t, params={}), "exactly one of"),
      (dict(apply_fn=lambda p, t: t), "needs params"),
      (dict(logits_fn=fn, strategies=("greedy",)), "arm_ordering"),
      (dict(logits_fn=fn, batch_size=0), "batch_size"),
      (dict(logits_fn=fn, num_steps=0), "num_steps"),
      (dict(logits_fn=fn, k_mode="nope"), "k_mode"),
      (dict(logits_fn=fn, strategies=("margin", "margin")), "duplicates"),
  ]
  for kwargs, msg in cases:
    with pytest.raises(ValueError, match=msg):
      ev.evaluate_strategies(task, examples, key=key, **kwargs)
  with pytest.raises(ValueError, match="key"):
    ev.evaluate_strategies(task, examples, key=3, logits_fn=fn)
  with pytest.raises(ValueError, match="first dimension"):
    ev.evaluate_strategies(task, {"a": np.zeros(3), "b": np.zeros(2)}, key=key,
                           logits_fn=fn)


def test_lo_nae_sat_consistency_share_and_position_errors():
  task = data.get_task("lo_nae_sat", num_latents=6, num_obs=10)
  examples = task.generate("test", 400, seed=0)
  vocab = task.mdm_layout().vocab_size
  # Always "1": latents all 1 make every NAE observation 0, so observations written
  # as 1 are all inconsistent; the consistent share is exactly 0.
  ones = lambda t: 10.0 * jax.nn.one_hot(jnp.ones_like(t), vocab)
  r = ev.evaluate_strategies(task, {k: v[:8] for k, v in examples.items()},
                             key=jax.random.PRNGKey(0), logits_fn=ones,
                             strategies=("vanilla", "margin"), num_steps=5)
  for res in r.values():
    assert res.solved == 0.0 and res.extra["consistent_frac"] == 0.0
    assert res.summary()["consistent_frac"] == 0.0
  pe = ev.position_errors(task, examples, key=jax.random.PRNGKey(1), logits_fn=ones,
                          batch_size=128)
  # Predicting 1 with certainty: error = share of masked examples whose token is 0.
  np.testing.assert_allclose(pe["per_position"], pe["per_position_argmax"], atol=1e-3)
  assert np.all(pe["masked_count"] > 0.3 * 400) and np.all(pe["masked_count"] < 0.7 * 400)
  assert pe["latent"] == pytest.approx(0.5, abs=0.08)  # uniform latents
  assert pe["obs"] == pytest.approx(0.25, abs=0.06)  # P(NAE = 0) = 1/4
  np.testing.assert_allclose(pe["latent"], np.mean(pe["per_position"][:6]))


def test_markdown_table_layout():
  rows = [dict(method="ARM (with ordering)", num_params=42_100_000, solved=0.8718,
               cell_accuracy=0.95, mean_steps=150.0, puzzles_per_sec=12.5, num_puzzles=100),
          dict(method="MDM top prob margin", num_params=6_300_000, solved=0.8949,
               cell_accuracy=0.99, mean_steps=50.0, puzzles_per_sec=float("inf"),
               num_puzzles=100, consistent_frac=0.9376)]
  rows[1]["mean_nfe"] = 31.25
  md = ev.markdown_table(rows).splitlines()
  assert md[0].startswith("| Method | # Param | Accuracy | Consistent obs. |")
  assert "| Mean steps | Mean NFE | Puzzles/s |" in md[0]
  assert md[3].endswith("| 50.0 | 31.2 | n/a | 100 |")
  assert md[2].endswith("| 150.0 | n/a | 12.5 | 100 |")  # older results: no NFE
  assert md[2].startswith("| ARM (with ordering) | 42.1M | 87.18% | n/a |")
  assert md[3].startswith("| MDM top prob margin | 6.3M | 89.49% | 93.76% | 99.00% | 50.0 |")
  assert ev.method_label("mdm", "margin") == "MDM top prob margin"
  assert ev.method_label("arm", "greedy", "row_major") == "ARM (without ordering)"
  assert ev.method_label("arm", "greedy", "random", "beam 4") == "ARM (random order, beam 4)"
  assert ev.arm_decoding({"objective": "arm", "arm_pick": "top_prob"}) == (
      "next cell by top prob")
  assert ev.arm_decoding({"objective": "arm", "arm_pick": "", "arm_beam": 16}) == "beam 16"
  assert ev.arm_decoding({"objective": "arm", "arm_pick": "", "arm_beam": 1}) is None


def _grid_task_name():
  return "sudoku" if "sudoku" in data.task_names() else "zebra"


def _small_config(root, task_name):
  spec = importlib.util.spec_from_file_location(
      "cfg_common", os.path.join(os.path.dirname(__file__), "..", "configs", "common.py"))
  common = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(common)
  c = common.base_config()
  c.task.name = task_name
  c.task.params = ({"box_rows": 2, "box_cols": 2} if task_name == "sudoku" else
                   dict(min_houses=3, max_houses=3, min_attrs=3, max_attrs=3))
  c.data.dir = str(root / "data")
  c.data.num_train, c.data.num_val, c.data.num_test = 64, 16, 24
  c.data.num_hard = 24
  c.model.overrides.num_layers, c.model.overrides.d_model = 1, 32
  c.model.overrides.num_heads, c.model.overrides.mlp_dim = 2, 64
  c.train.steps, c.train.batch_size, c.train.warmup_steps = 4, 8, 1
  c.train.log_every, c.train.eval_every, c.train.ckpt_every = 2, 4, 4
  c.train.val_batches, c.train.val_puzzles = 1, 0
  c.train.async_checkpoints = False
  c.eval.after_train = False
  c.eval.splits = ["test"]
  c.eval.num_puzzles, c.eval.batch_size = 16, 8
  c.eval.sweep_steps = [2]
  c.sampler.strategies = ["vanilla", "margin"]
  c.sampler.num_steps = 4
  return c


def _initialised_checkpoint(config, workdir, step=4):
  """A checkpoint of freshly initialised params, saved by the training system."""
  from mdm_jax import checkpoint, experiment, metrics, train
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(checkpoint.config_to_json(config), f)
  task = experiment.build_task(config)
  model, model_config = experiment.build_model(config, task)
  state = train.init_state(config, model, train.make_optimizer(config),
                           model_config.seq_len, jax.random.PRNGKey(0))
  ckpt = checkpoint.Checkpointer(workdir, async_save=False)
  ckpt.save(step, state, iterator=None, config=config)
  ckpt.close()
  writer = metrics.MetricWriter(workdir, tensorboard=False, enabled=True)
  for s, loss in ((1, 3.0), (2, 2.5), (3, 2.2), (4, 2.0)):
    writer.write_scalars(s, {"train/loss": loss, "val/loss": loss + 0.1}, log=False)
  writer.close()


@pytest.fixture(scope="module")
def trained_workdir(tmp_path_factory):
  root = tmp_path_factory.mktemp("eval")
  config = _small_config(root, _grid_task_name())
  workdir = str(root / "run")
  _initialised_checkpoint(config, workdir)
  return config, workdir


def test_evaluate_writes_json_markdown_and_pictures(trained_workdir, capsys):
  config, workdir = trained_workdir
  out = ev.evaluate(config, workdir)
  eval_dir = os.path.join(workdir, "eval")
  with open(os.path.join(eval_dir, "results.json")) as f:
    saved = json.load(f)
  assert saved["splits"]["test"]["num_puzzles"] == 16
  assert saved["step"] == 4 and saved["objective"] == "mdm"
  strategies = saved["splits"]["test"]["strategies"]
  assert list(strategies) == ["vanilla", "margin"]
  # The table holds what the sampler does with these params on these puzzles,
  # recomputed here directly (same data, key and sampler options).
  params, saved_config, task, apply_fn, _ = ev.load_model(workdir)
  examples = {k: np.asarray(v[:16])
              for k, v in ev._dataset(config, saved_config, task, "test").items()}  # pylint: disable=protected-access
  sm = config.sampler
  direct = ev.evaluate_strategies(
      task, examples, key=jax.random.PRNGKey(int(config.eval.seed)), apply_fn=apply_fn,
      params=params, strategies=["vanilla", "margin"], batch_size=8, num_steps=4,
      schedule=sm.schedule, k_mode=sm.k_mode, gumbel=float(sm.gumbel),
      temperature=float(sm.temperature), remask=bool(sm.remask))
  for name, s in strategies.items():
    want = direct[name].summary()
    assert s["num_puzzles"] == 16
    for field in ("num_solved", "solved", "cell_accuracy", "mean_steps"):
      assert s[field] == pytest.approx(want[field]), (name, field)
  assert set(saved["splits"]["test"]["sweep"]["accuracy"]["margin"]) == {"2"}
  assert out["splits"]["test"]["strategies"]["margin"]["solved"] == strategies["margin"][
      "solved"]
  with open(os.path.join(eval_dir, "results.md")) as f:
    md = f.read()
  for row in ("| Method | # Param | Accuracy |", "| MDM vanilla |", "| MDM top prob margin |"):
    assert row in md
  printed = capsys.readouterr().out
  assert "| MDM top prob margin |" in printed
  for name in ("test_decode_order.png", "test_cell_errors.png",
               "test_accuracy_vs_steps.png", "loss_curves.png"):
    path = os.path.join(eval_dir, name)
    assert path in saved["plots"]
    pixels = matplotlib.image.imread(path)  # a real picture: large, many colours
    assert min(pixels.shape[:2]) >= 200, (name, pixels.shape)
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 8, name


def test_evaluate_overrides_and_errors(trained_workdir, tmp_path):
  config, workdir = trained_workdir
  config = config.copy_and_resolve_references()
  config.eval.sweep_steps = []
  out = ev.evaluate(config, workdir, strategies=["entropy"], num_puzzles=8, plots=False)
  assert "sweep" not in out["splits"]["test"]
  assert list(out["splits"]["test"]["strategies"]) == ["entropy"]
  assert out["splits"]["test"]["num_puzzles"] == 8
  with pytest.raises(ValueError, match="greedy"):
    ev.evaluate(config, workdir, strategies=["greedy"], plots=False)
  with pytest.raises(ValueError, match="split"):
    ev.evaluate(config, workdir, split="nope", plots=False)
  with pytest.raises(ValueError, match="does not exist|no checkpoints"):
    ev.evaluate(config, str(tmp_path / "missing"))


@pytest.mark.slow
def test_train_then_evaluate_end_to_end(tmp_path):
  """A real (4-step) training run, then evaluate() from main's config."""
  from mdm_jax import train
  config = _small_config(tmp_path, _grid_task_name())
  workdir = str(tmp_path / "run")
  train.train(config, workdir)
  out = ev.evaluate(config, workdir)
  assert out["step"] == 4
  assert os.path.isfile(os.path.join(workdir, "eval", "results.md"))
  assert os.path.join(workdir, "eval", "loss_curves.png") in out["plots"]


def _fake_result(objective, strategies, num_params, ordering=None):
  return {"workdir": "/x", "objective": objective, "arm_ordering": ordering,
          "num_params": num_params, "step": 10,
          "task": {"name": "sudoku", "params": {"box_rows": 3, "box_cols": 3}},
          "splits": {"test": {"num_puzzles": 100, "strategies": {
              s: dict(solved=acc, cell_accuracy=0.9, mean_steps=50.0, puzzles_per_sec=10.0,
                      num_puzzles=100) for s, acc in strategies.items()}}}}


def test_combined_table_over_runs(tmp_path, capsys):
  arm = _fake_result("arm", {"greedy": 0.8718}, 42_000_000, "solver")
  mdm = _fake_result("mdm", {"vanilla": 0.0688, "top_prob": 0.1851, "margin": 0.8949},
                     6_000_000)
  md = ev.combined_markdown([arm, mdm])
  lines = [l for l in md.splitlines() if l.startswith("| ") and "Method" not in l]
  assert [l.split(" | ")[0][2:] for l in lines] == [
      "ARM (with ordering)", "MDM vanilla", "MDM top prob", "MDM top prob margin"]
  assert "| 42.0M | 87.18% |" in lines[0] and "| 6.0M | 89.49% |" in lines[3]
  for name, res in (("arm", arm), ("mdm", mdm)):
    os.makedirs(tmp_path / name / "eval")
    with open(tmp_path / name / "eval" / "results.json", "w") as f:
      json.dump(res, f)
  assert ev.main(["table", str(tmp_path / "arm"), str(tmp_path / "mdm"),
                  "--out", str(tmp_path / "t.md")]) == 0
  assert "| MDM top prob margin |" in capsys.readouterr().out
  assert (tmp_path / "t.md").read_text().strip() == md.strip()
  assert ev.main(["table", str(tmp_path / "missing")]) == 2
  md_one = ev.results_markdown(mdm)
  assert "- accuracy: vanilla 6.88% -> top prob 18.51%, top prob margin 89.49%" in md_one


def test_evaluate_arm_and_pi_checkpoints(tmp_path, capsys):
  config = _small_config(tmp_path, _grid_task_name())
  config.objective = "arm"
  config.data.ordering = "solver"
  config.model.overrides.dropout = 0.0
  workdir = str(tmp_path / "arm")
  _initialised_checkpoint(config, workdir)
  out = ev.evaluate(config, workdir, num_puzzles=8)
  summary = out["splits"]["test"]["strategies"]
  assert list(summary) == ["greedy"] and "sweep" not in out["splits"]["test"]
  assert out["arm_ordering"] == "solver" and out["arm_legal"] is True
  assert "| ARM (with ordering) |" in capsys.readouterr().out
  assert os.path.join(workdir, "eval", "test_cell_errors.png") in out["plots"]
  with pytest.raises(ValueError, match="greedy"):
    ev.evaluate(config, workdir, strategies=["margin"])
  config.eval.arm_legal = False  # the unconstrained argmax
  assert ev.evaluate(config, workdir, num_puzzles=8, plots=False)["arm_legal"] is False
  config.eval.arm_legal, config.eval.arm_beam = True, 3  # beam search
  beam = ev.evaluate(config, workdir, num_puzzles=8, plots=False)
  assert beam["arm_beam"] == 3 and list(beam["splits"]["test"]["strategies"]) == ["greedy"]
  config.eval.arm_beam = 0
  with pytest.raises(ValueError, match="arm_beam"):
    ev.evaluate(config, workdir, num_puzzles=8, plots=False)
  config.eval.arm_beam = 1
  config.eval.arm_pick = "margin"
  if _grid_task_name() == "sudoku":  # the (cell, digit) layout: confident-cell decoding
    with pytest.raises(ValueError, match="arm_vocab='cell'"):
      ev.evaluate(config, workdir, num_puzzles=8, plots=False)
    config.task.params = {"box_rows": 2, "box_cols": 2, "arm_vocab": "cell"}
    workdir = str(tmp_path / "arm_cell")
    _initialised_checkpoint(config, workdir)
    picked = ev.evaluate(config, workdir, num_puzzles=8, plots=False)
    assert picked["arm_pick"] == "margin"
    assert "| ARM (with ordering, next cell by top prob margin) |" in (
        capsys.readouterr().out)
  config.eval.arm_pick = ""

  config.objective = "pi"
  config.data.ordering = ""
  workdir = str(tmp_path / "pi")
  _initialised_checkpoint(config, workdir)
  out = ev.evaluate(config, workdir)
  assert out["splits"] == {} and out["plots"] == [
      os.path.join(workdir, "eval", "loss_curves.png")]


def _naked_single_arm(task):
  """A causal 'model' of the Sudoku 'cell' ARM layout that knows naked singles only:
  at a key slot holding cell c, its value logits are sure of c's one remaining digit
  when the pairs before it leave c a single candidate, and flat otherwise; it never
  predicts which cell comes next (flat key logits)."""
  g, n = task.geometry, task.n
  cells = n * n
  peers_CxC = np.zeros((cells, cells), bool)
  for unit in np.asarray(g.units):
    peers_CxC[np.ix_(unit, unit)] = True
  peers = jnp.asarray(peers_CxC)
  vocab = task.arm_layout("solver").vocab_size

  def logits_fn(tokens_BxL):
    b, length = tokens_BxL.shape
    keys_BxP, values_BxP = tokens_BxL[:, 0::2], tokens_BxL[:, 1::2] - cells
    pairs = length // 2
    before_PxP = jnp.arange(pairs)[None, :] < jnp.arange(pairs)[:, None]  # [slot, pair]
    # held[b, slot, cell, digit]: a pair before `slot` wrote `digit` into `cell`.
    held = (before_PxP[None, :, :, None, None]
            & (keys_BxP[:, None, :, None, None] == jnp.arange(cells)[:, None])
            & (values_BxP[:, None, :, None, None] == jnp.arange(n))).any(2)
    seen = jnp.einsum("cd,bsdv->bscv", peers.astype(jnp.int32), held.astype(jnp.int32)) > 0
    cand_BxPxV = ~jnp.take_along_axis(
        seen, jnp.clip(keys_BxP, 0, cells - 1)[:, :, None, None], axis=2)[:, :, 0]
    sure = 10.0 * (cand_BxPxV.sum(-1, keepdims=True) == 1) * cand_BxPxV
    logits = jnp.zeros((b, pairs, 2, vocab)).at[:, :, 0, cells:cells + n].set(sure)
    return logits.reshape(b, length, vocab)
  return logits_fn


def _singles_solvable(task, examples):
  """bool[N]: puzzles that naked singles alone complete."""
  g, n = task.geometry, task.n
  board = np.asarray(examples["puzzle"]).astype(np.int64).copy()
  for _ in range(n * n):
    held = board[..., None] == np.arange(1, n + 1)
    present = held[:, np.asarray(g.units)].any(2)
    cand = ~present[:, np.asarray(g.cell_units)].any(2) & (board == 0)[..., None]
    naked = cand.sum(-1) == 1
    board = np.where(naked, cand.argmax(-1) + 1, board)
  return (board > 0).all(1)


def test_arm_pick_finds_the_forced_cells_that_greedy_order_misses():
  task = data.get_task("sudoku", box_rows=2, box_cols=3, arm_vocab="cell")
  examples = task.generate("test", 24, seed=2)
  fn = _naked_single_arm(task)
  kwargs = dict(key=jax.random.PRNGKey(0), logits_fn=fn, strategies=("greedy",),
                arm_ordering="solver", batch_size=8)
  solvable = _singles_solvable(task, examples)
  assert solvable.sum() >= 6
  for score in ("top_prob", "margin", "entropy"):
    r = ev.evaluate_strategies(task, examples, arm_pick=score, **kwargs)["greedy"]
    assert r.solved_N[solvable].all(), score
  greedy = ev.evaluate_strategies(task, examples, **kwargs)["greedy"]
  assert greedy.solved_N.sum() < solvable.sum() / 2  # lowest empty cell first: guesses
  # NFE counts single-token forwards: per (cell, digit) pair 36 tried cells + 2 writes.
  blanks = (np.asarray(examples["puzzle"]) == 0).sum(1)
  np.testing.assert_allclose(greedy.mean_nfe, 2 * blanks.mean())
  np.testing.assert_allclose(r.mean_nfe, 38 * blanks.mean())
  with pytest.raises(ValueError, match="arm_pick must be"):
    ev.evaluate_strategies(task, examples, arm_pick="greedy", **kwargs)
  with pytest.raises(ValueError, match="choose one"):
    ev.evaluate_strategies(task, examples, arm_pick="margin", arm_beam=4, **kwargs)
  shared = data.get_task("sudoku", box_rows=2, box_cols=3)
  with pytest.raises(ValueError, match="arm_vocab='cell'"):
    ev.evaluate_strategies(shared, examples, arm_pick="margin", **kwargs)
