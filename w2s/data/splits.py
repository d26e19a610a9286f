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
                   train_split: str = 'train', test_split: str = 'test') -> base.Dataset:
  """The protocol's splits: 'weak_train' (A), 'strong_train' (B), 'val' (if val_fraction > 0), 'test'.

  `val_fraction` of the train groups go to 'val', then `weak_fraction` of the rest to A and the
  remainder to B. `balance` and the `max_*` caps apply per part after partitioning (see
  `select`); the test split is only balanced with `balance_test` and capped with `max_test`.
  Returns a Dataset with the same metadata and only these splits.
  """
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
                        train_split: str = 'train', test_split: str = 'test') -> base.Dataset:
  """The self-training splits: 'labelled' (L), 'unlabelled' (U, labels kept only for reporting
  pseudo-label quality) and 'test'.

  L holds `per_class` examples of every class, the first ones of each class in hash(id, seed)
  order (class-balanced and seeded, as in the SSL benchmarks: CIFAR-10 with 40 labels is 4 per
  class); U is the rest of train plus the dataset's own unlabelled split (`base.UNLABELLED`, e.g.
  STL-10's 100k images, labels -1 = unknown) when it has one, a seeded random `max_unlabelled`
  of it when capped (hash(id, seed) order over all of U). L comes from train alone, so it never
  holds an unknown label. A class with fewer than `per_class` training examples is a UserError
  (as is a class with exactly `per_class` when U would get no other rows: U needs some).
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


def _join(name: str, train_split: str, rows: base.Examples, extra: base.Examples) -> base.Examples:
  """U's rows of train followed by those of the dataset's unlabelled split (same fields; a
  'group' on one side only is dropped: it matters for partitions of train, not for U)."""
  differ = sorted((set(rows) ^ set(extra)) - {'group'})
  if differ:
    raise UserError(f'{name!r}: fields {differ} are in only one of the {train_split!r} and '
                    f'{base.UNLABELLED!r} splits; U joins them, so give both the same fields')
  return base.concat([{k: part[k] for k in rows if k in extra} for part in (rows, extra)])
