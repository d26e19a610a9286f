"""Each student loss's learning rate chosen on the weak labels of val, then its test numbers.

    python -m w2s.sweep --config configs/w2s_methods.py:task=rt,student_lr=0.001 --workdir runs/w2s_methods_rt_lr0.001 --only=base
    python -m w2s.sweep --config configs/w2s_methods.py:task=rt,student_lr=0.01 --workdir runs/w2s_methods_rt_lr0.01 --only=base
    python experiments/w2s_methods/select_lr.py 0.003=runs/w2s_methods_rt/base 0.001=runs/w2s_methods_rt_lr0.001/base 0.01=runs/w2s_methods_rt_lr0.01/base

For every loss, the learning rate whose students agree best with the weak labels of the held-out
val slice (`held_out.student_<loss>.val_accuracy`, the mean over seeds) is chosen; test labels and
B's ground truth are never read for the choice. Printed: per loss, each learning rate's mean val
agreement, the chosen one, and at it the test accuracy and PGR, mean [95% t-interval] over seeds,
with the paired difference to xent at its own chosen rate (the weak labels and the ceiling are the
same in every run: the sweeps share the splits and seeds; checked).
"""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))
from w2s import scores  # pylint: disable=wrong-import-position


def _load(spec: str):
  lr, _, path = spec.partition('=')
  with open(os.path.join(path, 'results.json')) as f:
    return float(lr), json.load(f)


def _values(r, loss, key):
  return np.asarray([np.nan if s[loss][key] is None else s[loss][key] for s in r['per_seed']],
                    np.float64)


def _fmt(s, scale=100.0, digits=1, signed=False):
  f = f"{'+' if signed else ''}.{digits}f"
  return f'{format(s.mean * scale, f)} [{format(s.lo * scale, f)}, {format(s.hi * scale, f)}]'


def main(argv):
  runs = dict(_load(a) for a in argv)
  if len(runs) < 2:
    sys.exit('usage: select_lr.py LR=RUN_DIR LR=RUN_DIR ... (a run dir holds results.json)')
  first = next(iter(runs.values()))
  for lr, r in runs.items():  # same weak labels and ceiling in every run
    for key in ('acc_weak', 'acc_ceiling'):
      assert np.allclose(_values(r, 'xent', key), _values(first, 'xent', key)), (lr, key)
  losses = first['config']['student_order']
  lrs = sorted(runs)
  val = {loss: {lr: np.mean([s['held_out'][f'student_{loss}']['val_accuracy']
                             for s in runs[lr]['per_seed']]) for lr in lrs} for loss in losses}
  chosen = {loss: max(lrs, key=lambda lr: val[loss][lr]) for loss in losses}
  print('| loss | ' + ' | '.join(f'val agreement, lr {lr:g}' for lr in lrs)
        + ' | chosen lr | test acc | PGR | student - xent (paired) | PGR - xent (paired) |')
  print('|---|' + '---|' * (len(lrs) + 5))
  for loss in losses:
    r, rx = runs[chosen[loss]], runs[chosen['xent']]
    acc, pgr = _values(r, loss, 'acc_student'), _values(r, loss, 'pgr')
    cells = [f'{100 * val[loss][lr]:.1f}' + (' *' if lr == chosen[loss] else '') for lr in lrs]
    cells += [f'{chosen[loss]:g}', _fmt(scores.summarize_seeds(acc)),
              _fmt(scores.summarize_seeds(pgr), scale=1.0, digits=2)]
    if loss == 'xent':
      cells += ['', '']
    else:
      cells += [_fmt(scores.paired_difference(acc, _values(rx, 'xent', 'acc_student')), signed=True),
                _fmt(scores.paired_difference(pgr, _values(rx, 'xent', 'pgr')), scale=1.0,
                     digits=2, signed=True)]
    print(f'| {loss} | ' + ' | '.join(cells) + ' |')


if __name__ == '__main__':
  main(sys.argv[1:])
