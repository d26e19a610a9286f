"""python -m w2s.main --config configs/pixel_debate.py --workdir runs/pixel_debate

The MNIST pixel debate of Irving, Christiano & Amodei (2018), "AI safety via debate", Sec. 3, on
MNIST-5k (real digits, offline), and a weak-to-strong step on it (w2s/protocols/pixel_debate.py;
the game in w2s/debate/pixel.py).

    python -m w2s.main --config configs/pixel_debate.py:pixels=6,strategy=lookahead --workdir DIR
    python -m w2s.main --config configs/pixel_debate.py:strategy=lookahead,liars=runner_up --workdir DIR
    python -m w2s.main --config configs/pixel_debate.py:runlocal --workdir /tmp/pixel_debate_tiny

Arguments: pixels (k, or several joined by '+': 4+6), strategy (greedy | lookahead | both
joined by '+'), liars (runner_up: the strong classifier's most probable wrong class; all: every
wrong class, the worst case; default both), seeds (number of seeds), steps (judge training
steps), runlocal (seconds-long).

Judge: `mlp` with one hidden layer of 256 on the 2 x 28 x 28 input [image * mask, mask], trained
on A's ground truth with k random nonzero pixels drawn per example and step (the paper's judge is
a convnet on the same two planes, trained on 60k digits). An MLP judge's first layer is linear in
the input, so the debaters score every candidate reveal at the cost of the layers above it
(`w2s.debate.pixel.additive_judge`); `judge.model=dict(name='cnn')` also works, scored by vmap
over candidate masks, ~200x slower a game (cnn small, k=6: 0.31 vs 0.0016 CPU-seconds on a
2-core CPU). Strong classifier, ceiling and students: `cnn` small on full images. All settings
are fixed a priori (nothing is chosen on test): judge Adam 1e-3, batch 128, `steps` steps;
strong Adam 1e-3, batch 64, 400 steps (~13 epochs of B's 1,977 digits).
"""
from ml_collections import ConfigDict

from w2s import config_args
from w2s.errors import UserError


def _ints(text: str, what: str) -> tuple[int, ...]:
  try:
    return tuple(int(v) for v in str(text).split('+'))
  except ValueError as e:
    raise UserError(f'config argument {what}={text!r} must be ints joined by "+", e.g. 4+6') from e


# arguments and defaults
ARGS = dict(pixels='4+6', strategy='greedy', liars='runner_up+all', seeds=5, steps=3000,
            runlocal=False)


def get_config(arg: str | None = None) -> ConfigDict:
  a = config_args.parse(arg, **ARGS)
  c = ConfigDict()
  c.protocol = dict(name='pixel_debate')
  c.dataset = dict(name='mnist_5k')
  c.splits = dict(weak_fraction=0.5)
  c.seeds = tuple(range(a['seeds']))
  c.pixels = _ints(a['pixels'], 'pixels')
  c.nonzero = True  # the judge's masks and the debaters' reveals: nonzero pixels (as the paper)
  c.judge = dict(model=dict(name='mlp', hidden=(256,)), loss=dict(name='xent'),
                 train=dict(optimizer=dict(name='adam', learning_rate=1e-3),
                            schedule=dict(name='cosine', warmup_frac=0.02), batch_size=128,
                            num_steps=a['steps']))
  c.strong = dict(model=dict(name='cnn', size='small'), loss=dict(name='xent'),
                  train=dict(optimizer=dict(name='adam', learning_rate=1e-3),
                             schedule=dict(name='cosine', warmup_frac=0.05), batch_size=64,
                             num_steps=400))
  c.debate = dict(strategies=tuple(a['strategy'].split('+')), top_n=8,
                  liars=tuple(a['liars'].split('+')), first='random', batch_size=64,
                  max_test=None)
  c.plot_games = 4
  c.eval_batch_size = 256
  c.log_every = 100
  c.checkpoint_every = 1000
  c.keep_checkpoints = 2  # the newest can be damaged (a kill mid-write); the run falls back
  c.mesh = dict(num_devices=0)
  c.shared_dir = ''  # stages live here instead of the workdir: runs that share them (strategies)
  if a['runlocal']:  # presets: an argument the user wrote (pixels=, steps=) wins over them
    c.smoke = True  # a smoke test, not a result: tables and plots say so
    c.splits = dict(weak_fraction=0.5, max_weak=96, max_strong=64, max_test=48)
    c.pixels = _ints(a.preset('pixels', '3'), 'pixels')
    c.judge.train.num_steps = a.preset('steps', 30)
    c.judge.train.batch_size = 32
    c.strong.train.num_steps = 12
    c.strong.train.batch_size = 32
    c.debate.batch_size = 16
    c.plot_games = 2
    c.eval_batch_size = 32
    c.log_every = 10
    c.checkpoint_every = 100
  return c
