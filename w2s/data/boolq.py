"""BoolQ yes/no questions about a passage (TFDS catalog `bool_q`; 9,427 train, 3,270 validation).

Clark et al. (2019), "BoolQ". Formatting as in the weak-to-strong release (`format_boolq`):
"Passage: {passage}\\nQuestion: {question}" -> 1 = yes. The passage is 'text' (ending in the
newline) and "Question: ..." is 'text_pair', so a tokenizer truncates the passage, never the
question; 'text' + 'text_pair' is exactly the release's string. 'test' is BoolQ's validation split
(its test labels are hidden), as in the release.

TFDS's `super_glue/boolq` holds the same data but its builder needs TensorFlow even to read; the
stand-alone `bool_q` builder does not.
"""
import numpy as np

from w2s.data import base
from w2s.data import catalog

LABEL_NAMES = ['no', 'yes']


def load(*, data_dir: str | None = None, download: bool = True) -> base.Dataset:
  raw = catalog.read('bool_q', {'train': 'train', 'test': 'validation'},
                     {'passage': 'text', 'question': 'text', 'answer': 'int'},
                     data_dir=data_dir, download=download)
  splits = {}
  for s, c in raw.items():
    text = np.array([f'Passage: {p}\n' for p in c['passage']], dtype=object)
    pair = np.array([f'Question: {q}' for q in c['question']], dtype=object)
    splits[s] = {'id': base.split_ids(s, c['row']), 'label': c['answer'], 'text': text,
                 'text_pair': pair}
  return base.check(base.Dataset('boolq', 2, LABEL_NAMES, 'text', splits))
