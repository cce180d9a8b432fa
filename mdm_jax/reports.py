"""Markdown reports of evaluations: the paper's tables (Kim et al. 2025, Tables 1,
2, 3 and 5) from results.json dicts, one run or several side by side.

`python -m mdm_jax.evaluate table WORKDIR...` prints `combined_markdown`.
"""
from __future__ import annotations

import math
import os
from typing import Any, Mapping, Sequence

from mdm_jax import sampling

ARM_STRATEGY = "greedy"  # causal (ARM) checkpoints: greedy decoding in their order
MDM_STRATEGIES = sampling.STRATEGIES  # the sampler's own list, whatever it holds
STRATEGIES = MDM_STRATEGIES + (ARM_STRATEGY,)
# Table labels: the paper's names where it has one, else the strategy's name.
STRATEGY_LABELS = {s: s.replace("_", " ") for s in STRATEGIES}
STRATEGY_LABELS.update({"random": "random order", "top_prob": "top prob",
                        "margin": "top prob margin"})

EXTRA_LABELS = {"consistent_frac": "Consistent obs.",
                "order_corr": "Rank corr. with solver order"}
_NOT_SHARES = ("order_corr",)  # printed as numbers, not percentages
_ARM_LABELS = {"solver": "with ordering", "row_major": "without ordering"}


def method_label(objective: str, strategy: str, ordering: str | None = None,
                 decoding: str | None = None) -> str:
  """'MDM top prob margin', 'ARM (with ordering)', ... as in the paper's tables;
  `decoding` (`arm_decoding`) is appended for ARMs not decoded greedily."""
  if strategy == ARM_STRATEGY or objective == "arm":
    order = _ARM_LABELS.get(ordering or '', f'{ordering} order')
    return f"ARM ({order}{', ' + decoding if decoding else ''})"
  return f"MDM {STRATEGY_LABELS[strategy]}"


def arm_decoding(result: Mapping[str, Any]) -> str | None:
  """How an ARM result was decoded, when not greedily: 'next cell by top prob'
  (`eval.arm_pick`), 'beam 16' (`eval.arm_beam`); None for greedy or an MDM."""
  if result.get("objective") != "arm":
    return None
  if result.get("arm_pick"):
    return f"next cell by {STRATEGY_LABELS[result['arm_pick']]}"
  if int(result.get("arm_beam", 1) or 1) > 1:
    return f"beam {int(result['arm_beam'])}"
  return None


def format_params(num: int | None) -> str:
  """6_312_000 -> '6.3M' (the tables' model size)."""
  if num is None:
    return "?"
  if num >= 1e9:
    return f"{num / 1e9:.1f}B"
  if num >= 1e6:
    return f"{num / 1e6:.1f}M"
  if num >= 1e3:
    return f"{num / 1e3:.0f}k"
  return str(num)


def _pct(x: float | None) -> str:
  return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:.2f}%"


def _fmt(key: str, x: float | None) -> str:
  """A table cell: shares as percentages, correlations as numbers."""
  if key in _NOT_SHARES:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.2f}"
  return _pct(x)


def _num(x: float | None) -> str:
  return "n/a" if x is None or not math.isfinite(x) else f"{x:.1f}"


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
  """A table like the paper's Tables 1, 2, 3, 5: one row per method.

  Each row: {'method', 'num_params', 'solved', 'cell_accuracy', 'mean_steps',
  'mean_nfe', 'puzzles_per_sec', 'num_puzzles'} plus optional extra shares
  (EXTRA_LABELS). Mean NFE: forward passes per puzzle ('n/a' in older results).
  """
  extras = [k for k in EXTRA_LABELS if any(k in r for r in rows)]
  head = (["Method", "# Param", "Accuracy"] + [EXTRA_LABELS[k] for k in extras]
          + ["Cell accuracy", "Mean steps", "Mean NFE", "Puzzles/s", "Puzzles"])
  lines = ["| " + " | ".join(head) + " |",
           "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
  for r in rows:
    pps = r.get("puzzles_per_sec")
    cells = ([r["method"], format_params(r.get("num_params")), _pct(r["solved"])]
             + [_fmt(k, r.get(k)) for k in extras]
             + [_pct(r.get("cell_accuracy")), f"{r.get('mean_steps', float('nan')):.1f}",
                _num(r.get("mean_nfe")),
                "n/a" if pps is None or not math.isfinite(pps) else f"{pps:.1f}",
                str(r.get("num_puzzles", ""))])
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def _table_rows(result: Mapping[str, Any], split: str) -> list[dict[str, Any]]:
  rows = []
  for strategy, s in result["splits"][split]["strategies"].items():
    rows.append(dict(s, method=method_label(result["objective"], strategy,
                                            result.get("arm_ordering"),
                                            arm_decoding(result)),
                     num_params=result.get("num_params")))
  return rows


def _split_title(result: Mapping[str, Any], split: str) -> str:
  task = result["task"]
  params = ", ".join(f"{k}={v}" for k, v in task["params"].items() if v is not None)
  n = result["splits"][split]["num_puzzles"]
  step = result.get("step")
  at = f", checkpoint step {step}" if step is not None else ""
  return f"{task['name']} ({params}): split '{split}', {n} puzzles{at}"


def results_markdown(result: Mapping[str, Any]) -> str:
  """The whole evaluation as markdown: one table per split, then notes."""
  parts = [f"# Evaluation of {result['workdir']}", ""]
  s = result.get("sampler")
  if s and result["objective"] == "mdm":
    parts += [f"Sampler: {s['num_steps']} steps, schedule {s['schedule']}, "
              f"K {s['k_mode']}, Gumbel {s['gumbel']} ({s.get('gumbel_schedule', 'constant')}, "
              f"{s.get('score_space', 'prob')} scores), temperature {s['temperature']}, "
              f"remask {s['remask']}. Accuracy = puzzles solved completely.", ""]
  for split in result["splits"]:
    parts += [f"## {_split_title(result, split)}", "",
              markdown_table(_table_rows(result, split)), ""]
    strategies = result["splits"][split]["strategies"]
    if "vanilla" in strategies and len(strategies) > 1:
      others = [k for k in strategies if k != "vanilla"]
      for key, label in [("solved", "accuracy")] + list(EXTRA_LABELS.items()):
        if key not in strategies["vanilla"]:
          continue
        parts.append(f"- {label}: vanilla {_fmt(key, strategies['vanilla'][key])} -> "
                     + ", ".join(f"{STRATEGY_LABELS[k]} {_fmt(key, strategies[k].get(key))}"
                                 for k in others))
      parts.append("")
    sweep = result["splits"][split].get("sweep")
    if sweep:
      steps = sorted({int(k) for v in sweep["accuracy"].values() for k in v})
      parts += [f"Accuracy against sampling steps ({sweep['num_puzzles']} puzzles):", "",
                "| Method | " + " | ".join(f"{k} steps" for k in steps) + " |",
                "|---|" + "---:|" * len(steps)]
      for strategy, acc in sweep["accuracy"].items():
        parts.append(f"| {method_label('mdm', strategy)} | "
                     + " | ".join(_pct(acc.get(str(k))) for k in steps) + " |")
      parts.append("")
  pe = result.get("position_errors")
  if pe and "latent" in pe:
    parts += ["## Denoiser error by position type (random masking, t ~ U(0, 1))", "",
              "| Positions | 1 - p(true) | argmax wrong |", "|---|---:|---:|",
              f"| latents | {pe['latent']:.4f} | {pe.get('latent_argmax', float('nan')):.4f} |",
              f"| observations | {pe['obs']:.4f} | {pe.get('obs_argmax', float('nan')):.4f} |",
              ""]
  if result.get("plots"):
    parts += ["Pictures: " + ", ".join(os.path.basename(p) for p in result["plots"]), ""]
  return "\n".join(parts)


# ----------------------------------------------------------------------------------
# Several runs in one table (e.g. Table 2: ARM and MDM rows side by side).


def combined_markdown(results: Sequence[Mapping[str, Any]]) -> str:
  """One table per (task, split) over several runs' results (results.json dicts)."""
  groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
  for result in results:
    task = result["task"]
    params = ", ".join(f"{k}={v}" for k, v in task["params"].items() if v is not None)
    for split in result["splits"]:
      groups.setdefault((f"{task['name']} ({params})", split), []).extend(
          _table_rows(result, split))
  parts = []
  for (task_key, split), rows in groups.items():
    parts += [f"## {task_key}: split '{split}'", "", markdown_table(rows), ""]
  return "\n".join(parts)
