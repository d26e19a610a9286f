"""Top-K per class (Yalniz et al. 2019, "Billion-scale semi-supervised learning for image
classification"): for every class c, the K unlabelled rows with the highest p(c), labelled c. A
row among the top K of several classes keeps the class it has the highest probability for, so
each row is used once; the classes stay balanced up to those collisions."""
import numpy as np

from w2s.errors import UserError


def select(probs: np.ndarray, *, round_index: int, k: int = 100):
  """probs [N, C] -> (rows in some class's top k, the class)."""
  del round_index
  if isinstance(k, bool) or not isinstance(k, int) or k < 1:
    raise UserError(f'pseudo.select.k={k!r} (topk) must be an int >= 1')
  n, num_classes = probs.shape
  best = np.full(n, -1.0)
  label = np.full(n, -1, np.int64)
  for c in range(num_classes):
    top = np.argsort(-probs[:, c], kind='stable')[:k]
    better = probs[top, c] > best[top]
    best[top[better]] = probs[top[better], c]
    label[top[better]] = c
  rows = np.flatnonzero(label >= 0)
  return rows, label[rows]
