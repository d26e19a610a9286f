"""Chooses the offline main job's learning rates on held-out labels only, never on test.

    python experiments/w2s_offline/select_hparams.py --workdir runs/w2s_offline_select

Every run of the grid shares one workdir, so each weak supervisor, ceiling and student is trained
once (stages are keyed by their config) and MiniLM features are extracted once. The held-out
slice is `splits.val_fraction` = 10% of train, disjoint from A, B and test. What each choice reads:

1. weak learning rate: the weak supervisor's accuracy on val's ground truth (it is trained on
   ground truth; val is not B and not test);
2. strong learning rate: the ceiling's accuracy on val's ground truth; the students train like
   the strong model (same learning rate and epochs), as in the original release.

Within each run every stage keeps its best parameters by its own training loss on the held-out
slice against its own labels (`select='best'`, evaluated every `eval_every` steps): ground truth
for the weak supervisor and the ceiling, the weak supervisor's labels of val for the students
(EleutherAI's w2s also selects students on held-out weak labels). Test accuracy is printed only
for the chosen configuration, after the choice, as the result; a diagnostic run with the
students' within-run selection off (`select='last'`) is printed after it and chooses nothing.
"""
import argparse
import copy
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))

WEAK_LRS = (3e-3, 1e-2, 3e-2)
STRONG_LRS = (1e-3, 3e-3, 1e-2)


def _config(base, weak_lr, strong_lr, student_select='best'):
  c = copy.deepcopy(base)
  with c.unlocked():
    c.weak.train.optimizer.learning_rate = weak_lr
    c.strong.train.optimizer.learning_rate = strong_lr
    if student_select != c.strong.train.select:
      c.student = dict(train=copy.deepcopy(c.strong.train.to_dict()))
      c.student.train.select = student_select
  return c


def _held_out(results, stage, key):
  """Mean over seeds of one stage's held-out number."""
  return float(np.mean([r['held_out'][stage][key] for r in results['per_seed']]))


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--workdir', default='runs/w2s_offline_select')
  parser.add_argument('--config_arg', default='', help='argument string for configs/w2s_offline.py')
  args = parser.parse_args()
  from w2s import train
  from w2s.configs import w2s_offline
  base = w2s_offline.get_config(args.config_arg or None)
  losses = [f'student_{n}' for n in base.student_order]
  runs = {}

  def run(weak_lr, strong_lr, student_select='best'):
    key = (weak_lr, strong_lr, student_select)
    if key not in runs:
      print(f'--- weak lr {weak_lr:g}, strong lr {strong_lr:g}, students select={student_select}',
            flush=True)
      runs[key] = train.train_and_evaluate(_config(base, *key), args.workdir)
    return runs[key]

  s0 = base.strong.train.optimizer.learning_rate
  weak_scores = {w: _held_out(run(w, s0), 'weak', 'val_accuracy') for w in WEAK_LRS}
  weak_lr = max(weak_scores, key=weak_scores.get)
  ceiling_scores = {s: _held_out(run(weak_lr, s), 'ceiling', 'val_accuracy') for s in STRONG_LRS}
  strong_lr = max(ceiling_scores, key=ceiling_scores.get)
  chosen = run(weak_lr, strong_lr)
  diagnostic = run(weak_lr, strong_lr, 'last')
  student_held_out = {n: _held_out(chosen, n, 'val_accuracy') for n in losses}

  lines = ['## Held-out selection (no test labels read)', '',
           '| weak lr | weak acc on val (ground truth) |', '|---|---|']
  lines += [f'| {w:g} | {100 * v:.2f} |' for w, v in weak_scores.items()]
  lines += ['', '| strong lr | ceiling acc on val (ground truth) |', '|---|---|']
  lines += [f'| {s:g} | {100 * v:.2f} |' for s, v in ceiling_scores.items()]
  lines += ['', '| student | agreement with the weak labels of val |', '|---|---|']
  lines += [f'| {n} | {100 * v:.2f} |' for n, v in student_held_out.items()]
  lines += ['', f'chosen: weak lr {weak_lr:g}, strong (and student) lr {strong_lr:g}', '',
            '## Test results of the chosen configuration', '']
  from w2s.protocols import results as results_lib
  lines.append(results_lib.table(chosen))
  lines += ['', '## Diagnostic (chooses nothing): students without within-run selection', '',
            results_lib.table(diagnostic)]
  text = '\n'.join(lines)
  print(text)
  with open(os.path.join(args.workdir, 'selection.md'), 'w') as f:
    f.write(text + '\n')
  with open(os.path.join(args.workdir, 'selection.json'), 'w') as f:
    json.dump({'weak': weak_scores, 'ceiling': ceiling_scores, 'students': student_held_out,
               'chosen': {'weak_lr': weak_lr, 'strong_lr': strong_lr}},
              f, indent=1, default=str)


if __name__ == '__main__':
  main()
