"""SciQ science exam questions as answer correctness, from files the user downloads.

Welbl et al. (2017), "Crowdsourcing Multiple Choice Science Questions" (13,679 questions:
11,679 train, 1,000 validation, 1,000 test). Not in the TFDS catalog: download it once, e.g.
`huggingface-cli download allenai/sciq --repo-type dataset --local-dir DIR`, and load with
`path=DIR` (see `w2s.data.local_files` for the file names searched).

Expected schema, one JSON object (or parquet row) per question:
  question (str), correct_answer (str), distractor1 (str), distractor2 (str), distractor3 (str);
other fields (e.g. 'support') are ignored. A row missing one of these is a UserError naming the
file and row.

Formatting as in the weak-to-strong release (`format_sciq`): "Q: {question} A: {answer}" -> 1 if
the answer is the correct one. `mode` (see `w2s.data.candidates`): 'pair' (default) gives the
correct answer and one seeded random distractor per question; 'sample' is the release's
one-per-question coin flip; 'all' gives all four candidates.
"""
import numpy as np
import tensorflow_datasets as tfds

from w2s.data import base
from w2s.data import candidates
from w2s.data import local_files

LABEL_NAMES = ['incorrect', 'correct']


class W2sSciq(local_files.LocalFilesBuilder):
  """SciQ questions with their correct answer and three distractors."""
  name = 'w2s_sciq'
  VERSION = tfds.core.Version('1.0.0')
  SCHEMA = {'question': 'text', 'correct_answer': 'text', 'distractor1': 'text',
            'distractor2': 'text', 'distractor3': 'text'}


def load(*, path: str | None = None, data_dir: str | None = None, mode: str = 'pair',
         seed: int = 0) -> base.Dataset:
  raw = local_files.read(W2sSciq, path, 'sciq', data_dir)
  splits = {}
  for s, c in raw.items():
    answers = [list(a) for a in zip(c['correct_answer'], c['distractor1'], c['distractor2'],
                                     c['distractor3'])]
    splits[s] = candidates.expand(s, c['row'], list(c['question']), answers,
                                  np.zeros(len(answers), np.int64), mode=mode, seed=seed,
                                  answer_template='Q: {question} A: {answer}')
  return base.check(base.Dataset('sciq', 2, LABEL_NAMES, 'text', splits))
