"""The pixel debate (w2s/debate/pixel.py, w2s/protocols/pixel_debate.py): greedy moves against a
brute-force search on tiny judges, the game's rules (k distinct allowed reveals, the judge's
choice between the two claims, precommitted claims that differ), the jitted batched game against
a Python loop, the sparse-pixel masks, an end-to-end runlocal run and its rerun, bad configs."""
import functools
import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from w2s import registry, train
from w2s.augment import sparse_pixels
from w2s.data import splits as splits_lib
from w2s.debate import pixel
from w2s.errors import UserError
from w2s.models import cnn, mlp
from w2s.protocols import pixel_debate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H = W = 6
C = 4


def _perturbed(module, seed=0):
  """Params of `module` for [B, H, W, 2] inputs, every leaf noised (the zero head too)."""
  params = module.init(jax.random.PRNGKey(seed), {'x': jnp.zeros((1, H, W, 2))})['params']
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
  return jax.tree.unflatten(tree, [v + jax.random.normal(k, v.shape) for k, v in zip(keys, leaves)])


JUDGES = {'mlp': mlp.create(num_classes=C, hidden=(8,)),
          'cnn': cnn.create(num_classes=C, widths=(3,), hidden=8)}


def _images(n=5, seed=0):
  """float32 [n, H*W] in [0, 1] with about half the pixels zero; allowed = nonzero."""
  rng = np.random.RandomState(seed)
  x = (rng.rand(n, H * W) * (rng.rand(n, H * W) < 0.5)).astype(np.float32)
  return x, x > 0


def _brute_logits(module, params, x, mask):
  """The model's logits [C] for one image x [P] and mask [P], one forward pass."""
  return np.asarray(_apply(module, params, jnp.asarray(x).reshape(1, H, W),
                           jnp.asarray(mask, jnp.float32).reshape(1, H, W)))[0]


@functools.partial(jax.jit, static_argnums=0)
def _apply(module, params, img, mask):
  return module.apply({'params': params}, {'x': sparse_pixels.masked_input(img, mask)})


@pytest.mark.parametrize('name', sorted(JUDGES))
def test_greedy_move_is_the_brute_force_argmax_over_pixels(name):
  module = JUDGES[name]
  params = _perturbed(module)
  judge = pixel.make_judge(module, (H, W))
  assert (name == 'mlp') == (judge.candidates.__qualname__.startswith('additive_judge'))
  x, allowed = _images(1)
  x, allowed = x[0], allowed[0]
  greedy = jax.jit(functools.partial(pixel.greedy_move, judge))
  revealed = np.zeros(H * W, bool)
  revealed[np.flatnonzero(allowed)[:2]] = True     # two pixels already on the board
  state = judge.init(params, jnp.asarray(x))
  for p in np.flatnonzero(revealed):
    state = judge.reveal(params, state, jnp.asarray(x), int(p))
  np.testing.assert_allclose(judge.logits(params, state, jnp.asarray(x)),
                             _brute_logits(module, params, x, revealed), rtol=1e-4, atol=1e-4)
  for own, opp in ((0, 1), (2, 0), (3, 1)):
    best, best_p = -np.inf, None
    for p in range(H * W):                          # one forward pass per pixel
      if revealed[p] or not allowed[p]:
        continue
      mask = revealed.copy()
      mask[p] = True
      z = _brute_logits(module, params, x, mask)
      if z[own] - z[opp] > best:
        best, best_p = z[own] - z[opp], p
    move = greedy(params, state, jnp.asarray(x), jnp.arange(H * W), jnp.asarray(revealed),
                  jnp.asarray(allowed), own, opp)
    assert int(move) == best_p, (name, own, opp)


@pytest.mark.parametrize('strategy', pixel.STRATEGIES)
def test_jitted_batched_game_equals_a_python_loop_and_follows_the_rules(strategy):
  module = JUDGES['mlp']
  params = _perturbed(module, seed=3)
  judge = pixel.make_judge(module, (H, W))
  x, allowed = _images(6, seed=1)
  allowed[5] = False
  allowed[5, [4, 9]] = True                         # fewer allowed pixels than k: then any
  claims = np.array([[0, 1], [1, 0], [2, 3], [3, 0], [1, 2], [0, 2]], np.int32)
  first = np.array([0, 1, 0, 1, 1, 0], np.int32)
  k = 4
  out = pixel.run_games(judge, params, x, allowed, claims, first, pixels=k, strategy=strategy,
                        top_n=3, batch_size=4)        # 2 batches, the last one padded
  assert out['order'].shape == (6, k) and out['logits'].shape == (6, k + 1, C)
  for g in range(6):
    ref = pixel.play_reference(judge, params, x[g], allowed[g], claims[g], first[g], pixels=k,
                               strategy=strategy, top_n=3)
    np.testing.assert_array_equal(out['order'][g], ref['order'])
    np.testing.assert_array_equal(out['mover'][g], ref['mover'])
    np.testing.assert_allclose(out['logits'][g], ref['logits'], rtol=1e-4, atol=1e-4)
    assert out['winner'][g] == ref['winner']
    order = out['order'][g]
    assert len(set(order.tolist())) == k            # exactly k reveals, never one twice
    n_allowed = allowed[g].sum()
    assert allowed[g][order[:min(k, n_allowed)]].all()
    np.testing.assert_array_equal(out['mover'][g], (first[g] + np.arange(k)) % 2)
  assert set(out['order'][5][:2].tolist()) == {4, 9}  # the allowed ones first


def test_judge_picks_between_the_two_claims_only():
  """A judge whose logits ignore the pixels: [1, 3, 5, 0]; class 2 is never claimed."""
  module = mlp.create(num_classes=C, hidden=())
  params = {'Dense_0': {'kernel': jnp.zeros((H * W * 2, C)),
                        'bias': jnp.array([1.0, 3.0, 5.0, 0.0])}}
  judge = pixel.make_judge(module, (H, W))
  x, allowed = _images(3)
  claims = np.array([[0, 1], [1, 0], [3, 0]], np.int32)
  out = pixel.run_games(judge, params, x, allowed, claims, np.zeros(3, np.int32), pixels=2)
  np.testing.assert_array_equal(out['winner'], [1, 0, 1])   # 1 > 0's logit, 3 > 0, 0 < 1
  picked = claims[np.arange(3), out['winner']]
  np.testing.assert_array_equal(picked, [1, 1, 0])


def test_sparse_pixel_masks_reveal_k_nonzero_pixels():
  x, _ = _images(64, seed=2)
  img = x.reshape(64, H, W)
  batch = {'x': jnp.stack([img, np.ones_like(img)], -1), 'label': jnp.ones((64, C))}
  fn = jax.jit(registry.build('augment', dict(name='sparse_pixels', pixels=3)))
  out = np.asarray(fn(jax.random.key(0), batch)['x'])
  mask = out[..., 1]
  counts = mask.reshape(64, -1).sum(1)
  np.testing.assert_array_equal(counts, np.minimum(3, (img > 0).reshape(64, -1).sum(1)))
  assert (img[mask > 0] > 0).all()                            # nonzero pixels only
  np.testing.assert_array_equal(out[..., 0], img * mask)
  every = registry.build('augment', dict(name='sparse_pixels', pixels=3, nonzero=False))
  m2 = np.asarray(every(jax.random.key(0), batch)['x'][..., 1])
  assert (m2.reshape(64, -1).sum(1) == 3).all() and (img[m2 > 0] == 0).any()
  with pytest.raises(UserError, match='2 .the image and the mask'):
    fn(jax.random.key(0), {'x': jnp.zeros((2, H, W, 1))})


def _config(arg):
  spec = importlib.util.spec_from_file_location('pixel_debate_config',
                                                os.path.join(REPO, 'configs', 'pixel_debate.py'))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)


def test_tiny_run_writes_results_and_reruns_with_every_stage_skipped(tmp_path, capsys):
  config = _config('runlocal,seeds=1')
  # the strong role as a small MLP: five CNN stages compile for ~8 s each on the 8 test devices,
  # and the protocol does not depend on the strong model's family
  config.strong.model = dict(name='mlp', size='small')
  results = train.train_and_evaluate(config, str(tmp_path))
  saved = json.load(open(tmp_path / 'results.json'))
  rec = saved['per_seed'][0]
  for key in ('k3/judge_random', 'k3/greedy/debate_runner_up', 'k3/greedy/debate_all',
              'k3/greedy/student/debate', 'k3/student/plain', 'acc_ceiling'):
    assert 0 <= rec[key] <= 1 and key in saved['summary']
  assert os.path.getsize(tmp_path / 'debate_games.png') > 0
  root = str(tmp_path)
  load = lambda kind: dict(np.load(os.path.join(root, rec['stages'][kind], 'outputs.npz')))
  dataset = pixel_debate.check(config)[1]
  y = splits_lib.weak_to_strong(dataset, seed=0, **config.splits).splits['test']['label']
  for liar in ('runner_up', 'all'):                           # precommitted claims differ
    games = load(f'debate_k3_greedy_{liar}')
    claims = games['claims']
    assert (claims[:, 0] != claims[:, 1]).all()
    np.testing.assert_array_equal(claims[:, 0], y[games['index']])
  every = load('debate_k3_greedy_all')                        # each wrong class once per image
  assert len(every['claims']) == 9 * len(y)
  labels = load('debate_labels_k3_greedy')
  claims, probs = labels['claims'], labels['probs']
  assert (claims[:, 0] != claims[:, 1]).all()
  off = np.ones_like(probs, bool)
  np.put_along_axis(off, claims, False, 1)
  assert (probs[off] == 0).all()                              # only the two claims get mass
  np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)
  capsys.readouterr()
  again = train.train_and_evaluate(config, str(tmp_path))
  out = capsys.readouterr().out
  assert out.count('done earlier, skipped') == len(rec['stages']) == 9
  assert train._json_safe(again['per_seed']) == train._json_safe(results['per_seed'])


@pytest.mark.parametrize('edit, message', [
    (lambda c: setattr(c, 'pixels', (0,)), r'pixels=\(0,\) must be an int >= 1'),
    (lambda c: c.debate.update(strategies=('mcts',)), 'use one or more of greedy, lookahead'),
    (lambda c: c.debate.update(liars=('nobody',)), 'debate.liars'),
    (lambda c: c.debate.update(first='coin'), "debate.first='coin'"),
    (lambda c: c.judge.train.update(augment=dict(name='flip')), 'set by the protocol'),
    (lambda c: setattr(c, 'pixels', (1000,)), 'more than the 784 pixels'),
    (lambda c: c.debate.update(top_n=0), 'top_n=0'),
    (lambda c: c.update(judges=1), "unknown key 'judges'"),
])
def test_bad_config_is_one_clear_error(edit, message):
  config = _config('runlocal')
  edit(config)
  with pytest.raises(UserError, match=message):
    pixel_debate.check(config)
  with pytest.raises(UserError, match='must be ints joined by'):
    _config('pixels=four')
