"""Which weak generations of B a generative student learns from (`filter=dict(name=...)`).

* 'none': every sample.
* 'majority': per prompt, the samples whose extracted answer is the most common one among its
  samples (self-consistency; Wang et al. 2023); prompts whose samples have no answer drop out.
* 'agreement': the samples whose answer equals the strong model's own in-context answer: the
  pretrained strong decoder, greedy, after `shots` solved examples of A (Yang et al. 2024,
  "Weak-to-Strong Reasoning", stage I).
* 'confidence': the `keep` fraction of samples with the highest mean token log-prob under the weak
  model (its confidence in its own answer).

Every filter first checks that the answer extractor finds an answer in some weak generation (one
`error:` line otherwise: the extractor, template or max_new_tokens is wrong, and no student has
trained yet).
"""
import collections

import numpy as np

from w2s import predict
from w2s.errors import UserError
from w2s.generative import answers as answers_lib
from w2s.generative import tokens
from w2s.models import sequence
from w2s.protocols import generative_stages as gs


def apply(flt: dict, b: dict, samples: np.ndarray, *, extractor: str, teacher, strong_pre, gen,
          prompts, tokenizer, a: dict, gold, max_length: int, eval_batch_size: int, mesh,
          greedy) -> tuple[np.ndarray, dict]:
  """(keep [N, n] bool over B's samples, info: the filter, kept count and fraction)."""
  name = flt.get('name', 'none')
  n, k = samples.shape
  found = answers_lib.extract(extractor, [str(t) for t in samples.ravel()])  # refuses all-None
  answers = np.array([answers_lib.normalize(x) if x is not None else None for x in found],
                     dtype=object).reshape(n, k)
  if name == 'none':
    keep = np.ones((n, k), bool)
  elif name == 'majority':
    keep = _majority(answers)
  elif name == 'agreement':
    if strong_pre is None:
      raise UserError("filter 'agreement' reads the strong model's in-context answers: give the "
                      'strong role a pretrain section (or use majority / confidence)')
    shots = int(flt.get('shots', 4))
    if not 0 <= shots <= len(a['id']):
      raise UserError(f'filter.shots={shots} must be in [0, {len(a["id"])}] (the rows of A)')
    head = ''.join(f'{p}{g}\n' for p, g in zip(prompts(a)[:shots], gold(a)[:shots]))
    icl = gen(strong_pre, greedy, name='strong_in_context',
              prompt_key=('in_context', shots)).texts(b, [head + p for p in prompts(b)])[:, 0]
    fn = answers_lib.extractor(extractor)
    mine = [answers_lib.normalize(fn(str(t))) for t in icl]
    keep = np.array([[x is not None and x == mine[i] for x in answers[i]] for i in range(n)])
  elif name == 'confidence':
    fraction = float(flt.get('keep', 0.5))
    if not 0 < fraction <= 1:
      raise UserError(f'filter.keep={fraction} must be a fraction in (0, 1]')
    score = _mean_logprob(teacher, b, samples, prompts, tokenizer, max_length, eval_batch_size,
                          mesh)
    cut = np.quantile(score, 1 - fraction)
    keep = score >= cut
  else:
    raise UserError(f'unknown filter {name!r}')
  return keep, {'name': name, 'kept': int(keep.sum()), 'samples': int(keep.size),
                'kept_fraction': float(keep.mean())}


def _majority(answers: np.ndarray) -> np.ndarray:
  keep = np.zeros(answers.shape, bool)
  for i, row in enumerate(answers):
    counts = collections.Counter(x for x in row if x is not None)
    if counts:
      top = counts.most_common(1)[0][0]  # ties: the first of them to appear
      keep[i] = [x == top for x in row]
  return keep


def _mean_logprob(teacher, b, samples, prompts, tokenizer, max_length, eval_batch_size,
                  mesh) -> np.ndarray:
  """[N, n] the weak model's mean token log-prob of each of its samples."""
  n, k = samples.shape
  ps = prompts(b)
  enc = tokens.encode_sft([ps[i] for i in range(n) for _ in range(k)],
                          [str(t) for t in samples.ravel()], tokenizer, max_length=max_length)
  ex = gs.token_examples(enc, np.arange(n * k))
  pred = predict.predict(teacher.module, teacher.params(), ex, batch_size=eval_batch_size,
                         mesh=mesh, name='weak confidence',
                         apply_fn=sequence.logprob_apply_fn(teacher.module))
  order = np.argsort(pred['id'])
  logp = pred['logits'][order]
  count = np.maximum(enc['loss_mask'].sum(1), 1.0)
  return (logp / count).reshape(n, k)
