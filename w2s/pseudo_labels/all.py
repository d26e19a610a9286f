"""Every unlabelled row (Arazo et al. 2020, "Pseudo-Labeling and Confirmation Bias in Deep
Semi-Supervised Learning", whose soft pseudo-labels cover all of U): use with
`pseudo.labels='soft'` to train on the teacher's probabilities, or 'hard' for its argmax."""
import numpy as np


def select(probs: np.ndarray, *, round_index: int):
  del round_index
  return np.arange(len(probs)), probs.argmax(-1)
