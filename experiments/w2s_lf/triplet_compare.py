"""The triplet label model (FlyingSquid) against majority, weighted and Dawid-Skene on the Rotten
Tomatoes rules, on the train split (the rows the weak supervisor is fitted on; test is never
read). Ground truth is read for this report only: no label model sees it.

    python experiments/w2s_lf/triplet_compare.py [--rules rotten_tomatoes]

Every label model is deterministic (no seed), so one run is the result. Prints two markdown
tables: accuracy of each label model's hard labels (argmax of the posterior) on all rows and on
the rows with at least one vote, the paired difference from majority vote (per row, with a
95% t-interval over the snippets), the mean probability of the chosen class on the rows
with a vote (to set against their accuracy), the share labelled fresh and the prior; then the triplet
model's estimated accuracy of each rule next to its true accuracy, and the dependency groups
that `dependencies='auto'` found.
"""
import os
import sys
import time

import numpy as np
import scipy.sparse.csgraph
import scipy.stats

from w2s import label_models, labelling_functions as lf, options

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lf_stats  # noqa: E402  (the same rules, votes and gold labels)

MODELS = (
    ('majority', dict(name='majority')),
    ('weighted', dict(name='weighted')),
    ('dawid_skene (abstain=skip)', dict(name='dawid_skene')),
    ('dawid_skene (abstain=model)', dict(name='dawid_skene', abstain='model')),
    ('triplet, FlyingSquid moments (all rows)', dict(name='triplet', moments_over='all')),
    ('triplet, independent', dict(name='triplet')),
    ('triplet, signs from data', dict(name='triplet', signs='data')),
    ('triplet, dependencies=auto', dict(name='triplet', dependencies='auto')),
)


def paired(right: np.ndarray, base: np.ndarray) -> str:
  """Mean per-row accuracy difference [n] with a 95% t-interval over rows (scipy; the label models
  fixed as fitted: the spread is that of the snippets, not of a refit)."""
  d = right - base
  lo, hi = scipy.stats.ttest_1samp(d, 0.0).confidence_interval(0.95)
  return f'{d.mean():+.4f} [{lo:+.4f}, {hi:+.4f}]'


def groups(dep: np.ndarray, names) -> list[list[str]]:
  """Connected components (size > 1) of a bool [m, m] dependency matrix, as rule names."""
  _, comp = scipy.sparse.csgraph.connected_components(dep, directed=False)
  return [[names[i] for i in np.flatnonzero(comp == c)] for c in np.unique(comp)
          if (comp == c).sum() > 1]


def main():
  rules, votes, y = lf_stats.train_votes(__doc__)
  covered = (votes != lf.ABSTAIN).any(1)
  print(f'train split: {len(y)} snippets, {y.mean():.3f} fresh; coverage (rows with a vote) '
        f'{covered.mean():.3f}\n')
  print('| label model | accuracy, all rows | accuracy, rows with a vote | minus majority, all '
        'rows [95% CI] | mean confidence, rows with a vote | labelled fresh | prior | wall s |\n'
        '|---|---|---|---|---|---|---|---|')
  diags, base = {}, None
  for label, spec in MODELS:
    t = time.perf_counter()
    p = options.plugin('label_models', spec, label)
    probs, diag = label_models.run(p, votes, 2, where=label)
    wall = time.perf_counter() - t
    pred = probs.argmax(1)
    diags[label] = diag
    right = (pred == y).astype(np.float64)
    base = right if base is None else base
    print(f'| {label} | {right.mean():.3f} | {right[covered].mean():.3f} | '
          f'{paired(right, base) if right is not base else "(reference)"} | '
          f'{probs[covered].max(1).mean():.3f} | {pred.mean():.3f} | '
          f'{[round(float(x), 3) for x in diag["prior"]]} | {wall:.1f} |')

  print('\n| rule | true accuracy | triplet, all-row moments | triplet, independent '
        '| triplet, auto (triplets) |\n|---|---|---|---|---|')
  flying = diags['triplet, FlyingSquid moments (all rows)']
  ind = diags['triplet, independent']
  auto = diags['triplet, dependencies=auto']
  for j, name in enumerate(rules.names):
    on = votes[:, j] != lf.ABSTAIN
    true = f'{np.mean(votes[on, j] == y[on]):.3f}' if on.any() else '-'
    print(f'| {name} | {true} | {flying["accuracy"][j]:.3f} | {ind["accuracy"][j]:.3f} | '
          f'{auto["accuracy"][j]:.3f} ({int(auto["triplets"][j])}) |')
  print(f'\nauto dependency groups: {groups(auto["dependencies"], rules.names)}; votes read by '
        f'the posterior: {float(auto["votes_used"]):.3f}')


if __name__ == '__main__':
  main()
