"""Deterministic, seeded partitions of a dataset for the weak-to-strong protocol.

Burns et al. (2023), "Weak-to-Strong Generalization", section 3: the training data is split into
disjoint halves; the weak supervisor is trained on the first (A, 'weak_train') with ground truth,
labels the second (B, 'strong_train'), and the strong student learns from those labels; the test
split is kept for every report. An optional 'val' part is carved from train for model selection
that must not use B's ground truth.

Every assignment is a pure function of (example id or group, seed): each key is hashed with
splitmix64 and sorted, so the result does not depend on the input's row order, the number of
processes or hosts, the platform, or Python's hash seed. Examples sharing a 'group' (e.g. the
candidate answers of one question) land on the same side. Outputs are sorted by id, and ids are
carried unchanged so labels produced at one stage join the next by id.
"""
import dataclasses
import numbers

import numpy as np

from w2s.data import base
from w2s.errors import UserError

_MASK64 = (1 << 64) - 1
HOLDOUT_SALT = 0x5EED_7E57  # fixed salt of the built-in test holdout (not a user seed)


def _splitmix64(x: np.ndarray) -> np.ndarray:
  x = x + np.uint64(0x9E3779B97F4A7C15)
  x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
  x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return x ^ (x >> np.uint64(31))


def stable_hash(keys: np.ndarray, salt: int = 0) -> np.ndarray:
  """splitmix64 of int64 `keys` [N] mixed with `salt`: uint64 [N], identical on every platform."""
  salt_mix = _splitmix64(np.array([salt & _MASK64], np.uint64))[0]
  with np.errstate(over='ignore'):
    return _splitmix64(np.asarray(keys).astype(np.int64).view(np.uint64) ^ salt_mix)


def holdout_mask(ids: np.ndarray, fraction: float = 0.2) -> np.ndarray:
  """bool [N]: the examples of a fixed test holdout, ~`fraction` of them, chosen by id hash.

  Used by datasets without an official test split (rotten_tomatoes, mnist_5k, digits): an
  example is in test iff stable_hash(id, HOLDOUT_SALT) mod 10000 < fraction * 10000.
  """
  return stable_hash(ids, HOLDOUT_SALT) % np.uint64(10_000) < np.uint64(round(fraction * 10_000))


def _order(keys: np.ndarray, seed: int) -> np.ndarray:
  """Permutation sorting `keys` [N] by hash; ties (impossible for distinct keys) by key."""
  return np.lexsort((keys, stable_hash(keys, seed)))


def partition(examples: base.Examples, fractions: dict[str, float], *, seed: int) -> dict:
  """Splits rows into named disjoint parts of the given fractions (summing to <= 1).

  Groups ('group' field, else each id alone) are ordered by hash(group, seed) and cut in order of
  `fractions`; the last part also gets the rounding remainder when fractions sum to 1.
  """
  total = sum(fractions.values())
  if any(f < 0 for f in fractions.values()) or total > 1 + 1e-9:
    raise UserError(f'split fractions {fractions} must be >= 0 and sum to at most 1')
  keys = examples.get('group', examples['id'])
  groups, inverse = np.unique(keys, return_inverse=True)
  ranked = np.empty(len(groups), np.int64)
  ranked[_order(groups, seed)] = np.arange(len(groups))
  rank = ranked[inverse]  # [N] position of each row's group in hash order
  out, start, cum = {}, 0, 0.0
  names = list(fractions)
  for i, name in enumerate(names):
    cum += fractions[name]
    last_takes_all = i == len(names) - 1 and abs(total - 1) < 1e-9
    stop = len(groups) if last_takes_all else int(round(cum * len(groups)))
    rows = np.flatnonzero((rank >= start) & (rank < stop))
    out[name] = base.take(examples, rows[np.argsort(examples['id'][rows], kind='stable')])
    start = stop
  return out


def select(examples: base.Examples, *, seed: int, num_classes: int, balance: bool = False,
           max_examples: int | None = None) -> base.Examples:
  """Optionally class-balances (downsampling every class to the rarest) and caps the rows.

  Rows are kept in hash(id, seed) order, so a cap takes a seeded random subset; with `balance` a
  cap keeps max_examples // C per class. Output sorted by id.
  """
  order = _order(examples['id'], seed)
  if balance:
    counts = np.bincount(examples['label'], minlength=num_classes)
    per_class = counts.min()
    if max_examples is not None:
      per_class = min(per_class, max_examples // num_classes)
    labels = examples['label'][order]
    # rank of each row among earlier rows of its class, in hash order
    rank = np.zeros(len(order), np.int64)
    for c in range(num_classes):
      rank[labels == c] = np.arange((labels == c).sum())
    order = order[rank < per_class]
  elif max_examples is not None:
    order = order[:max_examples]
  return base.take(examples, np.sort(order))


def weak_to_strong(dataset: base.Dataset, *, seed: int = 0, weak_fraction: float = 0.5,
                   val_fraction: float = 0.0, balance: bool = False, balance_test: bool = False,
                   max_weak: int | None = None, max_strong: int | None = None,
                   max_val: int | None = None, max_test: int | None = None,
                   train_split: str = 'train', test_split: str = 'test',
                   hardness: dict | None = None) -> base.Dataset:
  """The protocol's splits: 'weak_train' (A), 'strong_train' (B), 'val' (if val_fraction > 0), 'test'.

  `val_fraction` of the train groups go to 'val', then `weak_fraction` of the rest to A and the
  remainder to B. `balance` and the `max_*` caps apply per part after partitioning (see
  `select`); the test split is only balanced with `balance_test` and capped with `max_test`.
  `hardness=dict(by=<field>|'length', easy_fraction=... or threshold=...)` makes it easy-to-hard
  (Sun et al. 2024; Hase et al. 2024): A, B and val come from the easy part of train, test keeps
  only the items harder than every one of them (`easy_to_hard_dataset`), for every protocol.
  Returns a Dataset with the same metadata and only these splits.
  """
  if hardness:
    h = dict(hardness)
    if h.get('by') == 'scores':
      raise UserError("splits.hardness by='scores' needs per-example scores (the weak model's "
                      "confidence): call splits.easy_to_hard_dataset with scores=; a config can "
                      "use a field or 'length'")
    dataset = easy_to_hard_dataset(dataset, seed=seed, train_split=train_split,
                                   test_split=test_split, **h)
    train_split, test_split = 'train', 'test'
  if not 0 < weak_fraction < 1:
    raise UserError(f'weak_fraction={weak_fraction} must be in (0, 1)')
  if not 0 <= val_fraction < 1:
    raise UserError(f'val_fraction={val_fraction} must be in [0, 1)')
  rest = 1.0 - val_fraction
  fractions = {'val': val_fraction, 'weak_train': rest * weak_fraction,
               'strong_train': rest * (1 - weak_fraction)}
  parts = partition(dataset.split(train_split), fractions, seed=seed)
  caps = {'weak_train': max_weak, 'strong_train': max_strong, 'val': max_val}
  out = {}
  for name in ('weak_train', 'strong_train', 'val'):
    if name == 'val' and val_fraction == 0:
      continue
    out[name] = select(parts[name], seed=seed, num_classes=dataset.num_classes, balance=balance,
                       max_examples=caps[name])
    if base.num_rows(out[name]) == 0:
      raise UserError(f'weak-to-strong split {name!r} of {dataset.name!r} is empty; lower the '
                      'fractions or caps, or turn off balance')
  out['test'] = select(dataset.split(test_split), seed=seed, num_classes=dataset.num_classes,
                       balance=balance_test, max_examples=max_test)
  return dataclasses.replace(dataset, splits=out)


def labelled_unlabelled(dataset: base.Dataset, *, seed: int = 0, per_class: int = 4,
                        max_unlabelled: int | None = None, max_test: int | None = None,
                        train_split: str = 'train', test_split: str = 'test',
                        imbalance: float | None = None, imbalance_u: float | None = None,
                        unlabelled_per_class: int | None = None) -> base.Dataset:
  """The self-training splits: 'labelled' (L), 'unlabelled' (U, labels kept only for reporting
  pseudo-label quality) and 'test'.

  L holds `per_class` examples of every class, the first ones of each class in hash(id, seed)
  order (class-balanced and seeded, as in the SSL benchmarks: CIFAR-10 with 40 labels is 4 per
  class); U is the rest of train plus the dataset's own unlabelled split (`base.UNLABELLED`, e.g.
  STL-10's 100k images, labels -1 = unknown) when it has one, a seeded random `max_unlabelled`
  of it when capped (hash(id, seed) order over all of U). L comes from train alone, so it never
  holds an unknown label. A class with fewer than `per_class` training examples is a UserError
  (as is a class with exactly `per_class` when U would get no other rows: U needs some).

  Long-tailed (`imbalance` = gamma >= 1; see `long_tailed_counts`): L holds N_c =
  floor(per_class gamma^(-c/(C-1))) rows of class c (class 0 the head, as CIFAR-10-LT) and U
  M_c = floor(M_max gamma_u^(-c/(C-1))) of the rest, the next ones of class c in the same hash
  order; gamma_u = `imbalance_u` (default gamma), M_max = `unlabelled_per_class` (default: the
  largest head count every class can follow). Test stays as it is (balanced, as the
  benchmarks). U is drawn by class, so a dataset's own unlabelled split (labels unknown) and
  `max_unlabelled` are UserErrors there.
  """
  if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
    raise UserError(f'labels.per_class={per_class!r} must be an int >= 1')
  train = dataset.split(train_split)
  if not base.known(train['label']).all():
    raise UserError(f'{dataset.name!r} split {train_split!r} has unknown labels (-1); the '
                    f'labelled set is drawn from it, so only the {base.UNLABELLED!r} split may '
                    'hold them')
  extra = dataset.splits.get(base.UNLABELLED)
  order = _order(train['id'], seed)
  labels = np.asarray(train['label'])[order]
  counts = np.bincount(labels, minlength=dataset.num_classes)
  if imbalance is not None or imbalance_u is not None or unlabelled_per_class is not None:
    if extra is not None or max_unlabelled is not None:
      raise UserError('labels.imbalance draws U by class from train; drop max_unlabelled (use '
                      'unlabelled_per_class) and load the dataset without its unlabelled split')
    lab, unl = _long_tailed(dataset, order, labels, counts, per_class, imbalance, imbalance_u,
                            unlabelled_per_class)
    out = {'labelled': base.take(train, lab), 'unlabelled': base.take(train, unl),
           'test': select(dataset.split(test_split), seed=seed, num_classes=dataset.num_classes,
                          max_examples=max_test)}
    return dataclasses.replace(dataset, splits=out)
  room = 0 if extra is not None and base.num_rows(extra) else 1  # train rows U needs per class
  short = [c for c in range(dataset.num_classes) if counts[c] < per_class + room]
  if short:
    c = short[0]
    most = counts[short].min() - room
    raise UserError(f'labels.per_class={per_class} but class {c} ({dataset.label_names[c]!r}) of '
                    f'{dataset.name!r} has only {counts[c]} training examples'
                    f'{" (and U needs some)" if room else ""}; '
                    + (f'use per_class <= {most}' if most else 'it cannot give a labelled set'))
  rank = np.zeros(len(order), np.int64)
  for c in range(dataset.num_classes):
    rank[labels == c] = np.arange((labels == c).sum())
  chosen = rank < per_class
  rest = np.sort(order[~chosen])  # rows of train in U
  ids = train['id'][rest] if extra is None else np.concatenate([train['id'][rest], extra['id']])
  pick = _order(ids, seed)  # hash order over all of U: without `extra`, that of order[~chosen]
  pick = np.sort(pick if max_unlabelled is None else pick[:max_unlabelled])
  unlabelled = base.take(train, rest[pick[pick < len(rest)]])
  if extra is not None:
    unlabelled = _join(dataset.name, train_split, unlabelled,
                       base.take(extra, pick[pick >= len(rest)] - len(rest)))
  out = {'labelled': base.take(train, np.sort(order[chosen])),
         'unlabelled': unlabelled,
         'test': select(dataset.split(test_split), seed=seed, num_classes=dataset.num_classes,
                        max_examples=max_test)}
  return dataclasses.replace(dataset, splits=out)


def long_tailed_counts(n_max: int, gamma: float, num_classes: int) -> np.ndarray:
  """[C] int64 N_c = floor(n_max gamma^(-c/(C-1))), at least 1: the CIFAR-10-LT profile (Cui et
  al. 2019; the imbalanced-SSL benchmarks of DARP, Adsh and USB: N_max 1500 labelled, 3000
  unlabelled, gamma 100 or 150). gamma = 1 is balanced; the 1e-9 keeps an exact product (e.g.
  1500 / 100) from flooring one below."""
  exponent = np.arange(num_classes) / max(num_classes - 1, 1)
  return np.maximum(np.floor(n_max * float(gamma) ** -exponent + 1e-9), 1).astype(np.int64)


def _gamma(value, key: str) -> float:
  if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 1 or (
      not np.isfinite(value)):
    raise UserError(f'{key}={value!r} must be a number >= 1 (N_c = N_max gamma^(-c/(C-1)): '
                    '1 is balanced, 100 is CIFAR-10-LT)')
  return float(value)


def _long_tailed(dataset, order, labels, counts, per_class, imbalance, imbalance_u, m_max):
  """(rows of L, rows of U) of train, sorted: the first N_c of class c in hash order, then M_c."""
  num_classes = dataset.num_classes
  gamma = _gamma(1 if imbalance is None else imbalance, 'labels.imbalance')
  gamma_u = gamma if imbalance_u is None else _gamma(imbalance_u, 'labels.imbalance_u')
  n_l = long_tailed_counts(per_class, gamma, num_classes)
  room = counts - n_l
  if (room < 1).any():
    c = int(np.flatnonzero(room < 1)[0])
    raise UserError(f'labels.per_class={per_class} with imbalance {gamma:g} puts {n_l[c]} labels '
                    f'on class {c} ({dataset.label_names[c]!r}), which has {counts[c]} training '
                    'examples and U needs some; lower per_class')
  ratio = float(gamma_u) ** -(np.arange(num_classes) / max(num_classes - 1, 1))
  if m_max is None:
    m_max = int(np.min(np.floor(room / ratio + 1e-9)))
  elif isinstance(m_max, bool) or not isinstance(m_max, numbers.Integral) or m_max < 1:
    raise UserError(f'labels.unlabelled_per_class={m_max!r} must be an int >= 1 (U\'s head class)')
  n_u = long_tailed_counts(m_max, gamma_u, num_classes)
  if (n_u > room).any():
    c = int(np.flatnonzero(n_u > room)[0])
    raise UserError(f'labels.unlabelled_per_class={m_max} asks {n_u[c]} unlabelled rows of class '
                    f'{c} ({dataset.label_names[c]!r}), which has {room[c]} left after L; use '
                    f'unlabelled_per_class <= {int(np.min(np.floor(room / ratio + 1e-9)))}')
  rank = np.zeros(len(order), np.int64)
  for c in range(num_classes):
    rank[labels == c] = np.arange((labels == c).sum())
  lab = rank < n_l[labels]
  unl = ~lab & (rank < (n_l + n_u)[labels])
  return np.sort(order[lab]), np.sort(order[unl])


def _join(name: str, train_split: str, rows: base.Examples, extra: base.Examples) -> base.Examples:
  """U's rows of train followed by those of the dataset's unlabelled split (same fields; a
  'group' on one side only is dropped: it matters for partitions of train, not for U)."""
  differ = sorted((set(rows) ^ set(extra)) - {'group'})
  if differ:
    raise UserError(f'{name!r}: fields {differ} are in only one of the {train_split!r} and '
                    f'{base.UNLABELLED!r} splits; U joins them, so give both the same fields')
  return base.concat([{k: part[k] for k in rows if k in extra} for part in (rows, extra)])


# Easy-to-hard generalization (Sun et al. 2024, "Easy-to-Hard Generalization: Scalable Alignment
# Beyond Human Supervision"; Hase et al. 2024, "The Unreasonable Effectiveness of Easy Training
# Data for Hard Tasks"): train (or fit the reward model) on easy items, evaluate on hard ones.
HARDNESS_BY = ("a numeric field (e.g. 'carries', 'level')", "'length'", "'scores'")


def hardness(examples: base.Examples, *, by: str, scores=None, tokenizer=None,
             text_field: str = 'text') -> np.ndarray:
  """float64 [N]: each example's hardness (higher = harder).

  by: a numeric 1-D field of `examples` (a grade, a level, 'carries'); 'length': the length of
    `text_field`, in tokens when `tokenizer` (a tokenizer.json path or `tokenizers.Tokenizer`)
    is given, else in characters; 'scores': the caller's `scores` [N], e.g. 1 - the weak model's
    confidence.
  """
  n = base.num_rows(examples)
  if by == 'scores':
    if scores is None:
      raise UserError("hardness by='scores' needs scores=[N] (higher = harder, e.g. 1 - the weak "
                      "model's confidence)")
    h = np.asarray(scores, np.float64)
    if h.shape != (n,) or not np.isfinite(h).all():
      raise UserError(f'hardness scores have shape {h.shape} (finite: {np.isfinite(h).all()}); '
                      f'give {n} finite values, one per example')
    return h
  if by == 'length':
    if text_field not in examples:
      raise UserError(f"hardness by='length' reads field {text_field!r}, which the examples do "
                      f'not have ({sorted(examples)}); set text_field')
    texts = [str(t) for t in examples[text_field]]
    if tokenizer is None:
      return np.array([len(t) for t in texts], np.float64).reshape(n)
    return np.array(_token_lengths(texts, tokenizer), np.float64).reshape(n)
  value = examples.get(by)
  numeric = sorted(k for k, v in examples.items() if k not in ('id', 'group')
                   and v.ndim == 1 and np.issubdtype(v.dtype, np.number))
  if value is None or value.ndim != 1 or not np.issubdtype(value.dtype, np.number):
    raise UserError(f'hardness by={by!r} is not a numeric field of the examples; use one of '
                    f'{numeric + ["length", "scores"]}')
  return value.astype(np.float64)


def _token_lengths(texts: list[str], tokenizer) -> list[int]:
  """Token counts of `texts` (special tokens included), whatever padding the tokenizer has set."""
  import tokenizers  # here: only token lengths need it
  from w2s.data import text
  tok = text.load_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer
  if tok.padding is not None or tok.truncation is not None:
    tok = tokenizers.Tokenizer.from_str(tok.to_str())
    tok.no_padding()
    tok.no_truncation()
  return [len(e.ids) for e in tok.encode_batch(texts)]


def _easy_groups(examples: base.Examples, h: np.ndarray, *, easy_fraction, threshold,
                 seed: int) -> np.ndarray:
  """bool [N]: the easy rows. A group ('group', else each id) is as hard as its hardest row and
  lands on one side."""
  if (easy_fraction is None) == (threshold is None):
    raise UserError('easy-to-hard needs exactly one of easy_fraction (the easiest share of '
                    'examples) and threshold (hardness <= threshold is easy)')
  keys = examples.get('group', examples['id'])
  groups, inverse = np.unique(keys, return_inverse=True)
  gh = np.full(len(groups), -np.inf)
  np.maximum.at(gh, inverse, h)
  if threshold is not None:
    easy = gh <= threshold
  else:
    if not 0 < easy_fraction < 1:
      raise UserError(f'easy_fraction={easy_fraction} must be in (0, 1)')
    order = np.lexsort((groups, stable_hash(groups, seed), gh))  # by hardness, ties by hash
    easy = np.zeros(len(groups), bool)
    easy[order[:int(round(easy_fraction * len(groups)))]] = True
  return easy[inverse]


def _rows(examples: base.Examples, keep: np.ndarray) -> base.Examples:
  """The rows where bool `keep` [N] holds, sorted by id."""
  rows = np.flatnonzero(keep)
  return base.take(examples, rows[np.argsort(examples['id'][rows], kind='stable')])


def easy_to_hard(examples: base.Examples, *, by: str, easy_fraction: float | None = None,
                 threshold: float | None = None, scores=None, tokenizer=None,
                 text_field: str = 'text', seed: int = 0) -> tuple[base.Examples, base.Examples]:
  """(easy, hard): the examples split by `hardness` (see there for `by`, `scores`, `tokenizer`,
  `text_field`), each sorted by id; train on the easy part, test on the hard one.

  Give one of `threshold` (hardness <= threshold is easy) or `easy_fraction` (the easiest share
  of the groups; ties at the cut broken by hash(group, seed), so deterministic). Examples sharing
  a 'group' stay together, as hard as their hardest member. An empty side is a UserError.
  """
  h = hardness(examples, by=by, scores=scores, tokenizer=tokenizer, text_field=text_field)
  easy = _easy_groups(examples, h, easy_fraction=easy_fraction, threshold=threshold, seed=seed)
  if easy.all() or not easy.any():
    side = 'hard' if easy.all() else 'easy'
    raise UserError(f'easy-to-hard by={by!r}: the {side} part is empty (hardness from {h.min():g} '
                    f'to {h.max():g}); choose a threshold or easy_fraction inside that range')
  return _rows(examples, easy), _rows(examples, ~easy)


def easy_to_hard_dataset(dataset: base.Dataset, *, by: str, easy_fraction: float | None = None,
                         threshold: float | None = None, scores: dict | None = None,
                         tokenizer=None, text_field: str = 'text', seed: int = 0,
                         train_split: str = 'train', test_split: str = 'test') -> base.Dataset:
  """A Dataset whose 'train' is the easy part of `train_split` and whose 'test' holds the rows of
  `test_split` harder than every training row ('test_easy': the other test rows, to report both).

  The cut is made on train (`easy_to_hard`: `threshold`, or `easy_fraction` of train's groups)
  and applied to test at train's hardest easy value, so every test item is strictly harder than
  every training item. `scores`: {split: [N]} for by='scores'. Feed the result to
  `weak_to_strong` (A and B then both come from the easy items).
  """
  scores = scores or {}
  train, test = dataset.split(train_split), dataset.split(test_split)
  kw = dict(by=by, tokenizer=tokenizer, text_field=text_field)
  h_train = hardness(train, scores=scores.get(train_split), **kw)
  easy = _easy_groups(train, h_train, easy_fraction=easy_fraction, threshold=threshold,
                         seed=seed)
  if not easy.any():
    raise UserError(f'easy-to-hard by={by!r}: no {train_split!r} example is easy (hardness from '
                    f'{h_train.min():g} to {h_train.max():g}); raise threshold or easy_fraction')
  cut = float(h_train[easy].max()) if threshold is None else float(threshold)
  h_test = hardness(test, scores=scores.get(test_split), **kw)
  test_easy = _easy_groups(test, h_test, easy_fraction=None, threshold=cut, seed=seed)
  if test_easy.all():
    raise UserError(f'easy-to-hard by={by!r}: no {test_split!r} example is harder than the '
                    f'training ones (hardness > {cut:g}); lower threshold or easy_fraction')
  out = {'train': _rows(train, easy), 'test': _rows(test, ~test_easy),
         'test_easy': _rows(test, test_easy)}
  return dataclasses.replace(dataset, splits=out)
