"""The trainer's batches of whole groups (bags for the proportion loss): whole bags per batch and
per microbatch, a seeded order that resume continues, 1 vs 8 devices, the held-out loss with bag
columns, and one clear line for a batch that cannot hold whole bags."""
import os
import shutil

import jax
import numpy as np
import pytest
from ml_collections import ConfigDict

from w2s import options, registry, sharding, train
from w2s.data import pipeline
from w2s.errors import UserError

K = 8  # bag size


def _bagged(n, k=K, seed=0, num_classes=10, labels=None):
  """n rows in random bags of k: bag proportions as labels, 'bag_id' (non-contiguous ids)."""
  rng = np.random.default_rng(seed)
  y = rng.integers(0, num_classes, n) if labels is None else labels
  bag = rng.permutation(n) // k * 7 + 3  # any ints
  alpha = {b: np.eye(num_classes)[y[bag == b]].mean(0) for b in np.unique(bag)}
  return {'id': np.arange(n), 'bag_id': bag.astype(np.int32),
          'bag_size': np.full(n, k, np.int32),
          'label': np.stack([alpha[b] for b in bag]).astype(np.float32)}


def _bag_counts(batch):
  _, counts = np.unique(batch['bag_id'], return_counts=True)
  return counts


def _batches(ex, **kw):
  kw = {'global_batch': 32, 'seed': 0, 'groups': ex['bag_id'], **kw}
  return list(pipeline.train_batches(ex, **kw))


def test_batches_hold_whole_bags_in_a_seeded_order_that_resume_continues():
  ex = _bagged(128)
  straight = _batches(ex, num_steps=12)  # 3 epochs of 4 batches
  for b in straight:
    assert set(_bag_counts(b)) == {K}  # 4 whole bags of 8, nothing split
  for epoch in range(3):  # every row once per epoch
    rows = np.concatenate([b['id'] for b in straight[4 * epoch:4 * epoch + 4]])
    np.testing.assert_array_equal(np.sort(rows), np.arange(128))
  assert not np.array_equal(straight[0]['id'], straight[4]['id'])  # a fresh order each epoch
  again = _batches(ex, num_steps=12)
  resumed = _batches(ex, start_step=5, num_steps=7)
  for a, b in zip(straight, again):
    np.testing.assert_array_equal(a['id'], b['id'])
  for a, b in zip(straight[5:], resumed, strict=True):
    np.testing.assert_array_equal(a['id'], b['id'])
  other = _batches(ex, seed=1, num_steps=1)
  assert not np.array_equal(straight[0]['id'], other[0]['id'])
  # two hosts each read their contiguous half of the same global batch
  halves = [_batches(ex, num_steps=3, process_index=p, process_count=2) for p in (0, 1)]
  for g, h0, h1 in zip(straight, *halves):
    np.testing.assert_array_equal(g['id'], np.concatenate([h0['id'], h1['id']]))


def test_accumulation_microbatches_hold_whole_bags():
  ex = _bagged(256)
  for b in _batches(ex, accum_steps=2, num_steps=8):
    micro = train._microbatches({k: np.asarray(v) for k, v in b.items()}, 2)
    ids = [set(np.asarray(m).tolist()) for m in micro['bag_id']]
    assert not ids[0] & ids[1]  # no bag in both microbatches
    for m in micro['bag_id']:
      assert set(_bag_counts({'bag_id': np.asarray(m)})) == {K}  # 2 whole bags each


def test_batch_that_cannot_hold_whole_bags_is_one_line():
  ex = _bagged(128, k=16)
  with pytest.raises(UserError, match=r'^batch_size=24 \(accum_steps=1\) does not split into '
                                      r'whole bag_id groups of 16 rows.*batch_size=16$'):
    pipeline.group_rows(ex['bag_id'], 24, 1, 'bag_id')
  with pytest.raises(UserError, match=r'accum_steps=2\).*multiple of 32'):
    pipeline.group_rows(ex['bag_id'], 48, 2, 'bag_id')
  uneven = np.concatenate([ex['bag_id'], [999]])
  with pytest.raises(UserError, match='groups of one size; the 9 groups have 1 to 16 rows'):
    pipeline.group_rows(uneven, 32, 1, 'bag_id')


@pytest.fixture(scope='module')
def digits():
  ds = registry.build('datasets', dict(name='digits'))
  tr = ds.split('train')
  ex = _bagged(512, labels=np.asarray(tr['label'][:512]))
  ex['x'] = np.asarray(tr['x'][:512])
  return ex


def _cfg(**kw):
  c = dict(seed=0, loss=dict(name='proportion'), optimizer=dict(name='adam', learning_rate=3e-3),
           schedule=dict(name='cosine'), batch_size=64, num_steps=10, accum_steps=1,
           log_every=5, checkpoint_every=100, keep_checkpoints=2)
  c.update(kw)
  return ConfigDict(c)


def _module(dropout=0.0):
  return registry.build('models', dict(name='mlp', hidden=(32,), dropout=dropout, zero_head=False),
                        num_classes=10)


def _close(a, b, tol=1e-5):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=tol, atol=tol), a, b)


def test_proportion_fit_same_on_8_devices_and_with_accumulation(digits, tmp_path):
  """Whole bags in every microbatch: the accumulated update equals the full-batch one (a bag cut
  in two would give two different KLs), and the 8-device run equals the 1-device run."""
  assert jax.device_count() == 8
  runs = {}
  for name, n, accum in (('d1', 1, 1), ('d8', 8, 1), ('d8a2', 8, 2)):
    state, last = train.fit(_module(), digits, cfg=_cfg(accum_steps=accum),
                            workdir=str(tmp_path / name), mesh=sharding.make_mesh(n))
    runs[name] = jax.device_get(state.params)
    assert last['members_per_bag'] == K  # the loss saw whole bags
  _close(runs['d1'], runs['d8'])
  _close(runs['d8'], runs['d8a2'])


def test_resume_continues_the_bag_order(digits, tmp_path):
  mesh = sharding.make_mesh()
  straight, _ = train.fit(_module(0.1), digits, cfg=_cfg(num_steps=12),
                          workdir=str(tmp_path / 's'), mesh=mesh)
  part = str(tmp_path / 'p')
  cfg = _cfg(num_steps=12, checkpoint_every=5, keep_checkpoints=3)
  train.fit(_module(0.1), digits, cfg=cfg, workdir=part, mesh=mesh)
  for step in ('10', '12'):  # back to the step-5 checkpoint: mid-epoch (8 batches per epoch)
    shutil.rmtree(os.path.join(part, 'checkpoints', step))
  resumed, _ = train.fit(_module(0.1), digits, cfg=cfg, workdir=part, mesh=mesh)
  assert int(resumed.step) == 12
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
               straight.params, resumed.params)


def test_group_by_option_and_its_errors(digits, tmp_path):
  mesh = sharding.make_mesh()
  opts = options.TrainOptions.coerce(_cfg(loss=dict(name='easyllp'), group_by='bag_id'))
  assert train.group_key(opts) == 'bag_id' and opts.result_key()['group_by'] == 'bag_id'
  plain = options.TrainOptions.coerce(_cfg(loss=dict(name='xent')))
  assert train.group_key(plain) is None and 'group_by' not in plain.result_key()
  assert train.group_key(options.TrainOptions.coerce(_cfg())) == 'bag_id'  # the loss asks
  with pytest.raises(UserError, match=r"group_by=3 must be a column name"):
    options.TrainOptions.coerce(_cfg(group_by=3))
  with pytest.raises(UserError, match=r"does not split into whole bag_id groups of 8"):
    train.fit(_module(), digits, cfg=_cfg(batch_size=20), workdir=str(tmp_path / 'b'),
              mesh=sharding.make_mesh(1))
  no_bags = {k: v for k, v in digits.items() if k != 'bag_id'}
  with pytest.raises(UserError, match=r"need a 'bag_id' column .*loss 'proportion'"):
    train.fit(_module(), no_bags, cfg=_cfg(), workdir=str(tmp_path / 'n'), mesh=mesh)
  from w2s import ensemble
  with pytest.raises(UserError, match='an ensemble draws rows'):
    ensemble.fit_ensemble(_module(), digits, cfg=_cfg(), seeds=[0, 1],
                          workdir=str(tmp_path / 'e'), mesh=mesh)
  assert not os.path.exists(tmp_path / 'b' / 'checkpoints')


def test_held_out_loss_reads_the_bag_columns(digits):
  """val_loss of the proportion loss (needs 'bag_id') and easyllp (reads 'bag_size') equals the
  loss computed directly on the whole slice."""
  mesh = sharding.make_mesh()
  module = _module()
  val = {k: v[:128] for k, v in digits.items()}
  params = module.init({'params': jax.random.PRNGKey(0)}, {'x': val['x'][:1]},
                       train=False)['params']
  params = jax.device_put(params, sharding.replicated(mesh))
  logits = np.asarray(module.apply({'params': params}, {'x': val['x']}, train=False))
  for name in ('proportion', 'easyllp'):
    opts = options.TrainOptions.coerce(_cfg(loss=dict(name=name, **(
        {'prior': [0.1] * 10} if name == 'easyllp' else {})), eval_every=5))
    evaluator = train.make_evaluator(module, val, opts, mesh=mesh, name='t', batch_size=64)
    got = evaluator(params)
    batch = {k: val[k] for k in ('label', 'bag_id', 'bag_size')}
    batch['mask'] = np.ones(128, np.float32)
    pe, _ = registry.bind('losses', opts.loss.spec())(
        logits=logits, labels=val['label'], mask=batch['mask'], step_frac=1.0, batch=batch)
    np.testing.assert_allclose(got['val_loss'], np.mean(pe), rtol=1e-4)
