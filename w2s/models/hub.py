"""Hugging Face hub ids where a checkpoint directory is accepted: `EleutherAI/pythia-70m`.

An id ('org/name', optionally '@revision': a branch, tag or commit such as Pythia's 'step3000')
resolves to its snapshot directory in the standard Hugging Face cache (`HF_HUB_CACHE`, else
`HF_HOME/hub`, else ~/.cache/huggingface/hub), the layout `models--org--name/snapshots/<commit>/`
with `refs/<revision>` naming the commit. Online, `huggingface_hub.snapshot_download` fetches what
the cache lacks, once (config, safetensors weights and tokenizer files; no torch .bin, no
duplicate `consolidated.*` weights). Offline (`HF_HUB_OFFLINE=1`) only the cache is read, and an
id it does not hold is one UserError saying how to fetch it. `huggingface_hub` (installed with
transformers) is imported only when an id is used.

`hf_import.resolve` calls `snapshot` for any `pretrained=` or `tokenizer=` value that is not an
existing directory but reads as an id, so every family, the tokenizer and the CLI accept ids.
"""
import functools
import os
import re

from w2s.errors import UserError

# 'org/name' or 'org/name@revision'; hub names are letters, digits, '-', '_', '.'
_ID = re.compile(r'^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]*[A-Za-z0-9_])(?:@(?P<rev>[\w./-]+))?$')
# what w2s reads of a model repo: the importer's files and the tokenizer's
PATTERNS = ('config.json', 'generation_config.json', 'model.safetensors',
            'model-*-of-*.safetensors', 'model.safetensors.index.json', 'tokenizer.json',
            'tokenizer_config.json', 'special_tokens_map.json', 'vocab.json', 'vocab.txt',
            'merges.txt', 'tokenizer.model')
_TRUE = ('1', 'on', 'yes', 'true')


def is_hub_id(value: str) -> bool:
  """Whether `value` reads as 'org/name[@revision]' (a path that exists is never asked)."""
  return isinstance(value, str) and '..' not in value and bool(_ID.match(value))


def offline() -> bool:
  """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as set now, not when huggingface_hub was imported."""
  return any(os.environ.get(k, '').strip().lower() in _TRUE
             for k in ('HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE'))


def cache_dir() -> str:
  """The hub cache huggingface_hub uses, from the environment as it is now."""
  env = os.environ
  if env.get('HF_HUB_CACHE') or env.get('HUGGINGFACE_HUB_CACHE'):
    path = env.get('HF_HUB_CACHE') or env['HUGGINGFACE_HUB_CACHE']
  elif env.get('HF_HOME'):
    path = os.path.join(env['HF_HOME'], 'hub')
  else:
    path = os.path.join(env.get('XDG_CACHE_HOME') or os.path.join('~', '.cache'), 'huggingface',
                        'hub')
  return os.path.expandvars(os.path.expanduser(path))


def snapshot(hub_id: str) -> str:
  """'org/name[@revision]' -> its snapshot directory in the local cache (downloaded if online)."""
  m = _ID.match(hub_id)
  if m is None:
    raise UserError(f'{hub_id!r} is not a Hugging Face hub id (org/name or org/name@revision)')
  return _snapshot(m['repo'], m['rev'] or 'main', cache_dir(), offline())


def _fetch_hint(repo: str, revision: str, is_offline: bool) -> str:
  rev = '' if revision == 'main' else f' --revision {revision}'
  unset = ', or run w2s without HF_HUB_OFFLINE=1' if is_offline else ''
  return (f'fetch it once with network access (`hf download {repo}{rev}`{unset}), or give a '
          'local directory')


@functools.lru_cache(maxsize=None)
def _snapshot(repo: str, revision: str, cache: str, is_offline: bool) -> str:
  """One resolution per id, cache and mode per process: online, the first call asks the hub
  for the revision's files and downloads those the cache lacks; the rest reuse its answer."""
  try:
    import huggingface_hub
    from huggingface_hub import errors
  except ImportError as e:
    raise UserError(f'pretrained={repo!r} is a hub id, which needs huggingface_hub (pip install '
                    'huggingface_hub); or give a local Hugging Face directory') from e
  name = repo + ('' if revision == 'main' else f'@{revision}')
  try:
    return huggingface_hub.snapshot_download(repo, revision=revision, cache_dir=cache,
                                             local_files_only=is_offline,
                                             allow_patterns=list(PATTERNS))
  except getattr(errors, 'IncompleteSnapshotError', ()) as e:  # a download cut short
    raise UserError(f'hub id {name!r}: the cached snapshot in {cache} is incomplete; '
                    f'{_fetch_hint(repo, revision, is_offline)}') from e
  except errors.LocalEntryNotFoundError as e:
    why = 'HF_HUB_OFFLINE=1' if is_offline else 'the hub cannot be reached'
    raise UserError(f'{name!r} is not a directory, and as a Hugging Face hub id it is not in the '
                    f'local cache ({cache}) and {why}; '
                    f'{_fetch_hint(repo, revision, is_offline)}') from e
  except errors.RevisionNotFoundError as e:
    raise UserError(f'{name!r}: the Hugging Face hub has no revision {revision!r} of {repo} (a '
                    'branch, tag or commit); check the spelling') from e
  except errors.RepositoryNotFoundError as e:
    raise UserError(f'{name!r} is neither a directory nor a repository on the Hugging Face hub '
                    '(or it is private or gated: log in with `hf auth login`); check the '
                    'spelling') from e
  except Exception as e:  # other hub errors (HTTP, gated repos); an unwritable or full cache
    detail = ' '.join(str(e).split())[:300]
    if type(e).__module__.split('.')[0] == 'huggingface_hub':
      raise UserError(f'hub id {name!r}: {detail}') from e
    if isinstance(e, OSError):
      raise UserError(f'hub id {name!r}: cannot write the Hugging Face cache {cache} ({detail}); '
                      'set HF_HUB_CACHE to a writable directory') from e
    raise
