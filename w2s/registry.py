"""Name -> plug-in lookup for losses, models, datasets, protocols, ... (`ENTRY_POINTS`).

A plug-in is addressed from a config section `dict(name=..., **hparams)`:

* a short name is a module of the package: `('losses', 'logconf')` is
  `w2s.losses.logconf`, and the module's entry point (`loss`, `create`,
  `load`, `run`; see `ENTRY_POINTS`) is what gets called;
* a dotted path `mypkg.my_losses:my_loss` reaches a researcher's own module
  outside the package: the named attribute plays the entry point's role. It must
  be a function (or class) defined in that module itself, or the module's entry
  point of the kind (`mypkg.my_model:create`); builtins, modules, the standard
  library and names a module imports from elsewhere (`os:system`) are refused, so
  a name on the command line reaches plug-in code and nothing else.

Unknown names fail with a `UserError` listing the known ones.
"""
import functools
import importlib
import inspect
import pkgutil
import sys
from typing import Any, Callable, Mapping

from w2s.errors import UserError

# kind -> (package holding one module per plug-in, entry-point attribute)
ENTRY_POINTS = {
    'losses': ('w2s.losses', 'loss'),
    'models': ('w2s.models', 'create'),
    'datasets': ('w2s.data', 'load'),
    'protocols': ('w2s.protocols', 'run'),
    'views': ('w2s.views', 'apply'),  # per-role input views (a weak supervisor's degraded input)
    'pseudo_labels': ('w2s.pseudo_labels', 'select'),  # self-training selection policies
    'ssl': ('w2s.ssl', 'loss'),  # online semi-supervised algorithms (w2s.ssl_step)
    'augment': ('w2s.augment', 'make'),  # pure jittable fn(rng, batch) -> batch, in the train step
    'label_models': ('w2s.label_models', 'aggregate'),  # vote matrix [n, m] -> soft labels [n, C]
    'label_noise': ('w2s.label_noise', 'corrupt'),  # controlled noise on training labels
    'cleaners': ('w2s.cleaning', 'clean'),  # weak labels of B relabelled / filtered on features
}


def known(kind: str) -> list[str]:
  """Sorted short names of the plug-ins of one kind shipped with w2s.

  A module of the kind's package is a plug-in when it defines the entry point;
  helper modules beside them (pipelines, importers) do not.
  """
  package, attr = _entry(kind)
  pkg = importlib.import_module(package)
  names = []
  for info in pkgutil.iter_modules(pkg.__path__):
    if info.name.startswith('_'):
      continue
    if hasattr(importlib.import_module(f'{package}.{info.name}'), attr):
      names.append(info.name)
  return sorted(names)


def singular_name(kind: str) -> str:
  """'losses' -> 'loss', 'ssl' -> 'ssl algorithm', ...: one plug-in of the kind, for messages."""
  return {'losses': 'loss', 'ssl': 'ssl algorithm', 'augment': 'augmentation',
          'pseudo_labels': 'pseudo-label policy',
          'label_models': 'label model', 'label_noise': 'label-noise injector',
          'cleaners': 'cleaner'}.get(kind, kind[:-1])


def _entry(kind):
  if kind not in ENTRY_POINTS:
    raise UserError(f'unknown plug-in kind {kind!r}; known kinds: {sorted(ENTRY_POINTS)}')
  return ENTRY_POINTS[kind]


@functools.lru_cache(maxsize=None)
def get(kind: str, name: str) -> Callable[..., Any]:
  """The entry point of plug-in `name` of `kind` (see module docstring)."""
  package, attr = _entry(kind)
  if ':' in name:
    return dotted(name, singular_name(kind), entry=attr)
  module = None
  if name.isidentifier():
    try:
      module = importlib.import_module(f'{package}.{name}')
    except ModuleNotFoundError as e:
      if e.name != f'{package}.{name}':
        raise  # the plug-in exists but one of its own imports is missing
  if module is None or not hasattr(module, attr):
    singular = singular_name(kind)
    raise UserError(f'unknown {singular} {name!r}; known: {", ".join(known(kind))} '
                    '(or a dotted path "pkg.module:function")')
  return getattr(module, attr)


def dotted(name: str, what: str, entry: str | None = None) -> Callable[..., Any]:
  """The function or class that `name` ("pkg.module:attr") names, for `what` (messages).

  It must be defined in that module (`obj.__module__` is the module), or be its `entry` point;
  anything else (a builtin, a module, a name imported from elsewhere, the standard library) is a
  UserError, so that a config value cannot call arbitrary code.
  """
  module_name, _, attr = name.partition(':')
  if not (module_name and all(p.isidentifier() for p in module_name.split('.'))
          and attr.isidentifier()):
    raise UserError(f'{what} {name!r} is not a dotted path; use "package.module:function"')
  if module_name.partition('.')[0] in sys.stdlib_module_names:
    raise UserError(f'{what} {name!r} names the standard library module {module_name!r}; a '
                    'dotted path names a function of your own module ("mypkg.module:function")')
  try:
    module = importlib.import_module(module_name)
  except ImportError as e:
    raise UserError(f'cannot import module {module_name!r} for {what} {name!r}: {e}; '
                    'check the dotted path and that the module is on PYTHONPATH') from e
  if not hasattr(module, attr):
    raise UserError(f'module {module_name!r} has no attribute {attr!r} (from {what} '
                    f'{name!r}); use "package.module:function"')
  obj = getattr(module, attr)
  if not (inspect.isfunction(obj) or inspect.isclass(obj)):
    raise UserError(f'{what} {name!r} is a {type(obj).__name__}, not a function or class '
                    f'defined in {module_name!r}; name a function of your own module')
  if getattr(obj, '__module__', None) != module.__name__ and attr != entry:
    raise UserError(f'{what} {name!r}: {module_name!r} imports {attr!r} from '
                    f'{obj.__module__!r}; name the module that defines it (or a function '
                    f'defined in {module_name!r})')
  return obj


def accepted_kwargs(fn) -> tuple[set[str], bool]:
  """(keyword names `fn` takes, whether it takes **kwargs): what an entry point's section may set."""
  try:
    params = inspect.signature(fn).parameters.values()
  except (TypeError, ValueError):  # builtins without a signature
    return set(), True
  names = {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
  return names, any(p.kind == p.VAR_KEYWORD for p in params)


def split_spec(spec: Mapping[str, Any] | Any) -> tuple[str, dict[str, Any]]:
  """`dict(name=..., **hparams)` (or a ConfigDict) -> (name, hparams)."""
  spec = dict(spec.to_dict() if hasattr(spec, 'to_dict') else spec)
  if 'name' not in spec:
    raise UserError(f'plug-in section {spec} has no "name"; write dict(name=..., **hparams)')
  name = spec.pop('name')
  return name, spec


def build(kind: str, spec, **extra) -> Any:
  """Calls the entry point of `spec['name']` with the spec's hparams and `extra`."""
  name, hparams = split_spec(spec)
  fn = get(kind, name)
  return fn(**hparams, **extra)


def bind(kind: str, spec) -> Callable[..., Any]:
  """The entry point with the spec's hparams bound (used for losses)."""
  name, hparams = split_spec(spec)
  return functools.partial(get(kind, name), **hparams)
