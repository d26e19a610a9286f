"""kNN relabelling (EleutherAI/w2s `probe.py`, KnnProbe): each row of B gets the mean weak soft
label of its k nearest neighbours in the strong model's feature space (cosine; never itself),
optionally dropping rows whose own weak label disagrees with that vote (the k-NN label-noise
filter of Bahri et al. 2020, "Deep k-NN for Noisy Labels")."""
import numpy as np

from w2s import cleaning


def clean(features, labels, /, *, k: int = 10, drop_disagreeing: bool = False):
  """features [N, D], weak labels [N, C] -> (vote [N, C], keep [N] bool).

  vote_i = (1/k) sum_{j in kNN(i)} labels_j; keep_i = True, or with `drop_disagreeing`
  argmax(labels_i) == argmax(vote_i) (argmax ties go to the lower class)."""
  k = cleaning.integer('knn', 'k', k)
  drop = cleaning.flag('knn', 'drop_disagreeing', drop_disagreeing)
  x, y = cleaning.inputs('knn', features, labels, min_rows=k + 1)
  new = cleaning.vote(y, cleaning.neighbours(x, k))
  keep = ~cleaning.disagrees(y, new) if drop else np.ones(len(y), bool)
  return new, keep
