"""The first words of every text: `dict(name='truncate', max_words=16)`.

Keeps 'text' up to the end of its `max_words`-th whitespace-separated word (the original spacing
of the kept part is unchanged; texts with fewer words are returned as they are). 'text_pair' (the
question / candidate answer of pair tasks) is never touched: the weak supervisor sees less of the
context, not of what it is asked about.
"""
import re

import numpy as np

from w2s import views
from w2s.errors import UserError

_WORD = re.compile(r'\S+')


def _first_words(text: str, n: int) -> str:
  for i, m in enumerate(_WORD.finditer(text), 1):
    if i == n:
      return text[:m.end()]
  return text


def apply(raw: dict, *, input_kind: str, max_words: int) -> dict:
  """`raw` with each 'text' (object [N] of str) cut after its first `max_words` words.

  Args:
    raw: Examples with 'text' (and optionally 'text_pair', passed through).
    input_kind: must be 'text'.
    max_words: words kept, >= 1.
  """
  texts = views.field_of('truncate', raw, input_kind, 'text')
  n = views.whole('truncate', 'max_words', max_words)
  out = np.empty(len(texts), dtype=object)
  for i, t in enumerate(texts):
    if not isinstance(t, str):
      raise UserError(f"view 'truncate': text {i} is {type(t).__name__}, not a string")
    out[i] = _first_words(t, n)
  return views.replaced(raw, 'text', out)
