"""A synthetic arithmetic world for generative weak-to-strong offline: a character-level
tokenizer, a pretraining corpus that holds the latent skill, and a downstream task in a format the
corpus never shows. Everything is a pure function of a seed.

* `tokenizer()` / `tokenizer_path()`: a `tokenizers` WordLevel tokenizer over single characters
  (CHARS: digits, lowercase letters, space, `+-=*?:.,` and newline) plus `<|endoftext|>` (id 0),
  the pad and end-of-text token; written once (atomically) as tokenizer.json under the user
  cache (`w2s.models.feature_store.user_cache_dir`: $W2S_CACHE_DIR, else ~/.cache/w2s/features),
  or a temp dir when that is off or unwritable.
* `corpus(num_docs, seed)`: documents of a few lines each: terse addition facts ('347+589=936')
  among distractor lines (subtraction, multiplication, counting, copying, reversing, maxima,
  spelling digits out), so a model pretrained on it must learn addition among other things.
  Pass the test problems as `exclude` (`problems(test)`) so no test sum is seen in pretraining.
* the downstream task (`load`, the dataset plug-in 'arithmetic'): 'q: what is 347 plus 589? a:'
  -> ' 936', a natural-language format absent from the corpus (its words 'what', 'plus', 'q:'
  never occur there), with the hardness fields 'carries' (the number of carries of the column
  addition) and 'digits' (of each operand; both operands have that many). Views: 'generate'
  (prompt, answer), 'choice' (the answer among num_choices - 1 plausible wrong sums),
  'binary' (question + one candidate -> correct?, `w2s.data.candidates`) and 'pairs' (preference
  pairs: the correct sum and one plausible wrong sum, a dropped carry or one digit off by one,
  in random order; label = which response is correct).

Ids: `base.split_ids(split, digits * 10**6 + i)`, i (< 10**6) the problem's rank in its digit
count's seeded draw, so an id never changes with num_train / num_test ('binary': that row * K + j,
j the candidate). Test problems are drawn first, train ones
after them from the same stream, so the two never share a problem and test does not change
with num_train. Nothing is stored: `data_dir` is accepted and unused.
"""
import hashlib
import os
import tempfile

import numpy as np
import tokenizers
from tokenizers import decoders, models, pre_tokenizers

from w2s.data import base
from w2s.data import candidates
from w2s.errors import UserError
from w2s.generative import templates

CHARS = '0123456789abcdefghijklmnopqrstuvwxyz +-=*?:.,\n'
EOS = '<|endoftext|>'
VOCAB = {EOS: 0, **{c: i + 1 for i, c in enumerate(CHARS)}}
QUESTION = 'q: what is {a} plus {b}? a:'
CHOICE_QUESTION = 'q: what is {a} plus {b}? choices: {choices}. a:'
FIELDS = ('a', 'b', 'digits', 'carries')  # what a task template may use ('choices' too in 'choice')
VIEWS = ('generate', 'choice', 'binary', 'pairs')
MAX_DIGITS = 9
MAX_CHOICES = 10  # 'binary' ids: (digits * 10**6 + i) * K + j stay below base.ID_STRIDE
_ID_DIGITS = 10**6
_SPELL = 'zero one two three four five six seven eight nine'.split()
_CORPUS_SALT, _PAIR_SALT, _CHOICE_SALT = 7919, 31337, 4099


def tokenizer() -> tokenizers.Tokenizer:
  """The character-level tokenizer (vocabulary VOCAB: `<|endoftext|>` 0, then CHARS)."""
  tok = tokenizers.Tokenizer(models.WordLevel(VOCAB))  # no unk: a foreign character is an error
  tok.pre_tokenizer = pre_tokenizers.Split(tokenizers.Regex(r'[\s\S]'), behavior='isolated')
  tok.decoder = decoders.Fuse()
  tok.add_special_tokens([EOS])
  return tok


def tokenizer_path() -> str:
  """The tokenizer.json of `tokenizer()`, written once (temp file + rename) under
  `<user cache>/arithmetic-tokenizer-<content hash>/`, or a temp dir."""
  from w2s.models import feature_store  # a leaf module: where the user cache is
  content = tokenizer().to_str()
  stem = f'arithmetic-tokenizer-{hashlib.sha256(content.encode()).hexdigest()[:12]}'
  roots = [feature_store.user_cache_dir(), tempfile.gettempdir()]
  for root in [r for r in roots if r]:
    path = os.path.join(root, stem, 'tokenizer.json')
    try:
      _write_once(path, content)
      return path
    except OSError:
      continue
  raise UserError(f'cannot write the arithmetic tokenizer under {roots}; set W2S_CACHE_DIR to a '
                  'writable directory')


def _write_once(path: str, content: str) -> None:
  if os.path.isfile(path):
    with open(path, encoding='utf-8') as f:
      if f.read() == content:
        return
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix='.tokenizer-', suffix='.tmp')
  try:
    with os.fdopen(fd, 'w', encoding='utf-8') as f:
      f.write(content)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def check_text(texts, what: str = 'text') -> None:
  """UserError naming the first character of `texts` outside CHARS (the tokenizer has no unk)."""
  allowed = set(CHARS)
  for t in texts:
    bad = set(t) - allowed
    if bad:
      raise UserError(f'{what} {t[:40]!r} has characters {sorted(bad)} outside the arithmetic '
                      f'vocabulary {CHARS!r}; use lowercase letters, digits and those marks')


def carries(a, b) -> np.ndarray:
  """int64 [N]: how many columns of the schoolbook addition a + b carry (a, b >= 0, [N])."""
  a, b = np.asarray(a, np.int64).copy(), np.asarray(b, np.int64).copy()
  carry, count = np.zeros_like(a), np.zeros_like(a)
  while np.any((a > 0) | (b > 0)):
    carry = (a % 10 + b % 10 + carry >= 10).astype(np.int64)
    count += carry
    a, b = a // 10, b // 10
  return count


def _digit_range(d: int) -> tuple[int, int]:
  return (0 if d == 1 else 10**(d - 1)), 10**d


def _draws(d: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """The first n distinct (a, b) problems of d-digit operands in seed's stream (prefix-stable)."""
  lo, hi = _digit_range(d)
  width = hi - lo
  space = width * width
  if n > space:
    raise UserError(f'{n} problems of {d}-digit numbers asked for but only {space} exist; lower '
                    'num_train + num_test or use more digits')
  rng = np.random.default_rng([seed, d])
  if space <= 2_000_000:
    codes = rng.permutation(space)[:n]
  else:
    codes = np.zeros(0, np.int64)
    while len(codes) < n:  # fixed batches: the stream does not depend on n
      codes = np.concatenate([codes, rng.integers(0, space, 4096)])
      _, first = np.unique(codes, return_index=True)
      codes = codes[np.sort(first)]
    codes = codes[:n]
  return lo + codes // width, lo + codes % width


def _digits_of(digits) -> list[int]:
  ds = [digits] if isinstance(digits, (int, np.integer)) else list(digits)
  if not ds or any(not isinstance(d, (int, np.integer)) or not 1 <= d <= MAX_DIGITS for d in ds):
    raise UserError(f'digits={digits!r}: give digit counts between 1 and {MAX_DIGITS}, e.g. (2, 3)')
  return sorted(set(int(d) for d in ds))


def task(*, digits=(2, 3), num_train: int = 1000, num_test: int = 200, seed: int = 0,
         template: str = QUESTION) -> dict[str, base.Examples]:
  """'train' / 'test' Examples of the addition task, num_train / num_test per digit count.

  Fields: 'id' int64, 'label' int64 (0: the generative task has one 'class'), 'prompt' and
  'text' (object: the rendered template), 'answer' (object: ' ' + the sum), 'a', 'b',
  'digits', 'carries' (int64).
  """
  templates.check(template, FIELDS)
  if min(num_train, num_test) < 0 or num_train + num_test > _ID_DIGITS:
    raise UserError(f'num_train={num_train}, num_test={num_test}: give counts >= 0 with at most '
                    f'{_ID_DIGITS} problems per digit count')
  out = {}
  for split in ('test', 'train'):
    parts = []
    for d in _digits_of(digits):
      a, b = _draws(d, num_test + num_train, seed)
      rows = np.arange(num_test) if split == 'test' else num_test + np.arange(num_train)
      a, b = a[rows], b[rows]
      ex = {'id': base.split_ids(split, d * _ID_DIGITS + np.arange(len(rows))),
            'a': a, 'b': b, 'digits': np.full(len(rows), d, np.int64), 'carries': carries(a, b)}
      parts.append(ex)
    ex = base.concat(parts)
    ex['prompt'] = np.array(templates.render_all(template, ex), dtype=object)
    ex['text'] = ex['prompt'].copy()
    ex['answer'] = np.array([f' {s}' for s in ex['a'] + ex['b']], dtype=object)
    ex['label'] = np.zeros(len(ex['id']), np.int64)
    check_text(ex['prompt'], 'prompt')
    out[split] = ex
  return {'train': out['train'], 'test': out['test']}


def problems(examples: base.Examples) -> set[tuple[int, int]]:
  """The (a, b) problems of task Examples: pass a test split's as `corpus(exclude=...)`."""
  return set(zip(examples['a'].tolist(), examples['b'].tolist()))


def wrong_sums(a: int, b: int) -> dict[str, list[int]]:
  """Plausible wrong answers to a + b: 'dropped_carry' (each carry forgotten alone, then all of
  them: digit-wise sums mod 10) and 'off_by_one' (one digit of the sum one higher or lower,
  keeping the number of digits); distinct, non-negative, never the sum."""
  s = a + b
  dropped, x, y, carry, col, modsum = [], a, b, 0, 0, 0
  while x or y or carry:
    column = x % 10 + y % 10 + carry
    carry = int(column >= 10)
    if carry:
      dropped.append(s - 10**(col + 1))
    modsum += (x % 10 + y % 10) % 10 * 10**col
    x, y, col = x // 10, y // 10, col + 1
  if len(dropped) > 1:
    dropped.append(modsum)
  digits = str(s)
  off = []
  for i, ch in enumerate(reversed(digits)):
    top = i == len(digits) - 1
    if ch != '9':
      off.append(s + 10**i)
    if ch != '0' and not (top and ch == '1' and len(digits) > 1):
      off.append(s - 10**i)
  seen = {s}
  out = {}
  for kind, values in (('dropped_carry', dropped), ('off_by_one', off)):
    out[kind] = [v for v in values if v >= 0 and not (v in seen or seen.add(v))]
  return out


def _wrong(a: int, b: int, rng: np.random.Generator) -> tuple[int, str]:
  """One wrong sum: a dropped carry half the time when there is one, else a digit off by one."""
  w = wrong_sums(a, b)
  kind = 'dropped_carry' if w['dropped_carry'] and rng.random() < 0.5 else 'off_by_one'
  return int(rng.choice(w[kind])), kind


def preference_pairs(examples: base.Examples, *, seed: int = 0) -> base.Examples:
  """Task Examples plus 'response_a', 'response_b' (object: answers in the task's format), one the
  correct sum and one a plausible wrong one ('wrong_kind': 'dropped_carry' / 'off_by_one'), in
  an order drawn per example; 'label' int64 = the index of the correct (gold-preferred) response."""
  resp_a, resp_b, labels, kinds = [], [], [], []
  for i, a, b in zip(examples['id'], examples['a'], examples['b']):
    rng = np.random.default_rng([seed, _PAIR_SALT, int(i)])
    wrong, kind = _wrong(int(a), int(b), rng)
    first = int(rng.integers(2))
    pair = [f' {a + b}', f' {wrong}'] if first == 0 else [f' {wrong}', f' {a + b}']
    resp_a.append(pair[0])
    resp_b.append(pair[1])
    labels.append(first)
    kinds.append(kind)
  out = dict(examples)
  out.update(response_a=np.array(resp_a, dtype=object), response_b=np.array(resp_b, dtype=object),
             wrong_kind=np.array(kinds, dtype=object), label=np.array(labels, np.int64))
  return out


def choices(examples: base.Examples, *, num_choices: int = 4, seed: int = 0) -> np.ndarray:
  """int64 [N, K]: the sum and K - 1 distinct wrong sums of each example in a seeded order (dropped
  carries and digit slips first, then nearby numbers)."""
  out = np.zeros((len(examples['id']), num_choices), np.int64)
  for r, (i, a, b) in enumerate(zip(examples['id'], examples['a'], examples['b'])):
    rng = np.random.default_rng([seed, _CHOICE_SALT, int(i)])
    s, w = int(a + b), wrong_sums(int(a), int(b))
    pool = w['dropped_carry'] + w['off_by_one']
    wrong = list(rng.permutation(pool)[:num_choices - 1]) if pool else []
    delta = 1
    while len(wrong) < num_choices - 1:  # tiny sums: nearby numbers fill up
      for v in (s + delta, s - delta):
        if v >= 0 and v != s and v not in wrong and len(wrong) < num_choices - 1:
          wrong.append(v)
      delta += 1
    out[r] = rng.permutation([s] + wrong)
  return out


def _line(kind: str, rng: np.random.Generator, digits: list[int], exclude) -> str:
  """One corpus line of `kind`, operands of digit counts drawn from `digits`."""
  def num(d=None):
    lo, hi = _digit_range(int(rng.choice(digits)) if d is None else d)
    return int(rng.integers(lo, hi))
  if kind == 'add':
    for _ in range(100):
      a, b = num(), num()
      if (a, b) not in exclude and (b, a) not in exclude:
        return f'{a}+{b}={a + b}'
    raise UserError('corpus: 100 draws in a row hit excluded problems; exclude fewer problems or '
                    'give the corpus more digits')
  if kind == 'sub':
    a, b = sorted((num(), num()), reverse=True)
    return f'{a}-{b}={a - b}'
  if kind == 'mul':
    a, b = num(1), num(min(digits[-1], 2))
    return f'{a}*{b}={a * b}'
  if kind == 'count':
    start, k = num(), int(rng.integers(3, 7))
    return f'count {start}: ' + ' '.join(str(start + j) for j in range(k))
  a, b = num(), num()
  return {'copy': f'copy {a}: {a}', 'reverse': f'reverse {a}: {str(a)[::-1]}',
          'max': f'max {a},{b}: {max(a, b)}',
          'spell': f'spell {a}: ' + ' '.join(_SPELL[int(c)] for c in str(a))}[kind]


DISTRACTORS = ('sub', 'mul', 'count', 'copy', 'reverse', 'max', 'spell')


def corpus(num_docs: int, seed: int, *, digits=(1, 2, 3, 4), lines: tuple[int, int] = (2, 6),
           addition: float = 0.5, exclude=()) -> list[str]:
  """Pretraining documents: each `lines[0]`..`lines[1]` lines joined by newlines, a line an
  addition fact with probability `addition` (operands of digit counts drawn from `digits`
  independently), else one of DISTRACTORS. Document i depends only on (seed, i), so a longer
  corpus extends a shorter one. `exclude`: (a, b) problems never stated, in either order."""
  ds = _digits_of(digits)
  lo, hi = lines
  if not 1 <= lo <= hi:
    raise UserError(f'corpus lines={lines!r}: give (min, max) lines per document, 1 <= min <= max')
  if not 0 <= addition <= 1:
    raise UserError(f'corpus addition={addition} is a probability; give one in [0, 1]')
  exclude = exclude if isinstance(exclude, (set, frozenset)) else set(map(tuple, exclude))
  docs = []
  for i in range(num_docs):
    rng = np.random.default_rng([seed, _CORPUS_SALT, i])
    n = int(rng.integers(lo, hi + 1))
    kinds = ['add' if rng.random() < addition else DISTRACTORS[rng.integers(len(DISTRACTORS))]
             for _ in range(n)]
    docs.append('\n'.join(_line(k, rng, ds, exclude) for k in kinds))
  return docs


def _views(split: str, ex: base.Examples, view: str, *, seed: int, num_choices: int, mode: str,
           template: str | None) -> base.Examples:
  if view == 'generate':
    return ex
  if view == 'pairs':
    return preference_pairs(ex, seed=seed)
  if view == 'choice':
    ch = choices(ex, num_choices=num_choices, seed=seed)
    cols = dict(ex, choices=np.array([', '.join(map(str, c)) for c in ch], dtype=object))
    text = np.array(templates.render_all(template or CHOICE_QUESTION, cols), dtype=object)
    check_text(text, 'prompt')
    label = np.argmax(ch == (ex['a'] + ex['b'])[:, None], axis=1).astype(np.int64)
    return dict(ex, prompt=text, text=text.copy(), choices=ch, label=label)
  ch = choices(ex, num_choices=num_choices, seed=seed)
  correct = np.argmax(ch == (ex['a'] + ex['b'])[:, None], axis=1)
  rows = ex['id'] - base.SPLIT_CODES[split] * base.ID_STRIDE
  out = candidates.expand(split, rows, list(ex['prompt']), [[f' {v}' for v in c] for c in ch],
                          correct, mode=mode, seed=seed, answer_template='{question}{answer}')
  row = (out['group'] - base.SPLIT_CODES[split] * base.ID_STRIDE) // num_choices  # group: row * K
  source = np.searchsorted(ex['id'], base.split_ids(split, row))
  for k in ('prompt', 'answer', 'a', 'b', 'digits', 'carries'):
    out[k] = ex[k][source]
  return out


def load(*, data_dir: str | None = None, view: str = 'generate', digits=(2, 3),
         num_train: int = 1000, num_test: int = 200, seed: int = 0, template: str | None = None,
         num_choices: int = 4, mode: str = 'pair') -> base.Dataset:
  """The addition task (module docstring) as a Dataset; `num_train` / `num_test` per digit count.

  Args:
    data_dir: unused (the task is generated).
    view: one of VIEWS.
    digits: digit counts of the operands, e.g. (2, 3) or 4.
    seed: the world's seed (problems, wrong answers, orders), not the protocol's split seed.
    template: the question template over FIELDS (default QUESTION; 'choice': CHOICE_QUESTION,
      which also has {choices}).
    num_choices: K candidates of the 'choice' and 'binary' views.
    mode: the 'binary' view's candidates per question (`w2s.data.candidates.MODES`).
  """
  del data_dir
  if view not in VIEWS:
    raise UserError(f'arithmetic view={view!r} is not one of {VIEWS}')
  if not 2 <= num_choices <= MAX_CHOICES:
    raise UserError(f'arithmetic num_choices={num_choices} must be in [2, {MAX_CHOICES}]')
  if view == 'choice' and template is not None:
    templates.check(template, FIELDS + ('choices',))
  question = QUESTION if view == 'choice' or template is None else template
  raw = task(digits=digits, num_train=num_train, num_test=num_test, seed=seed, template=question)
  splits = {s: _views(s, ex, view, seed=seed, num_choices=num_choices, mode=mode,
                      template=template) for s, ex in raw.items()}
  classes = {'generate': ['answer'], 'pairs': ['response_a', 'response_b'],
             'choice': [f'choice_{k}' for k in range(num_choices)],
             'binary': ['incorrect', 'correct']}[view]
  return base.check(base.Dataset('arithmetic', len(classes), classes, 'text', splits))
