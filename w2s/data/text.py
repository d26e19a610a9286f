"""Tokenization with Hugging Face `tokenizers` from a tokenizer.json (no transformers, no torch).

Works for any tokenizer.json: WordPiece (BERT, all-MiniLM-L6-v2: `w2s.assets.minilm_dir()`),
byte-level BPE (GPT-2, Llama-family and Qwen files the user has), SentencePiece-derived ones.
Special tokens come from the file's own post-processor ([CLS] ... [SEP] for BERT, a BOS for
Llama, none for GPT-2). Output is right-padded to `max_length` with the tokenizer's pad id; a
tokenizer without one (GPT-2) pads with its end-of-text token, and 'attention_mask' is the truth
about which positions are real. The batch pipeline later trims T to each batch's longest row.

Truncation keeps the first `max_length` tokens (special tokens included), or the last ones with
`truncation='left'` (dialogues whose deciding turn is at the end, e.g. Anthropic HH); for pairs it
is 'longest_first', so a long context is cut before a short question/answer segment. Truncated
examples are counted and logged: a large count means max_length is too small for the task.
"""
import dataclasses
import functools
import os
from typing import Sequence

from absl import logging
import numpy as np
import tokenizers

from w2s.errors import UserError

# Tried in order when the tokenizer.json has no padding config: explicit pad tokens first, then
# end-of-text tokens (GPT-2 and Llama have no pad token; their eos is the usual stand-in).
PAD_CANDIDATES = ('[PAD]', '<pad>', '<|pad|>', '<|finetune_right_pad_id|>', '<|endoftext|>',
                  '<|end_of_text|>', '</s>', '<eos>')


@functools.lru_cache(maxsize=8)
def load_tokenizer(path: str) -> tokenizers.Tokenizer:
  """A tokenizer from `path`: a tokenizer.json file or a directory containing one (cached)."""
  file = os.path.join(path, 'tokenizer.json') if os.path.isdir(path) else path
  if not os.path.isfile(file):
    raise UserError(f'no tokenizer.json at {path!r}; pass the file or the model directory that '
                    'holds it (e.g. w2s.assets.minilm_dir())')
  try:
    return tokenizers.Tokenizer.from_file(file)
  except Exception as e:  # tokenizers raises a bare Exception for malformed files
    raise UserError(f'cannot read tokenizer {file}: {e}; is it a Hugging Face tokenizer.json?') from e


def pad_token(tok: tokenizers.Tokenizer) -> tuple[int, str]:
  """(pad id, pad token): the file's padding config, else the first of PAD_CANDIDATES it has."""
  if tok.padding:
    return tok.padding['pad_id'], tok.padding['pad_token']
  for token in PAD_CANDIDATES:
    token_id = tok.token_to_id(token)
    if token_id is not None:
      return token_id, token
  raise UserError(f'the tokenizer has no padding config and none of {PAD_CANDIDATES}; add a pad '
                  'token to its tokenizer.json')


@dataclasses.dataclass
class Encoded:
  """input_ids, attention_mask (int32 [N, L]), token_type_ids (int32 [N, L], pairs only)."""
  input_ids: np.ndarray
  attention_mask: np.ndarray
  token_type_ids: np.ndarray | None
  num_truncated: int


def encode(texts: Sequence[str], tokenizer: str | tokenizers.Tokenizer, max_length: int,
           text_pairs: Sequence[str] | None = None, truncation: str = 'right') -> Encoded:
  """Batch-encodes `texts` (or (text, pair) pairs) to fixed-length [N, max_length] int32 arrays.

  truncation: 'right' cuts the end of long texts, 'left' their beginning.
  """
  if max_length < 2:
    raise UserError(f'max_length={max_length} leaves no room for tokens; use at least 16')
  if truncation not in ('right', 'left'):
    raise UserError(f"truncation={truncation!r}: use 'right' (keep the start) or 'left' (keep the end)")
  tok = load_tokenizer(tokenizer) if isinstance(tokenizer, (str, os.PathLike)) else tokenizer
  pad_id, pad = pad_token(tok)
  tok.enable_truncation(max_length, strategy='longest_first', direction=truncation)
  tok.enable_padding(pad_id=pad_id, pad_token=pad, length=max_length, direction='right')
  inputs = list(texts) if text_pairs is None else list(zip(texts, text_pairs))
  encodings = tok.encode_batch(inputs)
  n = len(encodings)

  def stack(attr):
    return np.array([getattr(e, attr) for e in encodings], np.int32).reshape(n, max_length)

  return Encoded(input_ids=stack('ids'), attention_mask=stack('attention_mask'),
                 token_type_ids=None if text_pairs is None else stack('type_ids'),
                 num_truncated=sum(1 for e in encodings if e.overflowing))


def tokenize(texts: Sequence[str], tokenizer: str | tokenizers.Tokenizer, max_length: int,
             text_pairs: Sequence[str] | None = None,
             truncation: str = 'right') -> dict[str, np.ndarray]:
  """{'input_ids', 'attention_mask'[, 'token_type_ids' for pairs]}: int32 [N, max_length].

  Logs how many of the N examples were truncated (see `encode` for the count itself).
  """
  enc = encode(texts, tokenizer, max_length, text_pairs, truncation)
  if enc.num_truncated:
    # a warning once it matters (>1% of examples), so a too-small max_length is seen
    log = logging.warning if enc.num_truncated > 0.01 * len(enc.input_ids) else logging.info
    log('tokenize: %d of %d examples truncated to %d tokens', enc.num_truncated,
        len(enc.input_ids), max_length)
  out = {'input_ids': enc.input_ids, 'attention_mask': enc.attention_mask}
  if enc.token_type_ids is not None:
    out['token_type_ids'] = enc.token_type_ids
  return out
