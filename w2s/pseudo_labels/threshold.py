"""Confidence threshold (Lee 2013, "Pseudo-Label"; the FixMatch-style offline filter): keep the
unlabelled rows whose top probability is at least `tau`, labelled with their argmax."""
import numpy as np

from w2s.errors import UserError
from w2s.pseudo_labels import confidence


def select(probs: np.ndarray, *, round_index: int, tau: float = 0.95):
  """probs [N, C] -> (rows with max p >= tau, their argmax)."""
  del round_index
  if not 0.0 <= tau <= 1.0:
    raise UserError(f'pseudo.select threshold: tau={tau} must be in [0, 1]')
  conf, label = confidence(probs)
  rows = np.flatnonzero(conf >= tau)
  return rows, label[rows]
