"""The label_proportions protocol: seeded bags and their proportions, bag size 1 = supervised, the
configs/llp.py runlocal run end to end with stage reuse on rerun, and bad input as one line."""
import json

import numpy as np
import pytest

from w2s import train
from w2s.configs import llp as llp_config
from w2s.errors import UserError
from w2s.protocols import label_proportions as lp


def _raw(n=50, num_classes=3):
  return {'id': np.arange(100, 100 + n) * 3, 'label': np.arange(n) % num_classes,
          'x': np.arange(n, dtype=np.float32)}


def test_bags_are_seeded_whole_and_carry_their_proportions():
  raw = _raw()
  kept, cols = lp.make_bags(raw, 8, seed=0, num_classes=3)
  assert len(kept['id']) == 48 and np.all(np.diff(kept['id']) > 0)  # 50 // 8 bags, id order
  np.testing.assert_array_equal(kept['x'], (kept['id'] // 3 - 100).astype(np.float32))
  ids, counts = np.unique(cols['bag_id'], return_counts=True)
  assert len(ids) == 6 and set(counts) == {8} and set(cols['bag_size']) == {8}
  for b in ids:  # every member carries its bag's class shares, by hand
    members = cols['bag_id'] == b
    want = np.bincount(kept['label'][members], minlength=3) / 8
    np.testing.assert_allclose(cols['label'][members], np.tile(want, (8, 1)))
  again = lp.make_bags(raw, 8, seed=0, num_classes=3)[1]
  np.testing.assert_array_equal(again['bag_id'], cols['bag_id'])
  other = lp.make_bags(raw, 8, seed=1, num_classes=3)[1]
  assert not np.array_equal(other['bag_id'], cols['bag_id'])
  # the prior the protocol gives easyllp: the mean of the rows' labels = the classes' shares
  np.testing.assert_allclose(cols['label'].mean(0), np.bincount(kept['label'], minlength=3) / 48,
                             rtol=1e-6)


def test_bag_size_one_is_exactly_the_supervised_labels():
  raw = _raw()
  kept, cols = lp.make_bags(raw, 1, seed=3, num_classes=3)
  assert len(kept['id']) == 50
  np.testing.assert_array_equal(cols['label'], np.eye(3, dtype=np.float32)[raw['label']])


def _cfg(arg, **over):
  c = llp_config.get_config(arg)
  for k, v in over.items():
    node, *path = k.split('.')
    target = c[node]
    for p in path[:-1]:
      target = target[p]
    target[path[-1]] = v
  return c


def test_llp_config_runs_end_to_end_and_reuses_its_stages(tmp_path, capsys):
  config = llp_config.get_config('runlocal,loss=proportion')
  results = train.train_and_evaluate(config, str(tmp_path))
  assert results['seeds'] == [0, 1]
  for rec in results['per_seed']:
    assert (rec['bag_size'], rec['n_train'], rec['n_bags'], rec['n_dropped'], rec['n_test']) == (
        8, 256, 32, 0, 256)
    assert 0.0 <= rec['acc'] <= 1.0 and 0.0 <= rec['train_acc'] <= 1.0
  assert results['summary']['acc']['n'] == 2
  saved = json.load(open(tmp_path / 'results.json'))
  assert saved['summary']['acc']['mean'] == pytest.approx(results['summary']['acc']['mean'])
  stages = json.load(open(tmp_path / results['per_seed'][0]['stages']['llp'] / 'done.json'))
  assert stages['train_metrics']['members_per_bag'] == 8  # the trainer batched whole bags
  capsys.readouterr()
  rerun = train.train_and_evaluate(config, str(tmp_path))
  assert capsys.readouterr().out.count('[llp] done earlier, skipped') == 2
  assert [r['acc'] for r in rerun['per_seed']] == [r['acc'] for r in results['per_seed']]
  from w2s import report  # the study's table reads these results
  report.report([str(tmp_path)], str(tmp_path / 'report'))
  table = open(tmp_path / 'report' / 'report.md').read()
  acc = results['summary']['acc']
  assert 'acc % | ece % | train_acc %' in table and 'smoke test' in table
  assert ', '.join(f'{100 * v:.2f}' for v in acc['values']) + ' (n=2: no interval)' in table
  assert len(llp_config.get_sweep('runlocal')) == 7  # no bags of 128 in a batch of 32
  points = llp_config.get_sweep()
  assert len(points) == 10 and points[-1] == {'bags.size': 1, 'model.loss': {'name': 'xent'}}
  assert {(p['bags.size'], p['model.loss']['name']) for p in points[:-1]} == {
      (k, n) for k in (8, 32, 128) for n in ('easyllp', 'proportion', 'xent')}


def test_bag_size_one_easyllp_trains_like_supervised_xent(tmp_path):
  """k = 1: easyllp's surrogate is the one-hot label, so it trains like xent (same batches)."""
  runs = {}
  for loss in ('xent', 'easyllp'):
    config = llp_config.get_config(f'runlocal,bag=1,loss={loss},seeds=1,steps=8')
    runs[loss] = train.train_and_evaluate(config, str(tmp_path / loss))['per_seed'][0]
    stage = tmp_path / loss / runs[loss]['stages']['llp']
    runs[loss]['probs'] = np.load(stage / 'outputs.npz')['test_probs']
  assert runs['xent']['acc'] == runs['easyllp']['acc']
  np.testing.assert_allclose(runs['xent']['probs'], runs['easyllp']['probs'], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('over, match', [
    ({'bags.size': 0}, r'bags.size=0 must be > 0'),
    ({'bags.color': 1}, r"bags: unknown key 'color'"),
    ({'model.loss': dict(name='easyllp', bag_size=8)},
     r"needs the bag size k from exactly one place.*got both"),
    ({'bags.size': 64, 'model.loss': dict(name='proportion')},
     r'batch_size=32 \(accum_steps=1\) does not split into whole bag_id groups of 64'),
    ({'bags.size': 512}, r'bags.size=512 is larger than the 256 training examples'),
])
def test_bad_input_is_one_clear_line(tmp_path, over, match):
  config = _cfg('runlocal', **over)
  with pytest.raises(UserError, match=match):
    train.train_and_evaluate(config, str(tmp_path))
  assert not (tmp_path / 'stages').exists() and not (tmp_path / 'results.json').exists()
