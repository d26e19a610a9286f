"""Model selection and early stopping on a held-out slice, kept in the train state.

With `select='best'` the state carries `extra['select']`: a copy of the parameters with the lowest
held-out loss so far, that loss, its step and the number of evaluations since it improved. It is
checkpointed with the rest, so a resumed run selects exactly as an uninterrupted one. With
`select_metric='auroc'` the criterion is the held-out AUROC instead (EleutherAI's w2s selects on
it), highest kept: the entry holds 'auroc' in place of 'loss' (`auroc` below; the evaluator
reports it as 'val_auroc'). Ensembles
carry one entry per member (the leading K axis of every leaf), and each member keeps its own best.
Which labels the held-out loss uses is the caller's choice and the point of the exercise: in a
weak-to-strong study a student is selected on held-out *weak* labels, never on ground truth of B
or test (EleutherAI's w2s does the same).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from w2s import sharding


# criterion -> (its key in extra['select'] and in the evaluator's output, whether higher is better)
METRICS = {'loss': ('val_loss', False), 'auroc': ('val_auroc', True)}


def metric(opts) -> str:
  """The selection criterion of `opts` ('loss' unless it says `select_metric`)."""
  return getattr(opts, 'select_metric', 'loss')


def init(opts, params) -> dict:
  """The `extra` entry of a fresh state (empty unless `opts.select == 'best'` or patience > 0)."""
  if opts.select != 'best' and not opts.patience:
    return {}
  keep = params if opts.select == 'best' else {}
  name = metric(opts)
  worst = -jnp.inf if METRICS[name][1] else jnp.inf
  return {'select': {'params': jax.tree.map(jnp.copy, keep), name: jnp.float32(worst),
                     'step': jnp.int32(0), 'bad': jnp.int32(0)}}


def _criterion(sel: dict) -> str:
  return 'auroc' if 'auroc' in sel else 'loss'


@functools.partial(jax.jit, donate_argnums=0)
def _update(sel, params, value, step):
  name = _criterion(sel)
  best = sel[name]
  improved = value > best if METRICS[name][1] else value < best     # [] or [K]; NaN: never

  def pick(best, new):
    m = improved.reshape(improved.shape + (1,) * (new.ndim - improved.ndim))
    return jnp.where(m, new, best)
  return {'params': jax.tree.map(pick, sel['params'], params) if sel['params'] else {},
          name: jnp.where(improved, value, best),
          'step': jnp.where(improved, step, sel['step']),
          'bad': jnp.where(improved, 0, sel['bad'] + 1)}


def update(state, val, step: int, patience: int):
  """(state with the selection updated by this evaluation, whether to stop early). `val`: the
  evaluator's output ({'val_loss', 'val_auroc', ...}: the state's criterion is read from it), or
  the held-out loss itself."""
  if 'select' not in state.extra:
    return state, False
  old = state.extra['select']
  key = METRICS[_criterion(old)][0]
  if not isinstance(val, dict):
    if key != 'val_loss':
      raise ValueError(f'selection by {key} needs the evaluator\'s output, not a loss')
    val = {'val_loss': val}
  shards = jax.tree.map(lambda x: x.sharding, old)
  sel = _update(old, state.params, jnp.asarray(val[key], jnp.float32), jnp.int32(step))
  sel = jax.tree.map(jax.device_put, sel, shards)  # keep the state's layout (partition rules)
  state = state.replace(extra={**state.extra, 'select': sel})
  return state, stopped(state, patience)


def stopped(state, patience: int) -> bool:
  """True once every member went `patience` evaluations without improving (0: never)."""
  if not patience or 'select' not in state.extra:
    return False
  return bool(np.all(sharding.to_host(state.extra['select']['bad']) >= patience))


def selected(state, opts):
  """`state` with the selected parameters (the best held-out ones, or the last)."""
  if opts.select != 'best' or 'select' not in state.extra:
    return state
  sel = state.extra['select']
  best = sharding.to_host(sel[_criterion(sel)])
  if not np.all(np.isfinite(best)):  # never evaluated (or never a defined AUROC): the last ones
    return state
  return state.replace(params=state.extra['select']['params'])


def summary(state) -> dict:
  """{'best_val_loss' (or 'best_val_auroc'), 'best_step', 'evals_since_best'} of a state that
  selects (else {})."""
  if 'select' not in state.extra:
    return {}
  name = _criterion(state.extra['select'])
  host = sharding.to_host({k: v for k, v in state.extra['select'].items() if k != 'params'})
  return {f'best_val_{name}': host[name].tolist(), 'best_step': host['step'].tolist(),
          'evals_since_best': host['bad'].tolist()}


def auroc(labels, logits) -> np.ndarray:
  """AUROC of held-out (weak) labels: labels [N, C] (soft; their argmax is the class) against
  logits [N, C] or [N, K, C] (then one value per member, [K]); float64 on the host, exact (ties
  count one half: the Mann-Whitney U statistic, as sklearn.metrics.roc_auc_score).

  Binary: the hard label vs the logit margin l_1 - l_0 (a monotone function of p(class 1), so the
  same AUROC as that probability, without its float32 saturation). C > 2: one-vs-rest macro mean
  over the classes present and absent in the hard labels (sklearn's multi_class='ovr' when every
  class is present) of p(c) = softmax(logits)_c. NaN when no class is both (all rows one class)."""
  hard = np.asarray(labels).argmax(-1)
  z = np.asarray(logits, np.float64)
  if z.ndim == 3:
    return np.array([auroc(labels, z[:, k]) for k in range(z.shape[1])])
  if z.shape[-1] == 2:
    return np.asarray(_binary_auroc(hard == 1, z[:, 1] - z[:, 0]))
  z = z - z.max(-1, keepdims=True)
  p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
  per_class = [_binary_auroc(hard == c, p[:, c]) for c in range(z.shape[-1])]
  defined = [a for a in per_class if np.isfinite(a)]
  return np.asarray(np.mean(defined) if defined else np.nan)


def _binary_auroc(positive: np.ndarray, score: np.ndarray) -> float:
  """P(score of a positive > score of a negative) + P(tie) / 2, from midranks; NaN if a side is
  empty."""
  from scipy.stats import rankdata
  n_pos = int(positive.sum())
  n_neg = len(positive) - n_pos
  if not n_pos or not n_neg:
    return float('nan')
  ranks = rankdata(score)  # ties: the mean of their ranks
  return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
