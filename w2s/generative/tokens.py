"""Prompt/response tokenization with loss masks, prompts for generation, packed pretraining text,
and decoding back to text (Hugging Face `tokenizers`, through `w2s.data.text`).

The sequence contract of the token-level losses (`w2s/models/sequence.py`):
  input_ids int32 [N, T] right-padded (pad = the tokenizer's pad token, `text.pad_token`),
  attention_mask int32 [N, T] (1 on real tokens), loss_mask float32 [N, T] = 1 at positions t
  whose token input_ids[:, t] is a training target: the response tokens and the end-of-text
  token that closes the response; 0 on the prompt and on padding. Pairs are [N, 2, T].

A prompt is encoded with the tokenizer's own special tokens (a BOS for Llama-family files, none
for GPT-2); a response without them, then the end-of-text token is appended (`eos=True`). The two
are tokenized separately and concatenated, as TRL's SFT and DPO trainers do, so a BPE merge never
straddles the prompt/response boundary and the loss mask is exact.

Truncation is never silent: prompts longer than `max_prompt_length` (if given) lose their start
(the question usually ends a prompt) and responses that do not fit lose their end and their
closing end-of-text token (the model must not learn to stop there); both are counted in the
returned 'truncated_prompts' / 'truncated_responses' for the caller to report. A prompt that
alone fills max_length is an error.
"""
import os
from typing import Sequence

import numpy as np
import tokenizers

from w2s.data import text
from w2s.errors import UserError

# End-of-text tokens tried in order (GPT-2 / Qwen / Pythia, Llama-3, Llama-2 / Mistral, Gemma, ...)
EOS_CANDIDATES = ('<|endoftext|>', '<|end_of_text|>', '</s>', '<eos>', '<|eot_id|>', '<|im_end|>')


def _load(tokenizer) -> tokenizers.Tokenizer:
  """The tokenizer without padding or truncation (a copy when the shared one has them set)."""
  tok = (text.load_tokenizer(os.fspath(tokenizer)) if isinstance(tokenizer, (str, os.PathLike))
         else tokenizer)
  if tok.padding is None and tok.truncation is None:
    return tok
  plain = tokenizers.Tokenizer.from_str(tok.to_str())
  plain.no_padding()
  plain.no_truncation()
  return plain


def eos_id(tokenizer, eos: bool | str = True) -> int:
  """The end-of-text token id: the token named `eos` if a string, else the first of
  EOS_CANDIDATES the vocabulary has."""
  tok = _load(tokenizer)
  names = (eos,) if isinstance(eos, str) else EOS_CANDIDATES
  for name in names:
    token_id = tok.token_to_id(name)
    if token_id is not None:
      return token_id
  raise UserError(f'the tokenizer has no end-of-text token ({", ".join(names)}); name the one it '
                  'has with eos=<token>')


def _ids(tok, texts: Sequence[str], *, special: bool, what: str) -> list[list[int]]:
  try:
    return [e.ids for e in tok.encode_batch(list(texts), add_special_tokens=special)]
  except Exception as e:  # tokenizers raises a bare Exception (e.g. a WordLevel unknown symbol)
    raise UserError(f'cannot tokenize the {what}: {e}; use text the tokenizer covers') from e


def _fill(rows: list[list[int]], length: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
  """Right-padded int32 [N, length] ids and attention mask of token lists no longer than length."""
  ids = np.full((len(rows), length), pad, np.int32)
  mask = np.zeros((len(rows), length), np.int32)
  for i, r in enumerate(rows):
    ids[i, :len(r)] = r
    mask[i, :len(r)] = 1
  return ids, mask


def encode_sft(prompts: Sequence[str], responses: Sequence[str], tokenizer, *, max_length: int,
               eos: bool | str = True, max_prompt_length: int | None = None) -> dict:
  """Prompt + response sequences with the response as the loss target.

  Args:
    prompts, responses: N strings each.
    tokenizer: a tokenizer.json path (or its directory) or a `tokenizers.Tokenizer`.
    max_length: T.
    eos: append the end-of-text token after each response (a string names the token).
    max_prompt_length: prompts with more tokens keep their last max_prompt_length ones.

  Returns:
    'input_ids' int32 [N, T], 'attention_mask' int32 [N, T], 'loss_mask' float32 [N, T],
    'prompt_length' int32 [N] (prompt tokens kept), and the ints 'truncated_prompts',
    'truncated_responses'.
  """
  if len(prompts) != len(responses):
    raise UserError(f'{len(prompts)} prompts but {len(responses)} responses; give one response '
                    'per prompt')
  if max_length < 2:
    raise UserError(f'max_length={max_length} leaves no room for a response; use at least 16')
  tok = _load(tokenizer)
  pad, _ = text.pad_token(tok)
  stop = [eos_id(tok, eos)] if eos else []
  p_ids = _ids(tok, prompts, special=True, what='prompts')
  r_ids = _ids(tok, responses, special=False, what='responses')
  cut_p = 0
  if max_prompt_length is not None:
    cut_p = sum(len(p) > max_prompt_length for p in p_ids)
    p_ids = [p[-max_prompt_length:] if len(p) > max_prompt_length else p for p in p_ids]
  full = [len(p) >= max_length for p in p_ids]
  if any(full):
    longest = max(len(p) for p in p_ids)
    raise UserError(f'{sum(full)} of {len(p_ids)} prompts fill max_length={max_length} tokens '
                    f'alone (longest {longest}); raise max_length, set max_prompt_length, or '
                    'shorten the prompts')
  rows, cut_r = [], 0
  for p, r in zip(p_ids, r_ids):
    target = r + stop
    room = max_length - len(p)
    if len(target) > room:
      cut_r += 1
      target = r[:room]  # an unfinished response gets no end-of-text token
    rows.append((p, target))
  ids, mask = _fill([p + t for p, t in rows], max_length, pad)
  loss = np.zeros((len(rows), max_length), np.float32)
  for i, (p, t) in enumerate(rows):
    loss[i, len(p):len(p) + len(t)] = 1.0
  return {'input_ids': ids, 'attention_mask': mask, 'loss_mask': loss,
          'prompt_length': np.array([len(p) for p, _ in rows], np.int32).reshape(len(rows)),
          'truncated_prompts': int(cut_p), 'truncated_responses': int(cut_r)}


def encode_pairs(prompts: Sequence[str], responses_a: Sequence[str], responses_b: Sequence[str],
                 tokenizer, *, max_length: int, eos: bool | str = True,
                 max_prompt_length: int | None = None, ids: Sequence[int] | None = None) -> dict:
  """Two responses per prompt (preference pairs) as [N, 2, T] sequences (see `encode_sft`).

  Identical responses of a pair are a UserError naming how many and one example id (`ids`, else
  the row number): a pair the loss cannot tell apart carries no preference.

  Returns:
    'input_ids' int32 [N, 2, T], 'attention_mask' int32 [N, 2, T], 'loss_mask' float32
    [N, 2, T], 'prompt_length' int32 [N], 'truncated_prompts' (prompts cut), and
    'truncated_responses' (responses cut, of the 2N).
  """
  n = len(prompts)
  if not len(responses_a) == len(responses_b) == n:
    raise UserError(f'{n} prompts but {len(responses_a)} and {len(responses_b)} responses; give '
                    'two responses per prompt')
  same = [i for i in range(n) if responses_a[i] == responses_b[i]]
  if same:
    where = ids[same[0]] if ids is not None else same[0]
    raise UserError(f'{len(same)} of {n} preference pairs have two identical responses (e.g. '
                    f'id {where}: {responses_a[same[0]][:40]!r}); drop them or draw other '
                    'responses')
  both = encode_sft(list(prompts) * 2, list(responses_a) + list(responses_b), tokenizer,
                    max_length=max_length, eos=eos, max_prompt_length=max_prompt_length)
  out = {k: np.stack([both[k][:n], both[k][n:]], axis=1)
         for k in ('input_ids', 'attention_mask', 'loss_mask')}
  out['prompt_length'] = both['prompt_length'][:n]
  out['truncated_prompts'] = both['truncated_prompts'] // 2  # each prompt was encoded twice
  out['truncated_responses'] = both['truncated_responses']
  return out


def encode_prompts(prompts: Sequence[str], tokenizer, max_length: int) -> dict[str, np.ndarray]:
  """Right-padded prompts for `w2s.models.decoding.generate`: 'input_ids', 'attention_mask'
  int32 [N, max_length]. A prompt longer than max_length (or empty) is a UserError."""
  tok = _load(tokenizer)
  pad, _ = text.pad_token(tok)
  rows = _ids(tok, prompts, special=True, what='prompts')
  long = [len(r) > max_length for r in rows]
  if any(long):
    raise UserError(f'{sum(long)} of {len(rows)} prompts are longer than max_length={max_length} '
                    f'tokens (longest {max(map(len, rows))}); raise max_length or shorten them')
  if any(not r for r in rows):
    raise UserError(f'{sum(not r for r in rows)} prompts have no tokens; generation needs at '
                    'least one per prompt')
  ids, mask = _fill(rows, max_length, pad)
  return {'input_ids': ids, 'attention_mask': mask}


def pack_documents(documents: Sequence[str], tokenizer, *, seq_len: int,
                   eos: bool | str = True) -> dict[str, np.ndarray]:
  """Pretraining rows: the documents' tokens, each followed by end-of-text, concatenated and cut
  into rows of seq_len (the last one right-padded).

  Returns 'input_ids', 'attention_mask' int32 [R, seq_len] and 'loss_mask' float32 [R, seq_len]:
  every real token but a row's first (which nothing in the row predicts) is a target.
  """
  if seq_len < 2:
    raise UserError(f'seq_len={seq_len} must be at least 2')
  tok = _load(tokenizer)
  pad, _ = text.pad_token(tok)
  stop = [eos_id(tok, eos)] if eos else []
  stream = [t for doc in _ids(tok, documents, special=False, what='documents') for t in doc + stop]
  rows = [stream[i:i + seq_len] for i in range(0, len(stream), seq_len)]
  ids, mask = _fill(rows, seq_len, pad)
  loss = mask.astype(np.float32)
  loss[:, 0] = 0.0
  return {'input_ids': ids, 'attention_mask': mask, 'loss_mask': loss}


def decode(tokens, mask, tokenizer, *, eos: bool | str = True) -> list[str]:
  """Text of generated tokens [N, L] (int) with mask [N, L] (1 on generated ones, as
  `decoding.generate` returns them): each row up to its first end-of-text token (excluded)."""
  tok = _load(tokenizer)
  tokens, mask = np.asarray(tokens), np.asarray(mask)
  if tokens.shape != mask.shape or tokens.ndim != 2:
    raise UserError(f'decode: tokens {tokens.shape} and mask {mask.shape} must be the same [N, L]')
  stop = eos_id(tok, eos) if eos else None
  out = []
  for row, m in zip(tokens, mask):
    ids = row[m.astype(bool)].tolist()
    if stop is not None and stop in ids:
      ids = ids[:ids.index(stop)]
    out.append(tok.decode(ids, skip_special_tokens=False))
  return out
