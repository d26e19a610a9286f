"""A tiny end-to-end weak-to-strong run: every stage, several losses, results and plots, rerun skips."""
import json
import os

import numpy as np
import pytest

from w2s import train

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs')


def _config(arg):
  import importlib.util
  spec = importlib.util.spec_from_file_location('w2s_offline', os.path.join(CONFIGS, 'w2s_offline.py'))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)


@pytest.mark.usefixtures('shared_feature_cache')  # the tiny BERT's features, shared
def test_tiny_run_writes_results_and_rerun_skips_every_stage(tmp_path, capsys):
  config = _config('runlocal,seeds=2,losses=xent+logconf+reliability')
  with config.unlocked():
    config.weak.ensemble = dict(size=2, bagging=True)   # reliability reads the members' votes
  results = train.train_and_evaluate(config, str(tmp_path))
  out = capsys.readouterr()
  assert set(results['summary']) == {'xent', 'logconf', 'reliability'}
  assert len(results['per_seed']) == 2
  for name in ('results.json', 'accuracy.png', 'pgr.png', 'weak_split.png', 'reliability.png',
               'curves.png'):
    assert os.path.getsize(tmp_path / name) > 0
  saved = json.load(open(tmp_path / 'results.json'))
  first = saved['per_seed'][0]
  for loss in ('xent', 'logconf', 'reliability'):
    r = first[loss]
    assert 0.0 <= r['acc_student'] <= 1.0 and 0.0 <= r['agreement'] <= 1.0
    assert r['n_weak_wrong'] + r['n_weak_right'] == first['n_test']
    # PGR is a number exactly when the ceiling beats the weak model; otherwise said so
    defined = r['acc_ceiling'] - r['acc_weak'] > 1e-6
    assert (r['pgr_undefined'] is None) == defined
    if defined:
      expected = (r['acc_student'] - r['acc_weak']) / (r['acc_ceiling'] - r['acc_weak'])
      assert r['pgr'] == pytest.approx(expected)
  assert 'SMOKE TEST (runlocal' in out.out  # a runlocal table says what it is
  assert 'weak-to-strong results, test set, n=2 seeds: no interval' in out.out
  assert saved['paired']['logconf - xent']['pgr']['n'] + saved['paired']['logconf - xent'][
      'pgr']['n_nan'] == 2  # the paired difference of the two students, per seed
  # one weak ensemble + ceiling + three students per seed
  stages = os.listdir(tmp_path / 'stages')
  assert len(stages) == 2 * 5 and all(os.path.exists(tmp_path / 'stages' / s / 'done.json')
                                       for s in stages)
  members = np.load(tmp_path / 'stages' / [s for s in stages if s.startswith('weak-')][0] /
                    'outputs.npz')['strong_train_member_probs']
  assert members.shape[1:] == (2, 2)

  again = train.train_and_evaluate(config, str(tmp_path))
  out = capsys.readouterr()
  assert out.out.count('done earlier, skipped') == 10
  assert '] 1/' not in out.err  # no training or labelling progress at all
  # the same numbers (NaN-free JSON form: an undefined PGR is null, and NaN != NaN)
  assert train._json_safe(again['per_seed']) == train._json_safe(results['per_seed'])


@pytest.mark.usefixtures('shared_feature_cache')
def test_students_share_one_set_of_weak_labels(tmp_path, capsys):
  """A second student loss added later trains only that student."""
  train.train_and_evaluate(_config('runlocal,seeds=1,losses=xent'), str(tmp_path))
  capsys.readouterr()
  train.train_and_evaluate(_config('runlocal,seeds=1,losses=xent+gce'), str(tmp_path))
  out = capsys.readouterr().out
  assert out.count('done earlier, skipped') == 3  # weak, ceiling, xent student
  assert len(os.listdir(tmp_path / 'stages')) == 4
  # a truncated stage output is one clear error naming the stage directory to delete
  from w2s.errors import UserError
  weak = next((tmp_path / 'stages').glob('weak-*'))
  data = (weak / 'outputs.npz').read_bytes()
  (weak / 'outputs.npz').write_bytes(data[:len(data) // 2])
  with pytest.raises(UserError, match=f'unreadable.*delete {weak}'):
    train.train_and_evaluate(_config('runlocal,seeds=1,losses=xent+gce'), str(tmp_path))


@pytest.mark.slow
@pytest.mark.usefixtures('shared_feature_cache')
@pytest.mark.default_codegen  # compute-bound: XLA's default codegen
def test_bootstrapping_chain_and_relabel_rounds(tmp_path, capsys):
  """weak -> intermediate -> strong student, then one strong-to-strong relabelling round."""
  config = _config('runlocal,seeds=1,losses=xent')
  with config.unlocked():
    config.chain = (dict(model=dict(name='bow', size='base'), loss=dict(name='xent'),
                         train=config.weak.train.to_dict()),)
    config.relabel_rounds = 1
  results = train.train_and_evaluate(config, str(tmp_path))
  kinds = sorted(s.split('-')[0] for s in os.listdir(tmp_path / 'stages'))
  assert kinds == ['ceiling', 'chain0', 'student_xent', 'student_xent_round1', 'weak']
  assert np.isfinite(results['per_seed'][0]['xent']['acc_student'])
  # the intermediate's labels, not the weak model's, taught the first student
  chain = [s for s in os.listdir(tmp_path / 'stages') if s.startswith('chain0')][0]
  weak = [s for s in os.listdir(tmp_path / 'stages') if s.startswith('weak')][0]
  student = json.load(open(tmp_path / 'stages' /
                           [s for s in os.listdir(tmp_path / 'stages') if s.startswith('student_xent-')][0] /
                           'done.json'))
  assert chain.split('-')[-1] in json.dumps(student['spec'])
  assert weak.split('-')[-1] not in json.dumps(student['spec'])
  capsys.readouterr()


def _image_config():
  """MNIST (5,000 real images): the weak supervisor sees 4x4-pooled pixels through an input
  view, the strong model the full image; students train with their own `student.train`, and
  every stage selects on the held-out val slice against its own labels."""
  from ml_collections import ConfigDict
  train_sec = lambda lr, steps: dict(optimizer=dict(name='adam', learning_rate=lr),
                                     schedule=dict(name='constant'), batch_size=64, num_steps=steps,
                                     eval_every=10, select='best')
  return ConfigDict(dict(
      protocol=dict(name='weak_to_strong'), dataset=dict(name='mnist_5k'),
      splits=dict(weak_fraction=0.5, val_fraction=0.2, max_weak=400, max_strong=800, max_val=320,
                  max_test=400),
      seeds=(0,), tokenizer=None,
      weak=dict(model=dict(name='mlp', size='small'), loss=dict(name='xent'),
                input=dict(name='avg_pool', size=4), train=train_sec(3e-3, 30)),
      strong=dict(model=dict(name='mlp', size='small'), loss=dict(name='xent'),
                  train=train_sec(3e-3, 40)),
      student=dict(train=train_sec(1e-3, 20)),
      student_losses=dict(xent=dict(name='xent')), student_order=('xent',), chain=(),
      relabel_rounds=0, eval_batch_size=64, log_every=10, checkpoint_every=100,
      keep_checkpoints=1, mesh=dict(num_devices=0)))


def test_views_student_section_and_selection_on_held_out_labels(tmp_path):
  config = _image_config()
  results = train.train_and_evaluate(config, str(tmp_path))
  stages = {s.split('-')[0]: tmp_path / 'stages' / s for s in os.listdir(tmp_path / 'stages')}
  weak_done = json.load(open(stages['weak'] / 'done.json'))
  assert weak_done['spec'][1]['input'] == {'name': 'avg_pool', 'size': 4}
  # the student trained with student.train (20 steps at 1e-3), the ceiling with strong.train
  assert json.load(open(stages['student_xent'] / 'done.json'))['steps'] == 20
  assert json.load(open(stages['ceiling'] / 'done.json'))['steps'] == 40
  student_lr = [json.loads(l)['learning_rate'] for l in open(stages['student_xent'] / 'metrics.jsonl')
                if 'learning_rate' in l]
  assert student_lr and all(lr == pytest.approx(1e-3) for lr in student_lr)
  # held-out evaluations were logged, and the student's are against the weak labels of val:
  # its held-out accuracy is agreement with the weak supervisor, not ground-truth accuracy
  held = results['per_seed'][0]['held_out']
  assert set(held) == {'weak', 'ceiling', 'student_xent'}
  weak_out = np.load(stages['weak'] / 'outputs.npz')
  assert 'val_probs' in weak_out and len(weak_out['val_id']) == results['per_seed'][0]['n_val']
  records = [json.loads(l) for l in open(stages['student_xent'] / 'metrics.jsonl')]
  assert [r['step'] for r in records if 'val_loss' in r] == [10, 20]
  best = json.load(open(stages['student_xent'] / 'done.json'))
  assert best['best_step'] in (10, 20)
  assert held['student_xent']['val_loss'] == pytest.approx(
      min(r['val_loss'] for r in records if 'val_loss' in r), rel=1e-5)
  assert os.path.getsize(stages['student_xent'] / 'curves.png') > 0
  # the weak learner's inputs are the pooled pixels, the strong learner's the full ones
  from w2s import registry
  from w2s.protocols import learners
  from w2s.views import avg_pool
  ds = registry.build('datasets', dict(name='mnist_5k'))
  raw = {k: v[:3] for k, v in ds.split('train').items()}
  labels = learners.soft_labels(raw, 10)
  make = lambda role: learners.make(learners.RoleOptions.from_section(role, config[role],
                                                                       input_kind='image'),
                                    dataset=ds, eval_batch_size=64, cache_dir=str(tmp_path))
  pooled = avg_pool.apply(raw, input_kind='image', size=4)['image'] / np.float32(255)
  np.testing.assert_allclose(make('weak').examples(raw, labels)['x'], pooled, rtol=1e-6)
  np.testing.assert_allclose(make('strong').examples(raw, labels)['x'],
                             raw['image'] / np.float32(255), rtol=1e-6)
  assert not np.allclose(pooled, raw['image'] / np.float32(255))


def test_eval_every_without_val_slice_is_refused_before_training(tmp_path):
  from w2s.errors import UserError
  config = _image_config()
  config.splits.val_fraction = 0.0
  with pytest.raises(UserError, match='needs a held-out slice'):
    train.train_and_evaluate(config, str(tmp_path))
  assert not os.path.exists(tmp_path / 'stages')


@pytest.mark.slow
@pytest.mark.default_codegen  # compute-bound: XLA's default codegen
def test_lora_student_trains_on_the_offline_task(tmp_path):
  """`lora=8`: MiniLM fine-tuned through rank-8 adapters on Rotten Tomatoes (runlocal sizes).
  The frozen kernels stay the shipped MiniLM weights, the adapters move, the loss falls."""
  from safetensors import safe_open
  from w2s.models import hf_import
  config = _config('runlocal,seeds=1,losses=xent,lora=8')
  assert config.strong.model.lora.rank == 8 and not config.strong.frozen
  with config.unlocked():
    config.splits.max_test, config.splits.max_val = 64, 64  # MiniLM passes are what costs here
    config.tokenizer.max_length = 32
    config.strong.model.layers = 2  # MiniLM's first 2 layers: the same import, a third of the cost
    config.mesh.num_devices = 1  # 8 fake CPU devices only add overhead to this single-host run
  results = train.train_and_evaluate(config, str(tmp_path))
  assert 0.0 <= results['per_seed'][0]['xent']['acc_student'] <= 1.0
  stages = os.listdir(tmp_path / 'stages')
  # the ceiling (ground truth) shows the learning; the student's weak labels of a 2-epoch weak
  # model are near 0.5, so its soft-label loss stays near ln 2 whatever it learns
  ceiling = next(s for s in stages if s.startswith('ceiling-'))
  metrics = [json.loads(l) for l in open(tmp_path / 'stages' / ceiling / 'metrics.jsonl')
             if '"loss"' in l]
  assert metrics[-1]['loss'] < metrics[0]['loss'] - 0.005
  stage = next(s for s in stages if s.startswith('student_xent-'))
  import orbax.checkpoint as ocp
  ckpt = tmp_path / 'stages' / stage / 'checkpoints'
  step = max(int(d) for d in os.listdir(ckpt) if d.isdigit())
  params = ocp.StandardCheckpointer().restore(str(ckpt / str(step) / 'state'))['params']
  query = params['backbone']['layer_0']['attention']['q']
  with safe_open(os.path.join(hf_import.resolve('minilm'), 'model.safetensors'), 'numpy') as f:
    want = f.get_tensor('encoder.layer.0.attention.self.query.weight').T
  np.testing.assert_array_equal(np.asarray(query['kernel']), want)
  assert np.any(np.asarray(query['lora_b']) != 0)
