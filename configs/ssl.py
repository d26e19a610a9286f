"""python -m w2s.main --config configs/ssl.py --workdir runs/ssl/fixmatch-mnist40

Online semi-supervised learning (w2s/protocols/semi_supervised.py, the step in w2s/ssl_step.py):
one model trained on a few labels and the unlabelled rest at once.

    python -m w2s.main --config configs/ssl.py:algo=mean_teacher --workdir runs/ssl/mt-mnist40
    python -m w2s.main --config configs/ssl.py:algo=supervised,labels=250 --workdir DIR
    python -m w2s.sweep --config configs/ssl.py --workdir runs/ssl_mnist   # the MNIST-5k study
    python -m w2s.main --config configs/ssl.py:task=cifar10,labels=40 --workdir DIR   # accelerator
    python -m w2s.main --config configs/ssl.py:runlocal --workdir /tmp/ssl_tiny

Arguments: algo (supervised | pseudo_label | pi_model | mean_teacher | fixmatch | uda |
flexmatch | freematch | doubly_robust: w2s/ssl/), labels (total, split evenly over classes),
task (mnist: MNIST-5k, offline; cifar10: TFDS catalog, the FixMatch benchmark), steps, seeds,
runlocal.

Recipes. FixMatch (Sohn et al. 2020) on CIFAR-10: tau 0.95, mu 7, lambda_u 1, batch 64,
SGD-Nesterov lr 0.03 (momentum 0.9, weight decay 5e-4) with cosine decay, EMA 0.999 for
evaluation, 2^20 steps, WRN-28-2; weak view flip + translate 12.5%, strong view RandAugment +
cutout. The `cifar10` task keeps those (with the small ResNet here; steps=1048576 for the full
schedule). The offline MNIST-5k default shrinks the schedule to what a 2-core CPU runs in
minutes: batch 32, 1,500 steps, Adam 1e-3 (no flips: digits are not mirror-symmetric; translate
by 2 px as the weak view, RandAugment + cutout as the strong one), same tau / mu / lambda, and
an EMA of 0.99: 0.999 over 2^20 steps averages the last ~0.1% of training, over 1,500 steps it
would still carry the initialisation (time constant 1,000 steps); 0.99 averages the last ~7%.
Nothing is tuned on test; the same schedule serves every algorithm, including the labelled-only
baseline (`algo=supervised`).
"""
from ml_collections import ConfigDict

from w2s import config_args, sweep

ALGOS = ('supervised', 'pseudo_label', 'pi_model', 'mean_teacher', 'fixmatch', 'uda', 'flexmatch',
         'freematch', 'doubly_robust')


def _views(task: str) -> tuple[dict, dict]:
  if task == 'cifar10':
    weak = dict(name='chain', ops=[dict(name='flip'), dict(name='translate', pad=4)])
  else:
    weak = dict(name='translate', pad=2)
  # RandAugment's own cutout ends the strong view (FixMatch: half the side on CIFAR-10)
  # (fill 0 on MNIST: a digit's background is black)
  strong = dict(name='chain', ops=[weak, dict(name='randaugment', num_ops=2,
                                              cutout=0.5 if task == 'cifar10' else 0.4,
                                              fill=0.5 if task == 'cifar10' else 0.0)])
  return weak, strong


def get_config(arg: str | None = None) -> ConfigDict:
  a = config_args.parse(arg, algo='fixmatch', labels=40, task='mnist', steps=0, seeds=5,
                        runlocal=False)
  if a['algo'] not in ALGOS and ':' not in a['algo']:
    from w2s.errors import UserError
    raise UserError(f'algo={a["algo"]!r}; use one of {", ".join(ALGOS)} (or pkg.mod:loss)')
  cifar = a['task'] == 'cifar10'
  weak, strong = _views(a['task'])
  optimizer = (dict(name='sgd', learning_rate=0.03, momentum=0.9, nesterov=True) if cifar
               else dict(name='adam', learning_rate=1e-3))
  c = ConfigDict()
  c.protocol = dict(name='semi_supervised')
  c.dataset = dict(name='cifar10' if cifar else 'mnist_5k')
  c.labels = dict(per_class=max(1, a['labels'] // 10))
  c.seeds = tuple(range(a['seeds']))
  model = dict(name='resnet', size='tiny') if cifar else dict(name='cnn', size='small')
  c.model = dict(model=model, loss=dict(name='xent'), train=dict(
      optimizer=optimizer, schedule=dict(name='cosine'), batch_size=64 if cifar else 32,
      num_epochs=0.0, num_steps=a['steps'] or (1 << 20 if cifar else 1500), accum_steps=1,
      ssl=dict(name=a['algo']), unlabelled_ratio=7, weak_augment=weak, strong_augment=strong,
      ema_decay=0.999 if cifar else 0.99))
  c.eval_batch_size = 256
  c.log_every = 100
  c.checkpoint_every = 500
  c.keep_checkpoints = 1
  c.mesh = dict(num_devices=0)
  c.shared_dir = ''
  if a['runlocal']:
    c.labels.max_unlabelled, c.labels.max_test = 512, 256
    c.seeds = tuple(range(min(a['seeds'], 2)))
    c.model.train.num_steps = a['steps'] or 20
    c.model.train.unlabelled_ratio = 2
    c.model.train.ema_decay = 0.9
    c.log_every = 10
  return c


def get_sweep(arg: str | None = None):
  """The MNIST-5k study: 40 and 250 labels x {supervised, fixmatch, mean_teacher}, 5 seeds."""
  del arg
  return sweep.product(sweep.axis('labels.per_class', [4, 25]),
                       sweep.axis('model.train.ssl', [dict(name='supervised'),
                                                      dict(name='fixmatch'),
                                                      dict(name='mean_teacher')]))
