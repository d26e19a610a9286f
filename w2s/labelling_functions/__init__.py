"""Labelling functions: hand-written rules text -> class or abstain, the sources of programmatic
weak supervision (Ratner et al. 2016, "Data Programming: Creating Large Training Sets, Quickly",
NeurIPS; Snorkel, Ratner et al. 2017, VLDB).

A labelling-function set is a plain Python module, no registry involved. It exposes either

* `LABELLING_FUNCTIONS = [fn, ...]`: callables `fn(text: str) -> int`, in this order; or
* functions marked with `@labelling_function` (in definition order; only those defined in the
  module itself, so imported helpers are not picked up by accident).

A function returns a class in 0..C-1 or `ABSTAIN` (-1). The module may set `LABEL_NAMES` (the
dataset's class names in order), checked against the dataset so a rule set written for another
label order fails instead of voting backwards. A config addresses a set as

* a short name: `'rotten_tomatoes'` is `w2s.labelling_functions.rotten_tomatoes`;
* a dotted module path: `'mypkg.my_rules'` (on PYTHONPATH);
* a file: `'path/to/rules.py'` (relative to the working directory).

`load` resolves one into `LabellingFunctions`, whose `digest` (sha256 of the module's source file,
plus the source of any listed function defined elsewhere) keys the stages built on its votes: an
edited rule relabels, an untouched one is reused. `vote_matrix` applies a set to texts:
int32 [n, m], the input of a label model (`w2s/label_models/`).
"""
import dataclasses
import hashlib
import importlib
import importlib.util
import inspect
import os
import pkgutil
import re
from typing import Callable, Sequence

import numpy as np

from w2s.errors import UserError

ABSTAIN = -1
_MARK = '_w2s_labelling_function'
PROGRESS_EVERY = 2000  # texts between progress lines (shown only when a set is slow)


def labelling_function(fn: Callable | None = None, *, name: str | None = None):
  """Marks `fn` as one of its module's labelling functions (`@labelling_function` or
  `@labelling_function(name='...')`); the function itself is unchanged."""
  def mark(f):
    setattr(f, _MARK, name or f.__name__)
    return f
  return mark(fn) if fn is not None else mark


@dataclasses.dataclass(frozen=True)
class LabellingFunctions:
  """A resolved set: what it was loaded from, its functions and their names, the source digest."""
  ref: str
  names: tuple[str, ...]
  functions: tuple[Callable[[str], int], ...]
  digest: str
  label_names: tuple[str, ...] | None = None

  def spec(self) -> dict:
    """What the votes depend on (stage keys hash this; not `ref`: a moved file is the same set)."""
    return {'digest': self.digest, 'functions': list(self.names)}


def known() -> list[str]:
  """Short names of the sets shipped in this package."""
  return sorted(i.name for i in pkgutil.iter_modules(__path__) if not i.name.startswith('_'))


def load(ref: str, where: str = 'labelling_functions') -> LabellingFunctions:
  """The set `ref` names (see module docstring), or a UserError saying what to fix."""
  if not isinstance(ref, str) or not ref:
    raise UserError(f'{where}={ref!r} must name a labelling-function module: a short name '
                    f'({", ".join(known())}), a dotted path or a path/to/file.py')
  module = _import(ref, where)
  listed = getattr(module, 'LABELLING_FUNCTIONS', None)
  if listed is not None:
    if not isinstance(listed, (list, tuple)) or not all(callable(f) for f in listed):
      raise UserError(f'{where}: {ref}.LABELLING_FUNCTIONS must be a list of callables '
                      'text -> class or -1')
    functions = list(listed)
    names = [getattr(f, _MARK, getattr(f, '__name__', f'lf{i}')) for i, f in enumerate(functions)]
  else:
    functions = [f for f in vars(module).values()
                 if callable(f) and hasattr(f, _MARK) and getattr(f, '__module__', None) ==
                 module.__name__]
    names = [getattr(f, _MARK) for f in functions]
  if not functions:
    raise UserError(f'{where}: module {ref!r} has no labelling functions; list them in '
                    'LABELLING_FUNCTIONS or mark them with @w2s.labelling_functions.'
                    'labelling_function')
  dup = sorted({n for n in names if names.count(n) > 1})
  if dup:
    raise UserError(f'{where}: labelling function name {dup[0]!r} repeats in {ref!r}; names '
                    'must be unique (they label the vote matrix columns)')
  label_names = getattr(module, 'LABEL_NAMES', None)
  return LabellingFunctions(ref=ref, names=tuple(names), functions=tuple(functions),
                            digest=_digest(module, functions),
                            label_names=tuple(label_names) if label_names is not None else None)


def _import(ref: str, where: str):
  if ref.endswith('.py') or os.sep in ref or '/' in ref:
    path = os.path.abspath(os.path.expanduser(ref))
    if not os.path.isfile(path):
      problem = 'is a directory; name the .py file' if os.path.isdir(path) else 'does not exist'
      raise UserError(f'{where}: labelling-function file {ref!r} {problem}')
    name = 'w2s_labelling_functions_' + re.sub(r'\W', '_', path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or not path.endswith('.py'):  # no loader for any other file
      raise UserError(f'{where}: {ref!r} is not a Python module; a rules file is a path/to/'
                      'rules.py defining LABELLING_FUNCTIONS = [fn, ...] or functions marked '
                      '@w2s.labelling_functions.labelling_function (fn(text) -> class or -1)')
    module = importlib.util.module_from_spec(spec)
    try:
      spec.loader.exec_module(module)
    except Exception as e:  # pylint: disable=broad-except  # the user's file fails to import
      raise UserError(f'{where}: importing {ref!r} failed ({type(e).__name__}: {e})') from e
    return module
  # a short name is a set of this package; failing that, a top-level module of that name
  for full in ([f'{__name__}.{ref}'] if ref.isidentifier() else []) + [ref]:
    try:
      return importlib.import_module(full)
    except ModuleNotFoundError as e:
      if e.name != full and not full.startswith(f'{e.name}.'):
        raise  # the module exists but one of its own imports is missing
  raise UserError(f'{where}: no labelling-function module {ref!r}; known: {", ".join(known())} '
                  '(or a dotted module path, or a path/to/file.py)')


def _digest(module, functions) -> str:
  h = hashlib.sha256()
  path = getattr(module, '__file__', None)
  if path and os.path.isfile(path):
    with open(path, 'rb') as f:
      h.update(f.read())
  for fn in functions:  # functions listed from other modules: their own source
    if getattr(fn, '__module__', None) != module.__name__:
      try:
        h.update(inspect.getsource(fn).encode())
      except (OSError, TypeError):
        h.update(repr(fn).encode())
  return h.hexdigest()[:16]


def vote_matrix(lfs: LabellingFunctions, texts: Sequence[str], *, num_classes: int,
                desc: str = 'labelling functions') -> np.ndarray:
  """Votes int32 [n, m]: column j is `lfs.functions[j]` on every text (-1 = abstain).

  A function that raises, or returns anything but an int in -1..C-1 (a bool is refused: True is
  ambiguous), is a UserError naming the function and the text. A progress line is printed every
  `PROGRESS_EVERY` texts once the set has taken over a few seconds.
  """
  from w2s import metrics
  n, m = len(texts), len(lfs.functions)
  votes = np.empty((n, m), np.int32)
  progress = metrics.Progress(desc, n, unit='texts', min_interval_s=5.0)
  for i, text in enumerate(texts):
    for j, fn in enumerate(lfs.functions):
      votes[i, j] = _vote(fn, lfs.names[j], text, i, num_classes)
    if (i + 1) % PROGRESS_EVERY == 0 and i + 1 < n:
      progress.update(i + 1)
  return votes


def _vote(fn, name, text, i, num_classes) -> int:
  try:
    v = fn(text)
  except Exception as e:  # pylint: disable=broad-except  # a rule's bug, named with its input
    raise UserError(f'labelling function {name!r} raised {type(e).__name__} on text #{i} '
                    f'({text[:60]!r}): {e}') from e
  if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) \
      or not ABSTAIN <= v < num_classes:
    raise UserError(f'labelling function {name!r} returned {v!r} on text #{i} ({text[:60]!r}); '
                    f'return a class in 0..{num_classes - 1} or -1 (ABSTAIN)')
  return int(v)


def summary(votes: np.ndarray, names: Sequence[str]) -> dict:
  """Per-function coverage (share of rows it votes on), overlap (votes where another function
  votes too) and conflict (votes where another function votes differently), as Snorkel's
  LFAnalysis; plus the share of rows with at least one vote. Reads no labels."""
  votes = np.asarray(votes)
  on = votes != ABSTAIN  # [n, m]
  n_on = on.sum(1, keepdims=True)
  overlap = on & (n_on > 1)
  conflict = np.zeros_like(on)
  for j in range(votes.shape[1]):
    others = np.delete(votes, j, axis=1)
    conflict[:, j] = on[:, j] & ((others != ABSTAIN) & (others != votes[:, [j]])).any(1)
  mean = lambda a: [round(float(x), 4) for x in a.mean(0)] if len(a) else [0.0] * len(names)
  return {'names': list(names), 'coverage': mean(on), 'overlap': mean(overlap),
          'conflict': mean(conflict), 'any_vote': float(on.any(1).mean()) if len(on) else 0.0}
