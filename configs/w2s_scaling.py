"""python -m w2s.sweep --config configs/w2s_scaling.py --workdir runs/w2s_scaling

The offline scaling study (Burns et al. 2023's central grid, on Rotten Tomatoes): PGR as a
function of weak-supervisor strength and strong-student size, for xent and logconf students.

    python -m w2s.sweep --config configs/w2s_scaling.py --workdir runs/w2s_scaling --dry_run
    python -m w2s.sweep --config configs/w2s_scaling.py --workdir runs/w2s_scaling --print
    python -m w2s.report runs/w2s_scaling
    python -m w2s.sweep --config configs/w2s_scaling.py:runlocal --workdir /tmp/w2s_scaling_tiny

Weak supervisors of increasing strength: the bag-of-n-grams `bow` model of
configs/w2s_offline.py trained on 250 / 500 / 1,000 / 2,000 labelled reviews of half A
(`splits.max_weak`). Strong students of increasing capacity: the pretrained all-MiniLM-L6-v2
truncated to its first 1 ... 6 layers (`strong.model.layers`: pretrained weights of those layers,
mean pooling, a zero-initialised linear head on the cached frozen features), as in w2s_offline.
Every point runs 5 seeds; a weak supervisor is trained once per (strength, seed) and shared by
the six strong sizes (`w2s.sweep` keeps one stage directory).

Hyperparameters: the learning rates of w2s_offline, chosen there on held-out labels (weak 3e-3 by
the weak model's val accuracy, strong 3e-3 by the ceiling's val accuracy,
experiments/w2s_offline/select_hparams.py), never on test or B's ground truth; within each run
every stage keeps its best parameters by its loss on the held-out val slice against its own
labels (students: the weak labels). Arguments: seeds=N, losses=a+b, runlocal (a 2 x 2 sweep of
tiny random models for tests: weak 64 / 128 labels x strong BERT with 1 / 2 layers).
"""
from w2s import config_args, sweep
from w2s.configs import w2s_offline

WEAK_LABELS = (250, 500, 1000, 2000)
STRONG_LAYERS = (1, 2, 3, 4, 5, 6)


ARGS = dict(seeds=5, losses='xent+logconf', runlocal=False)  # arguments (w2s_offline's defaults)


def _args(arg):
  return config_args.parse(arg, **ARGS)


def get_config(arg: str | None = None):
  a = _args(arg)
  # only what the user wrote goes on, so w2s_offline's runlocal presets (2 seeds) yield to it alone
  c = w2s_offline.get_config(a.forward('seeds', 'losses', 'runlocal'))
  with c.unlocked():
    if a['runlocal']:
      c.strong.model = dict(name='bert', size='tiny', num_layers=2)
    else:
      c.strong.model = dict(name='bert', pretrained='minilm', layers=6)
    c.shared_dir = ''  # set by w2s.sweep: every point's stages in one directory
  return c


def get_sweep(arg: str | None = None):
  a = _args(arg)
  if a['runlocal']:
    return sweep.product(sweep.axis('splits.max_weak', [64, 128]),
                         sweep.axis('strong.model.num_layers', [1, 2]))
  return sweep.product(sweep.axis('splits.max_weak', list(WEAK_LABELS)),
                       sweep.axis('strong.model.layers', list(STRONG_LAYERS)))
