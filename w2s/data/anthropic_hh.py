"""Anthropic HH-RLHF preference pairs as "is this the preferred response?", from local files.

Bai et al. (2022), "Training a Helpful and Harmless Assistant with RLHF" (~161k train, ~8.5k test
pairs). Not in the TFDS catalog: download it once, e.g.
`huggingface-cli download Anthropic/hh-rlhf --repo-type dataset --local-dir DIR` (its
`*/train.jsonl.gz` and `*/test.jsonl.gz` files are all found), and load with `path=DIR`.

Expected schema, one JSON object (or parquet row) per pair:
  chosen (str), rejected (str): two full "\\n\\nHuman: ... \\n\\nAssistant: ..." transcripts.
A row missing either is a UserError naming the file and row.

Formatting as in the weak-to-strong release (`format_anthropic_hh`): the text is one transcript,
label 1 = the chosen one. `mode='pair'` (default) gives both transcripts of every pair (sharing a
'group', ids row * 2 + {0: chosen, 1: rejected}); `mode='sample'` is the release's seeded coin
flip, one transcript per pair.
"""
import numpy as np
import tensorflow_datasets as tfds

from w2s.data import base
from w2s.data import local_files
from w2s.errors import UserError

LABEL_NAMES = ['rejected', 'chosen']


class W2sAnthropicHh(local_files.LocalFilesBuilder):
  """Anthropic HH-RLHF chosen / rejected transcripts."""
  name = 'w2s_anthropic_hh'
  VERSION = tfds.core.Version('1.0.0')
  SCHEMA = {'chosen': 'text', 'rejected': 'text'}


def _pairs(split: str, c: dict, mode: str, seed: int) -> base.Examples:
  rows = c['row']
  if mode == 'pair':
    which = np.tile([0, 1], len(rows))  # 0 = chosen, 1 = rejected
    rows = np.repeat(rows, 2)
  elif mode == 'sample':
    which = np.array([int(np.random.default_rng([seed, int(r)]).random() >= 0.5) for r in rows],
                     np.int64)
  else:
    raise UserError(f'anthropic_hh: mode {mode!r} is not one of ("pair", "sample")')
  pos = np.searchsorted(c['row'], rows)
  text = np.where(which == 0, c['chosen'][pos], c['rejected'][pos]).astype(object)
  return {'id': base.split_ids(split, rows * 2 + which), 'group': base.split_ids(split, rows * 2),
          'label': (1 - which).astype(np.int64), 'text': text}


def load(*, path: str | None = None, data_dir: str | None = None, mode: str = 'pair',
         seed: int = 0) -> base.Dataset:
  raw = local_files.read(W2sAnthropicHh, path, 'anthropic_hh', data_dir)
  splits = {s: _pairs(s, c, mode, seed) for s, c in raw.items()}
  return base.check(base.Dataset('anthropic_hh', 2, LABEL_NAMES, 'text', splits))
