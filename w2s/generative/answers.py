"""Final answers from generated text, by name, and exact-match scoring.

Extractors (a config names one):
  'last_number'     the last number in the text, GSM8K-style (Cobbe et al. 2021 grade the number
                    after '####'; Yang et al.'s W2S reasoning compares final numeric answers):
                    optional minus sign, thousands groups of exactly three digits ('1,234' ->
                    '1234'), an optional decimal part ('3.5'); None when the text has no digit.
  'first_line'      the first line, stripped; None when it is empty.
  'regex:<pattern>' the first match of a Python regular expression: its first group if it has
                    groups, else the whole match; None when nothing matches.

A batch in which the extractor matches nothing at all is a UserError (a wrong extractor, a prompt
template the model does not answer, or max_new_tokens too small), rather than a silent score of 0.
"""
import functools
import re
from typing import Callable, Sequence

import numpy as np

from w2s.errors import UserError

_NUMBER = re.compile(r'-?\d+(?:,\d{3})+(?:\.\d+)?(?!\d)|-?\d+(?:\.\d+)?')
NAMES = ('last_number', 'first_line', 'regex:<pattern>')


def last_number(text: str) -> str | None:
  """The last number of `text` without thousands separators, or None."""
  found = _NUMBER.findall(text)
  return found[-1].replace(',', '') if found else None


def first_line(text: str) -> str | None:
  """The first line of `text`, stripped, or None when it is blank."""
  line = text.split('\n', 1)[0].strip()
  return line or None


@functools.lru_cache(maxsize=64)
def _compiled(pattern: str) -> re.Pattern:
  try:
    return re.compile(pattern)
  except re.error as e:
    raise UserError(f'answer extractor regex:{pattern} is not a valid regular expression ({e}); '
                    'fix the pattern') from e


def _regex(pattern: str, text: str) -> str | None:
  m = _compiled(pattern).search(text)
  if m is None:
    return None
  return m.group(1) if m.re.groups else m.group(0)


def extractor(name: str) -> Callable[[str], str | None]:
  """The function `text -> answer | None` named `name` (see the module docstring)."""
  if name == 'last_number':
    return last_number
  if name == 'first_line':
    return first_line
  if isinstance(name, str) and name.startswith('regex:'):
    pattern = name[len('regex:'):]
    if not pattern:
      raise UserError("answer extractor 'regex:' has no pattern; write e.g. 'regex:a: *(\\d+)'")
    _compiled(pattern)
    return functools.partial(_regex, pattern)
  raise UserError(f'unknown answer extractor {name!r}; known: {", ".join(NAMES)}')


def extract(name: str, texts: Sequence[str]) -> list[str | None]:
  """The answers of N generated `texts` by extractor `name`; UserError if none matches.

  Returns N answers (str, or None where the text has none).
  """
  fn = extractor(name)
  out = [fn(t) for t in texts]
  if out and all(a is None for a in out):
    example = texts[0] if len(texts[0]) <= 60 else texts[0][:57] + '...'
    raise UserError(f'answer extractor {name!r} matched none of {len(out)} generations (e.g. '
                    f'{example!r}); choose another extractor ({", ".join(NAMES)}), or check the '
                    'prompt template and max_new_tokens')
  return out


def normalize(answer: str | None) -> str | None:
  """How answers are compared: surrounding whitespace stripped (None stays None)."""
  return None if answer is None else str(answer).strip()


def exact_match(predicted: Sequence[str | None], gold: Sequence[str]) -> np.ndarray:
  """float32 [N]: 1 where the predicted answer equals the gold one after `normalize`.

  A missing prediction (None) scores 0. Gold answers may keep the task's formatting (' 936'
  matches '936').
  """
  if len(predicted) != len(gold):
    raise UserError(f'exact_match: {len(predicted)} predictions for {len(gold)} gold answers; '
                    'score the predictions of the same rows')
  return np.array([p is not None and normalize(p) == normalize(g)
                   for p, g in zip(predicted, gold)], np.float32).reshape(len(gold))
