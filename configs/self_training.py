"""python -m w2s.main --config configs/self_training.py --workdir runs/self_training/mnist40

Self-training by pseudo-label rounds (w2s/protocols/self_training.py), offline by default:

    python -m w2s.main --config configs/self_training.py:labels=250 --workdir runs/self_training/mnist250
    python -m w2s.main --config configs/self_training.py:select=curriculum,rounds=5 --workdir DIR
    python -m w2s.main --config configs/self_training.py:noisy --workdir DIR
    python -m w2s.main --config configs/self_training.py:task=rt,labels=50 --workdir runs/self_training/rt50
    python -m w2s.main --config configs/self_training.py:task=cifar10,labels=4000,rounds=3 --workdir DIR
    python -m w2s.main --config configs/self_training.py:runlocal --workdir /tmp/self_training_tiny
    python -m w2s.sweep --config configs/self_training.py --workdir runs/self_training_mnist  # study

Tasks: `mnist` (MNIST-5k, 5,000 real digits shipped in a wheel; a small CNN from scratch),
`rt` (Rotten Tomatoes, frozen all-MiniLM-L6-v2 features + a linear head, both shipped in
wheels), `cifar10` (TFDS catalog, needs the download once; a small ResNet, for an accelerator).

Arguments: labels (total labelled examples, split evenly over the classes, as the SSL benchmarks
count them: 40 on MNIST is 4 per class), rounds (student rounds after the supervised round 0),
select (threshold | curriculum | topk | all | agreement: w2s/pseudo_labels/), tau (threshold and
agreement), soft (soft pseudo-labels instead of one-hot), noisy (Noisy Student, Xie et al. 2020:
the student trains with input noise, translate by 2 px on images or feature dropout on cached
features, and model dropout 0.3 where the model has it; the teacher labels clean inputs), seeds,
steps (optimizer steps per round), runlocal (a seconds-long run for tests).

Hyperparameters are fixed, not tuned: with 4 labels per class there is no labelled held-out set
to tune on (Oliver et al. 2018), and test is never used. Adam 1e-3 (MNIST) / 3e-3 (RT, the
w2s_offline probe rate), batch 32 (<= the labelled set), 600 steps per round, tau 0.95.
"""
from ml_collections import ConfigDict

from w2s import config_args, sweep

TASKS = ('mnist', 'rt', 'cifar10')


def _train(lr: float, steps: int, augment=None) -> dict:
  t = dict(optimizer=dict(name='adam', learning_rate=lr), schedule=dict(name='cosine'),
           batch_size=32, num_epochs=0.0, num_steps=steps, accum_steps=1)
  if augment is not None:
    t['augment'] = augment
  return t


def _roles(a: dict) -> tuple[dict, dict]:
  """(teacher, student) sections for the task."""
  task = a['task']
  if task == 'rt':
    teacher = dict(model=dict(name='bert', pretrained='minilm'), frozen=True,
                   head=dict(name='mlp', size='linear'), loss=dict(name='xent'),
                   train=_train(3e-3, a['steps']))
    noise = dict(name='features', p=0.3)
  else:
    model = (dict(name='cnn', size='small') if task == 'mnist'
             else dict(name='resnet', size='tiny'))
    teacher = dict(model=model, loss=dict(name='xent'), train=_train(1e-3, a['steps']))
    noise = dict(name='translate', pad=2 if task == 'mnist' else 4)
  student = {k: dict(v) if isinstance(v, dict) else v for k, v in teacher.items()}
  if a['noisy']:
    student['train'] = _train(teacher['train']['optimizer']['learning_rate'], a['steps'], noise)
    if task == 'mnist':
      student['model'] = dict(student['model'], dropout=0.3)
  return teacher, student


def get_config(arg: str | None = None) -> ConfigDict:
  a = config_args.parse(arg, task='mnist', labels=40, rounds=3, select='threshold', tau=0.95,
                        soft=False, noisy=False, seeds=5, steps=600, runlocal=False)
  if a['task'] not in TASKS:
    from w2s.errors import UserError
    raise UserError(f'task={a["task"]!r}; use one of {", ".join(TASKS)}')
  classes = 2 if a['task'] == 'rt' else 10
  c = ConfigDict()
  c.protocol = dict(name='self_training')
  c.dataset = dict(name={'mnist': 'mnist_5k', 'rt': 'rotten_tomatoes', 'cifar10': 'cifar10'}[
      a['task']])
  c.labels = dict(per_class=max(1, a['labels'] // classes))
  if a['task'] == 'rt':
    c.tokenizer = dict(tokenizer='minilm', max_length=64)
  c.seeds = tuple(range(a['seeds']))
  c.teacher, c.student = _roles(a)
  c.rounds = a['rounds']
  select = {'threshold': dict(name='threshold', tau=a['tau']),
            'curriculum': dict(name='curriculum', step=0.2),
            'topk': dict(name='topk', k=max(1, 400 // classes)),
            'all': dict(name='all'),
            'agreement': dict(name='agreement', tau=a['tau'])}.get(a['select'],
                                                                  dict(name=a['select']))
  c.pseudo = dict(select=select, labels='soft' if a['soft'] else 'hard')
  if a['select'] == 'agreement':  # T-similarity needs K heads: a vmapped ensemble teacher
    c.teacher.ensemble = dict(size=4, bagging=True)
    c.student.ensemble = dict(size=4, bagging=True)
  c.eval_batch_size = 256
  c.log_every = 100
  c.checkpoint_every = 500
  c.keep_checkpoints = 1
  c.mesh = dict(num_devices=0)
  c.shared_dir = ''  # set by w2s.sweep: points share their stages (the same round 0)
  if a['runlocal']:
    c.labels.max_unlabelled, c.labels.max_test = 512, 256
    c.seeds = tuple(range(min(a['seeds'], 2)))
    c.rounds = min(a['rounds'], 2)
    for role in (c.teacher, c.student):
      role.train.num_steps = 60
      if a['task'] == 'rt':
        role.model = dict(name='bert', size='tiny')
    c.log_every = 10
    if c.pseudo.select.name in ('threshold', 'agreement'):
      c.pseudo.select.tau = 0.5  # 60 steps make an unconfident teacher
  return c


def get_sweep(arg: str | None = None):
  """The MNIST-5k study: 40 and 250 labels x {threshold 0.95, 3 rounds; curriculum 20%, 5
  rounds}, 5 seeds; round 0 of each is the supervised-only baseline on the same labels."""
  del arg
  return sweep.product(
      sweep.axis('labels.per_class', [4, 25]),
      [{'pseudo.select': dict(name='threshold', tau=0.95), 'rounds': 3},
       {'pseudo.select': dict(name='curriculum', step=0.2), 'rounds': 5}])
