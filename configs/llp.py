"""python -m w2s.main --config configs/llp.py --workdir runs/llp/easyllp-bag8

Learning from label proportions on MNIST-5k (w2s/protocols/label_proportions.py): the train
split cut into random bags of `bag` digits, each digit labelled only by its bag's class
proportions, a small CNN trained on them; test accuracy over seeds with 95% CIs.

    python -m w2s.main --config configs/llp.py:bag=128,loss=proportion --workdir DIR
    python -m w2s.main --config configs/llp.py:bag=32,loss=xent --workdir DIR   # naive baseline
    python -m w2s.main --config configs/llp.py:bag=1,loss=xent --workdir DIR    # fully supervised
    python -m w2s.sweep --config configs/llp.py --workdir runs/llp_mnist        # the study
    python -m w2s.report runs/llp_mnist --out experiments/llp    # its table (experiments/llp/)
    python -m w2s.main --config configs/llp.py:runlocal --workdir /tmp/llp_tiny

Arguments: bag (examples per bag; 1 = fully supervised), loss (easyllp | proportion | xent, or
pkg.mod:loss), steps, seeds, runlocal.

Data: the 3,954 MNIST-5k training digits capped to a seeded 3,840 (= 30 x 128), so every bag
size from 1 to 128 uses all of the same examples with none left over; test is the fixed
1,046-image holdout. Bags are drawn per seed.

Hyperparameters, fixed before any run and never chosen on test: the MNIST-5k recipe of
configs/ssl.py (cnn:small, Adam 1e-3, cosine decay), batch 128 for every point (the smallest
that holds whole bags of 128 for the proportion loss, so all points share it), 1,200 steps = 40
epochs. easyllp gets the training bags' exact class prior (the protocol's rule); proportion's
batches hold whole bags (the loss asks the trainer for them).
"""
from ml_collections import ConfigDict

from w2s import config_args, sweep

LOSSES = ('easyllp', 'proportion', 'xent')
ARGS = dict(bag=8, loss='easyllp', steps=0, seeds=3, runlocal=False)  # arguments and defaults


def get_config(arg: str | None = None) -> ConfigDict:
  a = config_args.parse(arg, **ARGS)
  if a['loss'] not in LOSSES and ':' not in a['loss']:
    from w2s.errors import UserError
    raise UserError(f'loss={a["loss"]!r}; use one of {", ".join(LOSSES)} (or pkg.mod:loss)')
  c = ConfigDict()
  c.protocol = dict(name='label_proportions')
  c.dataset = dict(name='mnist_5k')
  c.bags = dict(size=a['bag'], max_train=3840, max_test=None)
  c.seeds = tuple(range(a['seeds']))
  c.model = dict(model=dict(name='cnn', size='small'), loss=dict(name=a['loss']), train=dict(
      optimizer=dict(name='adam', learning_rate=1e-3), schedule=dict(name='cosine'),
      batch_size=128, num_epochs=0.0, num_steps=a['steps'] or 1200, accum_steps=1))
  c.eval_batch_size = 256
  c.log_every = 100
  c.checkpoint_every = 600
  c.keep_checkpoints = 2  # the newest can be damaged (a kill mid-write); the run falls back
  c.mesh = dict(num_devices=0)
  c.shared_dir = ''
  if a['runlocal']:  # presets: an argument the user wrote (seeds=, steps=) wins over them
    c.smoke = True  # a smoke test, not a result: tables and plots say so
    c.bags.max_train, c.bags.max_test = 256, 256
    c.seeds = tuple(range(a.preset('seeds', 2)))
    c.model.train.batch_size = 32
    c.model.train.num_steps = a['steps'] or 16
    c.log_every = 8
    c.checkpoint_every = 8
  return c


def get_sweep(arg: str | None = None):
  """Bags of 8 / 32 / 128 x {easyllp, proportion, xent on the proportions (the naive
  baseline)}, plus the fully supervised reference (bags of 1, xent): 10 points. `runlocal`
  leaves out bags of 128: its batch of 32 cannot hold a whole bag."""
  runlocal = config_args.parse(arg, **ARGS)['runlocal']
  llp = sweep.product(sweep.axis('bags.size', [8, 32] if runlocal else [8, 32, 128]),
                      sweep.axis('model.loss', [dict(name=n) for n in LOSSES]))
  return llp + [{'bags.size': 1, 'model.loss': dict(name='xent')}]
