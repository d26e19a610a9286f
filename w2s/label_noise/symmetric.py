"""Symmetric (uniform) label noise: `dict(name='symmetric', rate=0.4, seed=0)`.

Each training label is flipped with probability `rate` to a class chosen uniformly among the
C - 1 OTHER classes (never to itself): T = (1 - rate) I + rate / (C - 1) (1 - I). The standard
benchmark noise of e.g. Zhang & Sabuncu (2018, GCE) and Liu et al. (2020, ELR).
"""
import numpy as np

from w2s import label_noise
from w2s.errors import UserError


def corrupt(*, labels, ids, num_classes, inputs, rate: float, seed: int = 0):
  """(noisy int64 [N], expected transition [C, C]); see module docstring."""
  del inputs
  rate, seed = label_noise.check_rate('symmetric', rate), label_noise.check_seed('symmetric', seed)
  if num_classes < 2:
    raise UserError("label_noise 'symmetric' needs at least 2 classes")
  flip = label_noise.uniforms(ids, seed, 0) < rate
  other = label_noise.other_class(labels, label_noise.uniforms(ids, seed, 1), num_classes)
  expected = np.full((num_classes, num_classes), rate / (num_classes - 1))
  np.fill_diagonal(expected, 1 - rate)
  return np.where(flip, other, labels), expected
