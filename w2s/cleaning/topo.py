"""Topological filtering (Wu et al. 2020, "A Topological Filter for Learning with Label Noise";
EleutherAI/w2s `topo.py`, `topofilter`): drop rows of B whose weak label is isolated in the strong
model's feature space, keep the weak labels of the rest unchanged.

1. Component step. The directed kNN graph: an edge i -> j when j is among i's k most
   cosine-similar rows. For each class c (rows whose weak hard label, argmax, is c), keep the
   largest strongly connected component of the graph restricted to class c's rows (EleutherAI's
   `topo_cc`; ties in size go to the component holding the lowest row index). A row outside it
   (an island of its class inside another class's region) is dropped.
2. Neighbourhood step ("zeta" filtering). Among the kept rows, each row's disagreement with its
   `k_zeta` nearest kept rows, d_i = (1/2) || y_i - mean_j y_j ||_1 (total variation; for C = 2
   EleutherAI's |p_i - mean_j p_j|), and the rows with the largest d_i are dropped until the
   dropped share of B reaches `contamination` (round(N * contamination), half up, in all; none
   more when step 1 already dropped that many; ties: the lower row index drops first).
"""
import numpy as np

from w2s import cleaning


def largest_components(nbrs: np.ndarray, hard: np.ndarray) -> np.ndarray:
  """bool [N]: row i lies in the largest strongly connected component of its class `hard[i]` in
  the kNN graph `nbrs` [N, k] (edges i -> nbrs[i], kept when both ends share a class)."""
  from scipy.sparse import csr_matrix
  from scipy.sparse.csgraph import connected_components
  n = len(hard)
  src = np.repeat(np.arange(n), nbrs.shape[1])
  dst = nbrs.reshape(-1)
  same = hard[src] == hard[dst]
  graph = csr_matrix((np.ones(same.sum()), (src[same], dst[same])), shape=(n, n))
  _, comp = connected_components(graph, directed=True, connection='strong')
  keep = np.zeros(n, bool)
  for c in np.unique(hard):
    rows = np.flatnonzero(hard == c)                     # ascending: first hit = lowest index
    labels, sizes = np.unique(comp[rows], return_counts=True)
    big = set(labels[sizes == sizes.max()].tolist())
    best = next(comp[r] for r in rows if comp[r] in big)
    keep[rows[comp[rows] == best]] = True
  return keep


def clean(features, labels, /, *, k: int = 10, k_zeta: int = 10, contamination: float = 0.1):
  """features [N, D], weak labels [N, C] -> (the weak labels unchanged, keep [N] bool)."""
  k = cleaning.integer('topo', 'k', k)
  k_zeta = cleaning.integer('topo', 'k_zeta', k_zeta)
  contamination = cleaning.number('topo', 'contamination', contamination, 0.0, 1.0, open_hi=True)
  x, y = cleaning.inputs('topo', features, labels, min_rows=max(k, k_zeta) + 1)
  keep = largest_components(cleaning.neighbours(x, k), y.argmax(-1))
  n_drop = int(np.floor(len(y) * contamination + 0.5)) - int((~keep).sum())
  kept = np.flatnonzero(keep)
  n_drop = min(n_drop, len(kept) - 1)  # the student keeps at least one row
  if n_drop > 0:
    nbrs = cleaning.neighbours(x[kept], min(k_zeta, len(kept) - 1))
    d = 0.5 * np.abs(y[kept] - cleaning.vote(y[kept], nbrs)).sum(-1)
    keep[kept[np.argsort(-d, kind='stable')[:n_drop]]] = False
  return y, keep
