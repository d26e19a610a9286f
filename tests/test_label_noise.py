"""Label-noise injectors (w2s/label_noise): rates, transition matrices, determinism by id, the
training split only, one end-to-end noisy run and one-line errors at --dry_run."""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from w2s import label_noise, options
from w2s.errors import UserError
from w2s.label_noise import asymmetric, instance, symmetric

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N, C = 10_000, 10


def _data(n=N, c=C, d=8):
  rng = np.random.default_rng(123)
  return (rng.integers(0, c, n).astype(np.int64), np.arange(n, dtype=np.int64) * 7 + 3,
          rng.standard_normal((n, d)).astype(np.float32))


def _within_3se(flipped, n, p):
  return abs(flipped / n - p) <= 3 * np.sqrt(p * (1 - p) / n)


def test_symmetric_flips_about_rate_never_to_itself_and_uniformly():
  labels, ids, _ = _data()
  noisy, expected = symmetric.corrupt(labels=labels, ids=ids, num_classes=C, inputs=None,
                                      rate=0.4, seed=0)
  flipped = noisy != labels
  assert _within_3se(flipped.sum(), N, 0.4), flipped.mean()
  # uniform over the 9 others: the offset (noisy - label) % C of a flip is 1..9 equally often
  offsets = ((noisy - labels) % C)[flipped]
  assert offsets.min() >= 1  # never the same class
  counts = np.bincount(offsets, minlength=C)[1:]
  e = flipped.sum() / (C - 1)
  chi2 = float(((counts - e) ** 2 / e).sum())
  assert chi2 < 26.1, (counts, chi2)  # chi-square 8 dof, p = 0.001
  np.testing.assert_allclose(expected.sum(1), 1)
  assert expected[0, 0] == pytest.approx(0.6) and expected[0, 1] == pytest.approx(0.4 / 9)


def test_symmetric_rate_zero_changes_nothing():
  labels, ids, _ = _data(1000)
  noisy, _ = symmetric.corrupt(labels=labels, ids=ids, num_classes=C, inputs=None, rate=0.0)
  np.testing.assert_array_equal(noisy, labels)


def test_asymmetric_pairs_at_rate_one_follow_the_mapping_exactly():
  labels, ids, _ = _data()
  pairs = [[9, 1], [2, 0], [3, 5], [5, 3], [4, 7]]  # CIFAR-10 flips
  noisy, t = asymmetric.corrupt(labels=labels, ids=ids, num_classes=C, inputs=None, rate=0.999999, pairs=pairs)
  mapping = dict(pairs)
  # rate just under 1 (rate must be < 1): every mapped class flips unless u >= 0.999999
  want = np.array([mapping.get(int(y), int(y)) for y in labels])
  assert np.sum(noisy != want) <= 1
  assert t[3, 5] == pytest.approx(0.999999) and t[0, 0] == 1 and t[1, 1] == 1


def test_asymmetric_matrix_of_permutation_is_exact_and_rate_in_expectation():
  labels, ids, _ = _data()
  perm = np.roll(np.eye(C), 1, axis=1)  # T[i, i + 1] = 1: rate 1.0 through the matrix
  noisy, _ = asymmetric.corrupt(labels=labels, ids=ids, num_classes=C, inputs=None,
                                matrix=perm.tolist())
  np.testing.assert_array_equal(noisy, (labels + 1) % C)
  noisy, t = asymmetric.corrupt(labels=labels, ids=ids, num_classes=C, inputs=None, rate=0.3)
  flipped = noisy != labels
  assert _within_3se(flipped.sum(), N, 0.3)
  np.testing.assert_array_equal(noisy[flipped], (labels[flipped] + 1) % C)  # next class only
  emp = label_noise.realised(labels, noisy, C)
  for i in range(C):  # each row within 3 standard errors of its expected 0.3
    n_i = np.sum(labels == i)
    assert _within_3se(emp[i, (i + 1) % C] * n_i, n_i, t[i, (i + 1) % C])


def test_instance_has_mean_rate_and_flips_more_with_the_projection():
  labels, ids, x = _data()
  noisy, expected = instance.corrupt(labels=labels, ids=ids, num_classes=C, inputs=x, rate=0.3)
  assert expected is None
  flipped = noisy != labels
  assert _within_3se(flipped.sum(), N, 0.3)
  p, z = instance.flip_probability(x, ids, rate=0.3, strength=1.0, seed=0)
  assert p.mean() == pytest.approx(0.3) and p.min() >= 0 and p.max() <= 0.6
  assert np.corrcoef(p, z)[0, 1] > 0.9  # monotone in the projection
  lo, hi = z < np.quantile(z, 0.25), z > np.quantile(z, 0.75)
  assert flipped[hi].mean() > flipped[lo].mean() + 0.2  # ~0.525 vs ~0.075 expected


@pytest.mark.parametrize('mod, kw', [(symmetric, dict(rate=0.4)), (asymmetric, dict(rate=0.4)),
                                     (instance, dict(rate=0.4))])
def test_same_noisy_label_per_id_under_shuffling_and_seed_changes_it(mod, kw):
  labels, ids, x = _data(2000)
  a, _ = mod.corrupt(labels=labels, ids=ids, num_classes=C, inputs=x, seed=5, **kw)
  perm = np.random.default_rng(0).permutation(len(ids))
  b, _ = mod.corrupt(labels=labels[perm], ids=ids[perm], num_classes=C, inputs=x[perm], seed=5,
                     **kw)
  np.testing.assert_array_equal(a[perm], b)
  c, _ = mod.corrupt(labels=labels, ids=ids, num_classes=C, inputs=x, seed=6, **kw)
  assert np.any(a != c)


def test_apply_records_realised_rate_and_transition():
  labels, ids, x = _data(1000)
  raw = {'id': ids, 'label': labels, 'x': x}
  out, rec = label_noise.apply(options.plugin('label_noise', dict(name='symmetric', rate=0.4),
                                              'label_noise'), raw, num_classes=C,
                               input_kind='vector')
  assert rec['realised_rate'] == pytest.approx(np.mean(out['label'] != labels))
  assert rec['num_flipped'] == int(np.sum(out['label'] != labels)) and rec['num_train'] == 1000
  t = np.array(rec['transition'])
  np.testing.assert_allclose(t.sum(1), 1, atol=1e-5)
  assert np.all(np.diag(t) > 0.4) and raw['label'] is labels  # the input is not modified


@pytest.mark.parametrize('mod, kw, words', [
    (symmetric, dict(rate=1.0), 'rate=1.0'), (symmetric, dict(rate=-0.1), 'rate=-0.1'),
    (asymmetric, dict(matrix=(np.eye(C) * 0.9).tolist()), 'rows'),
    (asymmetric, dict(rate=0.2, pairs=[[3, 10]]), 'unknown class'),
    (instance, dict(rate=0.2, strength=2.0), 'strength')])
def test_bad_options_are_user_errors(mod, kw, words):
  labels, ids, x = _data(10)
  with pytest.raises(UserError, match=words.replace('.', r'\.')):
    mod.corrupt(labels=labels, ids=ids, num_classes=C, inputs=x, **kw)


def _config(arg):
  spec = importlib.util.spec_from_file_location('sup_cfg', f'{REPO}/configs/supervised.py')
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)


def test_eval_labels_untouched_and_train_labels_noisy():
  from w2s.protocols import supervised
  r = supervised.check(_config('runlocal,noise=symmetric,noise_rate=0.4'))
  train_ex, eval_ex, rec = supervised.splits(r, 'train', 'test')
  truth_test = r['data'].split('test')['label']
  np.testing.assert_array_equal(np.argmax(eval_ex['label'], -1), truth_test)
  truth_train = r['data'].split('train')['label']
  flipped = np.argmax(train_ex['label'], -1) != truth_train
  assert flipped.mean() == pytest.approx(rec['realised_rate'])
  assert _within_3se(flipped.sum(), len(truth_train), 0.4)


def _cli(*args):
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  return subprocess.run([sys.executable, '-m', 'w2s.main', *args], capture_output=True,
                        text=True, timeout=300, cwd=REPO, env=env)


def test_end_to_end_supervised_run_records_realised_rate(tmp_path):
  out = _cli('--config=configs/supervised.py:runlocal,noise=symmetric,noise_rate=0.4',
             f'--workdir={tmp_path}')
  assert out.returncode == 0, out.stderr[-3000:]
  rec = json.load(open(tmp_path / 'results.json'))['label_noise']
  assert rec['name'] == 'symmetric' and rec['rate'] == 0.4
  assert _within_3se(rec['num_flipped'], rec['num_train'], 0.4), rec['realised_rate']
  assert len(rec['transition']) == 10 and rec['expected_transition'][0][0] == pytest.approx(0.6)


@pytest.mark.parametrize('flags, words', [
    (['--config.label_noise.rate=1.5'], 'rate=1.5'),
    (["--config.label_noise={'name': 'asymmetric', 'rate': 0.2, 'pairs': [[3, 11]]}"],
     'unknown class'),
    (['--config.label_noise.name=nope'], 'nope')])
def test_bad_options_are_one_error_line_at_dry_run(tmp_path, flags, words):
  out = _cli('--config=configs/supervised.py:runlocal,noise=symmetric', f'--workdir={tmp_path}',
             '--dry_run', *flags)
  lines = out.stderr.strip().splitlines()
  assert out.returncode == 2, (out.returncode, out.stderr[-3000:])
  assert len(lines) == 1 and lines[0].startswith('error:') and words in lines[0], lines
