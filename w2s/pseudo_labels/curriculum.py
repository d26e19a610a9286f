"""Curriculum Labeling (Cascante-Bonilla et al. 2021, "Curriculum Labeling: Revisiting
Pseudo-Labeling for Semi-Supervised Learning"): round r admits the top `step` * r share of U by
the teacher's confidence (20%, 40%, ..., all by round 1 / step), the student re-initialised each
round (the protocol always trains a fresh student)."""
import numpy as np

from w2s.pseudo_labels import confidence, number


def select(probs: np.ndarray, *, round_index: int, step: float = 0.2):
  """probs [N, C] -> (the ceil(min(1, step * r) * N) most confident rows, their argmax)."""
  step = number('curriculum', 'step', step, 0.0, 1.0, open_lo=True)
  conf, label = confidence(probs)
  n = int(np.ceil(min(1.0, step * round_index) * len(conf)))
  rows = np.argsort(-conf, kind='stable')[:n]
  return rows, label[rows]
