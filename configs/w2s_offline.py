"""Weak-to-strong on Rotten Tomatoes, fully offline: the README's main job.

    python -m w2s.main --config configs/w2s_offline.py --workdir runs/w2s_offline
    python -m w2s.main --config configs/w2s_offline.py:runlocal --workdir /tmp/w2s_tiny

Weak supervisor: a fastText-style bag of n-grams (`bow`) trained from scratch on 1,000 reviews
of half A (capped: trained on all of A it matched the strong probe, leaving no gap to recover; see
experiments/w2s_offline/README.md). Strong model: pretrained all-MiniLM-L6-v2 (shipped in a
wheel) as a frozen backbone with a zero-initialised linear head (the original release's
`linear_probe` mode), its mean-pooled features computed once and cached. Students learn from the
weak model's soft labels on half B with `xent` and `logconf`; the ceiling learns from B's ground
truth. Seeds vary the split, the initialisations and the data order.

Model selection reads held-out labels only, never test or B's ground truth: a tenth of train is
the val slice, labelled by the weak supervisor; every stage keeps its best parameters by its own
loss on val against its own labels (ground truth for weak and ceiling, weak labels for the
students), and the learning rates were chosen the same way
(`experiments/w2s_offline/select_hparams.py`: weak 3e-3 of {3e-3, 1e-2, 3e-2} by the weak
model's val accuracy, strong 3e-3 of {1e-3, 3e-3, 1e-2} by the ceiling's; students train like the
strong model). Measured on a 2-core CPU (5 seeds): weak 69.0%, ceiling 76.2%, xent student 69.6%
(PGR 0.08 [-0.07, 0.23]), logconf student 72.4% (PGR 0.47 [0.39, 0.55]).

Arguments: seeds=N (number of seeds), losses=a+b (student losses), runlocal (tiny, for tests),
finetune (fine-tune all of MiniLM instead of the frozen probe; slow on a CPU), lora=R (fine-tune
MiniLM through rank-R LoRA adapters on its attention and MLP kernels, Hu et al. 2021: only the
adapters and the head train; lr 5e-4 by default, lora_lr=...; both with dropout off, as the
release fine-tunes), ensemble=K (K bagged weak
supervisors trained at once; their votes feed the `reliability` loss), clean=knn|logreg|topo
(B's weak labels cleaned on the strong model's frozen MiniLM features before the students train,
with the cleaner's defaults: `w2s/cleaning/`, `w2s/protocols/cleaning_stage.py`), overlap (also
report every student on the test rows of Shin et al.'s overlap vs the rest,
`w2s/protocols/overlap_stage.py`), queries=0+16+64 (one more student per budget k that buys the
ground truth of k rows of B, chosen by query_by=weak_entropy|weak_margin|random:
`w2s/protocols/queries.py`; results per budget and pgr_budget.png).
"""
import re

from ml_collections import ConfigDict, config_dict

from w2s import config_args
from w2s.errors import UserError


def _train(lr, epochs, batch_size=32, warmup=0.0, eval_every=50):
  # evaluated on the held-out val slice every `eval_every` steps against the stage's own labels
  # (ground truth for weak and ceiling, weak labels for students); the best parameters are kept
  return dict(optimizer=dict(name='adam', learning_rate=lr),
              schedule=dict(name='cosine', warmup_frac=warmup),
              batch_size=batch_size, num_epochs=epochs, num_steps=0, accum_steps=1,
              eval_every=eval_every, select='best', patience=0)


ARGS = dict(seeds=5, losses='xent+logconf', runlocal=False, finetune=False, ensemble=1, lora=0,
            lora_lr=5e-4, clean='', overlap=False, queries='',
            query_by='weak_entropy')  # arguments and defaults


def get_config(arg: str | None = None) -> ConfigDict:
  a = config_args.parse(arg, **ARGS)
  c = ConfigDict()
  c.protocol = dict(name='weak_to_strong')
  c.dataset = dict(name='rotten_tomatoes')
  no_cap = lambda: config_dict.placeholder(int)  # None, overridable with an int
  # The weak supervisor sees 1,000 of half A's ~5,100 reviews: on all of A the bag of n-grams
  # (75.9%) already matches the MiniLM linear probe (75.7%), leaving no gap to recover.
  # val: a held-out tenth of train for selection, labelled by the weak supervisor for students
  c.splits = dict(weak_fraction=0.5, val_fraction=0.1, balance=False, max_weak=1000,
                  max_strong=no_cap(), max_val=no_cap(), max_test=no_cap())
  c.tokenizer = dict(tokenizer='minilm', max_length=64)
  c.seeds = tuple(range(a['seeds']))
  # learning rates chosen on held-out labels only (experiments/w2s_offline/select_hparams.py)
  c.weak = dict(model=dict(name='bow', size='small'), loss=dict(name='xent'),
                train=_train(lr=3e-3, epochs=10.0))
  c.strong = dict(model=dict(name='bert', pretrained='minilm'), frozen=True,
                  head=dict(name='mlp', size='linear'), loss=dict(name='xent'),
                  train=_train(lr=3e-3, epochs=4.0))
  if a['ensemble'] > 1:  # K bagged weak supervisors in one vmapped step; labels = mean probability
    c.weak.ensemble = dict(size=a['ensemble'], bagging=True)
  if a['finetune'] or a['lora']:
    # dropout off, as the original release fine-tunes (train_with_dropout=False); it also makes
    # a CPU step ~1.1x faster (no threefry masks; issue 13's profile)
    model = dict(name='bert', pretrained='minilm', dropout=0.0)
    if a['lora']:
      model['lora'] = dict(rank=a['lora'], alpha=2 * a['lora'], targets=('attention', 'mlp'))
    c.strong = dict(model=model, frozen=False, loss=dict(name='xent'),
                    train=_train(lr=a['lora_lr'] if a['lora'] else 5e-5, epochs=2.0, warmup=0.1))
  losses = {'xent': dict(name='xent'),
            'logconf': dict(name='logconf', aux_coef=0.5, warmup_frac=0.1)}
  names = [n for n in a['losses'].split('+') if n]
  # a dotted path (mypkg.losses:fn) is a loss name, not a ConfigDict key: key it by its function
  key = lambda n: re.sub(r'\W', '_', n.rpartition(':')[2] or n)
  c.student_losses = {key(n): losses.get(n, dict(name=n)) for n in names}
  c.student_order = tuple(key(n) for n in names)  # the table's order (ConfigDict sorts keys)
  if a['clean']:  # a cleaner of w2s/cleaning/ between the weak labels of B and the students
    c.clean = dict(name=a['clean'])
  if a['overlap']:  # students' accuracy and PGR on the overlap rows of test vs the rest
    c.overlap = dict(jump=5, min_size=2)  # the change-point grid (ruptures' Binseg defaults)
  if a['queries']:  # budgets of B's ground-truth labels a student may buy
    if not re.fullmatch(r'\d+(\+\d+)*', a['queries']):
      raise UserError(f'config argument queries={a["queries"]!r} must be budgets joined by +, '
                      'e.g. queries=0+16+64')
    budgets = tuple(int(k) for k in a['queries'].split('+'))
    c.student = dict(queries=dict(budget=budgets, by=a['query_by']))
  c.chain = ()            # bootstrapping: intermediate learner sections, weak -> ... -> strong
  c.relabel_rounds = 0    # strong-to-strong relabelling rounds after the student
  c.eval_batch_size = 256
  c.log_every = 50
  c.checkpoint_every = 500
  c.keep_checkpoints = 2
  c.mesh = dict(num_devices=0)
  if a['runlocal']:  # presets: an argument the user wrote (seeds=) wins over them
    c.smoke = True  # a smoke test, not a result: tables and plots say so
    c.splits.max_weak, c.splits.max_strong, c.splits.max_test = 128, 256, 256
    c.splits.max_val = 128
    c.weak.train.num_epochs = 2.0
    c.strong.train.num_epochs = 2.0
    if not (a['finetune'] or a['lora']):
      c.strong.model = dict(name='bert', size='tiny')
    c.seeds = tuple(range(a.preset('seeds', 2)))
    c.log_every = 5
  return c
