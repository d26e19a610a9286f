"""How often the depth-2 lookahead debaters play differently from the greedy ones, game by game.

    python experiments/pixel_debate/compare_strategies.py runs/pixel_debate/both/results.json

Reads the stage outputs a run with `strategy=greedy+lookahead` lists in its results.json (the
same games: same judge, claims and first movers) and prints, per k and per game set (test vs
the runner-up liar, B's labelling debates), the share of games whose reveal order differs, whose
set of revealed pixels differs, whose winner differs, and the mean change of the final log-odds
logit[claim 0] - logit[claim 1], over all seeds.
"""
import json
import os
import sys

import numpy as np


def _load(root, rel):
  with np.load(os.path.join(root, rel, 'outputs.npz')) as f:
    return dict(f)


def _margin(g):
  final = g['logits'][:, -1]
  rows = np.arange(len(final))
  return final[rows, g['claims'][:, 0]] - final[rows, g['claims'][:, 1]]


def main(path):
  results = json.load(open(path))
  root = results['config'].get('shared_dir') or os.path.dirname(os.path.abspath(path))
  print('| k | games | n | order differs | pixel set differs | winner differs | '
        'mean change of final log-odds (claim 0 - claim 1) |')
  print('|---|---|---|---|---|---|---|')
  for k in results['pixels']:
    for kind, name in ((f'debate_k{k}_{{}}_runner_up', 'test, runner-up liar'),
                       (f'debate_labels_k{k}_{{}}', 'B, strong top-2')):
      stats = []
      for rec in results['per_seed']:
        g, l = (_load(root, rec['stages'][kind.format(s)]) for s in ('greedy', 'lookahead'))
        assert (g['claims'] == l['claims']).all() and (g['first'] == l['first']).all()
        same_set = [set(a) == set(b) for a, b in zip(g['order'], l['order'])]
        stats.append(np.stack([(g['order'] != l['order']).any(1), ~np.array(same_set),
                               g['winner'] != l['winner'], _margin(l) - _margin(g)], 1))
      s = np.concatenate(stats)
      print(f'| {k} | {name} | {len(s)} | {100 * s[:, 0].mean():.1f}% | {100 * s[:, 1].mean():.1f}% '
            f'| {100 * s[:, 2].mean():.2f}% | {s[:, 3].mean():+.3f} |')


if __name__ == '__main__':
  main(sys.argv[1])
