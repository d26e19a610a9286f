"""The pixel debate of Irving, Christiano & Amodei (2018), "AI safety via debate", Sec. 3.

A judge classifies a digit from k revealed pixels. Two debaters see the whole image and precommit
to claimed labels (claims[0], claims[1]); they then reveal one pixel each in turn, starting with
`first`, until k are revealed, never a pixel twice; the judge picks the claim with the larger of
its two logits (its argmax restricted to the claims; a tie goes to claims[0]). Debaters may
reveal only `allowed` pixels (the nonzero ones, matching the judge's training masks) while any
are left unrevealed, then any unrevealed pixel.

Strategies (the paper's debaters run Monte Carlo tree search over the judge; these are cheaper):

* greedy: reveal the pixel that most raises the judge's log-odds for one's own claim over the
  opponent's, logit[own] - logit[opp] after the reveal; every candidate pixel is scored at once.
* lookahead: depth-2 minimax over the top `top_n` greedy candidates: each is scored by the
  log-odds left after the opponent's best greedy reply (the reply scored over every pixel), and
  the best is played; the last move of the game (no reply left) is greedy.

A judge is four pure functions of (params, ...) over one game's state (`Judge`):
`masked_judge` wraps any model of [B, H, W, 2] inputs ([image * mask, mask]; state = the mask;
candidate reveals scored by `jax.vmap` over candidate masks); `additive_judge` is exact for
`w2s.models.mlp` judges, whose first layer is linear in the input, so a reveal adds one row pair
of the first kernel to the state (the pre-activation) and a candidate costs the layers above it
only. `games` jits one game (`lax.fori_loop` over moves) vmapped over games; `run_games` drives
batches of games with a progress line; `play_reference` is the same game as a Python loop.
"""
import functools
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from w2s import metrics
from w2s.augment import sparse_pixels

STRATEGIES = ('greedy', 'lookahead')


class Judge(NamedTuple):
  """One game's judge; x [P] is the flat image (P = H * W pixels, index i * W + j)."""
  init: Callable[[Any, jax.Array], Any]                       # (params, x) -> empty-mask state
  reveal: Callable[[Any, Any, jax.Array, jax.Array], Any]     # (params, state, x, p) -> state
  logits: Callable[[Any, Any, jax.Array], jax.Array]          # (params, state, x) -> [C]
  candidates: Callable[..., jax.Array]   # (params, state, x, idx [Q]) -> [Q, C]: reveal idx[q]


def masked_judge(apply_fn: Callable, shape: tuple[int, int]) -> Judge:
  """Any judge `apply_fn(params, x [B, H, W, 2]) -> logits [B, C]`; the state is the mask [P]."""
  h, w = shape

  def logits(params, mask, x):
    return apply_fn(params, sparse_pixels.masked_input(x.reshape(1, h, w),
                                                       mask.reshape(1, h, w)))[0]

  def candidates(params, mask, x, idx):
    masks = jnp.maximum(mask[None], jax.nn.one_hot(idx, h * w, dtype=mask.dtype))  # [Q, P]
    return jax.vmap(lambda m: logits(params, m, x))(masks)

  return Judge(init=lambda params, x: jnp.zeros_like(x),
               reveal=lambda params, mask, x, p: mask.at[p].set(1.0),
               logits=logits, candidates=candidates)


def additive_judge(num_layers: int, activation: Callable = nn.gelu) -> Judge:
  """A `w2s.models.mlp` judge ('Dense_0' .. 'Dense_{num_layers-1}', `activation` between).

  Its flattened input is [..., (i * W + j) * 2 + channel], so the first layer's pre-activation
  is bias + sum over revealed p of (x_p K[p, 0] + K[p, 1]) with K = kernel [P, 2, H0]."""
  def rows(params):
    k = params['Dense_0']['kernel']
    return k.reshape(-1, 2, k.shape[-1])                                   # [P, 2, H0]

  def tail(params, h):                                                     # [..., H0] -> [..., C]
    for i in range(num_layers):
      if i:
        h = h @ params[f'Dense_{i}']['kernel'] + params[f'Dense_{i}']['bias']
      if i < num_layers - 1:
        h = activation(h)
    return h

  def reveal(params, h, x, p):
    k = rows(params)[p]                                                    # [2, H0]
    return h + x[p] * k[0] + k[1]

  def candidates(params, h, x, idx):
    k = rows(params)[idx]                                                  # [Q, 2, H0]
    return tail(params, h[None] + x[idx, None] * k[:, 0] + k[:, 1])

  return Judge(init=lambda params, x: params['Dense_0']['bias'], reveal=reveal,
               logits=lambda params, h, x: tail(params, h), candidates=candidates)


def make_judge(module, shape: tuple[int, int]) -> Judge:
  """The additive judge for a float32 `w2s.models.mlp.MLP`, else the masked one."""
  from w2s.models import mlp
  if isinstance(module, mlp.MLP) and jnp.dtype(module.dtype) == jnp.float32:
    return additive_judge(len(module.hidden) + 1)
  return masked_judge(
      lambda params, x: module.apply({'params': params}, {'x': x}, train=False), shape)


def candidate_pixels(allowed: jax.Array, num: int) -> jax.Array:
  """int32 [num]: the allowed pixels in ascending order, then the others ascending.

  With num >= max(#allowed, k) these are all the pixels a debater can reach in a game of k
  moves (allowed ones while any is left, then the others), in the order argmax breaks ties in,
  so scoring them alone plays the same game as scoring all P (digits: ~150 of 784)."""
  return jnp.argsort(~allowed, stable=True)[:num].astype(jnp.int32)


def open_pixels(revealed: jax.Array, allowed: jax.Array) -> jax.Array:
  """bool [Q]: where a debater may reveal: allowed and unrevealed, else any unrevealed."""
  preferred = allowed & ~revealed
  return jnp.where(preferred.any(), preferred, ~revealed)


def move_scores(judge: Judge, params, state, x, idx, valid, own, opp) -> jax.Array:
  """[Q] the judge's log-odds logit[own] - logit[opp] after revealing pixel idx[q] (-inf: not
  valid)."""
  cand = judge.candidates(params, state, x, idx)
  return jnp.where(valid, cand[:, own] - cand[:, opp], -jnp.inf)


def greedy_move(judge, params, state, x, idx, revealed, allowed, own, opp) -> jax.Array:
  """The pixel (index into P) of the best greedy reveal; revealed, allowed [P]."""
  valid = open_pixels(revealed[idx], allowed[idx])
  return idx[jnp.argmax(move_scores(judge, params, state, x, idx, valid, own, opp))]


def lookahead_move(judge, params, state, x, idx, revealed, allowed, own, opp,
                   top_n: int) -> jax.Array:
  """Depth-2 minimax over the top_n greedy candidates (see the module docstring)."""
  valid = open_pixels(revealed[idx], allowed[idx])
  first, pos = jax.lax.top_k(move_scores(judge, params, state, x, idx, valid, own, opp), top_n)

  def after_reply(c):  # the mover's log-odds after the opponent's best greedy reply to pixel c
    state2 = judge.reveal(params, state, x, c)
    valid2 = open_pixels(revealed.at[c].set(True)[idx], allowed[idx])
    return -jnp.max(move_scores(judge, params, state2, x, idx, valid2, opp, own))

  values = jax.lax.map(after_reply, idx[pos])  # sequential over candidates: memory of one reply
  return idx[pos[jnp.argmax(jnp.where(jnp.isfinite(first), values, -jnp.inf))]]


def play(judge: Judge, params, x, allowed, claims, first, *, pixels: int,
         strategy: str = 'greedy', top_n: int = 8, num_candidates: int | None = None) -> dict:
  """One game: x [P] float image, allowed [P] bool, claims [2] int, first 0 | 1 (who moves first).

  `num_candidates` (Q >= max(#allowed, pixels) over the games; None: P) pixels are scored per
  move (`candidate_pixels`).

  Returns {'order' [k] int32 pixels in reveal order, 'mover' [k] int32 (0 | 1), 'logits'
  [k + 1, C] the judge's logits before the first move and after each, 'winner' int32 (0 | 1)}."""
  idx = candidate_pixels(allowed, num_candidates or x.shape[0])
  state0 = judge.init(params, x)
  logits0 = judge.logits(params, state0, x)

  def body(t, carry):
    state, revealed, order, hist = carry
    mover = (first + t) % 2
    own, opp = claims[mover], claims[1 - mover]
    greedy = lambda: greedy_move(judge, params, state, x, idx, revealed, allowed, own, opp)
    if strategy == 'lookahead':  # t is not batched under vmap: a real branch, the last move greedy
      p = jax.lax.cond(pixels - t > 1, lambda: lookahead_move(
          judge, params, state, x, idx, revealed, allowed, own, opp, min(top_n, idx.shape[0])),
          greedy)
    else:
      p = greedy()
    state = judge.reveal(params, state, x, p)
    return (state, revealed.at[p].set(True), order.at[t].set(p),
            hist.at[t + 1].set(judge.logits(params, state, x)))

  hist = jnp.zeros((pixels + 1,) + logits0.shape, logits0.dtype).at[0].set(logits0)
  carry = (state0, jnp.zeros(x.shape, bool), jnp.zeros(pixels, jnp.int32), hist)
  _, _, order, hist = jax.lax.fori_loop(0, pixels, body, carry)
  final = hist[-1]
  return {'order': order, 'mover': ((first + jnp.arange(pixels)) % 2).astype(jnp.int32),
          'logits': hist,
          'winner': jnp.where(final[claims[0]] >= final[claims[1]], 0, 1).astype(jnp.int32)}


def check_strategy(strategy: str, top_n: int, num_pixels: int) -> None:
  from w2s.errors import UserError
  if strategy not in STRATEGIES:
    raise UserError(f'debate strategy {strategy!r}; use one of {", ".join(STRATEGIES)}')
  if isinstance(top_n, bool) or not isinstance(top_n, int) or not 1 <= top_n <= num_pixels:
    raise UserError(f'debate top_n={top_n!r} must be an int in [1, {num_pixels}] (the lookahead '
                    'candidates per move)')


@functools.lru_cache(maxsize=32)
def games(judge: Judge, *, pixels: int, strategy: str = 'greedy', top_n: int = 8,
          num_candidates: int | None = None) -> Callable:
  """jit(vmap(play)): (params, x [G, P], allowed [G, P], claims [G, 2], first [G]) -> dict [G, ...].

  Cached: the games of one judge (its test debates and labelling debates) share one compile."""
  fn = functools.partial(play, judge, pixels=pixels, strategy=strategy, top_n=top_n,
                         num_candidates=num_candidates)
  return jax.jit(jax.vmap(fn, in_axes=(None, 0, 0, 0, 0)))


def run_games(judge: Judge, params, x, allowed, claims, first, *, pixels: int,
              strategy: str = 'greedy', top_n: int = 8, batch_size: int = 64,
              name: str = 'debate') -> dict[str, np.ndarray]:
  """Every game of x [N, P], allowed [N, P], claims [N, 2], first [N], in batches of
  `batch_size` (the last one padded, so one compile serves all), as numpy arrays [N, ...]; only
  the reachable pixels are scored (`candidate_pixels`)."""
  inputs = [np.asarray(a) for a in (x, allowed, claims, first)]
  n = len(inputs[0])
  # every reachable pixel, rounded up to a multiple of 32 (runs of similar data share a compile)
  most = max(int(inputs[1].sum(1).max()), pixels)
  num = min(-(-most // 32) * 32, inputs[0].shape[1])
  fn = games(judge, pixels=pixels, strategy=strategy, top_n=top_n, num_candidates=num)
  total = -(-n // batch_size)
  bar = metrics.Progress(name, total, unit='games', min_interval_s=10.0)
  out = []
  for i in range(total):
    rows = np.minimum(np.arange(i * batch_size, (i + 1) * batch_size), n - 1)
    out.append(jax.device_get(fn(params, *(a[rows] for a in inputs))))
    bar.update(i + 1, batch_size)
  return {k: np.concatenate([o[k] for o in out])[:n] for k in out[0]}


def play_reference(judge: Judge, params, x, allowed, claims, first, *, pixels: int,
                   strategy: str = 'greedy', top_n: int = 8) -> dict:
  """`play` as a plain Python loop over moves and candidates (for tests)."""
  x, allowed = jnp.asarray(x), np.asarray(allowed, bool)
  state = judge.init(params, x)
  revealed = np.zeros(x.shape, bool)
  order, movers, hist = [], [], [np.asarray(judge.logits(params, state, x))]

  def scores(state, revealed, own, opp):
    valid = allowed & ~revealed if (allowed & ~revealed).any() else ~revealed
    cand = np.asarray(judge.candidates(params, state, x, jnp.arange(x.shape[0])))
    return np.where(valid, cand[:, own] - cand[:, opp], -np.inf)

  for t in range(pixels):
    mover = (int(first) + t) % 2
    own, opp = int(claims[mover]), int(claims[1 - mover])
    s = scores(state, revealed, own, opp)
    p = int(np.argmax(s))
    if strategy == 'lookahead' and pixels - t > 1:
      top = np.argsort(-s, kind='stable')[:top_n]
      values = []
      for c in top:
        r2 = revealed.copy()
        r2[c] = True
        reply = scores(judge.reveal(params, state, x, int(c)), r2, opp, own)
        values.append(-reply.max() if np.isfinite(s[c]) else -np.inf)
      p = int(top[int(np.argmax(values))])
    state = judge.reveal(params, state, x, p)
    revealed[p] = True
    order.append(p)
    movers.append(mover)
    hist.append(np.asarray(judge.logits(params, state, x)))
  final = hist[-1]
  return {'order': np.array(order), 'mover': np.array(movers), 'logits': np.stack(hist),
          'winner': 0 if final[int(claims[0])] >= final[int(claims[1])] else 1}
