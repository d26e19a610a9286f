"""CSL (Liu & Alahi 2024): per example the student's predicted class picks a specialist teacher,
and a top-k agreement rate keeps the lowest-loss rows. Against float64 numpy."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from w2s.errors import UserError
from w2s.losses import csl

B, C = 16, 6
CLASSES = (np.arange(C) < 3, np.arange(C) >= 3)  # specialist 0: classes 0-2, 1: classes 3-5


def _batch(seed=0, specialists=True, pad=(4, 11)):
  rng = np.random.default_rng(seed)
  if specialists:
    mp = np.zeros((B, 2, C))
    for k, m in enumerate(CLASSES):
      mp[:, k, m] = rng.dirichlet(np.ones(m.sum()) * 0.7, size=B)
  else:
    mp = rng.dirichlet(np.ones(C) * 0.7, size=(B, 3))
  mask = np.ones(B)
  mask[list(pad)] = 0
  return dict(logits=rng.normal(size=(B, C)) * 2, member_probs=mp, mask=mask,
              label=mp.mean(1))


def _ref(b, *, step_frac, warmup=0.2, topk=3, select='rank'):
  """float64 numpy: (per_example [B], keep [B], assigned teacher [B])."""
  z, mp, real = b['logits'], b['member_probs'], b['mask'] > 0
  n = real.sum()
  pred = z.argmax(-1)
  teacher = mp[np.arange(B), :, pred].argmax(-1)
  if step_frac < warmup:
    target, keep = b['label'].copy(), real.astype(float)
  else:
    target = mp[np.arange(B), teacher].copy()
    hard = target.argmax(-1)
    agree = ((z > z[np.arange(B), hard][:, None]).sum(-1) < topk) & real
    logp = z - z.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    if select == 'all':
      keep = real.astype(float)
    elif select == 'topk':
      keep = agree.astype(float)
    else:
      ce = np.where(real, -logp[np.arange(B), hard], np.inf)
      ranks = np.argsort(np.argsort(ce, kind='stable'), kind='stable')
      keep = ((ranks < agree.sum() / n * n) & real).astype(float)
  target[~real] = 1.0 / C
  logp = z - z.max(-1, keepdims=True)
  logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
  ce = -(target * logp).sum(-1)
  per = np.where(real, keep * n / keep.sum() * ce, 0.0)
  return per, keep, teacher, target


def _call(b, step_frac, **hp):
  j = {k: jnp.asarray(v, jnp.float32) for k, v in b.items()}
  return csl.loss(logits=j['logits'], labels=j['label'], mask=j['mask'], step_frac=step_frac,
                  batch=j, **hp)


@pytest.mark.parametrize('specialists', [True, False])
@pytest.mark.parametrize('step_frac, hp', [
    (0.5, {}), (0.5, dict(topk=1)), (0.5, dict(select='topk', topk=2)), (0.5, dict(select='all')),
    (0.1, {}),                                        # warm-up: the members' mean, unfiltered
])
def test_matches_numpy(specialists, step_frac, hp):
  b = _batch(specialists=specialists)
  per, aux = _call(b, step_frac, **hp)
  ref, keep, teacher, _ = _ref(b, step_frac=step_frac, **hp)
  np.testing.assert_allclose(per, ref, rtol=1e-5, atol=1e-7)
  real = b['mask'] > 0
  np.testing.assert_allclose(aux['kept'], keep.sum() / real.sum(), rtol=1e-6)
  shares = [aux[f'teacher_{k}'] for k in range(b['member_probs'].shape[1])]
  np.testing.assert_allclose(shares, np.bincount(teacher[real], minlength=len(shares)) / real.sum(),
                             rtol=1e-6)
  if step_frac > 0.2 and hp.get('select', 'rank') != 'all':
    assert 0 < keep.sum() < real.sum()  # the filter drops some rows and keeps some
  if specialists:  # the specialist whose classes hold the student's prediction
    np.testing.assert_array_equal(teacher, b['logits'].argmax(-1) >= 3)


def test_gradient_is_the_kept_rows_softmax_minus_target():
  b = _batch()
  real = b['mask'] > 0
  _, keep, _, target = _ref(b, step_frac=0.5)

  def mean_loss(z):
    per, _ = csl.loss(logits=z, labels=jnp.asarray(b['label'], jnp.float32),
                      mask=jnp.asarray(b['mask'], jnp.float32), step_frac=0.5,
                      batch={'member_probs': jnp.asarray(b['member_probs'], jnp.float32)})
    return jnp.sum(per) / real.sum()
  g = jax.grad(mean_loss)(jnp.asarray(b['logits'], jnp.float32))
  z = b['logits']
  p = np.exp(z - z.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  expected = (keep / keep.sum())[:, None] * (p - target)
  np.testing.assert_allclose(g, expected, rtol=1e-5, atol=1e-7)


def test_padding_rows_change_nothing_and_jit_equals_eager():
  b = _batch(pad=())
  call = jax.jit(lambda b: _call(b, 0.5))
  per, aux = call(b)
  padded = {k: np.concatenate([v, v[:4]]) for k, v in b.items()}
  padded['mask'][B:] = 0
  padded['logits'][B:] = -50.0          # would rank first: least loss on its own label
  padded['member_probs'][B:] = 0.0
  padded['label'][B:] = 0.0
  per_p, aux_p = jax.jit(lambda b: _call(b, 0.5))(padded)
  np.testing.assert_allclose(per_p[:B], per, rtol=1e-6)
  np.testing.assert_array_equal(per_p[B:], 0.0)
  chex.assert_trees_all_close(aux_p, aux, rtol=1e-6)
  chex.assert_trees_all_close(_call(b, 0.5), (per, aux), rtol=1e-6)


def test_sharded_equals_single_device():
  if jax.device_count() < 8:
    pytest.skip('needs 8 devices')
  mesh = Mesh(np.array(jax.devices()[:8]), ('data',))
  b = _batch()
  b = {k: np.asarray(v, np.float32) for k, v in b.items()}
  # rows sorted by the student's confidence: each shard alone would rank differently
  order = np.argsort(b['logits'].max(-1))
  b = {k: v[order] for k, v in b.items()}
  fn = jax.jit(lambda b: _call(b, 0.5))
  single = fn(jax.device_put(b, jax.devices()[0]))
  sharded = fn(jax.device_put(b, NamedSharding(mesh, P('data'))))
  chex.assert_trees_all_close(jax.device_get(sharded), jax.device_get(single), atol=1e-6)


def test_bad_options_and_missing_members_are_refused():
  b = _batch()
  with pytest.raises(UserError, match='select'):
    _call(b, 0.5, select='best')
  with pytest.raises(UserError, match='topk'):
    _call(b, 0.5, topk=0)
  with pytest.raises(UserError, match='member_probs'):
    csl.loss(logits=np.zeros((B, C)), labels=np.zeros((B, C)), mask=np.ones(B), batch={})


@pytest.mark.slow  # 4 stages: ~20 s of CPU (45 s wall on the loaded 2-core box)
def test_weak_to_strong_with_specialists_and_both_students(tmp_path):
  """End to end on digits: two specialist weak teachers (classes 0-4, 5-9), students raven and
  csl reading their per-member probabilities of B."""
  from ml_collections import ConfigDict

  from w2s import train
  t = dict(optimizer=dict(name='adam', learning_rate=1e-2), schedule=dict(name='constant'),
           batch_size=64, num_epochs=0.0, num_steps=8, accum_steps=1)
  mlp = lambda h: dict(name='mlp', hidden=(h,), zero_head=False)
  config = ConfigDict(dict(
      protocol=dict(name='weak_to_strong'), dataset=dict(name='digits'),
      splits=dict(weak_fraction=0.5, max_weak=512, max_strong=512, max_test=256), seeds=(0,),
      weak=dict(model=mlp(8), loss=dict(name='xent'), train=t,
                ensemble=dict(size=2, specialists=[[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]])),
      strong=dict(model=mlp(32), loss=dict(name='xent'), train=t),
      student_losses=dict(raven=dict(name='raven', teachers=2, lr=0.1),
                          csl=dict(name='csl', warmup=0.25)),
      eval_batch_size=64, log_every=4, checkpoint_every=100, keep_checkpoints=1,
      mesh=dict(num_devices=1)))
  results = train.train_and_evaluate(config, str(tmp_path))
  assert set(results['summary']) == {'raven', 'csl'}
  for name in ('raven', 'csl'):
    assert 0.0 <= results['per_seed'][0][name]['acc_student'] <= 1.0
  import glob
  import json
  weak = glob.glob(str(tmp_path / 'stages' / 'weak-*' / 'outputs.npz'))[0]
  members = np.load(weak)['strong_train_member_probs']
  assert members.shape[1:] == (2, 10)
  assert (members[:, 0, 5:] == 0).all() and (members[:, 1, :5] == 0).all()
  metrics = [json.loads(line) for f in glob.glob(str(tmp_path / 'stages' / 'student_raven*' /
                                                    'metrics.jsonl')) for line in open(f)]
  assert any('weight_1' in m for m in metrics)  # the learned weights reach the logs
