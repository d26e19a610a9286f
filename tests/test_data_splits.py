"""Weak-to-strong partitions: disjoint, covering, seeded, order- and process-independent; the
self-training split (L, U, test) with a dataset's own unlabelled split (labels -1) joining U."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from w2s.data import base
from w2s.data import splits
from w2s.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _dataset(n=1000, groups=None, num_classes=2):
  rng = np.random.default_rng(0)
  ids = rng.permutation(10 * n)[:n].astype(np.int64)  # sparse, unordered ids
  ex = {'id': ids, 'label': (rng.random(n) < 0.3).astype(np.int64),
        'x': rng.random((n, 3)).astype(np.float32)}
  if groups:
    ex['group'] = ids // groups
  test = {'id': np.arange(10 * n, 10 * n + 100, dtype=np.int64),
          'label': np.arange(100, dtype=np.int64) % num_classes,
          'x': np.zeros((100, 3), np.float32)}
  return base.Dataset('toy', num_classes, ['a', 'b'], 'vector', {'train': ex, 'test': test})


def _splitmix64_reference(x: int) -> int:
  mask = (1 << 64) - 1
  x = (x + 0x9E3779B97F4A7C15) & mask
  x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
  x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
  return x ^ (x >> 31)


def test_stable_hash_is_splitmix64():
  keys = np.array([0, 1, 12345, 2**40 + 7, -1], np.int64)
  salt = 99
  got = splits.stable_hash(keys, salt)
  salt_mix = _splitmix64_reference(salt)
  want = [_splitmix64_reference((int(k) & ((1 << 64) - 1)) ^ salt_mix) for k in keys]
  assert [int(g) for g in got] == want


def test_holdout_fraction():
  mask = splits.holdout_mask(np.arange(100_000), 0.2)
  assert abs(mask.mean() - 0.2) < 0.005


def test_partition_disjoint_covering_and_sized():
  ds = _dataset()
  out = splits.weak_to_strong(ds, seed=0, val_fraction=0.1)
  parts = [out.splits[k]['id'] for k in ('weak_train', 'strong_train', 'val')]
  all_ids = np.concatenate(parts)
  assert len(np.unique(all_ids)) == len(all_ids) == 1000
  assert set(all_ids) == set(ds.splits['train']['id'])
  assert [len(p) for p in parts] == [450, 450, 100]
  np.testing.assert_array_equal(out.splits['test']['id'], ds.splits['test']['id'])
  for k, ex in out.splits.items():  # rows stay aligned with their ids
    src = ds.splits['test' if k == 'test' else 'train']
    pos = {i: j for j, i in enumerate(src['id'])}
    np.testing.assert_array_equal(ex['x'], src['x'][[pos[i] for i in ex['id']]])


def test_seeded_and_independent_of_row_order():
  ds = _dataset()
  a = splits.weak_to_strong(ds, seed=3)
  shuffled = base.take(ds.splits['train'], np.random.default_rng(1).permutation(1000))
  b = splits.weak_to_strong(base.Dataset('toy', 2, ['a', 'b'], 'vector',
                                         {'train': shuffled, 'test': ds.splits['test']}), seed=3)
  c = splits.weak_to_strong(ds, seed=4)
  for k in ('weak_train', 'strong_train'):
    np.testing.assert_array_equal(a.splits[k]['id'], b.splits[k]['id'])
  assert not np.array_equal(a.splits['weak_train']['id'], c.splits['weak_train']['id'])


_IN_OTHER_PROCESS = textwrap.dedent('''
    import numpy as np, sys
    sys.path.insert(0, sys.argv[1])
    from tests.test_data_splits import _dataset
    from w2s.data import splits
    out = splits.weak_to_strong(_dataset(groups=3), seed=7, val_fraction=0.2, balance=True)
    print(' '.join(str(int(i)) for k in ('weak_train', 'strong_train', 'val') for i in out.splits[k]['id']))
''')


def test_identical_in_another_process_with_other_hash_seed_and_devices():
  out = splits.weak_to_strong(_dataset(groups=3), seed=7, val_fraction=0.2, balance=True)
  mine = ' '.join(str(int(i)) for k in ('weak_train', 'strong_train', 'val')
                  for i in out.splits[k]['id'])
  env = {**os.environ, 'PYTHONHASHSEED': '123', 'JAX_PLATFORMS': 'cpu',
         'XLA_FLAGS': '--xla_force_host_platform_device_count=3'}
  got = subprocess.run([sys.executable, '-c', _IN_OTHER_PROCESS, ROOT], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
  assert got.returncode == 0, got.stderr[-2000:]
  assert got.stdout.strip() == mine


def test_groups_stay_together():
  ds = _dataset(groups=4)
  out = splits.weak_to_strong(ds, seed=0, val_fraction=0.2)
  owner = {}
  for k in ('weak_train', 'strong_train', 'val'):
    for g in np.unique(out.splits[k]['group']):
      assert owner.setdefault(int(g), k) == k


def test_balance_and_caps():
  ds = _dataset()
  out = splits.weak_to_strong(ds, seed=0, balance=True, max_weak=100, max_test=10)
  assert np.bincount(out.splits['weak_train']['label']).tolist() == [50, 50]
  strong = np.bincount(out.splits['strong_train']['label'])
  assert strong[0] == strong[1] and strong[0] > 100
  assert len(out.splits['test']['id']) == 10
  unbalanced = splits.weak_to_strong(ds, seed=0, max_strong=77)
  assert len(unbalanced.splits['strong_train']['id']) == 77


def test_bad_fractions_are_user_errors():
  with pytest.raises(UserError):
    splits.weak_to_strong(_dataset(), weak_fraction=1.0)
  with pytest.raises(UserError, match='empty'):
    splits.weak_to_strong(_dataset(n=3), weak_fraction=0.1)


def _with_unlabelled(n_unl=300):
  """`_dataset` plus a split 'unlabelled' of n_unl rows with label -1 (ids with their own code)."""
  ds = _dataset()
  rows = np.arange(n_unl)
  unl = {'id': base.split_ids('unlabelled', rows), 'label': np.full(n_unl, -1, np.int64),
         'x': np.ones((n_unl, 3), np.float32)}
  return base.check(base.Dataset('toy', 2, ['a', 'b'], 'vector', {**ds.splits, 'unlabelled': unl}))


def _reference_u(ds, seed, per_class, cap):
  """U as labelled_unlabelled drew it before unlabelled splits: the rest of train in hash order."""
  train = ds.split('train')
  order = splits._order(train['id'], seed)
  labels = train['label'][order]
  rank = np.zeros(len(order), np.int64)
  for c in range(ds.num_classes):
    rank[labels == c] = np.arange((labels == c).sum())
  rest = order[rank >= per_class]
  return train['id'][np.sort(rest[:cap] if cap else rest)]  # rows in train's order


def test_labelled_unlabelled_adds_the_unlabelled_split_to_u_only():
  ds = _with_unlabelled()
  out = splits.labelled_unlabelled(ds, seed=3, per_class=5).splits
  lab, unl, test = out['labelled'], out['unlabelled'], out['test']
  ids = np.concatenate([lab['id'], unl['id'], test['id']])
  assert len(np.unique(ids)) == len(ids)  # disjoint, ids unique
  assert base.known(lab['label']).all() and base.known(test['label']).all()  # -1 only in U
  assert np.bincount(lab['label']).tolist() == [5, 5]
  train_ids = set(ds.split('train')['id'].tolist())
  assert set(lab['id'].tolist()) | set(unl['id'][base.known(unl['label'])].tolist()) == train_ids
  unknown = unl['id'][~base.known(unl['label'])]
  np.testing.assert_array_equal(unknown, ds.split('unlabelled')['id'])  # all 300 of them
  assert len(unl['id']) == 1000 - 10 + 300
  k = base.known(unl['label'])
  assert k[:990].all() and not k[990:].any()  # train's rows (in their order), then the split's
  base.check(splits.labelled_unlabelled(ds, seed=3, per_class=5))  # -1 allowed in 'unlabelled'
  # without an unlabelled split U is what it always was
  for cap in (None, 100):
    plain = splits.labelled_unlabelled(_dataset(), seed=3, per_class=5, max_unlabelled=cap)
    np.testing.assert_array_equal(plain.splits['unlabelled']['id'],
                                  _reference_u(_dataset(), 3, 5, cap))


def test_max_unlabelled_caps_u_with_a_seeded_draw_over_both_parts():
  ds = _with_unlabelled()
  a = splits.labelled_unlabelled(ds, seed=0, per_class=5, max_unlabelled=400).splits['unlabelled']
  again = splits.labelled_unlabelled(ds, seed=0, per_class=5, max_unlabelled=400)
  other = splits.labelled_unlabelled(ds, seed=1, per_class=5, max_unlabelled=400)
  assert len(a['id']) == 400
  np.testing.assert_array_equal(a['id'], again.splits['unlabelled']['id'])
  assert set(a['id'].tolist()) != set(other.splits['unlabelled']['id'].tolist())
  unknown = (~base.known(a['label'])).sum()
  assert 0 < unknown < 300 and 0 < 400 - unknown < 990  # drawn from both, ~300/1290 unknown
  assert 50 < unknown < 150


def test_labelled_unlabelled_refuses_unknown_labels_in_train_and_counts_u():
  ds = _with_unlabelled()
  bad = dict(ds.splits['train'], label=ds.splits['train']['label'].copy())
  bad['label'][0] = -1
  with pytest.raises(UserError, match="'train' has unknown labels"):
    splits.labelled_unlabelled(base.Dataset('toy', 2, ['a', 'b'], 'vector',
                                            {**ds.splits, 'train': bad}), per_class=1)
  # a class may be labelled whole when the unlabelled split keeps U non-empty (STL-10 @ 5,000)
  n_min = int(np.bincount(ds.split('train')['label']).min())
  out = splits.labelled_unlabelled(ds, per_class=n_min).splits
  assert len(out['labelled']['id']) == 2 * n_min and len(out['unlabelled']['id']) > 300
  with pytest.raises(UserError, match=r'and U needs some\); use per_class <= '):
    splits.labelled_unlabelled(_dataset(), per_class=n_min)
  with pytest.raises(UserError, match='has only'):
    splits.labelled_unlabelled(ds, per_class=n_min + 1)
