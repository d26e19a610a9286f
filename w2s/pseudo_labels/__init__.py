"""Pseudo-label selection policies for self-training rounds (`w2s.protocols.self_training`).

A policy is a module here (or a dotted path `pkg.mod:fn`) whose entry point

    select(probs, *, round_index, members=None, **hparams) -> (rows [n] int, labels [n] int)

picks rows of the unlabelled set U from the teacher's probabilities `probs` [N, C] (its members'
[N, K, C] when the teacher is an ensemble) in round `round_index` >= 1, with a class for each.
A config names one as `pseudo.select = dict(name='threshold', tau=0.95)`. `check` runs it once
on made-up probabilities before anything trains (a bad option fails in `--dry_run`, not after
round 0).
"""
import numbers

import numpy as np

from w2s import options
from w2s.errors import UserError

NEEDS_MEMBERS = ('agreement',)  # policies that read an ensemble teacher's heads


def needs_members(p: options.Plugin) -> bool:
  return p.name in NEEDS_MEMBERS


def choose(p: options.Plugin, probs: np.ndarray, *, round_index: int, members=None):
  """(rows, labels) of the policy, rows sorted and unique; a policy that returns rows outside
  U, a row twice or a label outside 0..C-1 is a UserError (never silently wrong labels)."""
  kw = {'members': members} if needs_members(p) else {}
  probs = np.asarray(probs, np.float32)
  rows, labels = p.entry()(probs, round_index=round_index, **kw, **p.hparams)
  rows, labels = np.asarray(rows, np.int64).reshape(-1), np.asarray(labels, np.int64).reshape(-1)
  n, num_classes = probs.shape
  if len(rows) != len(labels) or np.any((rows < 0) | (rows >= n)) or len(np.unique(rows)) != \
      len(rows) or np.any((labels < 0) | (labels >= num_classes)):
    raise UserError(f'pseudo.select {p.name!r} returned {len(rows)} rows and {len(labels)} '
                    f'labels; it must return distinct rows in 0..{n - 1} of U, each with a class '
                    f'in 0..{num_classes - 1}')
  order = np.argsort(rows, kind='stable')
  return rows[order], labels[order]


def check(p: options.Plugin, num_classes: int, ensemble_size: int = 1) -> None:
  """The policy with its options run on made-up teacher probabilities (8 rows; members [8, K,
  C] for a policy that reads an ensemble's heads), rounds 1 and 2: what a run does after round 0,
  so a bad option fails before anything trains."""
  rng = np.random.default_rng(0)
  k = max(ensemble_size, 2)
  members = rng.dirichlet(np.ones(num_classes), size=(8, k)).astype(np.float32)
  probs = members.mean(1)
  for r in (1, 2):
    try:
      choose(p, probs, round_index=r, members=members if needs_members(p) else None)
    except UserError:
      raise
    except Exception as e:  # pylint: disable=broad-except  # a user's policy that cannot run
      raise UserError(f'pseudo.select {p.name!r} {p.hparams} fails on test probabilities '
                      f'({type(e).__name__}: {" ".join(str(e).split())[:200]})') from e


def number(policy: str, name: str, value, lo: float, hi: float, *, open_lo: bool = False) -> float:
  """A policy's option `value` as a float in [lo, hi] ((lo, hi] with open_lo), else a UserError
  naming it as the config does (`pseudo.select.<name>`)."""
  ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
  if not ok or not (lo < value <= hi if open_lo else lo <= value <= hi):
    raise UserError(f'pseudo.select.{name}={value!r} ({policy}) must be a number in '
                    f'{"(" if open_lo else "["}{lo:g}, {hi:g}]')
  return float(value)


def quality(rows: np.ndarray, labels: np.ndarray, truth: np.ndarray, num_classes: int) -> dict:
  """Pseudo-label quality against U's hidden labels `truth` [N] (reporting only, never for
  selection): coverage (share of U selected), accuracy (of the selected labels), utilisation
  (share of U selected with the right label = coverage x accuracy), and per true class
  coverage / accuracy.

  Rows whose label is unknown (-1: a dataset's own unlabelled split, e.g. STL-10's 100k images)
  are excluded from everything scored against labels: coverage counts them (selecting needs no
  label), but accuracy is over the selected rows with a known label, utilisation and per-class
  numbers over U's known-label rows. 'n_known' / 'n_selected_known' say how many those are;
  accuracy is NaN when no selected row has a label.
  """
  rows, labels, truth = np.asarray(rows, np.int64), np.asarray(labels), np.asarray(truth)
  known = truth >= 0
  keep = known[rows]
  rows, labels = rows[keep], labels[keep]  # the selected rows whose label is known
  right = labels == truth[rows]
  n_known = int(known.sum())
  per_class = []
  for c in range(num_classes):
    in_c = truth[rows] == c
    per_class.append({'coverage': float(in_c.sum() / max(1, (truth == c).sum())),
                      'accuracy': float(right[in_c].mean()) if in_c.any() else float('nan')})
  return {'n_selected': int(len(keep)), 'coverage': float(len(keep) / max(1, len(truth))),
          'n_known': n_known, 'n_selected_known': int(len(rows)),
          'accuracy': float(right.mean()) if len(rows) else float('nan'),
          'utilisation': float(right.sum() / max(1, n_known)), 'per_class': per_class}


def confidence(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(max probability [N], argmax [N])."""
  return probs.max(-1), probs.argmax(-1)
