"""w2s.augment: pure jittable (rng, batch) -> batch functions, checked against hand-made results."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from w2s import registry, sharding
from w2s.augment import randaugment, tokens
from w2s.errors import UserError

# randaugment with 3 of its ops here (the same switch / loop / cutout path at a fraction of the
# compile time); the full policy is jitted in test_randaugment_policy, chain in
# test_chain_applies_ops_in_order_with_split_keys.
IMAGE_SPECS = [dict(name='flip'), dict(name='translate', pad=2), dict(name='cutout', size=3),
               dict(name='randaugment', ops=['rotate', 'solarize', 'equalize'], cutout=2)]
TEXT_SPECS = [dict(name='tokens', mode=m, p=0.4, mask_id=103) for m in tokens.MODES]
VECTOR_SPECS = [dict(name='features', sigma=0.5, p=0.3)]


def make(spec):
  return registry.build('augment', spec)


def image_batch(b=8, h=8, w=8, c=3, seed=0):
  """Random 8-bit images (k / 255) plus fields an augmentation must leave alone."""
  x = jnp.asarray(np.random.RandomState(seed).randint(0, 256, (b, h, w, c)) / 255, jnp.float32)
  return {'x': x, 'label': jax.nn.one_hot(jnp.arange(b) % 3, 3), 'mask': jnp.ones(b)}


def text_batch():
  """Right-padded rows of lengths 9..2; [CLS] 101 first, [SEP] 102 last, pad 0; pair types."""
  rows, lengths = [], [9, 7, 5, 2, 9, 8, 3, 6]
  for i, n in enumerate(lengths):
    rows.append([101] + [1000 + 10 * i + j for j in range(n - 2)] + [102] + [0] * (10 - n))
  ids = jnp.array(rows, jnp.int32)
  mask = (ids > 0).astype(jnp.int32)
  types = mask * (jnp.arange(10)[None] >= 3)
  return {'input_ids': ids, 'attention_mask': mask, 'token_type_ids': types, 'id': jnp.arange(8)}


def vector_batch():
  return {'x': jnp.asarray(np.random.RandomState(0).randn(8, 5), jnp.float32),
          'label': jnp.ones((8, 2))}


CASES = ([(s, image_batch) for s in IMAGE_SPECS] + [(s, text_batch) for s in TEXT_SPECS]
         + [(s, vector_batch) for s in VECTOR_SPECS]
         + [(dict(name='sparse_pixels', pixels=3), lambda: image_batch(c=2))])  # [image, mask]
IDS = [f"{s['name']}-{s.get('mode', '')}" for s, _ in CASES]


def test_registry_lists_every_augmentation():
  assert registry.known('augment') == ['chain', 'cutout', 'features', 'flip', 'randaugment',
                                       'sparse_pixels', 'tokens', 'translate']


@pytest.mark.parametrize('spec,batch_fn', CASES, ids=IDS)
def test_jitted_deterministic_sharded_and_vmapped(spec, batch_fn):
  """Same key -> same output, another key -> another; 8 sharded devices and vmap agree with one."""
  fn, batch = make(spec), batch_fn()
  one = jax.jit(fn)
  on_0 = jax.device_put(batch, jax.devices()[0])
  a, b, c = (one(jax.random.key(i), on_0) for i in (1, 1, 2))
  assert set(a) == set(batch)
  changed = [k for k in batch if not np.array_equal(a[k], batch[k])]
  inputs = ('x', 'input_ids', 'attention_mask', 'token_type_ids')
  assert changed and all(k in inputs for k in changed)
  for k in batch:
    np.testing.assert_array_equal(a[k], b[k])
    assert a[k].shape == batch[k].shape and a[k].dtype == batch[k].dtype
  assert any(not np.array_equal(a[k], c[k]) for k in changed)

  mesh = sharding.make_mesh()
  assert mesh.devices.size == 8
  out = jax.jit(fn)(jax.random.key(1), jax.device_put(batch, sharding.data_sharded(mesh)))
  assert out[changed[0]].sharding.is_equivalent_to(sharding.data_sharded(mesh), 2)
  keys = jax.random.wrap_key_data(jnp.stack([jax.random.key_data(jax.random.key(i))
                                              for i in (2, 1)]))
  stacked = jax.tree.map(lambda v: jnp.stack([v, v]), batch)
  vm = jax.jit(jax.vmap(fn))(keys, stacked)
  for k in batch:
    np.testing.assert_allclose(out[k], a[k], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(vm[k][0], c[k], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(vm[k][1], a[k], rtol=1e-5, atol=1e-5)


def test_flip_p1_mirrors_and_p0_is_identity():
  batch = image_batch()
  np.testing.assert_array_equal(make(dict(name='flip', p=1.0))(jax.random.key(0), batch)['x'],
                                batch['x'][:, :, ::-1])
  np.testing.assert_array_equal(make(dict(name='flip', p=0.0))(jax.random.key(0), batch)['x'],
                                batch['x'])


def test_translate_is_a_shifted_copy():
  batch = image_batch(b=16)
  assert make(dict(name='translate', pad=0))(jax.random.key(0), batch) is batch
  x = np.asarray(batch['x'])
  out = np.asarray(jax.jit(make(dict(name='translate', pad=2, mode='constant')))(
      jax.random.key(3), batch)['x'])
  padded = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
  offsets = []
  for i in range(16):
    hits = [(dy, dx) for dy in range(5) for dx in range(5)
            if np.array_equal(out[i], padded[i, dy:dy + 8, dx:dx + 8])]
    assert len(hits) == 1, hits   # random pixels: exactly one offset reproduces the output
    offsets.append(hits[0])
  assert len(set(offsets)) > 4
  dy, dx = offsets[0]             # out[r, c] = x[r + dy - 2, c + dx - 2] inside the image
  r0, c0 = max(0, 2 - dy), max(0, 2 - dx)
  np.testing.assert_array_equal(out[0, r0:r0 + 4, c0:c0 + 4],
                                x[0, r0 + dy - 2:r0 + dy + 2, c0 + dx - 2:c0 + dx + 2])


def test_cutout_zeroes_a_size_by_size_square():
  ones = {'x': jnp.ones((256, 16, 16, 2))}
  for size in (4, 0.25):
    out = np.asarray(make(dict(name='cutout', size=size))(jax.random.key(0), ones)['x'])
    interior = 0
    for img in out:
      rows, cols = np.nonzero(img[..., 0] == 0)
      np.testing.assert_array_equal(img[..., 0], img[..., 1])   # the same square in every channel
      assert set(np.unique(img)) <= {0.0, 1.0}
      box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
      assert len(rows) == box <= 16                              # a (clipped) solid rectangle
      if rows.min() > 0 and cols.min() > 0 and rows.max() < 15 and cols.max() < 15:
        interior += 1
        assert len(rows) == 16                                   # away from borders: all 4 x 4
    assert interior > 100


OP_BATCH = image_batch(b=4, h=9, w=9, c=3, seed=5)['x']
MAGNITUDE_OPS = [n for n in randaugment.OPS if n not in randaugment.MAGNITUDE_FREE]


@jax.jit
def all_ops(imgs, m, s):
  """[len(MAGNITUDE_OPS), B, H, W, C]: every op with a magnitude, one compile for all."""
  return jnp.stack([jax.vmap(lambda img: randaugment.OPS[n](img, m, s, 0.5))(imgs)
                    for n in MAGNITUDE_OPS])


def test_randaugment_op_at_magnitude_zero_is_identity():
  for sign in (1.0, -1.0):
    for name, out in zip(MAGNITUDE_OPS, all_ops(OP_BATCH, 0.0, sign)):
      np.testing.assert_allclose(out, OP_BATCH, rtol=1e-5, atol=1e-5, err_msg=name)
  for name, out in zip(MAGNITUDE_OPS, all_ops(OP_BATCH, 1.0, 1.0)):
    assert float(jnp.abs(out - OP_BATCH).max()) > 0.05, name      # and it does something at m = 1
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0, name


@jax.jit
def _geometry_and_free_ops(img, ramp):
  return (randaugment.rotate(img, 90.0, 0.5), randaugment.rotate(img, -90.0, 0.5),
          randaugment.affine(img, jnp.eye(2), jnp.array([0.0, 1.0]), 0.5),  # reads col + 1
          randaugment.autocontrast(0.25 + 0.5 * img), randaugment.equalize(ramp))


def test_rotate_90_is_rot90_and_magnitude_free_ops():
  img = OP_BATCH[0]
  ramp = jnp.tile((jnp.arange(256.0) / 255).reshape(16, 16, 1), (1, 1, 3))
  left, right, shifted, stretched, equalized = _geometry_and_free_ops(img, ramp)
  np.testing.assert_allclose(left, jnp.rot90(img, 1, (0, 1)), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(right, jnp.rot90(img, -1, (0, 1)), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(shifted[:, :-1], img[:, 1:], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(shifted[:, -1], 0.5, rtol=1e-5, atol=1e-6)      # outside the image: fill
  lo, hi = img.min((0, 1)), img.max((0, 1))
  np.testing.assert_allclose(stretched, (img - lo) / (hi - lo), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(equalized, ramp, rtol=1e-5, atol=1e-6)           # a flat histogram stays


def test_randaugment_policy():
  batch = image_batch(b=16)
  full = jax.jit(make(dict(name='randaugment')))                    # all ops, cutout 0.5
  out, again = full(jax.random.key(0), batch)['x'], full(jax.random.key(0), batch)['x']
  np.testing.assert_array_equal(out, again)
  assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
  changed = np.asarray(out != batch['x']).any(-1).mean((1, 2))      # [B] fraction of pixels hit
  assert (changed >= 16 / 64 * 0.5).all()                           # cutout: >= half of its 16
  same = make(dict(name='randaugment', num_ops=0, cutout=0))(jax.random.key(0), batch)
  np.testing.assert_array_equal(same['x'], batch['x'])
  # one op per image: each output is exactly one of the ops' results (geometric and point ops
  # share a slot through the merged resampling; their switch indices must line up)
  mixed = jax.jit(make(dict(name='randaugment', ops=['rotate', 'solarize', 'equalize'], num_ops=1,
                            magnitude=1.0, cutout=0)))(jax.random.key(3), batch)['x']
  x = batch['x']
  candidates = jax.jit(lambda x: jnp.stack([
      jax.vmap(lambda i, s=s, n=n: randaugment.OPS[n](i, 1.0, s, 0.5))(x)
      for n, s in (('solarize', 1.0), ('rotate', 1.0), ('rotate', -1.0), ('equalize', 1.0))]))(x)
  match = np.asarray(jnp.abs(candidates - mixed).max((2, 3, 4)) < 1e-5)  # [4, B]
  assert match.any(0).all() and len(set(match.argmax(0))) >= 2


def real_tokens(row, mask):
  return [int(t) for t, m in zip(row, mask) if m]


@pytest.mark.parametrize('mode', tokens.MODES)
def test_tokens_keep_position_0_padding_and_order(mode):
  batch = text_batch()
  fn = jax.jit(make(dict(name='tokens', mode=mode, p=0.5, mask_id=103, keep_last=1)))
  ids, mask = np.asarray(batch['input_ids']), np.asarray(batch['attention_mask'])
  for seed in range(5):
    out = fn(jax.random.key(seed), batch)
    o_ids, o_mask = np.asarray(out['input_ids']), np.asarray(out['attention_mask'])
    np.testing.assert_array_equal(o_ids[:, 0], 101)
    assert (o_ids[mask == 0] == 0).all() and (o_mask[mask == 0] == 0).all()
    for i in range(8):
      before, after = real_tokens(ids[i], mask[i]), real_tokens(o_ids[i], o_mask[i])
      n = len(before)
      assert list(o_mask[i]) == [1] * len(after) + [0] * (10 - len(after))  # still contiguous
      assert after[-1] == 102                                              # keep_last=1
      k = int(np.round(0.5 * (n - 2)))
      if mode == 'span':   # the rest in order: before minus one contiguous block of k tokens
        assert len(after) == n - k
        assert any(before[:s] + before[s + k:] == after for s in range(1, n - k))
        types = np.asarray(out['token_type_ids'])[i]
        assert (types[len(after):] == 0).all()
      else:
        assert len(after) == n
        changed = [a != b for a, b in zip(before, after)]
        assert all(after[j] == 103 for j in range(n) if changed[j])
        if mode == 'mask':
          assert sum(changed) == k                                      # exactly round(p n)


def test_tokens_special_ids_survive_and_bert_mix():
  batch = text_batch()
  ids = batch['input_ids'].at[:, 3].set(jnp.where(batch['attention_mask'][:, 3] > 0, 102, 0))
  batch = {**batch, 'input_ids': ids}
  for mode in tokens.MODES:
    out = jax.jit(make(dict(name='tokens', mode=mode, p=1.0, mask_id=103, special_ids=[102])))(
        jax.random.key(0), batch)
    np.testing.assert_array_equal((out['input_ids'] == 102).sum(1), (ids == 102).sum(1))
  big = {'input_ids': jnp.full((64, 200), 7, jnp.int32), 'attention_mask': jnp.ones((64, 200))}
  out = np.asarray(jax.jit(make(dict(name='tokens', mode='mask', p=1.0, mask_id=103,
                                     vocab_size=50)))(jax.random.key(0), big)['input_ids'])[:, 1:]
  frac_mask, frac_same = (out == 103).mean(), (out == 7).mean()
  assert abs(frac_mask - 0.8) < 0.02 and 0.08 < frac_same < 0.125  # 10% kept + 10% / 50 random 7s


def test_feature_noise_std_and_dropout_rate():
  n = 1_000_000
  x = jnp.full((1000, 1000), 2.0)
  noisy = jax.jit(make(dict(name='features', sigma=0.3)))
  out = np.asarray(noisy(jax.random.key(0), {'x': x})['x'])
  noise = out - 2.0
  # std of the sample std ~ sigma / sqrt(2 n); of the sample mean sigma / sqrt(n): 5 of each
  assert abs(noise.std() - 0.3) < 5 * 0.3 / np.sqrt(2 * n)
  assert abs(noise.mean()) < 5 * 0.3 / np.sqrt(n)
  for rescale, kept in ((True, 2.0 / 0.75), (False, 2.0)):
    out = np.asarray(jax.jit(make(dict(name='features', p=0.25, rescale=rescale)))(
        jax.random.key(1), {'x': x})['x'])
    assert set(np.unique(out)) == {0.0, np.float32(kept)}
    assert abs((out == 0).mean() - 0.25) < 5 * np.sqrt(0.25 * 0.75 / n)


def test_chain_applies_ops_in_order_with_split_keys():
  batch, rng = image_batch(), jax.random.key(4)
  spec = dict(name='chain', ops=[dict(name='flip'), dict(name='translate', pad=0.25),
                                 dict(name='cutout', size=2)])
  out = jax.jit(make(spec))(rng, batch)

  @jax.jit
  def ref(rng, batch):
    k1, k2, k3 = jax.random.split(rng, 3)
    batch = make(dict(name='translate', pad=2))(k2, make(dict(name='flip'))(k1, batch))
    return make(dict(name='cutout', size=2))(k3, batch)
  ref = ref(rng, batch)
  np.testing.assert_array_equal(out['x'], ref['x'])
  np.testing.assert_array_equal(out['label'], batch['label'])


@pytest.mark.parametrize('spec,match', [
    (dict(name='flip', p=1.5), r"p=1.5 must be a number in \[0, 1\]"),
    (dict(name='translate', pad=-1), 'pad=-1 must be an int number of pixels >= 0'),
    (dict(name='translate', mode='wrap'), 'mode=.wrap. must be one of reflect, edge, constant'),
    (dict(name='cutout', size=1.5), 'size=1.5 must be an int'),
    (dict(name='randaugment', num_ops=-1), 'num_ops=-1 must be a whole number >= 0'),
    (dict(name='randaugment', ops=['rotate', 'zoom']), "unknown op 'zoom'"),
    (dict(name='randaugment', magnitude=2.0), r'magnitude=2.0 must be a number in \[0, 1\]'),
    (dict(name='tokens', mode='mask'), 'needs mask_id'),
    (dict(name='tokens', mode='shuffle'), 'mode=.shuffle. must be one of dropout, mask, span'),
    (dict(name='tokens', mode='dropout', mask_id=1, vocab_size=9), "vocab_size applies to mode='m"),
    (dict(name='features', p=1.0), r'p=1.0 must be a number in \[0, 1\)'),
    (dict(name='chain', ops=[]), 'ops must be a non-empty list'),
    (dict(name='chain', ops=[dict(name='flip', q=1)]), "has no option 'q'"),
])
def test_bad_hparams_fail_at_make_time(spec, match):
  with pytest.raises(UserError, match=match):
    make(spec)


def test_missing_or_wrong_field_fails_at_trace_time():
  with pytest.raises(UserError, match="needs batch field 'x'"):
    jax.jit(make(dict(name='flip')))(jax.random.key(0), text_batch())
  with pytest.raises(UserError, match=r"is float32 \(8, 5\); it needs a float array of rank 4"):
    jax.jit(make(dict(name='randaugment')))(jax.random.key(0), vector_batch())
  with pytest.raises(UserError, match="needs batch field 'input_ids'"):
    make(dict(name='tokens', mode='span'))(jax.random.key(0), image_batch())
