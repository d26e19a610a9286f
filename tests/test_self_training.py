"""Self-training rounds: the labelled / unlabelled split, every selection policy against hand
computation, and tiny end-to-end runs (rounds as stages, rerun skips, results and plot; IMDb on
mock data with its own unlabelled split in U, scored on U's known labels only)."""
import json
import os

import numpy as np
import pytest

from w2s import options, train
from w2s import pseudo_labels as pl
from w2s.data import splits as splits_lib
from w2s.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROBS = np.array([[0.97, 0.02, 0.01],   # 0: confident class 0
                  [0.50, 0.45, 0.05],   # 1: unsure
                  [0.10, 0.85, 0.05],   # 2: class 1
                  [0.05, 0.03, 0.92],   # 3: class 2
                  [0.30, 0.30, 0.40],   # 4: unsure
                  [0.02, 0.96, 0.02]], np.float32)


def _choose(name, r=1, members=None, **hp):
  return pl.choose(options.plugin('pseudo_labels', dict(name=name, **hp), 'pseudo.select'),
                   PROBS, round_index=r, members=members)


def test_threshold_curriculum_topk_all():
  rows, labels = _choose('threshold', tau=0.9)
  assert rows.tolist() == [0, 3, 5] and labels.tolist() == [0, 2, 1]
  rows, _ = _choose('curriculum', r=1, step=0.34)   # top ceil(0.34 * 6) = 3 by confidence
  assert rows.tolist() == [0, 3, 5]
  rows, _ = _choose('curriculum', r=2, step=0.34)   # top ceil(0.68 * 6) = 5
  assert rows.tolist() == [0, 2, 3, 4, 5] or rows.tolist() == [0, 1, 2, 3, 5]
  assert len(_choose('curriculum', r=3, step=0.34)[0]) == 6
  rows, labels = _choose('topk', k=1)   # per class the single highest p(c)
  assert dict(zip(rows.tolist(), labels.tolist())) == {0: 0, 5: 1, 3: 2}
  rows, labels = _choose('topk', k=2)   # class 0: rows 0, 1; class 1: 5, 2; class 2: 3, 4
  assert dict(zip(rows.tolist(), labels.tolist())) == {0: 0, 1: 0, 2: 1, 3: 2, 4: 2, 5: 1}
  rows, labels = _choose('all')
  assert rows.tolist() == list(range(6)) and labels.tolist() == [0, 0, 1, 2, 2, 1]


def test_agreement_is_the_t_similarity_of_the_heads():
  members = np.stack([PROBS, PROBS[:, [1, 0, 2]]], axis=1)  # head 2 swaps classes 0 and 1
  from w2s.pseudo_labels import agreement
  s = agreement.t_similarity(members)
  # K = 2: s = p1 . p2 (both ordered pairs, divided by 2)
  np.testing.assert_allclose(s, (PROBS * PROBS[:, [1, 0, 2]]).sum(-1), rtol=1e-5)
  rows, _ = _choose('agreement', members=members, tau=0.5)
  assert rows.tolist() == [3]  # only the class-2 row keeps the heads in agreement
  with pytest.raises(UserError, match='exactly one'):
    _choose('agreement', members=members, tau=0.5, fraction=0.5)


def test_quality_counts_against_hidden_labels():
  q = pl.quality(np.array([0, 2, 3]), np.array([0, 1, 1]), np.array([0, 0, 1, 2, 2, 1]), 3)
  assert q['coverage'] == pytest.approx(0.5) and q['accuracy'] == pytest.approx(2 / 3)
  assert q['utilisation'] == pytest.approx(2 / 6)
  assert q['per_class'][2] == {'coverage': 0.5, 'accuracy': 0.0}


def test_quality_excludes_unknown_labels():
  """Rows of a dataset's own unlabelled split (label -1) count in coverage only."""
  truth = np.array([0, 0, 1, 2, 2, 1, -1, -1])
  q = pl.quality(np.array([0, 2, 3, 6, 7]), np.array([0, 1, 1, 2, 0]), truth, 3)
  known = pl.quality(np.array([0, 2, 3]), np.array([0, 1, 1]), truth[:6], 3)
  assert q['coverage'] == pytest.approx(5 / 8) and q['n_selected'] == 5
  assert (q['n_known'], q['n_selected_known']) == (6, 3)
  for key in ('accuracy', 'utilisation', 'per_class'):
    assert q[key] == known[key]  # 2/3, 2/6, per class as if the unknown rows were not there
  only_unknown = pl.quality(np.array([6, 7]), np.array([0, 1]), truth, 3)
  assert np.isnan(only_unknown['accuracy']) and only_unknown['utilisation'] == 0.0


def test_labelled_split_is_balanced_seeded_and_refuses_too_many_labels():
  from w2s import registry
  ds = registry.build('datasets', dict(name='digits'))
  parts = splits_lib.labelled_unlabelled(ds, seed=0, per_class=4).splits
  assert np.bincount(parts['labelled']['label'], minlength=10).tolist() == [4] * 10
  assert not set(parts['labelled']['id']) & set(parts['unlabelled']['id'])
  n_train = len(ds.split('train')['id'])
  assert len(parts['labelled']['id']) + len(parts['unlabelled']['id']) == n_train
  other = splits_lib.labelled_unlabelled(ds, seed=1, per_class=4).splits
  assert set(other['labelled']['id']) != set(parts['labelled']['id'])
  with pytest.raises(UserError, match='has only'):
    splits_lib.labelled_unlabelled(ds, seed=0, per_class=1000)


def _config(arg):
  import importlib.util
  spec = importlib.util.spec_from_file_location('st', os.path.join(REPO, 'configs',
                                                                  'self_training.py'))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)


@pytest.mark.default_codegen  # compute-bound: XLA's default codegen
def test_tiny_self_training_run_and_rerun(tmp_path, capsys):
  config = _config('runlocal,seeds=1')
  results = train.train_and_evaluate(config, str(tmp_path))
  saved = json.load(open(tmp_path / 'results.json'))
  assert len(saved['per_seed']) == 1 and len(saved['summary']['rounds']) == 3
  first = saved['per_seed'][0]
  assert first['n_labelled'] == 40 and first['n_unlabelled'] == 512
  for r in first['rounds'][1:]:
    q = r['pseudo']
    assert 0 <= q['coverage'] <= 1 and q['n_selected'] == round(q['coverage'] * 512)
  assert os.path.getsize(tmp_path / 'rounds.png') > 0
  assert sorted(first['stages']) == ['round0', 'round1', 'round2']
  capsys.readouterr()
  again = train.train_and_evaluate(config, str(tmp_path))
  assert capsys.readouterr().out.count('done earlier, skipped') == 3
  assert train._json_safe(again['per_seed']) == train._json_safe(results['per_seed'])
  # one more round over the same stages trains only round 3, from round 2's labels of U
  more = _config('runlocal,seeds=1')
  more.rounds, more.shared_dir = 3, str(tmp_path)
  extended = train.train_and_evaluate(more, str(tmp_path / 'more'))
  assert capsys.readouterr().out.count('done earlier, skipped') == 3
  rounds = extended['per_seed'][0]['rounds']
  assert [r['round'] for r in rounds] == [0, 1, 2, 3]
  assert train._json_safe(rounds[:3]) == train._json_safe(results['per_seed'][0]['rounds'])
  assert 0 <= rounds[3]['pseudo']['coverage'] <= 1


def test_imdb_with_its_unlabelled_split_end_to_end_on_mock_data(tmp_path, monkeypatch):
  """configs/self_training.py:task=imdb on mock_data (64 rows a split): U = the 44 unlabelled
  train rows + the 64 of 'unsupervised' (label -1); the teacher labels all 108, quality counts
  the 44 (about 20 s)."""
  import tensorflow_datasets as tfds
  monkeypatch.setenv('W2S_DATA_DIR', str(tmp_path / 'tfds'))
  config = _config('task=imdb,labels=20,runlocal,seeds=1,rounds=1')
  for role in (config.teacher, config.student):
    role.train.num_steps = 5
  with tfds.testing.mock_data(num_examples=64):
    results = train.train_and_evaluate(config, str(tmp_path / 'run'))
  rec = results['per_seed'][0]
  assert (rec['n_labelled'], rec['n_unlabelled'], rec['n_test']) == (20, 108, 64)
  q = rec['rounds'][1]['pseudo']
  assert q['n_known'] == 44 and q['n_selected_known'] <= 44
  assert q['n_selected'] > q['n_selected_known']  # tau 0.5 on 2 classes keeps unknown rows too
  assert q['utilisation'] == pytest.approx(q['accuracy'] * q['n_selected_known'] / 44)


def test_bad_self_training_input_is_one_clear_error():
  from w2s.protocols import self_training
  with pytest.raises(UserError, match='has only'):
    self_training.check(_config('runlocal,labels=100000'))
  with pytest.raises(UserError, match='unknown pseudo-label policy .nope.; known: agreement'):
    self_training.check(_config('runlocal,select=nope'))
  cfg = _config('runlocal')
  with cfg.unlocked():
    cfg.pseudo.labels = 'fuzzy'
  with pytest.raises(UserError, match="pseudo.labels='fuzzy'"):
    self_training.check(cfg)
