"""Multiple-choice scoring by log-probabilities: each of K candidate answers is scored as a response
to its prompt by a decoder, and the best-scoring one is the model's choice (the zero-shot
multiple-choice protocol of Brown et al. 2020, "Language Models are Few-Shot Learners", sec. 2.4,
as lm-eval-harness runs it).

Notation (`w2s.models.sequence`): prompt x, choice c = (c_1..c_L) tokenized without special
tokens, followed by the end-of-text token when `eos=True`, so the scored response is
y = (c_1..c_L, eos) of |y| = L + 1 tokens (|y| = L without it):

  'sum'   log pi(y | x) = sum_t log pi(y_t | x, y_<t), the sequence log-prob of the response
          (lm-eval-harness's `acc` ranks continuations by this sum, there without eos);
  'mean'  log pi(y | x) / |y|, the mean token log-prob: the per-token normalisation Brown et al.
          use on most tasks, which keeps longer choices from losing for their length alone.
          lm-eval-harness's `acc_norm` divides by the choice string's length in characters
          instead (`len(choice)`); with a character-level tokenizer (w2s.data.arithmetic) and
          eos=False, |y| is the scored string's character count too.

Why eos by default: a model fine-tuned on answers (SFT) answers ' 16' and stops, and the end-of-text token is what
separates ' 16' from a prefix of ' 164' (without it the sum can only fall as a choice grows, so a
choice that is a prefix of another always wins under 'sum'). This is also how `w2s.generative.
tokens.encode_sft` builds the responses the models are trained on.

Encoding follows `tokens.encode_sft` (prompt with the tokenizer's special tokens, choice without,
concatenated). Rows are [N * K, T] (prompt-major), T = max_length, scored in fixed [batch_size, T]
batches through one jitted apply (compiled once per model and shape), the batch split over the
mesh's data axes, each process feeding its share of the rows (as `w2s.generative.sampling`).
Memory: [batch_size, T, V] float32 logits at once.

Truncation is never silent: a prompt + choice longer than max_length keeps its first max_length
tokens (the choice loses its end and its eos), is scored on the tokens kept, flagged in
'truncated' [N, K] and counted in 'num_truncated' for the caller to report (raise max_length when
it is not 0: the scores of cut choices are not comparable with the others').
"""
import functools
from typing import Mapping, Sequence

import jax
import numpy as np

from w2s import sharding
from w2s.errors import UserError
from w2s.generative import tokens
from w2s.models import sequence

NORMALIZE = ('sum', 'mean')


def choice_texts(raw: Mapping, column: str = 'choices', template: str = ' {}') -> np.ndarray:
  """object [N, K]: the candidates of `raw[column]` ([N, K] numbers or strings) as answer strings,
  each `template.format(value)`: the default ' {}' gives the format of the arithmetic 'generate'
  view's answers (' 105'), so `choice_texts(raw)[i, raw['label'][i]] == raw['answer'][i]`."""
  if column not in raw:
    raise UserError(f'choice column {column!r} is missing; the examples have {sorted(raw)} (use '
                    'a dataset view with choices, e.g. arithmetic view=choice)')
  values = np.asarray(raw[column], dtype=object)
  if values.ndim != 2 or values.shape[1] < 2:
    raise UserError(f'choice column {column!r} has shape {values.shape}; it must be [N, K] with '
                    'K >= 2 candidates per example')
  out = np.empty(values.shape, dtype=object)
  for idx, v in np.ndenumerate(values):
    out[idx] = template.format(v)
  return out


def encode_choices(prompts: Sequence[str], choices, tokenizer, *, max_length: int,
                   eos: bool | str = True) -> dict:
  """Every (prompt, choice) as one response sequence (the `w2s.models.sequence` contract).

  Args:
    prompts: N strings.
    choices: [N, K] strings (e.g. `choice_texts`), K the same for every prompt.
    tokenizer: a tokenizer.json path (or its directory) or a `tokenizers.Tokenizer`.
    max_length: T.
    eos: close each choice with the end-of-text token (a string names it).

  Returns:
    'input_ids' int32 [N, K, T], 'attention_mask' int32 [N, K, T], 'loss_mask' float32
    [N, K, T] (1 on the choice's tokens and its eos), 'num_tokens' int32 [N, K] (scored tokens,
    |y|), 'truncated' bool [N, K] (prompt + choice longer than T) and the int 'num_truncated'.
  """
  grid = np.asarray(choices, dtype=object)
  if grid.ndim != 2 or grid.shape[0] != len(prompts) or grid.shape[1] < 1:
    raise UserError(f'{len(prompts)} prompts but choices of shape {grid.shape}; give [N, K] '
                    'choices, the same K for every prompt')
  n, k = grid.shape
  flat_p = [p for p in prompts for _ in range(k)]
  flat_c = [str(c) for c in grid.reshape(-1)]
  # one token more than max_length: a row that needs it is one that max_length cuts
  try:
    enc = tokens.encode_sft(flat_p, flat_c, tokenizer, max_length=max_length + 1, eos=eos)
  except UserError:
    tokens.encode_sft(flat_p, flat_c, tokenizer, max_length=max_length, eos=eos)  # its error,
    raise                                                                # about max_length itself
  plen = enc['prompt_length']
  if np.any(plen >= max_length) or np.any(plen == 0):
    bad = int(np.sum(plen >= max_length) + np.sum(plen == 0)) // k
    raise UserError(f'{bad} of {n} prompts have no tokens or fill max_length={max_length} tokens '
                    'alone; a choice needs a prompt token before it and room after it (raise '
                    'max_length or fix the prompts)')
  truncated = enc['attention_mask'].sum(axis=1) > max_length
  out = {key: enc[key][:, :max_length].reshape(n, k, max_length)
         for key in ('input_ids', 'attention_mask', 'loss_mask')}
  out['num_tokens'] = out['loss_mask'].sum(axis=-1).astype(np.int32)
  if np.any(out['num_tokens'] == 0):
    raise UserError(f'{int(np.sum(out["num_tokens"] == 0))} choices have no tokens to score; '
                    'drop empty choices or keep eos=True')
  out['truncated'] = truncated.reshape(n, k)
  out['num_truncated'] = int(truncated.sum())
  return out


@functools.partial(jax.jit, static_argnums=0)
def _row_logprobs(module, params, batch):
  """[R] log pi(y | x) of batch rows [R, T] (one compile per module and shape)."""
  return sequence.logprob_apply_fn(module)(params, batch, train=False, rng=None)


def sequence_logprobs(module, params, encoded: Mapping, *, mesh, batch_size: int) -> np.ndarray:
  """float32 [...]: log pi(y | x) (sum over loss_mask tokens) of encoded rows [..., T].

  The rows are flattened and scored in fixed batches of `batch_size` rows (the last one filled
  with copies of row 0, dropped), split over the mesh; batch_size must be divisible by its
  devices. `module` is a decoder TextClassifier, `params` its parameter tree (replicated or
  sharded).
  """
  sharding.check_batch_size(batch_size, mesh, 'batch_size')
  ids = np.asarray(encoded['input_ids'])
  lead, t = ids.shape[:-1], ids.shape[-1]
  cols = {key: np.asarray(encoded[key]).reshape(-1, t)
          for key in ('input_ids', 'attention_mask', 'loss_mask')}
  rows = len(cols['input_ids'])
  out = np.zeros(rows, np.float32)
  procs, p = jax.process_count(), jax.process_index()
  local = slice(p * batch_size // procs, (p + 1) * batch_size // procs)
  for start in range(0, rows, batch_size):
    take = np.arange(start, min(start + batch_size, rows))
    filled = np.concatenate([take, np.zeros(batch_size - len(take), take.dtype)])
    batch = sharding.host_batch_to_global({key: v[filled][local] for key, v in cols.items()},
                                          mesh)
    out[take] = sharding.to_host(_row_logprobs(module, params, batch))[:len(take)]
  return out.reshape(lead)


def normalized(logprob, num_tokens, normalize: str) -> np.ndarray:
  """float32 scores of sequence log-probs [...] with `num_tokens` [...] scored tokens: 'sum' the
  log-probs themselves, 'mean' divided by the token counts (module docstring)."""
  if normalize not in NORMALIZE:
    raise UserError(f'choice normalize={normalize!r} is not one of {NORMALIZE}')
  logprob = np.asarray(logprob, np.float32)
  if normalize == 'sum':
    return logprob
  return (logprob / np.asarray(num_tokens, np.float32)).astype(np.float32)


def score_choices(module, params, prompts: Sequence[str], choices, tokenizer, *, max_length: int,
                  mesh, batch_size: int, normalize: str = 'sum', eos: bool | str = True) -> dict:
  """The decoder's scores of K choices per prompt and its pick.

  Args:
    module, params: a decoder TextClassifier and its parameter tree.
    prompts: N strings; choices: [N, K] strings (`choice_texts`).
    tokenizer, max_length, eos: as `encode_choices`.
    mesh, batch_size: as `sequence_logprobs` (batch_size rows of one choice each).
    normalize: 'sum' or 'mean' (module docstring).

  Returns:
    'scores' float32 [N, K] (by `normalize`), 'logprob' float32 [N, K] (the sums, log pi(y | x)),
    'num_tokens' int32 [N, K], 'choice' int64 [N] (argmax of scores, the first on ties),
    'truncated' bool [N, K] and the int 'num_truncated'.
  """
  if normalize not in NORMALIZE:
    raise UserError(f'choice normalize={normalize!r} is not one of {NORMALIZE}')
  enc = encode_choices(prompts, choices, tokenizer, max_length=max_length, eos=eos)
  logprob = sequence_logprobs(module, params, enc, mesh=mesh, batch_size=batch_size)
  scores = normalized(logprob, enc['num_tokens'], normalize)
  return {'scores': scores, 'logprob': logprob, 'num_tokens': enc['num_tokens'],
          'choice': np.argmax(scores, axis=1).astype(np.int64), 'truncated': enc['truncated'],
          'num_truncated': enc['num_truncated']}


def correct(choice, label) -> np.ndarray:
  """float32 [N]: 1 where the picked choice [N] is the gold index `label` [N] (int, in [0, K))."""
  choice, label = np.asarray(choice), np.asarray(label)
  if choice.shape != label.shape or label.ndim != 1:
    raise UserError(f'{choice.shape} choices but labels of shape {label.shape}; score the picks '
                    'of the same rows, labels as [N] indices')
  return (choice == label).astype(np.float32)
