"""Confidence threshold (Lee 2013, "Pseudo-Label"; the FixMatch-style offline filter): keep the
unlabelled rows whose top probability is at least `tau`, labelled with their argmax."""
import numpy as np

from w2s.pseudo_labels import confidence, number


def select(probs: np.ndarray, *, round_index: int, tau: float = 0.95):
  """probs [N, C] -> (rows with max p >= tau, their argmax)."""
  del round_index
  tau = number('threshold', 'tau', tau, 0.0, 1.0)
  conf, label = confidence(probs)
  rows = np.flatnonzero(conf >= tau)
  return rows, label[rows]
