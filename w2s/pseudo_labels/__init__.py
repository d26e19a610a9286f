"""Pseudo-label selection policies for self-training rounds (`w2s.protocols.self_training`).

A policy is a module here (or a dotted path `pkg.mod:fn`) whose entry point

    select(probs, *, round_index, members=None, **hparams) -> (rows [n] int, labels [n] int)

picks rows of the unlabelled set U from the teacher's probabilities `probs` [N, C] (its members'
[N, K, C] when the teacher is an ensemble) in round `round_index` >= 1, with a class for each.
A config names one as `pseudo.select = dict(name='threshold', tau=0.95)`.
"""
import numpy as np

from w2s import options

NEEDS_MEMBERS = ('agreement',)  # policies that read an ensemble teacher's heads


def needs_members(p: options.Plugin) -> bool:
  return p.name in NEEDS_MEMBERS


def choose(p: options.Plugin, probs: np.ndarray, *, round_index: int, members=None):
  """(rows, labels) of the policy, rows sorted and unique."""
  kw = {'members': members} if needs_members(p) else {}
  rows, labels = p.entry()(np.asarray(probs, np.float32), round_index=round_index, **kw,
                           **p.hparams)
  rows, labels = np.asarray(rows, np.int64), np.asarray(labels, np.int64)
  order = np.argsort(rows, kind='stable')
  return rows[order], labels[order]


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
