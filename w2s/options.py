"""Typed, checked options: every config section resolved once, where it enters.

A config is an `ml_collections.ConfigDict`; protocols turn each section into the options of the
code that consumes it (a frozen dataclass, or a plug-in's entry-point signature) with the
functions here, and pass those objects down. A key nobody reads, a misspelled hyperparameter or a
nonsense value is a `UserError` naming the section, the key and what is valid, raised before any
stage trains.

* `plugin(kind, spec, where)`: `dict(name=..., **hparams)` -> `Plugin`, the hparams checked
  against the entry point's keyword arguments (`registry.ENTRY_POINTS`).
* `TrainOptions.from_section(section, where, seed=..., ...)`: what `train.fit` needs.
* `check_keys(section, allowed, where)`: the one check every section goes through.
"""
import dataclasses
import math
from typing import Any, Iterable, Mapping

from w2s import registry
from w2s.errors import UserError
# `plain` and `accepted_kwargs` live a floor down (optim and partition use them too); they are
# re-exported here because every protocol reads its config through `options`.
from w2s.plain_data import plain
from w2s.registry import accepted_kwargs

# Arguments the caller supplies to each kind's entry point (never config hyperparameters).
CALLER_ARGS = {
    'losses': ('logits', 'labels', 'mask', 'step_frac', 'batch', 'loss_state', 'step',
               'total_steps'),
    'models': ('num_classes',),
    'datasets': (),
    'protocols': ('config', 'workdir'),
    'views': ('raw', 'input_kind'),
    'pseudo_labels': ('probs', 'round_index', 'members'),
    'label_models': ('votes', 'num_classes'),
    'label_noise': ('labels', 'ids', 'num_classes', 'inputs'),
    'augment': (),
    'ssl': ('logits_x', 'labels_x', 'mask_x', 'logits_uw', 'logits_us', 'mask_u', 'step',
            'total_steps', 'state', 'index_u', 'logits_ut', 'logits_xs', 'apply', 'x', 'u_view',
            'rng'),
}
# Keys of a `train` section, with their defaults.
TRAIN_DEFAULTS = dict(optimizer=None, schedule=dict(name='constant'), batch_size=None,
                      num_epochs=0.0, num_steps=0, accum_steps=1, eval_every=0, select='last',
                      patience=0, partition='replicate', param_dtype='float32', augment=None,
                      ssl=None, unlabelled_ratio=7, weak_augment=None, strong_augment=None,
                      ema_decay=0.0, group_by=None, select_metric='loss')
# Keys that change where arrays live, never what they hold (a checkpoint restores across them).
LAYOUT_ONLY = ('partition',)
# Run-level keys that cannot change a result (excluded from checkpoint fingerprints).
RUN_ONLY = ('log_every', 'checkpoint_every', 'keep_checkpoints')
SELECT = ('last', 'best')
SELECT_METRICS = ('loss', 'auroc')  # w2s.selection.METRICS: lowest held-out loss, highest AUROC
# Options added after results were published: left out of fingerprints while at their defaults.
LATER_OPTIONS = ('param_dtype', 'augment', 'ssl', 'unlabelled_ratio', 'weak_augment',
                 'strong_augment', 'ema_decay', 'group_by', 'select_metric')


RUN_DEFAULTS = (('log_every', 50), ('checkpoint_every', 500), ('keep_checkpoints', 2))


def seeds_of(value) -> tuple[int, ...]:
  """A protocol's `seeds`, checked: a non-empty tuple of ints >= 0."""
  seeds = tuple(value) if isinstance(value, (list, tuple)) else ()
  if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
    raise UserError(f'seeds={value!r} must be a non-empty tuple of ints >= 0, e.g. '
                    "--config.seeds='(0, 1, 2)'")
  return seeds


def run_settings(c: Mapping) -> dict[str, int]:
  """log_every, checkpoint_every, keep_checkpoints of a protocol config, checked."""
  return {k: positive(c.get(k, d), k) for k, d in RUN_DEFAULTS}


def _maybe_plugin(kind: str, spec, where: str):
  return None if spec is None else plugin(kind, spec, where)


def check_keys(section: Mapping, allowed: Iterable[str], where: str) -> None:
  """UserError for the first key of `section` not in `allowed`, listing the valid ones."""
  allowed = list(allowed)
  unknown = sorted(set(section) - set(allowed))
  if unknown:
    hint = _closest(unknown[0], allowed)
    raise UserError(f'{where}: unknown key {unknown[0]!r}{hint}; valid keys: '
                    f'{", ".join(sorted(allowed))}')


def _closest(key: str, allowed) -> str:
  import difflib
  match = difflib.get_close_matches(key, list(allowed), n=1)
  return f' (did you mean {match[0]!r}?)' if match else ''


@dataclasses.dataclass(frozen=True)
class Plugin:
  """A resolved plug-in section: its kind, name and checked hyperparameters."""
  kind: str
  name: str
  hparams: Mapping[str, Any]

  def spec(self) -> dict:
    """The `dict(name=..., **hparams)` form (for stage keys and `registry.build`)."""
    return {'name': self.name, **plain(self.hparams)}

  def entry(self):
    return registry.get(self.kind, self.name)


def check_protocol(config):
  """(protocol plug-in, its check's result): what `w2s.main --dry_run` and every sweep point run
  before anything trains (datasets read, every plug-in built and traced; nothing written)."""
  import sys
  proto = plugin('protocols', config.protocol, 'protocol')
  module = sys.modules[proto.entry().__module__]
  return proto, (module.check(config) if hasattr(module, 'check') else None)


def plugin(kind: str, spec, where: str) -> Plugin:
  """Resolves `spec` (`dict(name=..., **hparams)`) for registry kind `kind`, or a UserError.

  Hyperparameters the entry point does not take are refused (naming the valid ones); entry
  points with **kwargs (model families passing architecture overrides on) are checked when
  built (see `build`).
  """
  spec = plain(spec)
  if not isinstance(spec, Mapping):
    raise UserError(f'{where} must be a section dict(name=..., ...), got {spec!r}')
  if 'name' not in spec:
    raise UserError(f'{where} has no "name"; write dict(name=..., **hparams)')
  name, hparams = spec['name'], {k: v for k, v in spec.items() if k != 'name'}
  if not isinstance(name, str):
    raise UserError(f'{where}.name must be a string, got {name!r}')
  fn = registry.get(kind, name)
  names, var_kw = accepted_kwargs(fn)
  caller = set(CALLER_ARGS.get(kind, ()))
  bad = sorted(set(hparams) & caller)
  if bad:
    raise UserError(f'{where}: {bad[0]!r} is supplied by w2s, not the config; remove it')
  if not var_kw:
    valid = sorted(names - caller)
    for key in sorted(hparams):
      if key not in names:
        raise UserError(f'{where}: {registry.singular_name(kind)} {name!r} has no '
                        f'option {key!r}{_closest(key, valid)}; its options: '
                        f'{", ".join(valid) or "none"}')
  return Plugin(kind, name, hparams)


def build(p: Plugin, where: str, **caller):
  """Calls the plug-in's entry point; a TypeError from unknown options becomes a UserError."""
  try:
    return p.entry()(**p.hparams, **caller)
  except TypeError as e:
    if 'argument' not in str(e):
      raise
    raise UserError(f'{where}: {registry.singular_name(p.kind)} {p.name!r} rejected its options '
                    f'{sorted(p.hparams)}: {e}') from e


def positive(value, where: str, *, kind=int, allow_zero: bool = False):
  """`value` as `kind`, or a UserError unless it is a finite number > 0 (>= 0 with allow_zero)."""
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise UserError(f'{where}={value!r} must be a number')
  if kind is int and float(value) != int(value):
    raise UserError(f'{where}={value!r} must be a whole number')
  if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
    bound = '>= 0' if allow_zero else '> 0'
    raise UserError(f'{where}={value!r} must be {bound}')
  return kind(value)


@dataclasses.dataclass(frozen=True)
class TrainOptions:
  """What `train.fit` needs, checked. `eval_every` > 0 evaluates on the held-out slice given to
  `fit` every that many steps; `select='best'` keeps the parameters with the lowest held-out
  loss (the labels being the stage's own label source: for a student, held-out *weak* labels);
  `patience` > 0 stops after that many evaluations without improvement."""
  loss: Plugin
  optimizer: Mapping[str, Any]
  schedule: Mapping[str, Any]
  batch_size: int
  num_epochs: float = 0.0
  num_steps: int = 0
  accum_steps: int = 1
  seed: int = 0
  eval_every: int = 0
  select: str = 'last'
  patience: int = 0
  log_every: int = 50
  checkpoint_every: int = 500
  keep_checkpoints: int = 2
  partition: Any = 'replicate'   # w2s.partition rules: 'replicate', 'fsdp', 'tp', ... or a list
  param_dtype: str = 'float32'    # 'bfloat16': bf16 params, float32 master weights and moments
  augment: Any = None             # Plugin of kind 'augment': applied to training batches in-step
  ssl: Any = None                 # Plugin of kind 'ssl': the online semi-supervised step
  unlabelled_ratio: int = 7       # mu: unlabelled rows per labelled row in a step (ssl only)
  weak_augment: Any = None        # a(x): the labelled batch and the weak view of U (ssl only)
  strong_augment: Any = None      # A(x): the strong view of U (ssl only)
  ema_decay: float = 0.0          # > 0: keep an EMA of the params (evaluation, Mean Teacher)
  group_by: str | None = None     # a column (e.g. 'bag_id'): batches hold whole groups of it;
                                  # None: the loss's own `group_by` (proportion), else rows
  select_metric: str = 'loss'     # what select='best' / patience read: 'loss' or 'auroc'

  @classmethod
  def from_section(cls, section, where: str, *, loss, seed: int, log_every: int,
                   checkpoint_every: int, keep_checkpoints: int) -> 'TrainOptions':
    """A role's `train` section (optimizer, schedule, batch_size, num_epochs | num_steps,
    accum_steps, eval_every, select, patience, partition, param_dtype, augment, group_by) plus
    the run-level settings."""
    t = plain(section)
    if not isinstance(t, Mapping):
      raise UserError(f'{where} must be a section dict(optimizer=..., batch_size=..., ...)')
    check_keys(t, TRAIN_DEFAULTS, where)
    t = {**TRAIN_DEFAULTS, **t}
    for key in ('optimizer', 'batch_size'):
      if t[key] is None:
        raise UserError(f'{where}.{key} is required')
    loss_p = loss if isinstance(loss, Plugin) else plugin('losses', loss, f'{where} loss')
    opts = cls(loss=loss_p, optimizer=plain(t['optimizer']), schedule=plain(t['schedule']),
               batch_size=positive(t['batch_size'], f'{where}.batch_size'),
               num_epochs=positive(t['num_epochs'], f'{where}.num_epochs', kind=float,
                                   allow_zero=True),
               num_steps=positive(t['num_steps'], f'{where}.num_steps', allow_zero=True),
               accum_steps=positive(t['accum_steps'], f'{where}.accum_steps'),
               seed=positive(seed, 'seed', allow_zero=True),
               eval_every=positive(t['eval_every'], f'{where}.eval_every', allow_zero=True),
               select=t['select'], patience=positive(t['patience'], f'{where}.patience',
                                                     allow_zero=True),
               log_every=positive(log_every, 'log_every'),
               checkpoint_every=positive(checkpoint_every, 'checkpoint_every'),
               keep_checkpoints=positive(keep_checkpoints, 'keep_checkpoints'),
               partition=t['partition'], param_dtype=t['param_dtype'],
               augment=_maybe_plugin('augment', t['augment'], f'{where}.augment'),
               ssl=_maybe_plugin('ssl', t['ssl'], f'{where}.ssl'),
               unlabelled_ratio=positive(t['unlabelled_ratio'], f'{where}.unlabelled_ratio'),
               weak_augment=_maybe_plugin('augment', t['weak_augment'], f'{where}.weak_augment'),
               strong_augment=_maybe_plugin('augment', t['strong_augment'],
                                            f'{where}.strong_augment'),
               ema_decay=positive(t['ema_decay'], f'{where}.ema_decay', kind=float,
                                  allow_zero=True), group_by=t['group_by'],
               select_metric=t['select_metric'])
    if opts.group_by is not None and (not isinstance(opts.group_by, str) or not opts.group_by):
      raise UserError(f'{where}.group_by={opts.group_by!r} must be a column name (e.g. '
                      "'bag_id') or None")
    if opts.ema_decay >= 1:
      raise UserError(f'{where}.ema_decay={opts.ema_decay} must be in [0, 1)')
    if opts.ssl is None and (opts.weak_augment or opts.strong_augment):
      raise UserError(f'{where}: weak_augment / strong_augment are the views of train.ssl; set '
                      'ssl=dict(name=...) or use train.augment for a supervised step')
    if not opts.num_steps and not opts.num_epochs:
      raise UserError(f'{where}: num_steps and num_epochs are both 0; set num_epochs > 0 or '
                      'num_steps > 0')
    if opts.select not in SELECT:
      raise UserError(f'{where}.select={opts.select!r}; use one of {", ".join(SELECT)}')
    if opts.select_metric not in SELECT_METRICS:
      raise UserError(f'{where}.select_metric={opts.select_metric!r}; use one of '
                      f'{", ".join(SELECT_METRICS)}')
    if opts.select_metric != 'loss' and opts.select != 'best' and not opts.patience:
      raise UserError(f'{where}.select_metric={opts.select_metric!r} is read by select="best" '
                      'and patience only; set select="best" or drop select_metric')
    if (opts.select == 'best' or opts.patience) and not opts.eval_every:
      raise UserError(f'{where}: select="best" and patience need eval_every > 0 (evaluations '
                      'on the held-out slice)')
    if opts.batch_size % opts.accum_steps:
      raise UserError(f'{where}.batch_size={opts.batch_size} is not divisible by accum_steps='
                      f'{opts.accum_steps}')
    from w2s import optim, partition  # here, not above: checking a config imports no jax
    if opts.param_dtype not in optim.PARAM_DTYPES:
      raise UserError(f'{where}.param_dtype={opts.param_dtype!r}; use one of '
                      f'{", ".join(optim.PARAM_DTYPES)}')
    optim.make_optimizer(opts.optimizer, opts.schedule, 10, where=where)  # checks both sections
    partition.check(opts.partition, f'{where}.partition')
    return opts

  @classmethod
  def coerce(cls, cfg, where: str = 'train config') -> 'TrainOptions':
    """`cfg` as TrainOptions: itself, or a flat section (the train keys plus loss, seed and the
    run-level settings, like configs/supervised.py) checked on the way."""
    if isinstance(cfg, cls):
      return cfg
    c = plain(cfg)
    return cls.from_section({k: c[k] for k in TRAIN_DEFAULTS if k in c}, where,
                            loss=c.get('loss'), seed=c.get('seed', 0),
                            log_every=c.get('log_every', 50),
                            checkpoint_every=c.get('checkpoint_every', 500),
                            keep_checkpoints=c.get('keep_checkpoints', 2))

  def result_key(self) -> dict:
    """Everything that can change the trained parameters (for checkpoint fingerprints)."""
    out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
           if f.name not in RUN_ONLY + LAYOUT_ONLY}
    out['loss'] = self.loss.spec()
    for f in dataclasses.fields(self):
      if f.name in LATER_OPTIONS and out.get(f.name) == f.default:
        del out[f.name]  # defaults: fingerprints (and stage dirs) from before these options stay
    for key in ('augment', 'ssl', 'weak_augment', 'strong_augment'):
      if getattr(self, key) is not None:
        out[key] = getattr(self, key).spec()
    return plain(out)

