"""Parses the small argument string after a config path: `configs/x.py:loss=logconf,runlocal`.

A config's presets (`runlocal` shrinking a run to seconds, a task's recipe) fill in what the
argument string leaves open and never overwrite what it says: `Args.preset(key, value)` is the
preset's value only where the user did not write `key`.
"""
from w2s.errors import UserError


class Args(dict):
  """The parsed arguments (a dict over the defaults) and `given`, the keys the string wrote."""

  def __init__(self, values: dict, given=()):
    super().__init__(values)
    self.given = frozenset(given)

  def preset(self, key: str, value):
    """`value` (a preset's, e.g. runlocal's 2 seeds) unless the user wrote `key`: then theirs."""
    if key not in self:
      raise KeyError(key)
    return self[key] if key in self.given else value

  def forward(self, *keys: str) -> str:
    """'k=v,...' of the `keys` the user wrote, for a config built on another one's get_config
    (so that config's presets see the same arguments as written, and only those)."""
    items = []
    for key in (k for k in keys if k in self.given):
      value = self[key]
      if isinstance(value, bool):
        items.append(key if value else f'{key}=false')
      else:
        items.append(f'{key}={value}')
    return ','.join(items)


def parse(arg: str | None, **defaults) -> Args:
  """'a=1,b=x,flag' -> {'a': 1, 'b': 'x', 'flag': True} over `defaults` (types follow defaults).

  Keys not in `defaults` are an error listing the known ones. The result's `given` holds the
  keys the string wrote (presets must not overwrite those: `Args.preset`).
  """
  out, given = dict(defaults), set()
  for item in filter(None, (arg or '').split(',')):
    key, eq, value = item.partition('=')
    key = key.strip()
    if key not in defaults:
      raise UserError(f'unknown config argument {key!r}; known: {", ".join(sorted(defaults))}')
    given.add(key)
    if not eq:
      out[key] = True
      continue
    kind = type(defaults[key])
    try:
      out[key] = (value.lower() in ('1', 'true', 'yes')) if kind is bool else kind(value)
    except ValueError as e:
      raise UserError(f'config argument {key}={value!r} is not a {kind.__name__}') from e
  return Args(out, given)
