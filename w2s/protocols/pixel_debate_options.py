"""The options of the pixel-debate protocol (`w2s.protocols.pixel_debate`): its config resolved
and checked, section by section. A floor below both the protocol and its results module
(`pixel_debate_results.load_games` resolves a finished run's config), so neither imports the
other's importer."""
import dataclasses
import os
from typing import Any, Mapping

from w2s import options
from w2s.debate import pixel
from w2s.errors import UserError
from w2s.protocols import learners

TOP_KEYS = ('protocol', 'dataset', 'splits', 'seeds', 'pixels', 'nonzero', 'judge', 'strong',
            'debate', 'plot_games', 'eval_batch_size', 'log_every', 'checkpoint_every',
            'keep_checkpoints', 'mesh', 'shared_dir', 'smoke')
SPLIT_KEYS = ('weak_fraction', 'balance', 'balance_test', 'max_weak', 'max_strong', 'max_test')
DEBATE_KEYS = ('strategies', 'top_n', 'liars', 'first', 'batch_size', 'max_test')
LIARS = ('runner_up', 'all')
FIRST = ('honest', 'liar', 'random')
ROLE_ONLY = ('model', 'loss', 'train')  # judge and strong: trained from scratch, one model each


@dataclasses.dataclass(frozen=True)
class Options:
  dataset: options.Plugin
  splits: Mapping[str, Any]
  seeds: tuple[int, ...]
  pixels: tuple[int, ...]
  nonzero: bool
  judge: learners.RoleOptions
  strong: learners.RoleOptions
  debate: Mapping[str, Any]      # strategies, top_n, liars, first, batch_size, max_test
  plot_games: int
  eval_batch_size: int
  run: Mapping[str, int]
  mesh: Mapping[str, Any]
  shared_dir: str


def _ints(value, where: str, lo: int = 1) -> tuple[int, ...]:
  vals = tuple(value) if isinstance(value, (list, tuple)) else (value,)
  if not vals or any(isinstance(v, bool) or not isinstance(v, int) or v < lo for v in vals):
    raise UserError(f'{where}={vals!r} must be an int >= {lo} or a tuple of them, e.g. (4, 6)')
  return vals


def _names(value, allowed, where: str) -> tuple[str, ...]:
  vals = tuple(value) if isinstance(value, (list, tuple)) else (value,)
  bad = [v for v in vals if v not in allowed]
  if not vals or bad:
    raise UserError(f'{where}={vals!r}: use one or more of {", ".join(allowed)}')
  return vals


def _role(name: str, section, input_kind) -> learners.RoleOptions:
  options.check_keys(options.plain(section) or {}, ROLE_ONLY, name)
  role = learners.RoleOptions.from_section(name, section, input_kind=input_kind)
  if options.plain(role.train).get('augment') is not None and name == 'judge':
    raise UserError('judge.train.augment is set by the protocol (sparse_pixels with each k of '
                    'pixels); remove it')
  return role


def resolve(config, input_kind: str | None = None) -> Options:
  c = options.plain(config)
  options.check_keys(c, TOP_KEYS, 'config')
  for key in ('dataset', 'splits', 'seeds', 'pixels', 'judge', 'strong', 'debate',
              'eval_batch_size'):
    if key not in c:
      raise UserError(f'config.{key} is required by the pixel_debate protocol')
  options.check_keys(c['splits'], SPLIT_KEYS, 'splits')
  d = {'strategies': ('greedy',), 'top_n': 8, 'liars': LIARS, 'first': 'random',
       'batch_size': 64, 'max_test': None, **c['debate']}
  options.check_keys(d, DEBATE_KEYS, 'debate')
  d['strategies'] = _names(d['strategies'], pixel.STRATEGIES, 'debate.strategies')
  d['liars'] = _names(d['liars'], LIARS, 'debate.liars')
  if d['first'] not in FIRST:
    raise UserError(f'debate.first={d["first"]!r}; use one of {", ".join(FIRST)}')
  d['batch_size'] = options.positive(d['batch_size'], 'debate.batch_size')
  if d['max_test'] is not None:
    d['max_test'] = options.positive(d['max_test'], 'debate.max_test')
  nonzero = c.get('nonzero', True)
  if not isinstance(nonzero, bool):
    raise UserError(f'config.nonzero={nonzero!r} must be True or False')
  mesh = c.get('mesh') or {}
  options.check_keys(mesh, ('num_devices', 'shape'), 'mesh')
  return Options(
      dataset=options.plugin('datasets', c['dataset'], 'dataset'), splits=c['splits'],
      seeds=options.seeds_of(c['seeds']), pixels=_ints(c['pixels'], 'pixels'), nonzero=nonzero,
      judge=_role('judge', c['judge'], input_kind), strong=_role('strong', c['strong'], input_kind),
      debate=d, plot_games=options.positive(c.get('plot_games', 4), 'plot_games',
                                            allow_zero=True),
      eval_batch_size=options.positive(c['eval_batch_size'], 'eval_batch_size'),
      run=options.run_settings(c), mesh=mesh,
      shared_dir=os.path.abspath(c['shared_dir']) if c.get('shared_dir') else '')


def judge_options(r: Options, k: int, seed: int) -> options.TrainOptions:
  """The judge's train options with the protocol's masks of k pixels."""
  section = {**options.plain(r.judge.train),
             'augment': dict(name='sparse_pixels', pixels=k, nonzero=r.nonzero)}
  return learners.train_options(section, 'judge.train', loss=r.judge.loss, seed=seed, run=r.run)
