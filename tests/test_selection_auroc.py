"""Selection by held-out AUROC (`select_metric='auroc'`, w2s.selection): the AUROC against
scikit-learn's, the evaluator's `val_auroc`, the selection state (highest kept, NaN never), and an
exact resume through `train.fit`."""
import json
import shutil
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import ConfigDict
from sklearn.metrics import roc_auc_score

from w2s import options, registry, selection, sharding, train
from w2s.data import pipeline
from w2s.predict import make_evaluator
from w2s.steps import TrainState


def _logits(rng, n, c):
  z = rng.normal(size=(n, c)).round(1)                 # rounded: tied scores on purpose
  return z.astype(np.float32)


def _softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_binary_auroc_matches_sklearn_with_ties():
  rng = np.random.default_rng(0)
  z = _logits(rng, 200, 2)
  z[:, 0] = 0.0                                        # margin = z[:, 1], many ties after rounding
  soft = _softmax(rng.normal(size=(200, 2)))           # soft weak labels: their argmax counts
  want = roc_auc_score(soft.argmax(1), _softmax(z.astype(np.float64))[:, 1])
  np.testing.assert_allclose(selection.auroc(soft, z), want, rtol=1e-12)
  # a hand example: positives score 3, 1; negatives 2, 1 -> pairs (3>2, 3>1, 1<2, 1=1) = 2.5 / 4
  y = np.eye(2)[[1, 1, 0, 0]]
  margin = np.array([[0, 3], [0, 1], [0, 2], [0, 1]], np.float32)
  assert float(selection.auroc(y, margin)) == 0.625


def test_multiclass_auroc_is_sklearns_one_vs_rest_macro():
  rng = np.random.default_rng(1)
  z = _logits(rng, 300, 4)
  hard = rng.integers(0, 4, 300)
  p = _softmax(z.astype(np.float64))
  want = roc_auc_score(hard, p, multi_class='ovr', average='macro')
  np.testing.assert_allclose(selection.auroc(np.eye(4)[hard], z), want, rtol=1e-12)
  # a class absent from the labels is left out of the mean (sklearn refuses such input)
  hard[hard == 3] = 0
  per_class = [roc_auc_score(hard == c, p[:, c]) for c in range(3)]
  np.testing.assert_allclose(selection.auroc(np.eye(4)[hard], z), np.mean(per_class), rtol=1e-12)
  # members [N, K, C]: one value each
  zk = np.stack([z, z[::-1]], 1)
  got = selection.auroc(np.eye(4)[hard], zk)
  assert got.shape == (2,) and got[0] == selection.auroc(np.eye(4)[hard], z)
  assert np.isnan(selection.auroc(np.eye(4)[np.zeros(300, int)], z))  # one class: undefined


def _linear():
  return registry.build('models', dict(name='mlp', size='linear', zero_head=False), num_classes=3)


def test_evaluator_reports_val_auroc_only_when_selecting_on_it():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(40, 5)).astype(np.float32)
  weak = _softmax(rng.normal(size=(40, 3))).astype(np.float32)
  val = {'id': np.arange(40), 'x': x, 'label': weak}
  module = _linear()
  params = module.init({'params': jax.random.PRNGKey(0)}, {'x': x[:1]})['params']
  loss = options.plugin('losses', dict(name='xent'), 'loss')
  mesh = sharding.make_mesh()
  params = jax.device_put(params, sharding.replicated(mesh))
  kw = dict(mesh=mesh, name='t', batch_size=16)
  opts = types.SimpleNamespace(eval_every=1, loss=loss, select_metric='auroc')
  out = make_evaluator(module, val, opts, **kw)(params)
  p = _softmax(np.asarray(module.apply({'params': params}, {'x': x}), np.float64))
  want = roc_auc_score(weak.argmax(1), p, multi_class='ovr')
  np.testing.assert_allclose(out['val_auroc'], want, rtol=1e-6)
  plain = make_evaluator(module, val, types.SimpleNamespace(eval_every=1, loss=loss), **kw)
  assert set(plain(params)) == {'val_loss', 'val_accuracy'}


def _state(metric, select='best', patience=0):
  params = {'w': jnp.zeros(2)}
  opts = types.SimpleNamespace(select=select, patience=patience, select_metric=metric)
  return TrainState(step=jnp.int32(0), params=params, opt_state=(), rng=jax.random.PRNGKey(0),
                    extra=selection.init(opts, params)), opts


def test_selection_keeps_the_highest_auroc_and_skips_nan():
  state, opts = _state('auroc', patience=2)
  history = [(1, 0.6, 1.0), (2, 0.8, 2.0), (3, float('nan'), 3.0), (4, 0.7, 4.0)]
  stops = []
  for step, auc, w in history:
    state = state.replace(params={'w': jnp.full(2, w)})
    state, stop = selection.update(state, {'val_loss': 9.0, 'val_auroc': auc}, step, 2)
    stops.append(stop)
  assert stops == [False, False, False, True]          # 2 evaluations without a higher AUROC
  assert selection.summary(state) == {'best_val_auroc': pytest.approx(0.8), 'best_step': 2,
                                      'evals_since_best': 2}
  np.testing.assert_array_equal(selection.selected(state, opts).params['w'], [2.0, 2.0])
  # the loss criterion is unchanged: lowest val_loss, a bare loss accepted
  state, _ = _state('loss')
  for step, loss in ((1, 0.5), (2, 0.7)):
    state, _ = selection.update(state, {'val_loss': loss, 'val_auroc': 1.0}, step, 0)
  state, _ = selection.update(state, 0.6, 3, 0)
  assert selection.summary(state)['best_step'] == 1 and 'loss' in state.extra['select']
  with pytest.raises(ValueError, match='needs the evaluator'):
    selection.update(_state('auroc')[0], 0.5, 1, 0)
  # an AUROC never defined: the last parameters, not the initial ones
  state, opts = _state('auroc')
  state, _ = selection.update(state.replace(params={'w': jnp.ones(2)}),
                              {'val_auroc': float('nan')}, 1, 0)
  np.testing.assert_array_equal(selection.selected(state, opts).params['w'], [1.0, 1.0])


HAS_OPTION = 'select_metric' in options.TRAIN_DEFAULTS


@pytest.mark.skipif(not HAS_OPTION, reason='train.select_metric is not an option yet '
                    '(w2s/options.py, w2s/train.py)')
def test_fit_selects_on_auroc_and_resumes_exactly(tmp_path):
  ds = registry.build('datasets', dict(name='digits'))
  split = lambda s, n: pipeline.one_hot_labels({k: ds.split(s)[k][:n] for k in ('id', 'label',
                                                                                'x')}, 10)
  train_ex, val_ex = split("train", 128), split("test", 64)
  module = registry.build('models', dict(name='mlp', size='linear'), num_classes=10)
  cfg = ConfigDict(dict(
      seed=0, loss=dict(name='xent'), optimizer=dict(name='adam', learning_rate=3e-2),
      schedule=dict(name='constant'), batch_size=32, num_epochs=0.0, num_steps=12,
      accum_steps=1, log_every=4, checkpoint_every=6, keep_checkpoints=2, eval_every=2,
      select='best', select_metric='auroc'))
  fit = lambda d: train.fit(module, train_ex, cfg=cfg, workdir=str(tmp_path / d),
                            mesh=sharding.make_mesh(), val_examples=val_ex, eval_batch_size=64)
  straight, last = fit('s')
  records = [json.loads(l) for l in open(tmp_path / 's' / 'metrics.jsonl')]
  aurocs = {r['step']: r['val_auroc'] for r in records if 'val_auroc' in r}
  assert sorted(aurocs) == [2, 4, 6, 8, 10, 12]
  best = max(aurocs, key=lambda s: (aurocs[s], -s))   # the first of the highest
  summary = selection.summary(straight)
  assert summary['best_step'] == best and summary['best_val_auroc'] == pytest.approx(
      aurocs[best], rel=1e-6)
  assert last['val_auroc'] == pytest.approx(aurocs[best], rel=1e-6)  # the selected parameters'
  # the same run stopped after step 6 (its checkpoint), resumed: the same selection, exactly
  shutil.copytree(tmp_path / 's', tmp_path / 'p')
  shutil.rmtree(tmp_path / 'p' / 'checkpoints' / '12')
  resumed, _ = fit('p')
  assert int(resumed.step) == 12
  for a, b in zip(jax.tree.leaves((straight.params, straight.extra)),
                  jax.tree.leaves((resumed.params, resumed.extra))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
