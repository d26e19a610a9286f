"""Ensemble agreement (Odonnat et al. 2024, "Leveraging Ensemble Diversity for Robust
Self-Training in the Presence of Sample Selection Bias"): the T-similarity of K heads,

    s(x) = 1 / (K (K - 1)) * sum_{k != k'} p_k(x) . p_k'(x),

is high when the heads agree confidently; keep rows with s >= tau (or the top `fraction` of U by
s), labelled by the mean prediction's argmax. Needs an ensemble teacher (`teacher.ensemble`)."""
import numpy as np

from w2s.errors import UserError
from w2s.pseudo_labels import number


def t_similarity(members: np.ndarray) -> np.ndarray:
  """members [N, K, C] -> s [N]."""
  k = members.shape[1]
  total = np.einsum('nkc,njc->n', members, members)       # all pairs incl. k == k'
  same = np.einsum('nkc,nkc->n', members, members)
  return (total - same) / (k * (k - 1))


def select(probs: np.ndarray, *, round_index: int, members=None, tau: float | None = 0.8,
           fraction: float | None = None):
  del round_index
  if members is None or members.shape[1] < 2:
    raise UserError('pseudo.select agreement needs an ensemble teacher (teacher.ensemble.size >= 2)')
  if (tau is None) == (fraction is None):
    raise UserError('pseudo.select agreement: give exactly one of pseudo.select.tau or '
                    'pseudo.select.fraction (the other None)')
  s = t_similarity(np.asarray(members, np.float64))
  if fraction is not None:
    fraction = number('agreement', 'fraction', fraction, 0.0, 1.0, open_lo=True)
    rows = np.argsort(-s, kind='stable')[:int(np.ceil(fraction * len(s)))]
  else:  # s is a sum of products of probabilities over pairs: in [0, 1]
    rows = np.flatnonzero(s >= number('agreement', 'tau', tau, 0.0, 1.0))
  return rows, probs.argmax(-1)[rows]
