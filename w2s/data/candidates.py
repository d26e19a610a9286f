"""Question + candidate answer -> "is this answer correct?" (helper of cosmos_qa.py and sciq.py).

Burns et al. (2023) turn multiple-choice QA into binary classification: the model sees a question
(with its context) and one candidate answer and predicts whether the candidate is correct. The
original release (openai/weak-to-strong, `format_cosmosqa`, `format_sciq`) draws one example per
question: with probability 1/2 the correct answer (label 1), else a random wrong one (label 0).

Modes here, all seeded per question (numpy generator seeded with [seed, question row]) so the
result depends neither on row order nor on which other questions are loaded:
  'all':    every candidate is one example (K per question; label 1 for the correct one);
  'pair':   the correct answer and one random wrong answer (2 per question, balanced);
  'sample': the release's draw (1 per question, correct with probability 1/2).
The examples of one question share a 'group' (the question's id), so `w2s.data.splits` never
puts a question's candidates on both sides of a partition. Ids: split code * 1e8 + row * K + j
(`base.split_ids`), where j is the candidate's index.
"""
import numpy as np

from w2s.data import base
from w2s.errors import UserError

MODES = ('all', 'pair', 'sample')


def _chosen(mode: str, correct: int, valid: list[int], rng: np.random.Generator) -> list[int]:
  """Candidate indices to emit for one question; `correct` is -1 when no candidate is usable
  as a correct answer (then only wrong ones are emitted)."""
  wrong = [j for j in valid if j != correct]
  if mode == 'all':
    return valid
  pick_wrong = [wrong[rng.integers(len(wrong))]] if wrong else []
  has_correct = correct >= 0
  if mode == 'pair':
    return ([correct] if has_correct else []) + pick_wrong
  if has_correct and (not wrong or rng.random() < 0.5):
    return [correct]
  return pick_wrong


def expand(split: str, rows: np.ndarray, prompts: list[str], answers: list[list[str]],
           correct: np.ndarray, *, mode: str, seed: int, answer_template: str,
           context: list[str] | None = None, usable=lambda answer: True) -> base.Examples:
  """One binary example per chosen (question, candidate).

  Args:
    split: our split name (for ids).
    rows: int64 [Q] source row of each question.
    prompts: Q question strings.
    answers: Q lists of K candidate strings.
    correct: int [Q] index of the correct candidate.
    mode: one of MODES.
    seed: draws in 'pair' / 'sample'.
    answer_template: formats (question, answer) -> the answer segment, e.g.
      'Q: {question} A: {answer}'.
    context: Q context strings, already formatted; when given, 'text' is the context and
      'text_pair' the answer segment (tokenized as a pair, so truncation cuts the context first).
    usable: candidates for which this is False are never emitted (cosmos_qa's
      'None of the above choices .'), and a question whose correct answer is unusable yields
      only wrong candidates.

  Returns:
    Examples with 'id', 'group', 'label' (1 = correct), 'text' [, 'text_pair'].
  """
  if mode not in MODES:
    raise UserError(f'candidate mode {mode!r} is not one of {MODES}')
  k = max(len(a) for a in answers) if answers else 1
  ids, groups, labels, texts, pairs = [], [], [], [], []
  for q, row in enumerate(rows):
    valid = [j for j, a in enumerate(answers[q]) if usable(a)]
    c = int(correct[q]) if int(correct[q]) in valid else -1
    rng = np.random.default_rng([seed, int(row)])
    for j in _chosen(mode, c, valid, rng):
      ids.append(int(row) * k + j)
      groups.append(int(row))
      labels.append(int(j == c))
      segment = answer_template.format(question=prompts[q], answer=answers[q][j])
      texts.append(context[q] if context is not None else segment)
      pairs.append(segment)
  out = {'id': base.split_ids(split, np.array(ids, np.int64)),
         'group': base.split_ids(split, np.array(groups, np.int64) * k),
         'label': np.array(labels, np.int64), 'text': np.array(texts, dtype=object)}
  if context is not None:
    out['text_pair'] = np.array(pairs, dtype=object)
  return out

