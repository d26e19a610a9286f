"""Generative losses (sft, dpo, ipo, cdpo, wdpo, orpo, bradley_terry) against numpy.

Every loss is recomputed in float64 numpy from its paper's formula on small random inputs (V 7,
T 5, prompt and padding positions masked, one padded row); gradients w.r.t. the logits are checked
against central finite differences of that float64 reference (DPO and SFT also against their
closed forms). Then the invariances: SFT does not see prompt or padding positions, DPO is cdpo at
eps 0 and wdpo at confidence 1, Bradley-Terry is -log sigmoid of the reward margin, padded rows
give 0 and no NaN, and the batch mean on an 8-device ('data',) mesh equals the 1-device value.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from w2s.errors import UserError
from w2s.losses import bradley_terry, cdpo, dpo, ipo, orpo, sft, wdpo

B, T, V = 3, 5, 7


# ---------------------------------------------------------------- numpy float64 references

def np_token_logprobs(logits, ids):
  ls = logits - np.log(np.sum(np.exp(logits - logits.max(-1, keepdims=True)), -1,
                              keepdims=True)) - logits.max(-1, keepdims=True)
  out = np.zeros(ids.shape)
  for idx in np.ndindex(*ids.shape[:-1]):
    for t in range(1, ids.shape[-1]):
      out[idx + (t,)] = ls[idx + (t - 1, ids[idx + (t,)])]
  return out


def np_targets(lmask):
  m = np.asarray(lmask, np.float64).copy()
  m[..., 0] = 0
  return m


def np_mean_lp(logits, ids, lmask):
  m = np_targets(lmask)
  return (np_token_logprobs(logits, ids) * m).sum(-1) / np.maximum(m.sum(-1), 1), m.sum(-1)


def np_log_sigmoid(z):
  return -np.logaddexp(0.0, -z)


def np_sft(logits, ids, lmask, labels, mask, normalize='tokens'):
  mean, n = np_mean_lp(logits, ids, lmask)
  nll = -mean if normalize == 'tokens' else -mean * n
  return np.where(mask > 0, labels[:, 0] * nll, 0.0)


def np_h(logits, ids, lmask, ref, labels, mask):
  ratio = (np_token_logprobs(logits, ids) * lmask).sum(-1) - ref        # [B, 2]
  ratio = np.where(mask[:, None] > 0, ratio, 0.0)
  sign = np.where(np.argmax(labels, -1) == 0, 1.0, -1.0)
  return sign * (ratio[:, 0] - ratio[:, 1])


def np_cdpo(h, beta, eps):
  return -(1 - eps) * np_log_sigmoid(beta * h) - eps * np_log_sigmoid(-beta * h)


def np_pair_loss(name, logits, ids, lmask, ref, labels, mask, conf=None, **hp):
  """The per-pair loss of `name` in float64."""
  if name == 'orpo':
    mean, _ = np_mean_lp(logits, ids, lmask)
    w = np.argmax(labels, -1)
    lw, ll = mean[np.arange(len(w)), w], mean[np.arange(len(w)), 1 - w]
    odds = lambda m: m - np.log(1 - np.exp(m))
    per = -lw - hp.get('lam', 0.1) * np_log_sigmoid(odds(lw) - odds(ll))
    return np.where(mask > 0, per, 0.0)
  h = np_h(logits, ids, lmask, ref, labels, mask)
  beta = hp.get('beta', 0.1)
  if name == 'dpo':
    per = -np_log_sigmoid(beta * h)
  elif name == 'ipo':
    per = (h - 1 / (2 * hp.get('tau', 0.1))) ** 2
  elif name == 'cdpo':
    per = np_cdpo(h, beta, hp.get('eps', 0.1))
  elif name == 'wdpo':
    c = labels.max(-1) if conf is None else conf
    per = (c * -np_log_sigmoid(beta * h) if hp.get('mode', 'weight') == 'weight'
           else np_cdpo(h, beta, 1 - c))
  return np.where(mask > 0, per, 0.0)


def finite_diff(f, x, eps=1e-6):
  g = np.zeros_like(x)
  for idx in np.ndindex(*x.shape):
    xp, xm = x.copy(), x.copy()
    xp[idx] += eps
    xm[idx] -= eps
    g[idx] = (f(xp) - f(xm)) / (2 * eps)
  return g


# ---------------------------------------------------------------- inputs

def _token_batch(seed=0, b=B):
  """Random [b, T] sequences: prompt of 1-2 tokens, response, right padding; last row padded
  when b == B (mask 0)."""
  rs = np.random.RandomState(seed)
  logits = rs.normal(0, 2, (b, T, V))
  ids = rs.randint(0, V, (b, T)).astype(np.int32)
  prompt = rs.randint(1, 3, b)
  length = np.minimum(prompt + rs.randint(1, 4, b), T)
  t = np.arange(T)[None]
  lmask = ((t >= prompt[:, None]) & (t < length[:, None])).astype(np.float32)
  labels = rs.uniform(0.5, 1.5, (b, 1)).astype(np.float32)
  mask = np.ones(b, np.float32)
  if b == B:
    mask[-1] = 0
  return logits, ids, lmask, labels, mask


def _pair_batch(seed=0, b=B):
  """Random pairs [b, 2, T]; soft labels with both orientations and a tie; last row padded (with
  junk: NaN reference log-probs, zero labels) when b == B."""
  rs = np.random.RandomState(seed)
  logits = rs.normal(0, 2, (b, 2, T, V))
  ids = rs.randint(0, V, (b, 2, T)).astype(np.int32)
  prompt = rs.randint(1, 3, (b, 1))
  length = np.minimum(prompt + rs.randint(1, 4, (b, 2)), T)
  t = np.arange(T)[None, None]
  lmask = ((t >= prompt[..., None]) & (t < length[..., None])).astype(np.float32)
  p = rs.uniform(0.05, 0.95, b)
  p[0] = 0.8
  if b > 1:
    p[1] = 0.3
  labels = np.stack([p, 1 - p], -1).astype(np.float32)
  ref = rs.normal(-8, 2, (b, 2)).astype(np.float32)
  mask = np.ones(b, np.float32)
  if b == B:
    mask[-1] = 0
    ref[-1] = np.nan
    labels[-1] = 0
  return logits, ids, lmask, ref, labels, mask


def _call(fn, logits, labels, mask, batch, **hp):
  per, aux = fn(logits=jnp.asarray(logits, jnp.float32), labels=jnp.asarray(labels),
                mask=jnp.asarray(mask), batch={k: jnp.asarray(v) for k, v in batch.items()}, **hp)
  return np.asarray(per), jax.tree.map(np.asarray, aux)


def _grad(fn, logits, labels, mask, batch, **hp):
  batch = {k: jnp.asarray(v) for k, v in batch.items()}
  f = lambda z: jnp.sum(fn(logits=z, labels=jnp.asarray(labels), mask=jnp.asarray(mask),
                            batch=batch, **hp)[0])
  return np.asarray(jax.grad(f)(jnp.asarray(logits, jnp.float32)))


PAIR_LOSSES = {'dpo': (dpo.loss, dict(beta=0.5)), 'ipo': (ipo.loss, dict(tau=0.25)),
               'cdpo': (cdpo.loss, dict(beta=0.5, eps=0.2)),
               'wdpo': (wdpo.loss, dict(beta=0.5)),
               'wdpo_smoothing': (wdpo.loss, dict(beta=0.5, mode='smoothing')),
               'orpo': (orpo.loss, dict(lam=0.3))}


# ---------------------------------------------------------------- sft

@pytest.mark.parametrize('normalize', ['tokens', 'sum'])
def test_sft_matches_numpy_value_grad_and_accuracy(normalize):
  logits, ids, lmask, labels, mask = _token_batch()
  batch = {'input_ids': ids, 'loss_mask': lmask}
  per, aux = _call(sft.loss, logits, labels, mask, batch, normalize=normalize)
  want = np_sft(logits, ids, lmask, labels, mask, normalize)
  assert want[0] > 0 and per[-1] == 0
  np.testing.assert_allclose(per, want, rtol=1e-5)
  # token accuracy: argmax of the previous position's logits == the token, over response tokens
  m = np_targets(lmask)
  hit = np.zeros_like(m)
  hit[:, 1:] = np.argmax(logits[:, :-1], -1) == ids[:, 1:]
  acc = np.where(mask > 0, (hit * m).sum(-1) / np.maximum(m.sum(-1), 1), 0)
  np.testing.assert_allclose(aux['correct'], acc, rtol=1e-6)
  np.testing.assert_allclose(aux['tokens'], m.sum(-1)[:2].mean(), rtol=1e-6)
  # gradient: finite differences of the float64 reference, and the closed form
  # d/dlogits[t-1] = -(w / n) (onehot(y_t) - softmax(logits[t-1])) for 'tokens'
  got = _grad(sft.loss, logits, labels, mask, batch, normalize=normalize)
  fd = finite_diff(lambda z: np_sft(z, ids, lmask, labels, mask, normalize).sum(), logits)
  np.testing.assert_allclose(got, fd, rtol=1e-4, atol=1e-6)
  if normalize == 'tokens':
    sm = np.exp(logits - logits.max(-1, keepdims=True))
    sm /= sm.sum(-1, keepdims=True)
    closed = np.zeros_like(logits)
    for b in range(B):
      n = max(m[b].sum(), 1)
      for t in range(1, T):
        closed[b, t - 1] = -mask[b] * labels[b, 0] * m[b, t] / n * (np.eye(V)[ids[b, t]]
                                                                   - sm[b, t - 1])
    np.testing.assert_allclose(got, closed, rtol=1e-4, atol=1e-6)


def test_sft_ignores_prompt_and_padding_positions():
  logits, ids, lmask, labels, mask = _token_batch(seed=1)
  batch = {'input_ids': ids, 'loss_mask': lmask}
  per, _ = _call(sft.loss, logits, labels, mask, batch)
  grad = _grad(sft.loss, logits, labels, mask, batch)
  # logits[t] only predict token t + 1; ids[t] only count where lmask[t] = 1
  unread = np.zeros((B, T), bool)
  unread[:, :-1] = np_targets(lmask)[:, 1:] == 0
  unread[:, -1] = True
  unread[mask == 0] = True
  rs = np.random.RandomState(5)
  logits2 = np.where(unread[..., None], rs.normal(0, 5, logits.shape), logits)
  ids2 = np.where(lmask > 0, ids, rs.randint(0, V, ids.shape)).astype(np.int32)
  assert (ids2 != ids).any() and (logits2 != logits).any()
  batch2 = {'input_ids': ids2, 'loss_mask': lmask}
  per2, _ = _call(sft.loss, logits2, labels, mask, batch2)
  grad2 = _grad(sft.loss, logits2, labels, mask, batch2)
  np.testing.assert_allclose(per2, per, rtol=1e-6)
  np.testing.assert_allclose(grad2, grad, rtol=1e-6)
  assert np.all(grad[unread] == 0) and np.abs(grad[~unread]).max() > 0
  # the loss mask's position 0 has no prediction: it changes nothing either
  lmask0 = lmask.copy()
  lmask0[:, 0] = 1
  np.testing.assert_allclose(_call(sft.loss, logits, labels, mask,
                                   {'input_ids': ids, 'loss_mask': lmask0})[0], per, rtol=1e-6)


def test_sft_empty_response_is_zero_not_nan():
  logits, ids, lmask, labels, mask = _token_batch(seed=2)
  lmask[0] = 0
  batch = {'input_ids': ids, 'loss_mask': lmask}
  per, aux = _call(sft.loss, logits, labels, mask, batch)
  assert per[0] == 0 and aux['correct'][0] == 0 and np.isfinite(per).all()
  assert np.isfinite(_grad(sft.loss, logits, labels, mask, batch)).all()


# ---------------------------------------------------------------- pair losses

@pytest.mark.parametrize('name', sorted(PAIR_LOSSES))
def test_pair_loss_matches_numpy_value_and_grad(name):
  fn, hp = PAIR_LOSSES[name]
  logits, ids, lmask, ref, labels, mask = _pair_batch()
  batch = {'input_ids': ids, 'loss_mask': lmask, 'ref_logp': ref}
  np_name = 'wdpo' if name.startswith('wdpo') else name
  per, aux = _call(fn, logits, labels, mask, batch, **hp)
  want = np_pair_loss(np_name, logits, ids, lmask, ref, labels, mask, **hp)
  assert np.isfinite(per).all() and per[-1] == 0 and np.all(want[:2] != 0)
  np.testing.assert_allclose(per, want, rtol=1e-5)
  got = _grad(fn, logits, labels, mask, batch, **hp)
  fd = finite_diff(lambda z: np_pair_loss(np_name, z, ids, lmask, ref, labels, mask, **hp).sum(),
                   logits)
  assert np.isfinite(got).all() and np.all(got[-1] == 0) and np.abs(got).max() > 1e-3
  np.testing.assert_allclose(got, fd, rtol=1e-4, atol=1e-6)
  if name != 'orpo':  # implicit-reward accuracy and the reward means
    h = np_h(logits, ids, lmask, ref, labels, mask)
    scale = 1.0 if name == 'ipo' else hp['beta']
    np.testing.assert_array_equal(aux['correct'], np.where(mask > 0, h > 0, 0))
    np.testing.assert_allclose(aux['reward_margin'], scale * h[:2].mean(), rtol=1e-5)
    assert {'chosen_reward', 'rejected_reward'} <= set(aux)
  else:
    mean, _ = np_mean_lp(logits, ids, lmask)
    w = np.argmax(labels, -1)
    np.testing.assert_allclose(aux['nll'], -mean[[0, 1], w[:2]].mean(), rtol=1e-5)
  assert all(np.ndim(v) == 0 for k, v in aux.items() if k != 'correct')


def test_dpo_gradient_is_minus_beta_sigmoid_of_minus_beta_h():
  """dL/dh = -beta sigmoid(-beta h); dh/dlogits[k, t-1] = +-lmask[k, t] (onehot(y) - softmax)."""
  beta = 0.7
  logits, ids, lmask, ref, labels, mask = _pair_batch(seed=3)
  batch = {'input_ids': ids, 'loss_mask': lmask, 'ref_logp': ref}
  got = _grad(dpo.loss, logits, labels, mask, batch, beta=beta)
  h = np_h(logits, ids, lmask, ref, labels, mask)
  dldh = -beta / (1 + np.exp(beta * h))
  sm = np.exp(logits - logits.max(-1, keepdims=True))
  sm /= sm.sum(-1, keepdims=True)
  closed = np.zeros_like(logits)
  for b in range(B):
    sign = 1.0 if np.argmax(labels[b]) == 0 else -1.0
    for k in range(2):
      for t in range(1, T):
        d = (sign if k == 0 else -sign) * lmask[b, k, t]
        closed[b, k, t - 1] = mask[b] * dldh[b] * d * (np.eye(V)[ids[b, k, t]] - sm[b, k, t - 1])
  np.testing.assert_allclose(got, closed, rtol=1e-4, atol=1e-7)


def test_dpo_special_cases_of_cdpo_and_wdpo():
  logits, ids, lmask, ref, labels, mask = _pair_batch(seed=4)
  batch = {'input_ids': ids, 'loss_mask': lmask, 'ref_logp': ref}
  base, _ = _call(dpo.loss, logits, labels, mask, batch, beta=0.3)
  np.testing.assert_allclose(_call(cdpo.loss, logits, labels, mask, batch, beta=0.3, eps=0.0)[0],
                             base, rtol=1e-6)
  hard = np.eye(2, dtype=np.float32)[np.argmax(labels, -1)]  # same choices, confidence 1
  np.testing.assert_allclose(_call(dpo.loss, logits, hard, mask, batch, beta=0.3)[0], base,
                             rtol=1e-6)
  for mode in wdpo.MODES:
    np.testing.assert_allclose(_call(wdpo.loss, logits, hard, mask, batch, beta=0.3,
                                     mode=mode)[0], base, rtol=1e-6)
  # batch['confidence'] overrides max(labels); confidence 1 is DPO again
  conf = np.array([1.0, 0.6, 0.0], np.float32)
  per, aux = _call(wdpo.loss, logits, labels, mask, {**batch, 'confidence': conf}, beta=0.3)
  np.testing.assert_allclose(per, conf * base, rtol=1e-6)
  np.testing.assert_allclose(aux['confidence'], 0.8, rtol=1e-6)
  # smoothing with c = max(p) is the soft-label BCE of sigmoid(beta h) against the judge's p
  h = np_h(logits, ids, lmask, ref, labels, mask)
  p_w = labels.max(-1)
  bce = -p_w * np_log_sigmoid(0.3 * h) - (1 - p_w) * np_log_sigmoid(-0.3 * h)
  np.testing.assert_allclose(_call(wdpo.loss, logits, labels, mask, batch, beta=0.3,
                                   mode='smoothing')[0][:2], bce[:2], rtol=1e-5)


def test_ties_choose_response_zero_and_swapping_responses_changes_nothing():
  logits, ids, lmask, ref, labels, mask = _pair_batch(seed=6)
  batch = {'input_ids': ids, 'loss_mask': lmask, 'ref_logp': ref}
  swap = lambda x: x[:, ::-1].copy()
  sbatch = {k: swap(v) for k, v in batch.items()}
  for name, (fn, hp) in PAIR_LOSSES.items():
    a, _ = _call(fn, logits, labels, mask, batch, **hp)
    b, _ = _call(fn, swap(logits), swap(labels), mask, sbatch, **hp)
    np.testing.assert_allclose(b, a, rtol=1e-5, err_msg=name)
  tie = np.full_like(labels, 0.5)
  h = np_h(logits, ids, lmask, ref, np.eye(2)[[0, 0, 0]], mask)
  _, aux = _call(dpo.loss, logits, tie, mask, batch)
  np.testing.assert_array_equal(aux['correct'], np.where(mask > 0, h > 0, 0))


def test_bradley_terry_is_minus_log_sigmoid_of_the_margin():
  rs = np.random.RandomState(7)
  r = rs.normal(0, 3, (4, 2)).astype(np.float32)
  hard = np.eye(2, dtype=np.float32)[[0, 1, 1, 0]]
  mask = np.array([1, 1, 1, 0], np.float32)
  per, aux = _call(bradley_terry.loss, r, hard, mask, {})
  w = np.argmax(hard, -1)
  margin = r[np.arange(4), w].astype(np.float64) - r[np.arange(4), 1 - w]
  np.testing.assert_allclose(per, np.where(mask > 0, -np_log_sigmoid(margin), 0), rtol=1e-5)
  assert aux == {}
  soft = np.stack([rs.uniform(0, 1, 4), np.zeros(4)], -1).astype(np.float32)
  soft[:, 1] = 1 - soft[:, 0]
  soft[-1] = 0  # a padded row's labels may be zero
  per, _ = _call(bradley_terry.loss, r, soft, mask, {})
  d = r[:, 0].astype(np.float64) - r[:, 1]
  want = -soft[:, 0] * np_log_sigmoid(d) - soft[:, 1] * np_log_sigmoid(-d)
  np.testing.assert_allclose(per, np.where(mask > 0, want, 0), rtol=1e-5)
  # gradient w.r.t. the rewards: softmax(r) - labels on real rows
  got = _grad(bradley_terry.loss, r, soft, mask, {})
  sm = np.exp(r - r.max(-1, keepdims=True))
  sm /= sm.sum(-1, keepdims=True)
  np.testing.assert_allclose(got, (sm - soft) * mask[:, None], rtol=1e-5, atol=1e-7)


def test_wrong_shapes_and_missing_fields_are_user_errors():
  logits, ids, lmask, ref, labels, mask = _pair_batch()
  batch = {'input_ids': ids, 'loss_mask': lmask}
  with pytest.raises(UserError, match='ref_logp'):
    _call(dpo.loss, logits, labels, mask, batch)
  with pytest.raises(UserError, match=r'\[B, 2, T, V\]'):
    _call(dpo.loss, logits[:, 0], labels, mask, {**batch, 'ref_logp': ref})
  _call(orpo.loss, logits, labels, mask, batch)  # ORPO needs no reference
  with pytest.raises(UserError, match=r'\[B, T, V\]'):
    _call(sft.loss, logits, labels[:, :1], mask, batch)
  with pytest.raises(UserError, match='mode'):
    _call(wdpo.loss, logits, labels, mask, {**batch, 'ref_logp': ref}, mode='nope')
  with pytest.raises(UserError, match=r'\[B, 2\]'):
    _call(bradley_terry.loss, np.zeros((3, 1), np.float32), labels, mask, {})


def test_orpo_log_odds_is_stable_near_certainty():
  m = jnp.asarray([-30.0, -1.0, -1e-3, -1e-8, 0.0])
  lo = np.asarray(orpo.log_odds(m))
  assert np.isfinite(lo).all() and np.all(np.diff(lo) >= 0)
  np.testing.assert_allclose(lo[:3], [-30.0, -1 - np.log1p(-np.exp(-1.0)),
                                      -1e-3 - np.log(-np.expm1(-1e-3))], rtol=1e-5)
  assert np.isfinite(np.asarray(jax.grad(lambda x: orpo.log_odds(x).sum())(m))).all()


# ---------------------------------------------------------------- sharding

ALL = {**PAIR_LOSSES, 'sft': (sft.loss, {}), 'bradley_terry': (bradley_terry.loss, {})}


@pytest.mark.parametrize('name', sorted(ALL))
def test_batch_mean_on_8_devices_equals_1_device(name):
  fn, hp = ALL[name]
  n = 16
  if name == 'sft':
    logits, ids, lmask, labels, mask = _token_batch(seed=8, b=n)
    batch = {'input_ids': ids, 'loss_mask': lmask}
  else:
    logits, ids, lmask, ref, labels, mask = _pair_batch(seed=8, b=n)
    batch = {'input_ids': ids, 'loss_mask': lmask, 'ref_logp': ref}
    if name == 'bradley_terry':
      logits, batch = logits[:, :, 0, 0], {}
  mask[-3:] = 0
  inputs = {'logits': logits.astype(np.float32), 'labels': labels, 'mask': mask, 'batch': batch}

  def mean(x):
    per, aux = fn(logits=x['logits'], labels=x['labels'], mask=x['mask'], batch=x['batch'], **hp)
    return jnp.sum(per * x['mask']) / jnp.sum(x['mask']), aux

  one, aux1 = jax.jit(mean)(inputs)
  mesh = jax.make_mesh((8,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))
  placed = jax.device_put(inputs, NamedSharding(mesh, P('data')))
  eight, aux8 = jax.jit(mean)(placed)
  assert len(placed['logits'].sharding.device_set) == 8
  assert np.isfinite(float(one)) and float(one) != 0
  np.testing.assert_allclose(float(eight), float(one), rtol=1e-5)
  for k in aux1:
    np.testing.assert_allclose(np.asarray(aux8[k]), np.asarray(aux1[k]), rtol=1e-5, atol=1e-7)
