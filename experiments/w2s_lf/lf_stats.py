"""Coverage, accuracy, overlap and conflict of the Rotten Tomatoes labelling functions, and the
label models' accuracy, on the *train* split only (test is never read).

    python experiments/w2s_lf/lf_stats.py [--rules rotten_tomatoes]
"""
import argparse

import numpy as np

from w2s import label_models, labelling_functions as lf, options
from w2s.data import rotten_tomatoes


def train_votes(doc: str):
  """(rules, votes int [n, m], gold labels [n]) of the --rules set on Rotten Tomatoes' train split,
  the command line parsed with `doc`'s first line as its description."""
  parser = argparse.ArgumentParser(description=doc.split('\n')[0])
  parser.add_argument('--rules', default='rotten_tomatoes')
  args = parser.parse_args()
  train = rotten_tomatoes.load().split('train')
  rules = lf.load(args.rules)
  votes = lf.vote_matrix(rules, list(train['text']), num_classes=2)
  return rules, votes, np.asarray(train['label'])


def main():
  rules, votes, y = train_votes(__doc__)
  s = lf.summary(votes, rules.names)
  print(f'train split: {len(y)} snippets, {y.mean():.3f} fresh; rows with a vote '
        f'{s["any_vote"]:.3f}, votes per row {(votes != -1).sum(1).mean():.2f}\n')
  print('| rule | votes | coverage | accuracy | overlap | conflict |\n|---|---|---|---|---|---|')
  for j, name in enumerate(rules.names):
    on = votes[:, j] != lf.ABSTAIN
    acc = f'{np.mean(votes[on, j] == y[on]):.3f}' if on.any() else '-'
    polarity = '/'.join(('rotten', 'fresh')[c] for c in sorted(set(votes[on, j].tolist())))
    print(f'| {name} | {polarity} | {on.mean():.3f} | {acc} | {s["overlap"][j]:.3f} | '
          f'{s["conflict"][j]:.3f} |')
  covered = (votes != lf.ABSTAIN).any(1)
  print('\n| label model | accuracy (all rows) | accuracy (rows with a vote) | prior |\n'
        '|---|---|---|---|')
  for name in ('majority', 'weighted', 'dawid_skene'):
    probs, diag = label_models.run(options.plugin('label_models', dict(name=name), name), votes, 2)
    pred = probs.argmax(1)
    print(f'| {name} | {np.mean(pred == y):.3f} | {np.mean(pred[covered] == y[covered]):.3f} | '
          f'{[round(float(x), 3) for x in diag["prior"]]} |')


if __name__ == '__main__':
  main()
