"""RAVEN (Jeon et al. 2025): the student's target is a learned simplex mixture of K teachers; the
weights take one projected SGD step per batch on the same loss. Against float64 numpy."""
import shutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from ml_collections import ConfigDict

from w2s import registry, sharding, train
from w2s.data import pipeline
from w2s.errors import UserError
from w2s.losses import raven

B, K, C, N = 8, 3, 4, 12


def _batch(seed=0, pad=(5,)):
  rng = np.random.default_rng(seed)
  mp = rng.dirichlet(np.ones(C) * 0.5, size=(B, K))
  mp[:3] = mp[:3, :1]             # rows 0-2: every teacher says the same
  mask = np.ones(B)
  mask[list(pad)] = 0
  return dict(logits=rng.normal(size=(B, C)) * 2, member_probs=mp, mask=mask,
              index=rng.permutation(N)[:B].astype(np.int32))


def _ref(b, weights, *, per_example=False, lr=0.01, momentum=0.0, buf=None, agree_frac=0.0,
         freeze_frac=0.0, step_frac=0.5):
  """float64 numpy: (per_example [B], new weights [rows, K], new momentum)."""
  real = b['mask'] > 0
  mp = np.where(real[:, None, None], b['member_probs'], 1.0 / C)
  votes = mp.argmax(-1)
  s = np.where(step_frac < agree_frac, (votes == votes[:, :1]).all(-1), 1.0) * real
  idx = b['index']
  w = weights[idx] if per_example else np.broadcast_to(weights, (B, K))
  tot = np.einsum('bk,bkc->b', w, mp)
  t = np.einsum('bk,bkc->bc', w, mp) / tot[:, None]
  z = b['logits'] - b['logits'].max(-1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
  ce = -(t * logp).sum(-1)
  # d CE_i / d w_ik = -(y_ik - (sum_c y_ikc) t_i) . log p_i / tot_i
  g = -np.einsum('bkc,bc->bk', mp - mp.sum(-1)[..., None] * t[:, None], logp) / tot[:, None]
  g = g * (s / real.sum())[:, None]
  if not per_example:
    g = g.sum(0, keepdims=True)
    w = weights
  old_buf = np.zeros_like(weights) if buf is None else buf
  cur_buf = old_buf[idx] if per_example else old_buf
  new_buf = momentum * cur_buf + g
  step = new_buf if momentum > 0 else g
  new = np.maximum(w - lr * step, 1e-6)
  new = new / new.sum(-1, keepdims=True)
  if step_frac < freeze_frac:
    return s * ce, weights.copy(), old_buf
  if per_example:
    out, out_buf = weights.copy(), old_buf.copy()
    out[idx[real]] = new[real]
    out_buf[idx[real]] = new_buf[real]
    return s * ce, out, out_buf
  return s * ce, new, new_buf


def _call(b, state, step_frac=0.5, **hp):
  j = {k: jnp.asarray(v, jnp.int32 if k == 'index' else jnp.float32) for k, v in b.items()}
  return raven.loss(logits=j['logits'], labels=j['member_probs'].mean(1), mask=j['mask'],
                    step_frac=step_frac, batch=j, loss_state=state, teachers=K, **hp)


@pytest.mark.parametrize('hp', [
    dict(lr=0.3),
    dict(lr=0.3, momentum=0.9),
    dict(lr=0.3, per_example=True),
    dict(lr=0.3, per_example=True, momentum=0.5),
    dict(lr=0.3, agree_frac=0.6),                 # step_frac 0.5: only agreeing rows count
    dict(lr=0.3, freeze_frac=0.6),                # weights frozen
    dict(lr=50.0),                                # big steps: the clamp at 1e-6 binds
])
def test_loss_and_weight_step_match_numpy(hp):
  b = _batch()
  rows = N if hp.get('per_example') else 1
  rng = np.random.default_rng(1)
  weights = rng.dirichlet(np.ones(K), size=rows)
  buf = rng.normal(size=(rows, K)) * 0.1 if hp.get('momentum') else None
  state = {'weights': jnp.asarray(weights, jnp.float32)}
  if buf is not None:
    state['momentum'] = jnp.asarray(buf, jnp.float32)
  per, aux = _call(b, state, **hp)
  ref_per, ref_w, ref_buf = _ref(b, weights, buf=buf, **hp)
  np.testing.assert_allclose(per, ref_per, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(aux['loss_state']['weights'], ref_w, rtol=1e-5, atol=1e-7)
  if buf is not None:
    np.testing.assert_allclose(aux['loss_state']['momentum'], ref_buf, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose([aux[f'weight_{k}'] for k in range(K)], ref_w.mean(0), rtol=1e-5)
  real = b['mask'] > 0
  kept = (ref_per > 0).sum() / real.sum()
  np.testing.assert_allclose(aux['kept'], kept, rtol=1e-6)
  if hp.get('agree_frac'):
    assert 0 < kept < 1
  if hp.get('freeze_frac'):
    np.testing.assert_array_equal(aux['loss_state']['weights'], state['weights'])
  if hp['lr'] == 50.0:
    assert np.min(ref_w) < 1e-5  # the projection was exercised


def test_the_weights_move_towards_the_teacher_the_student_agrees_with():
  b = _batch(pad=())
  truth = np.random.default_rng(2).integers(0, C, B)
  b['member_probs'][:, 0] = np.eye(C)[truth] * 0.9 + 0.1 / C
  b['logits'] = np.eye(C)[truth] * 5.0
  state = raven.init_state(num_examples=N, num_classes=C, teachers=K)
  np.testing.assert_allclose(state['weights'], 1.0 / K)
  _, aux = _call(b, state, lr=0.1)
  assert aux['weight_0'] > 1.0 / K + 0.01 and aux['weight_0'] > max(aux['weight_1'],
                                                                     aux['weight_2'])


def test_padding_rows_change_nothing():
  b = _batch(pad=())
  state = raven.init_state(num_examples=N, num_classes=C, teachers=K, per_example=True,
                           momentum=0.9)
  call = jax.jit(lambda b: _call(b, state, lr=0.3, per_example=True, momentum=0.9))
  per, aux = call(b)
  padded = {k: np.concatenate([v, v[:3]]) for k, v in b.items()}  # repeated indices too
  padded['mask'][B:] = 0
  padded['logits'][B:] = 100.0
  padded['member_probs'][B:] = 0.0                                # a padded row may be all zero
  per_p, aux_p = call(padded)
  np.testing.assert_allclose(per_p[:B], per, rtol=1e-6)
  np.testing.assert_array_equal(per_p[B:], 0.0)
  chex.assert_trees_all_close(aux_p, aux, rtol=1e-6)


def test_jit_equals_eager_and_errors():
  b = _batch()
  state = raven.init_state(num_examples=N, num_classes=C, teachers=K, per_example=True)
  eager = _call(b, state, lr=0.3, per_example=True, agree_frac=0.6)
  jitted = jax.jit(lambda b, s, f: _call(b, s, step_frac=f, lr=0.3, per_example=True,
                                         agree_frac=0.6))(b, state, 0.5)
  chex.assert_trees_all_close(jitted, eager, rtol=1e-6)
  with pytest.raises(UserError, match='teachers=K'):
    raven.init_state(num_examples=N, num_classes=C)
  with pytest.raises(UserError, match=r'K=2'):
    raven.loss(logits=np.zeros((B, C)), labels=np.zeros((B, C)), mask=np.ones(B),
               batch=dict(b), loss_state=state, teachers=2)
  with pytest.raises(UserError, match='member_probs'):
    raven.loss(logits=np.zeros((B, C)), labels=np.zeros((B, C)), mask=np.ones(B),
               batch={'index': b['index']}, loss_state=state, teachers=K)


def test_sharded_equals_single_device():
  if jax.device_count() < 8:
    pytest.skip('needs 8 devices')
  mesh = Mesh(np.array(jax.devices()[:8]), ('data',))
  b = _batch(pad=(3, 7))
  b = {k: np.concatenate([v, v[::-1]]) for k, v in b.items()}  # B = 16: 2 rows per device
  b['index'] = np.arange(16, dtype=np.int32)
  state = raven.init_state(num_examples=16, num_classes=C, teachers=K)
  fn = jax.jit(lambda b, s: _call(b, s, lr=0.3, agree_frac=0.9))
  single = fn(jax.device_put(b, jax.devices()[0]), state)
  sharded = fn(jax.device_put(b, NamedSharding(mesh, P('data'))), state)
  chex.assert_trees_all_close(jax.device_get(sharded), jax.device_get(single), atol=1e-6)


def _cfg(per_example):
  return ConfigDict(dict(seed=0, loss=dict(name='raven', teachers=K, per_example=per_example,
                                           lr=0.5, momentum=0.5, agree_frac=0.3),
                         optimizer=dict(name='adam', learning_rate=1e-2),
                         schedule=dict(name='constant'), batch_size=64, num_epochs=0.0,
                         num_steps=6, accum_steps=1, log_every=3, checkpoint_every=3,
                         keep_checkpoints=2))


def test_trainer_keeps_the_weights_and_resumes_exactly(tmp_path):
  ds = registry.build('datasets', dict(name='digits'))
  ex = pipeline.one_hot_labels({k: ds.split('train')[k] for k in ('id', 'label', 'x')}, 10)
  rng = np.random.default_rng(0)
  n = len(ex['id'])
  good = ex['label'] * 0.8 + 0.02                                   # teacher 0: right
  noisy = np.eye(10)[np.where(rng.random(n) < 0.5, rng.integers(0, 10, n),
                              ex['label'].argmax(-1))] * 0.8 + 0.02  # teacher 1: half wrong
  rand = rng.dirichlet(np.ones(10), size=n)                          # teacher 2: noise
  ex['member_probs'] = np.stack([good, noisy, rand], 1).astype(np.float32)
  module = registry.build('models', dict(name='mlp', hidden=(16,)), num_classes=10)
  state, last = train.fit(module, ex, cfg=_cfg(True), workdir=str(tmp_path),
                          mesh=sharding.make_mesh())
  w = np.asarray(state.extra['loss']['weights'])
  assert w.shape == (n, K)
  seen = np.zeros(n, bool)  # the rows of the 6 batches: the first 384 of epoch 0's order
  seen[pipeline.epoch_permutation(n, 0, 0)[:6 * 64]] = True
  np.testing.assert_array_equal(w[~seen], np.float32(1.0 / K))  # untouched rows: uniform
  assert (np.abs(w[seen] - 1.0 / K).max(-1) > 0).mean() > 0.5  # small steps: lr / B per row
  np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-6)
  assert {f'weight_{k}' for k in range(K)} <= set(last)
  shutil.rmtree(tmp_path / 'checkpoints' / '6')
  resumed, _ = train.fit(module, ex, cfg=_cfg(True), workdir=str(tmp_path),
                         mesh=sharding.make_mesh())
  jax.tree.map(np.testing.assert_array_equal, resumed.extra['loss'], state.extra['loss'])
  jax.tree.map(np.testing.assert_array_equal, resumed.params, state.params)
