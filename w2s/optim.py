"""optax optimizers and learning-rate schedules from config sections.

    config.optimizer = dict(name='adamw', learning_rate=1e-3, weight_decay=0.01, clip_norm=1.0)
    config.schedule = dict(name='cosine', warmup_frac=0.0)

`name` is any optax optimizer (`optax.<name>`) or a dotted path `pkg.mod:fn` to a function with the
same signature; the schedule is built from optax's schedules and passed as its learning rate.
"""
import optax

from w2s import registry
from w2s.errors import UserError

SCHEDULES = ('constant', 'cosine', 'linear')


def make_schedule(spec, peak_lr: float, total_steps: int, where: str = 'config') -> optax.Schedule:
  """'constant' | 'cosine' (to `end_frac` * peak) | 'linear' (to 0), each with linear warmup."""
  name, hp = registry.split_spec(spec)
  warmup_frac = hp.pop('warmup_frac', 0.0)
  warmup_steps = hp.pop('warmup_steps', 0)
  end_frac = hp.pop('end_frac', 0.0)
  if hp:
    raise UserError(f'{where}.schedule {name!r} got unknown options {sorted(hp)}; it takes '
                    'warmup_steps, warmup_frac, end_frac')
  for key, v in (('warmup_frac', warmup_frac), ('end_frac', end_frac)):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
      raise UserError(f'{where}.schedule.{key}={v!r} must be a number in [0, 1]')
  if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
    raise UserError(f'{where}.schedule.warmup_steps={warmup_steps!r} must be an int >= 0')
  warmup = int(warmup_steps or round(warmup_frac * total_steps))
  decay_steps = max(total_steps - warmup, 1)
  if name == 'constant':
    main = optax.constant_schedule(peak_lr)
  elif name == 'cosine':
    main = optax.cosine_decay_schedule(peak_lr, decay_steps, alpha=end_frac)
  elif name == 'linear':
    main = optax.linear_schedule(peak_lr, peak_lr * end_frac, decay_steps)
  else:
    raise UserError(f'unknown schedule {name!r}; known: {", ".join(SCHEDULES)}')
  if not warmup:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, peak_lr, warmup), main], [warmup])


def make_optimizer(opt_spec, sched_spec, total_steps: int, where: str = 'config'):
  """-> (optax.GradientTransformation, schedule); bad options are a UserError naming `where`."""
  name, hp = registry.split_spec(opt_spec)
  peak_lr = hp.pop('learning_rate', None)
  if peak_lr is None:
    raise UserError(f'{where}.optimizer needs a learning_rate')
  if isinstance(peak_lr, bool) or not isinstance(peak_lr, (int, float)) or not peak_lr > 0 \
      or peak_lr == float('inf'):
    raise UserError(f'{where}.optimizer.learning_rate={peak_lr!r} must be a number > 0')
  clip = hp.pop('clip_norm', None)
  if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float))
                           or not clip > 0):
    raise UserError(f'{where}.optimizer.clip_norm={clip!r} must be a number > 0 (or absent)')
  schedule = make_schedule(sched_spec, peak_lr, total_steps, where)
  if ':' in name:
    factory = registry.get('losses', name)  # dotted path: any importable callable
  else:
    factory = getattr(optax, name, None)
    if factory is None or not callable(factory):
      raise UserError(f'unknown optimizer {name!r}; use an optax optimizer name such as adam, adamw, '
                      'sgd, lion, adafactor (or "pkg.module:fn")')
  from w2s import options
  names, var_kw = options.accepted_kwargs(factory)
  unknown = sorted(set(hp) - names) if not var_kw else []
  if unknown:
    raise UserError(f'{where}.optimizer {name!r} has no option {unknown[0]!r}; its options: '
                    f'{", ".join(sorted(names - {"learning_rate"}))}')
  try:
    tx = factory(learning_rate=schedule, **hp)
  except TypeError as e:
    raise UserError(f'{where}.optimizer {name!r} rejected its options {sorted(hp)}: {e}') from e
  if clip:
    tx = optax.chain(optax.clip_by_global_norm(clip), tx)
  return tx, schedule
