"""Does a role's pretrained checkpoint fit the rest of its config? One error naming every problem.

Run where a role's section is resolved (`learners.RoleOptions`, the supervised protocol's check),
so `--dry_run` catches it, for models with `pretrained=` on text data. Without it a mismatch is
silent (`strong.model=gpt2, pretrained=DIR` tokenized with MiniLM's ids: embedding lookups clamp
ids past the table) or surfaces one fix at a time. The problems, all reported at once:

* the configured tokenizer cannot be read (a self-made checkpoint saved without tokenizer.json);
* the checkpoint ships its own tokenizer (tokenizer.json, vocab.json or vocab.txt) and the config
  tokenizes with another vocabulary;
* the tokenizer has more ids than the model's embedding rows;
* a `size` preset whose shapes are not the checkpoint's (the fix: its config.json, drop `size`);
* `max_length` beyond the checkpoint's learned position table (GPT-2's n_positions).
"""
import dataclasses
import functools
import importlib
import json
import os
from typing import Any, Mapping

from w2s.errors import UserError
from w2s.models import hf_import

OWN_TOKENIZER_FILES = ('tokenizer.json', 'vocab.json', 'vocab.txt')
_NOT_ARCH = ('dropout',)  # fields that change no shape and no number of an eval forward


def check_role(where: str, plugin, tokenizer: Mapping[str, Any] | None,
               tokenizer_key: str = 'tokenizer') -> None:
  """UserError naming every way the `pretrained` checkpoint of `plugin` (an options.Plugin of a
  text model) misfits `tokenizer` (the section `tokenizer_key` names); nothing without one."""
  hparams = dict(plugin.hparams)
  if not hparams.get('pretrained') or not tokenizer:
    return
  model = plugin.entry()(num_classes=2, **hparams)
  found = problems(model, hparams, tokenizer, tokenizer_key)
  if found:
    listed = '; '.join(f'({i}) {p}' for i, p in enumerate(found, 1))
    raise UserError(f'{where}: checkpoint {hparams["pretrained"]!r} does not fit this config: '
                    f'{listed}')


def problems(model, hparams: Mapping[str, Any], tokenizer: Mapping[str, Any],
             tokenizer_key: str = 'tokenizer') -> list[str]:
  """The misfits of a model created with `pretrained` (see the module docstring), in the order
  a user meets them: tokenizer, architecture, length."""
  path, name = model.pretrained, hparams['pretrained']
  own_config = _checkpoint_config(model, hparams)
  out = []
  tok_name = tokenizer.get('tokenizer')
  tok_vocab, tok_dir = None, None
  try:
    tok_dir = hf_import.resolve(tok_name)
  except UserError as e:
    out.append(str(e))
  if tok_dir is not None:
    if not os.path.isfile(os.path.join(tok_dir, 'tokenizer.json')):
      out.append(_no_tokenizer_json(tokenizer_key, tok_name, tok_dir, path))
    else:
      tok_vocab = _vocab(tok_dir, 'tokenizer.json')
  own = next((f for f in OWN_TOKENIZER_FILES if os.path.isfile(os.path.join(path, f))), None)
  if tok_vocab is not None and own is not None and _vocab(path, own) != tok_vocab:
    fix = (f'{tokenizer_key}=dict(tokenizer={name!r}, ...)' if own == 'tokenizer.json' else
           f'save it as tokenizer.json (AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR)) '
           f'and set {tokenizer_key}=dict(tokenizer={name!r}, ...)')
    out.append(f'it has its own tokenizer ({own}, {len(_vocab(path, own))} tokens) but '
               f'{tokenizer_key}={tok_name!r} is another ({len(tok_vocab)} tokens): tokenize with '
               f"the checkpoint's, {fix}")
  elif tok_vocab is not None:
    ids = max(tok_vocab.values()) + 1
    if ids > own_config.vocab_size:
      fix = ("the checkpoint's own tokenizer" if own else 'the tokenizer it was trained with '
             '(a directory with its tokenizer.json)')
      out.append(f'{tokenizer_key}={tok_name!r} has {ids} token ids but its embedding has '
                 f'{own_config.vocab_size} rows (larger ids would be clamped silently): tokenize '
                 f'with {fix}')
  if hparams.get('size') is not None:
    shape_error = _shapes_misfit(model)
    if shape_error is not None:
      out.append(f'size={hparams["size"]!r} does not describe it '
                 f'({_differences(model.backbone.config, own_config) or shape_error}): take the '
                 'architecture from its config.json, i.e. drop `size` from the model section '
                 '(configs/w2s_release.py: add ckpt_arch)')
  limit = getattr(own_config, 'position_limit', None)
  max_length = tokenizer.get('max_length')
  if limit is not None and isinstance(max_length, int) and max_length > limit:
    out.append(f'{tokenizer_key}.max_length={max_length} exceeds its {limit} learned positions: '
               f'set max_length to at most {limit}')
  return out


def _no_tokenizer_json(key: str, tok_name: str, tok_dir: str, path: str) -> str:
  save = ('AutoTokenizer.from_pretrained(<the base model>).save_pretrained(DIR) writes one')
  if os.path.realpath(tok_dir) == os.path.realpath(path):
    return (f'it has no tokenizer.json and {key} is the checkpoint itself: save its tokenizer '
            f'beside the weights ({save}) or set {key}=dict(tokenizer=<a directory with '
            'tokenizer.json>, ...)')
  return (f'{key}={tok_name!r} has no tokenizer.json (w2s reads Hugging Face tokenizer.json '
          f'files; {save})')


def _checkpoint_config(model, hparams: Mapping[str, Any]):
  """The architecture of the checkpoint itself (its config.json with the section's overrides);
  the model's own config unless a `size` preset replaced it."""
  config = model.backbone.config
  if hparams.get('size') is None:
    return config
  family = importlib.import_module(type(model.backbone).__module__)
  own = family.config_from_hf(model.pretrained, hf_import.read_config(model.pretrained))
  fields = {f.name for f in dataclasses.fields(config)}
  return type(config)(**{**own, **{k: v for k, v in hparams.items() if k in fields}})


def _differences(preset, own, limit: int = 4) -> str:
  diffs = [f'{f.name} {getattr(preset, f.name)} vs its {getattr(own, f.name)}'
           for f in dataclasses.fields(preset)
           if f.name not in _NOT_ARCH and getattr(preset, f.name) != getattr(own, f.name)]
  return ', '.join(diffs[:limit]) + (', ...' if len(diffs) > limit else '')


def _shapes_misfit(model) -> str | None:
  b = model.backbone
  return _shapes_misfit_cached(type(b).__module__, b.config, model.pretrained, b.lm_head,
                               getattr(model, 'truncate_layers', False))


@functools.lru_cache(maxsize=32)
def _shapes_misfit_cached(module: str, config, path: str, lm_head: bool, truncate: bool):
  """The loader's error for this config and checkpoint, from the files' headers (no tensor
  data read), or None when every tensor fits."""
  family = importlib.import_module(module)
  try:
    family.load_pretrained(path, config=config, lm_head=lm_head, place=hf_import.check_only,
                           truncate=truncate)
  except UserError as e:
    return str(e)
  return None


@functools.lru_cache(maxsize=16)
def _vocab_cached(file: str, size: int, mtime: float) -> dict[str, int]:
  del size, mtime  # the cache key: a rewritten file is read again
  name = os.path.basename(file)
  if name == 'tokenizer.json':
    from w2s.data import text as text_lib
    return text_lib.load_tokenizer(file).get_vocab(with_added_tokens=True)
  if name == 'vocab.json':
    with open(file, encoding='utf-8') as f:
      return dict(json.load(f))
  with open(file, encoding='utf-8') as f:  # vocab.txt: one token a line, the id its line number
    return {line.rstrip('\n'): i for i, line in enumerate(f)}


def _vocab(folder: str, name: str) -> dict[str, int]:
  """token -> id of a tokenizer file in `folder` (tokenizer.json with its added tokens, a
  vocab.json, a vocab.txt); an unreadable file is a UserError naming it."""
  file = os.path.join(folder, name)
  st = os.stat(file)
  try:
    return _vocab_cached(file, st.st_size, st.st_mtime)
  except (ValueError, UnicodeDecodeError) as e:
    raise UserError(f'cannot read the tokenizer file {file}: {e}') from e
