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


def make_schedule(spec, peak_lr: float, total_steps: int) -> optax.Schedule:
  """'constant' | 'cosine' (to `end_frac` * peak) | 'linear' (to 0), each with linear warmup."""
  name, hp = registry.split_spec(spec)
  warmup = int(hp.pop('warmup_steps', 0) or round(hp.pop('warmup_frac', 0.0) * total_steps))
  hp.pop('warmup_frac', None)
  end_frac = hp.pop('end_frac', 0.0)
  if hp:
    raise UserError(f'schedule {name!r} got unknown options {sorted(hp)}; it takes warmup_steps, '
                    'warmup_frac, end_frac')
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


def make_optimizer(opt_spec, sched_spec, total_steps: int):
  """-> (optax.GradientTransformation, schedule)."""
  name, hp = registry.split_spec(opt_spec)
  peak_lr = hp.pop('learning_rate', None)
  if peak_lr is None:
    raise UserError('config.optimizer needs a learning_rate')
  clip = hp.pop('clip_norm', None)
  schedule = make_schedule(sched_spec, peak_lr, total_steps)
  if ':' in name:
    factory = registry.get('losses', name)  # dotted path: any importable callable
  else:
    factory = getattr(optax, name, None)
    if factory is None or not callable(factory):
      raise UserError(f'unknown optimizer {name!r}; use an optax optimizer name such as adam, adamw, '
                      'sgd, lion, adafactor (or "pkg.module:fn")')
  try:
    tx = factory(learning_rate=schedule, **hp)
  except TypeError as e:
    raise UserError(f'optimizer {name!r} rejected its options {sorted(hp)}: {e}') from e
  if clip:
    tx = optax.chain(optax.clip_by_global_norm(clip), tx)
  return tx, schedule
