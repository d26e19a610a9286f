"""Cosmos QA commonsense reading comprehension as answer correctness (TFDS catalog `cosmos_qa`).

Huang et al. (2019), "Cosmos QA"; 25,262 train and 2,985 validation questions with 4 candidate
answers each. Formatting as in the weak-to-strong release (`format_cosmosqa`): 'text' is
"Context: {context}\\n" and 'text_pair' is "Question: {question}\\nAnswer: {answer}"; label 1 =
the answer is correct. Candidates reading "None of the above choices ." are never shown (as in
the release, a question whose correct answer is that one yields only wrong candidates). Which
candidates become examples is the `mode` hparam of `w2s.data.candidates` (default 'all': each
answer; 'sample' reproduces the release's one-per-question draw). 'test' is the validation split
(test labels are hidden), as in the release.
"""
from w2s.data import base
from w2s.data import candidates
from w2s.data import catalog

LABEL_NAMES = ['incorrect', 'correct']
_FIELDS = {'context': 'text', 'question': 'text', 'label': 'int',
           **{f'answer{j}': 'text' for j in range(4)}}


def load(*, data_dir: str | None = None, download: bool = True, mode: str = 'all',
         seed: int = 0) -> base.Dataset:
  raw = catalog.read('cosmos_qa', {'train': 'train', 'test': 'validation'}, _FIELDS,
                     data_dir=data_dir, download=download)
  splits = {}
  for s, c in raw.items():
    answers = [list(a) for a in zip(*(c[f'answer{j}'] for j in range(4)))]
    splits[s] = candidates.expand(
        s, c['row'], list(c['question']), answers, c['label'], mode=mode, seed=seed,
        answer_template='Question: {question}\nAnswer: {answer}',
        context=[f'Context: {x}\n' for x in c['context']],
        usable=lambda a: 'None of the above choices' not in a)
  return base.check(base.Dataset('cosmos_qa', 2, LABEL_NAMES, 'text', splits))
