"""Dotted-key overrides of a config: a sweep point's `{key: value}` and `--config.key=value` flags.

`python -m w2s.main` parses its `--config.key=value` flags with ml_collections' config_flags;
`parse_flags` runs the same parser over a config already built (a sweep's `get_config(arg)`), so a
value means the same on both commands (`--config.seed=3`, `--config.seeds='(0, 1)'`,
`--noconfig.smoke`, `--config.loss='{"name": "gce"}'`).
"""
import copy
import difflib
import re

from w2s.errors import UserError

FLAG = re.compile(r'^--?(?:no)?config\.([^=\s]+)')  # --config.a.b=1, --config.a.b 1, --noconfig.a


def set_key(config, key: str, value, *, plugin_options: bool = True) -> None:
  """config[key] = value for a dotted key (the config unlocked). A key the config does not define
  is a UserError naming the nearest one, except, with `plugin_options`, an option of a plug-in
  section (`dict(name=..., **hparams)`), which the protocol's check holds to what the plug-in
  takes; a value of the wrong type is a UserError too."""
  node = walk(config, key, plugin_options=plugin_options)
  try:
    node[key.split('.')[-1]] = value
  except (TypeError, ValueError) as e:
    raise UserError(f'key {key!r}: {" ".join(str(e).split())}') from e


def walk(config, key: str, *, plugin_options: bool = True, said: str = ''):
  """The section of `config` that holds the dotted `key`'s last part (UserError: see set_key;
  `said`: how the message names the key, `key 'a.b'` by default)."""
  node, parts, said = config, key.split('.'), said or f'key {key!r}'
  for depth, part in enumerate(parts):
    where = '.'.join(parts[:depth]) or 'the config'
    if not hasattr(node, 'keys'):
      raise UserError(f'{said}: {where} is {node!r}, not a section')
    last = depth == len(parts) - 1
    if part not in node and not (last and plugin_options and 'name' in node):
      near = difflib.get_close_matches(part, list(node.keys()), n=1)
      raise UserError(f'{said}: {where} has no {part!r}'
                      f'{f" (did you mean {near[0]!r}?)" if near else ""}; overrides set only '
                      f'keys the config defines: {", ".join(sorted(node.keys()))}')
    if not last:
      node = node[part]
  return node


def parse_flags(args: list[str], config) -> dict:
  """{dotted key: value} of `--config.key=value` flags (`args`, in order; a later flag wins), each
  value parsed by the type of the config's value as `python -m w2s.main` parses it. A key the
  config does not define (plug-in options included: a locked config takes none), a value that does
  not parse, or anything else in `args` is one UserError line. `config` is left as it was."""
  if not args:
    return {}
  from absl import flags
  from ml_collections import config_flags
  for arg in args:
    m = FLAG.match(arg)
    if m:
      walk(config, m.group(1), plugin_options=False, said=f'--config.{m.group(1)}')
    elif arg.startswith('-'):
      raise UserError(f'unknown flag {arg.split("=")[0]}; besides its own flags (--help) the '
                      'sweep takes only --config.key=value overrides')
  values = flags.FlagValues()
  argv = ['w2s.sweep', *args]
  try:
    config_flags.DEFINE_config_dict('config', copy.deepcopy(config),
                                    flag_values=values, lock_config=True, sys_argv=argv)
    rest = values(argv)[1:]
  except Exception as e:  # pylint: disable=broad-except  # absl's flag errors, config_dict's
    raise UserError(' '.join(str(e).split()) or type(e).__name__) from e
  if rest:
    raise UserError(f'unexpected argument {rest[0]!r}; an override is --config.key=value')
  return dict(values['config'].override_values)
