"""python -m w2s.main --config configs/ssl.py --workdir runs/ssl/fixmatch-mnist40

Online semi-supervised learning (w2s/protocols/semi_supervised.py, the step in w2s/ssl_step.py):
one model trained on a few labels and the unlabelled rest at once.

    python -m w2s.main --config configs/ssl.py:algo=mean_teacher --workdir runs/ssl/mt-mnist40
    python -m w2s.main --config configs/ssl.py:algo=supervised,labels=250 --workdir DIR
    python -m w2s.sweep --config configs/ssl.py --workdir runs/ssl_mnist   # the MNIST-5k study
    python -m w2s.sweep --config configs/ssl.py:algos=all,steps=400,seeds=3 --workdir DIR  # all
    python -m w2s.main --config configs/ssl.py:runlocal --workdir /tmp/ssl_tiny

The published benchmarks (TFDS catalog data, downloaded once; for an accelerator), with the
label counts of their papers:

    python -m w2s.main --config configs/ssl.py:task=cifar10,labels=40 --workdir DIR  # 40|250|4000
    python -m w2s.main --config configs/ssl.py:task=svhn,labels=250 --workdir DIR    # 40|250|1000
    python -m w2s.main --config configs/ssl.py:task=svhn,labels=1000,extra --workdir DIR
    python -m w2s.main --config configs/ssl.py:task=stl10 --workdir DIR              # 1000
    python -m w2s.main --config configs/ssl.py:task=imdb --workdir DIR               # 20, UDA
    python -m w2s.main --config configs/ssl.py:task=imdb,algo=fixmatch --workdir DIR

Arguments: algo (supervised | pseudo_label | pi_model | mean_teacher | fixmatch | uda |
flexmatch | freematch | doubly_robust | softmatch | adamatch | dash | defixmatch | mixmatch |
remixmatch | vat | arazo | adsh | simmatch: w2s/ssl/; default the task's recipe: uda on imdb, else
fixmatch; mixmatch, remixmatch, vat and arazo mix or perturb the inputs, so not on imdb's token
ids), labels (total, a multiple of the classes, split evenly over them; default the task's
first benchmark count), task (mnist: MNIST-5k, offline; cifar10 | svhn | stl10 | imdb: TFDS),
extra (svhn only: train on train + the 531,131 'extra' images, "SVHN+Extra"), steps, seeds,
imbalance (gamma >= 1: long-tailed L and U, N_c = N_max gamma^(-c/(C-1)) with class 0 the head
and labels / C its count, U's head as large as every class allows; 0: balanced; the CIFAR-10-LT
benchmark of DARP / Adsh / USB is task=cifar10,labels=15000,imbalance=100,algo=adsh, whose U
head is 3000 where this gives 3500: set labels.unlabelled_per_class to match),
runlocal, algos (`python -m w2s.sweep` only: algos=all sweeps every algorithm, not just
supervised / fixmatch / mean_teacher). STL-10 and IMDb load their own unlabelled splits (100,000 images, 50,000 reviews;
labels unknown), which join U; pseudo-label accuracy is reported over U's known labels only.

Recipes. FixMatch (Sohn et al. 2020) on CIFAR-10, SVHN and STL-10: tau 0.95, mu 7, lambda_u 1,
batch 64, SGD-Nesterov lr 0.03 (momentum 0.9, weight decay 5e-4) with cosine decay, EMA 0.999
for evaluation, 2^20 steps; WRN-28-2 (CIFAR-10, SVHN) and WRN-37-2 (STL-10, 96x96); weak view
flip + translate 12.5% (translate only on SVHN: digits are not mirror-symmetric), strong view
RandAugment + cutout. Its SVHN column uses the 73,257 train images (google-research/fixmatch
builds `svhn_noextra` and `svhn`, the latter with extra; `extra` here); STL-10 labels 1,000 and
puts the other 4,000 and the 100,000 unlabelled images into U. These tasks keep those numbers,
except: a ResNet with GroupNorm instead of the WRN (cifar10: 'tiny'; svhn, stl10: 'resnet20',
20 layers, 0.27M parameters vs WRN-28-2's 1.5M); no weight decay (optax.sgd has none); the
labelled batch is min(64, labels), rounded down to a multiple of 8 (the pipeline needs L to hold
a batch, FixMatch repeats its 40 labels to fill 64; 8 lets 1 to 8 devices split it), U's mu
times that; labels drawn class-balanced per seed (FixMatch's STL-10 uses the dataset's
predefined folds, its SVHN+Extra draws in proportion to the classes). steps=1048576 is the full
schedule.

UDA (Xie et al. 2020) on IMDb with 20 labels: BERT-large (further pretrained on IMDb), 512
tokens, back-translation of U as the strong view against the unaugmented review, U = the train
reviews + the 50,000 unlabelled ones (those of 500 characters or more), target temperature
0.85, no confidence mask, linear training-signal annealing, lambda 1, mu 7, batch 32, lr 2e-5
with 1,000 warmup steps of 10,000 (google-research/uda, text/scripts/train_large_ft_uda_tpu.sh).
The `imdb` task keeps the schedule and the UDA settings, with U = the other 24,980 train reviews
+ all 50,000, all-MiniLM-L6-v2 fully fine-tuned (22M parameters vs 335M, and no in-domain
pretraining), 256 tokens, AdamW (weight decay 0.01, BERT's) with linear warmup and decay,
labelled batch 16 (see above), and as the strong view BERT-style masking of 15% of the tokens
(a tenth of them random ids): the closest of w2s/augment/ to UDA's TF-IDF word replacement;
nothing here paraphrases as back-translation does, UDA's strongest text view.

The offline MNIST-5k default shrinks the FixMatch schedule to what a 2-core CPU runs in
minutes: batch 32, 1,500 steps, Adam 1e-3 (no flips: digits are not mirror-symmetric; translate
by 2 px as the weak view, RandAugment + cutout as the strong one), same tau / mu / lambda, and
an EMA of 0.99: 0.999 over 2^20 steps averages the last ~0.1% of training, over 1,500 steps it
would still carry the initialisation (time constant 1,000 steps); 0.99 averages the last ~7%.
Nothing is tuned on test; the same schedule serves every algorithm, including the labelled-only
baseline (`algo=supervised`).
"""
import importlib

from ml_collections import ConfigDict

from w2s import config_args, sweep
from w2s.errors import UserError

from w2s.ssl import ALGORITHMS as ALGOS
_FIXMATCH = dict(batch=64, steps=1 << 20, ema=0.999,
                 optimizer=dict(name='sgd', learning_rate=0.03, momentum=0.9, nesterov=True))
TASKS = {  # task -> dataset, classes, benchmark label counts (the first is the default), recipe
    'mnist': dict(dataset=dict(name='mnist_5k'), classes=10, labels=(40, 250), batch=32,
                  steps=1500, ema=0.99, optimizer=dict(name='adam', learning_rate=1e-3),
                  model=dict(name='cnn', size='small')),
    'cifar10': dict(dataset=dict(name='cifar10'), classes=10, labels=(40, 250, 4000),
                    model=dict(name='resnet', size='tiny'), **_FIXMATCH),
    'svhn': dict(dataset=dict(name='svhn'), classes=10, labels=(40, 250, 1000),
                 model=dict(name='resnet', size='resnet20'), **_FIXMATCH),
    'stl10': dict(dataset=dict(name='stl10', unlabelled=True), classes=10, labels=(1000,),
                  model=dict(name='resnet', size='resnet20'), **_FIXMATCH),
    'imdb': dict(dataset=dict(name='imdb_reviews', unlabelled=True), classes=2, labels=(20,),
                 batch=32, steps=10_000, ema=0.0, algo='uda',
                 optimizer=dict(name='adamw', learning_rate=2e-5, weight_decay=0.01),
                 model=dict(name='bert', pretrained='minilm')),
}
# UDA's IMDb settings (train_large_ft_uda_tpu.sh): uda_softmax_temp 0.85, no confidence threshold
UDA_TEXT = dict(name='uda', T=0.85, beta=0.0, tsa='linear')
MASK_ID, VOCAB = 103, 30522  # [MASK] and the vocabulary size of MiniLM's (BERT's) tokenizer
ARGS = dict(algo='', labels=0, task='mnist', extra=False, steps=0, seeds=5, imbalance=0.0,
            runlocal=False, algos='')  # arguments and defaults (algos: get_sweep's only)


def _views(task: str) -> tuple[dict | None, dict]:
  if task == 'imdb':  # UDA: targets from the review itself, the strong view perturbs its tokens
    return None, dict(name='tokens', mode='mask', p=0.15, mask_id=MASK_ID, vocab_size=VOCAB,
                      keep_last=1)
  if task in ('cifar10', 'stl10'):
    shift = dict(name='translate', pad=4 if task == 'cifar10' else 0.125)  # 12.5% of the side
    weak = dict(name='chain', ops=[dict(name='flip'), shift])
  elif task == 'svhn':
    weak = dict(name='translate', pad=4)
  else:
    weak = dict(name='translate', pad=2)
  # RandAugment's own cutout ends the strong view (FixMatch: half the side, gray fill)
  # (fill 0 on MNIST: a digit's background is black)
  mnist = task == 'mnist'
  strong = dict(name='chain', ops=[weak, dict(name='randaugment', num_ops=2,
                                              cutout=0.4 if mnist else 0.5,
                                              fill=0.0 if mnist else 0.5)])
  return weak, strong


def labelled_batch(recipe: int, labels: int) -> int:
  """The recipe's batch, or fewer when L is smaller (the pipeline draws whole batches of L),
  rounded down to a multiple of 8 so that 1, 2, 4 or 8 devices divide it."""
  b = min(recipe, labels)
  return b - b % 8 if b > 8 else b


def _labelled_size(labels: int, classes: int, imbalance: float) -> int:
  """|L|: `labels`, or the long-tailed counts' sum with `labels / classes` at the head."""
  if not imbalance:
    return labels
  from w2s.data import splits
  return int(splits.long_tailed_counts(labels // classes, imbalance, classes).sum())


def _checked(a: dict) -> tuple[dict, str, int]:
  """(task recipe, algorithm, labels) of the arguments, or a one-line UserError."""
  if a['task'] not in TASKS:
    raise UserError(f'task={a["task"]!r}; use one of {", ".join(TASKS)}')
  t = TASKS[a['task']]
  algo = a['algo'] or t.get('algo', 'fixmatch')
  if algo not in ALGOS and ':' not in algo:
    raise UserError(f'algo={algo!r}; use one of {", ".join(ALGOS)} (or pkg.mod:loss)')
  if a['task'] == 'imdb' and algo in ALGOS and getattr(
      importlib.import_module(f'w2s.ssl.{algo}'), 'INPUT_LEVEL', False):
    raise UserError(f'algo={algo} mixes or perturbs the model inputs, and task=imdb feeds token '
                    'ids; use a logit-level algorithm there (uda, fixmatch, ...) or an image task')
  labels = a['labels'] or t['labels'][0]
  if labels < t['classes'] or labels % t['classes']:
    raise UserError(f'labels={labels} for task={a["task"]}: use a multiple of its '
                    f'{t["classes"]} classes (the benchmarks: '
                    f'{", ".join(map(str, t["labels"]))})')
  if a['imbalance'] and a['imbalance'] < 1:
    raise UserError(f'imbalance={a["imbalance"]:g}: use a ratio gamma >= 1 (100: CIFAR-10-LT; '
                    '0: balanced)')
  if a['imbalance'] and t['dataset'].get('unlabelled'):
    raise UserError(f'imbalance draws U by class, and task={a["task"]} adds unlabelled rows of '
                    'unknown class; use mnist, cifar10 or svhn')
  if a['extra'] and a['task'] != 'svhn':
    raise UserError(f'extra adds SVHN\'s extra images; task={a["task"]} has none (use task=svhn)')
  return t, algo, labels


def get_config(arg: str | None = None) -> ConfigDict:
  a = config_args.parse(arg, **ARGS)
  t, algo, labels = _checked(a)
  weak, strong = _views(a['task'])
  ssl = dict(UDA_TEXT) if algo == 'uda' and a['task'] == 'imdb' else dict(name=algo)
  text = a['task'] == 'imdb'
  c = ConfigDict()
  c.protocol = dict(name='semi_supervised')
  c.dataset = dict(t['dataset'], **({'extra': True} if a['extra'] else {}))
  c.labels = dict(per_class=labels // t['classes'])
  if a['imbalance']:  # long-tailed L and U (w2s.data.splits.labelled_unlabelled)
    c.labels.imbalance = a['imbalance']
  if text:
    c.tokenizer = dict(tokenizer='minilm', max_length=256)
  c.seeds = tuple(range(a['seeds']))
  schedule = dict(name='linear', warmup_frac=0.1) if text else dict(name='cosine')
  c.model = dict(model=dict(t['model']), loss=dict(name='xent'), train=dict(
      optimizer=dict(t['optimizer']), schedule=schedule,
      batch_size=labelled_batch(t['batch'],
                                _labelled_size(labels, t['classes'], a['imbalance'])),
      num_epochs=0.0, num_steps=a['steps'] or t['steps'], accum_steps=1, ssl=ssl,
      unlabelled_ratio=7, weak_augment=weak, strong_augment=strong, ema_decay=t['ema']))
  c.eval_batch_size = 256
  c.log_every = 100
  c.checkpoint_every = 500
  c.keep_checkpoints = 2  # the newest can be damaged (a kill mid-write); the run falls back
  c.mesh = dict(num_devices=0)
  c.shared_dir = ''
  if a['runlocal']:
    c.smoke = True  # a smoke test, not a result: tables and plots say so
    _runlocal(c, a)
  return c


def _runlocal(c: ConfigDict, a: config_args.Args) -> None:
  """Seconds on a CPU: capped U and test, 20 steps, mu 2, small random-init models (an argument
  the user wrote, seeds= or steps=, wins over these presets)."""
  c.labels.max_test = 256
  if a['imbalance']:  # U is drawn by class there: cap its head instead (~500 rows at gamma 10)
    c.labels.unlabelled_per_class = 128
  else:
    c.labels.max_unlabelled = 512
  c.seeds = tuple(range(a.preset('seeds', 2)))
  c.model.train.num_steps = a['steps'] or 20
  c.model.train.unlabelled_ratio = 2
  if c.model.train.ema_decay:
    c.model.train.ema_decay = 0.9
  if a['task'] in ('svhn', 'stl10'):
    c.model.model = dict(name='resnet', size='tiny')
  elif a['task'] == 'imdb':
    c.model.model = dict(name='bert', size='tiny')
    c.tokenizer.max_length = 64
  c.log_every = 10


def get_sweep(arg: str | None = None):
  """The MNIST-5k study: 40 and 250 labels x {supervised, fixmatch, mean_teacher}; with
  `algos=all`, x every algorithm of `w2s.ssl.ALGORITHMS` (labels vary slowest, so a sweep cut
  short has finished whole label counts first). The other arguments (steps, seeds) are
  get_config's."""
  a = config_args.parse(arg, **ARGS)
  if a['algos'] not in ('', 'all'):
    raise UserError(f'algos={a["algos"]!r}; use algos=all (every algorithm) or leave it out '
                    '(supervised, fixmatch, mean_teacher)')
  names = ALGOS if a['algos'] == 'all' else ('supervised', 'fixmatch', 'mean_teacher')
  return sweep.product(sweep.axis('labels.per_class', [4, 25]),
                       sweep.axis('model.train.ssl', [dict(name=n) for n in names]))
