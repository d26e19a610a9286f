"""Parses the small argument string after a config path: `configs/x.py:loss=logconf,runlocal`."""
from w2s.errors import UserError


def parse(arg: str | None, **defaults) -> dict:
  """'a=1,b=x,flag' -> {'a': 1, 'b': 'x', 'flag': True} over `defaults` (types follow defaults).

  Keys not in `defaults` are an error listing the known ones.
  """
  out = dict(defaults)
  for item in filter(None, (arg or '').split(',')):
    key, eq, value = item.partition('=')
    key = key.strip()
    if key not in defaults:
      raise UserError(f'unknown config argument {key!r}; known: {", ".join(sorted(defaults))}')
    if not eq:
      out[key] = True
      continue
    kind = type(defaults[key])
    try:
      out[key] = (value.lower() in ('1', 'true', 'yes')) if kind is bool else kind(value)
    except ValueError as e:
      raise UserError(f'config argument {key}={value!r} is not a {kind.__name__}') from e
  return out
