"""python -m w2s.main --config configs/self_training.py --workdir runs/self_training/mnist40

Self-training by pseudo-label rounds (w2s/protocols/self_training.py), offline by default:

    python -m w2s.main --config configs/self_training.py:labels=250 --workdir runs/self_training/mnist250
    python -m w2s.main --config configs/self_training.py:select=curriculum,rounds=5 --workdir DIR
    python -m w2s.main --config configs/self_training.py:noisy --workdir DIR
    python -m w2s.main --config configs/self_training.py:task=rt,labels=50 --workdir runs/self_training/rt50
    python -m w2s.main --config configs/self_training.py:task=cifar10,labels=4000,rounds=3 --workdir DIR
    python -m w2s.main --config configs/self_training.py:task=svhn,labels=250 --workdir DIR
    python -m w2s.main --config configs/self_training.py:task=stl10,noisy --workdir DIR
    python -m w2s.main --config configs/self_training.py:task=imdb --workdir DIR
    python -m w2s.main --config configs/self_training.py:runlocal --workdir /tmp/self_training_tiny
    python -m w2s.sweep --config configs/self_training.py --workdir runs/self_training_mnist  # study

Tasks: `mnist` (MNIST-5k, 5,000 real digits shipped in a wheel; a small CNN from scratch),
`rt` (Rotten Tomatoes, frozen all-MiniLM-L6-v2 features + a linear head, both shipped in
wheels), and from the TFDS catalog (downloaded once; for an accelerator) `cifar10`, `svhn`
(train only) and `stl10` (a small ResNet; STL-10's 100,000 unlabelled images join U) and
`imdb` (frozen MiniLM features of 256 tokens + a linear head, as `rt`; the 50,000 unlabelled
reviews join U). Default labels: the SSL benchmarks' smallest count (40; STL-10 1,000 as in
FixMatch, Sohn et al. 2020; IMDb 20 as in UDA, Xie et al. 2020); these runs are self-training
baselines on those benchmarks' data and label counts, not their recipes (configs/ssl.py has
those). Pseudo-label quality is scored on U's known labels only (the unlabelled splits have none).

Arguments: labels (total labelled examples, a multiple of the classes, split evenly over them,
as the SSL benchmarks count them: 40 on MNIST is 4 per class), rounds (student rounds after the
supervised round 0), select (threshold | curriculum | topk | all | agreement:
w2s/pseudo_labels/), tau (threshold and agreement), soft (soft pseudo-labels instead of
one-hot), noisy (Noisy Student, Xie et al. 2020: the student trains with input noise, translate
by 2 px on MNIST and 12.5% of the side on the other images, or feature dropout on cached
features, and model dropout 0.3 where the model has it; the teacher labels clean inputs), seeds,
steps (optimizer steps per round), runlocal (a seconds-long run for tests).

Hyperparameters are fixed, not tuned: with 4 labels per class there is no labelled held-out set
to tune on (Oliver et al. 2018), and test is never used. Adam 1e-3 (MNIST) / 3e-3 (RT, the
w2s_offline probe rate, also on IMDb), batch 32, or min(32, labels) rounded down to a multiple
of 8 where L is smaller (a batch must fit in L; 16 on IMDb), 600 steps per round, tau 0.95.
"""
from ml_collections import ConfigDict

from w2s import config_args, sweep

TASKS = ('mnist', 'rt', 'cifar10', 'svhn', 'stl10', 'imdb')
CLASSES = {'rt': 2, 'imdb': 2}  # the others: 10
DEFAULT_LABELS = {'stl10': 1000, 'imdb': 20}  # the others: 40
DATASETS = {'mnist': dict(name='mnist_5k'), 'rt': dict(name='rotten_tomatoes'),
            'cifar10': dict(name='cifar10'), 'svhn': dict(name='svhn'),
            'stl10': dict(name='stl10', unlabelled=True),
            'imdb': dict(name='imdb_reviews', unlabelled=True)}
TEXT = ('rt', 'imdb')  # frozen MiniLM features + a linear head
ARGS = dict(task='mnist', labels=0, rounds=3, select='threshold', tau=0.95, soft=False,
            noisy=False, seeds=5, steps=600, runlocal=False)  # arguments and defaults


def _train(lr: float, steps: int, batch: int, augment=None) -> dict:
  t = dict(optimizer=dict(name='adam', learning_rate=lr), schedule=dict(name='cosine'),
           batch_size=batch, num_epochs=0.0, num_steps=steps, accum_steps=1)
  if augment is not None:
    t['augment'] = augment
  return t


def _roles(a: dict, batch: int) -> tuple[dict, dict]:
  """(teacher, student) sections for the task."""
  task = a['task']
  if task in TEXT:
    teacher = dict(model=dict(name='bert', pretrained='minilm'), frozen=True,
                   head=dict(name='mlp', size='linear'), loss=dict(name='xent'),
                   train=_train(3e-3, a['steps'], batch))
    noise = dict(name='features', p=0.3)
  else:
    model = (dict(name='cnn', size='small') if task == 'mnist'
             else dict(name='resnet', size='tiny'))
    teacher = dict(model=model, loss=dict(name='xent'), train=_train(1e-3, a['steps'], batch))
    noise = dict(name='translate', pad={'mnist': 2, 'stl10': 0.125}.get(task, 4))  # 12.5% of 96
  student = {k: dict(v) if isinstance(v, dict) else v for k, v in teacher.items()}
  if a['noisy']:
    student['train'] = _train(teacher['train']['optimizer']['learning_rate'], a['steps'], batch,
                              noise)
    if task == 'mnist':
      student['model'] = dict(student['model'], dropout=0.3)
  return teacher, student


def get_config(arg: str | None = None) -> ConfigDict:
  a = config_args.parse(arg, **ARGS)
  from w2s.errors import UserError
  if a['task'] not in TASKS:
    raise UserError(f'task={a["task"]!r}; use one of {", ".join(TASKS)}')
  classes = CLASSES.get(a['task'], 10)
  labels = a['labels'] or DEFAULT_LABELS.get(a['task'], 40)
  if labels < classes or labels % classes:
    raise UserError(f'labels={labels} for task={a["task"]}: use a multiple of its {classes} '
                    'classes (split evenly over them)')
  c = ConfigDict()
  c.protocol = dict(name='self_training')
  c.dataset = dict(DATASETS[a['task']])
  c.labels = dict(per_class=labels // classes)
  if a['task'] in TEXT:
    c.tokenizer = dict(tokenizer='minilm', max_length=64 if a['task'] == 'rt' else 256)
  c.seeds = tuple(range(a['seeds']))
  batch = min(32, labels)
  c.teacher, c.student = _roles(a, batch - batch % 8 if batch > 8 else batch)
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
  c.keep_checkpoints = 2  # the newest can be damaged (a kill mid-write); the run falls back
  c.mesh = dict(num_devices=0)
  c.shared_dir = ''  # set by w2s.sweep: points share their stages (the same round 0)
  if a['runlocal']:  # presets: an argument the user wrote (seeds=, tau=, ...) wins over them
    c.smoke = True  # a smoke test, not a result: tables and plots say so
    c.labels.max_unlabelled, c.labels.max_test = 512, 256
    c.seeds = tuple(range(a.preset('seeds', 2)))
    c.rounds = a.preset('rounds', 2)
    for role in (c.teacher, c.student):
      role.train.num_steps = a.preset('steps', 60)
      if a['task'] in TEXT:
        role.model = dict(name='bert', size='tiny')
    if a['task'] == 'imdb':
      c.tokenizer.max_length = 64
    c.log_every = 10
    if c.pseudo.select.name in ('threshold', 'agreement'):
      c.pseudo.select.tau = a.preset('tau', 0.5)  # 60 steps make an unconfident teacher
  return c


def get_sweep(arg: str | None = None):
  """The MNIST-5k study: 40 and 250 labels x {threshold 0.95, 3 rounds; curriculum 20%, 5
  rounds}, 5 seeds; round 0 of each is the supervised-only baseline on the same labels."""
  del arg
  return sweep.product(
      sweep.axis('labels.per_class', [4, 25]),
      [{'pseudo.select': dict(name='threshold', tau=0.95), 'rounds': 3},
       {'pseudo.select': dict(name='curriculum', step=0.2), 'rounds': 5}])
