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

`mode='prompt_pairs'` gives the preference protocol's pairs (w2s/protocols/preference.py): HH's
chosen and rejected transcripts share everything up to the last "\n\nAssistant:" and differ in
the final assistant turn, so 'prompt' (and 'text') = that shared transcript, up to and including
the marker; 'response_a' / 'response_b' = the two final turns in an order drawn per row (the
'sample' coin: response_a is the chosen one where it lands < 0.5), 'label' = the index of the
chosen one, 'chosen' = its text (an SFT target), 'id' = the row. A pair whose transcripts differ
before the final turn (or lack the marker), or whose two final turns are identical (a few HH rows
are), carries no preference over one prompt: it is skipped and counted (`SKIPS`), the counts
printed once per split and kept in `Dataset.notes` (the preference protocol writes them to its
results); a split with no usable pair is a UserError.
"""
import numpy as np
import tensorflow_datasets as tfds

from w2s.data import base
from w2s.data import local_files
from w2s.errors import UserError

LABEL_NAMES = ['rejected', 'chosen']
PAIR_LABEL_NAMES = ['response_a', 'response_b']
MODES = ('pair', 'sample', 'prompt_pairs')
MARKER = '\n\nAssistant:'
SKIPS = ('prompts_differ', 'identical_responses')  # why a prompt_pairs row is skipped


class W2sAnthropicHh(local_files.LocalFilesBuilder):
  """Anthropic HH-RLHF chosen / rejected transcripts."""
  name = 'w2s_anthropic_hh'
  VERSION = tfds.core.Version('1.0.0')
  SCHEMA = {'chosen': 'text', 'rejected': 'text'}


def _coin(seed: int, row: int) -> int:
  """The release's seeded coin of one row: 0 or 1."""
  return int(np.random.default_rng([seed, int(row)]).random() >= 0.5)


def split_final_turn(transcript: str) -> tuple[str, str] | None:
  """(everything up to and including the last "\n\nAssistant:", the final turn after it), or
  None when the transcript has no assistant turn."""
  at = transcript.rfind(MARKER)
  if at < 0:
    return None
  cut = at + len(MARKER)
  return transcript[:cut], transcript[cut:]


def prompt_pairs(split: str, c: dict, seed: int) -> tuple[base.Examples, dict[str, int]]:
  """(the preference pairs of one split's columns 'row', 'chosen', 'rejected', the skip counts
  {reason: rows} of SKIPS); see the module docstring."""
  keep, prompts, resp, labels, chosen = [], [], [], [], []
  skipped = dict.fromkeys(SKIPS, 0)
  for row, good, bad in zip(c['row'], c['chosen'], c['rejected']):
    g, b = split_final_turn(str(good)), split_final_turn(str(bad))
    if g is None or b is None or g[0] != b[0]:
      skipped['prompts_differ'] += 1
      continue
    if g[1] == b[1]:
      skipped['identical_responses'] += 1
      continue
    first = _coin(seed, row)  # 0: the chosen response is response_a
    keep.append(int(row))
    prompts.append(g[0])
    resp.append((g[1], b[1]) if first == 0 else (b[1], g[1]))
    labels.append(first)
    chosen.append(g[1])
  if not keep:
    raise UserError(f'anthropic_hh {split}: none of its {len(c["row"])} pairs share a prompt '
                    f'with two different final "Assistant:" turns ({skipped}); mode='
                    "'prompt_pairs' needs HH-style chosen / rejected transcripts")
  obj = lambda xs: np.array(xs, dtype=object)
  prompt = obj(prompts)
  return ({'id': base.split_ids(split, np.array(keep, np.int64)), 'prompt': prompt,
           'text': prompt.copy(), 'response_a': obj([r[0] for r in resp]),
           'response_b': obj([r[1] for r in resp]), 'chosen': obj(chosen),
           'label': np.array(labels, np.int64)}, skipped)


def _pairs(split: str, c: dict, mode: str, seed: int) -> base.Examples:
  rows = c['row']
  if mode == 'pair':
    which = np.tile([0, 1], len(rows))  # 0 = chosen, 1 = rejected
    rows = np.repeat(rows, 2)
  elif mode == 'sample':
    which = np.array([_coin(seed, r) for r in rows], np.int64)
  else:
    raise UserError(f'anthropic_hh: mode {mode!r} is not one of {MODES}')
  pos = np.searchsorted(c['row'], rows)
  text = np.where(which == 0, c['chosen'][pos], c['rejected'][pos]).astype(object)
  return {'id': base.split_ids(split, rows * 2 + which), 'group': base.split_ids(split, rows * 2),
          'label': (1 - which).astype(np.int64), 'text': text}


def load(*, path: str | None = None, data_dir: str | None = None, mode: str = 'pair',
         seed: int = 0) -> base.Dataset:
  if mode not in MODES:
    raise UserError(f'anthropic_hh: mode {mode!r} is not one of {MODES}')
  raw = local_files.read(W2sAnthropicHh, path, 'anthropic_hh', data_dir)
  if mode != 'prompt_pairs':
    splits = {s: _pairs(s, c, mode, seed) for s, c in raw.items()}
    return base.check(base.Dataset('anthropic_hh', 2, LABEL_NAMES, 'text', splits))
  splits, skipped = {}, {}
  for s, c in raw.items():
    splits[s], skipped[s] = prompt_pairs(s, c, seed)
    if any(skipped[s].values()):
      print(f'[anthropic_hh] {s}: kept {len(splits[s]["id"])} of {len(c["row"])} pairs, skipped '
            + ', '.join(f'{n} {k.replace("_", " ")}' for k, n in skipped[s].items()), flush=True)
  return base.check(base.Dataset('anthropic_hh', 2, PAIR_LABEL_NAMES, 'text', splits,
                                 notes={'skipped_pairs': skipped}))
