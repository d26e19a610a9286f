"""Prompt templates: config strings with `{field}` placeholders, filled from an example's fields.

A template is a `str.format` string over named fields of a row ('q: what is {a} plus {b}? a:',
'Q: {question} A:'); literal braces are doubled ('{{' and '}}'). Only plain named fields are
allowed, with an optional conversion and format spec ('{a!s}', '{score:.2f}'): positional
('{}', '{0}'), attribute ('{a.real}') and index ('{a[0]}') lookups are refused, so a template
from a command line reads the row's values and nothing else.

`check` runs where a template enters (config checks), so a typo fails in one line naming the
unknown field and the known ones before any model is built; `render` / `render_all` fill it.
"""
import re
import string
from typing import Any, Collection, Mapping, Sequence

import numpy as np

from w2s.errors import UserError

_NAME = re.compile(r'[A-Za-z_][A-Za-z0-9_]*\Z')


def fields_of(template: str) -> list[str]:
  """The field names `template` uses, in order of first use; UserError if it is malformed."""
  if not isinstance(template, str):
    raise UserError(f'prompt template {template!r} must be a string with {{field}} placeholders')
  try:
    parsed = list(string.Formatter().parse(template))
  except ValueError as e:  # "Single '{' encountered in format string", "expected '}' ..."
    raise UserError(f'prompt template {template!r} has an unbalanced brace ({e}); write a '
                    'literal brace as {{ or }}') from e
  names = []
  for _, name, spec, _ in parsed:
    if name is None:
      continue
    if not _NAME.match(name):
      raise UserError(f'prompt template {template!r}: placeholder {{{name}}} is not a plain field '
                      'name; use named fields such as {question} (no positions, attributes or '
                      'indices)')
    if spec and '{' in spec:
      raise UserError(f'prompt template {template!r}: nested placeholders in the format spec of '
                      f'{{{name}}} are not supported; write the spec out')
    if name not in names:
      names.append(name)
  return names


def check(template: str, fields: Collection[str]) -> list[str]:
  """Raises UserError unless every placeholder of `template` is one of `fields`; returns the
  field names the template uses."""
  names = fields_of(template)
  unknown = [n for n in names if n not in fields]
  if unknown:
    raise UserError(f'prompt template {template!r} uses unknown field {unknown[0]!r}; the rows '
                    f'have {sorted(fields)}')
  return names


def render(template: str, row: Mapping[str, Any]) -> str:
  """`template` filled with the values of `row` (numpy scalars print like Python ones)."""
  names = check(template, row.keys())
  return template.format(**{n: _plain(row[n]) for n in names})


def render_all(template: str, columns: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]]
               ) -> list[str]:
  """`template` filled for every row: `columns` is Examples-like (field -> [N] values) or a list
  of row mappings. Checked once; returns N strings."""
  if isinstance(columns, Mapping):
    names = check(template, columns.keys())
    n = len(next(iter(columns.values()))) if columns else 0
    cols = {k: columns[k] for k in names}
    bad = [k for k, v in cols.items() if len(v) != n]
    if bad:
      raise UserError(f'prompt template fields {bad} do not have {n} rows like the others')
    return [template.format(**{k: _plain(v[i]) for k, v in cols.items()}) for i in range(n)]
  rows = list(columns)
  if not rows:
    return []
  names = check(template, rows[0].keys())
  for i, row in enumerate(rows):
    missing = [n for n in names if n not in row]
    if missing:
      raise UserError(f'row {i} has no field {missing[0]!r} for prompt template {template!r}; it '
                      f'has {sorted(row)}')
  return [template.format(**{n: _plain(row[n]) for n in names}) for row in rows]


def _plain(value):
  """numpy scalars as Python ones (so '{a}' of np.int64(3) is '3' on every numpy version)."""
  return value.item() if isinstance(value, np.generic) else value
