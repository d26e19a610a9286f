"""Probe relabelling (EleutherAI/w2s `probe.py`, LogisticProbe): a logistic-regression probe on
the strong model's frozen features, fitted to B's weak soft labels, relabels B with its predicted
probabilities. Cross-fitted (Chernozhukov et al. 2018's sample splitting): row i falls in fold
i mod `folds`, and its new label comes from the probe fitted on the other folds, so no row is
relabelled by a probe that saw its own weak label (which it would partly memorise).

The probe minimises the mean soft cross-entropy plus (l2 / 2) ||W||^2 (intercept not penalised):
scikit-learn's LogisticRegression (lbfgs; multinomial for C > 2, one sigmoid for C = 2) on each
row repeated once per class with that class as target and the soft label as sample weight, and
C_sklearn = 1 / (l2 * n_fit)."""
import numpy as np

from w2s import cleaning


def folds_of(n: int, folds: int) -> np.ndarray:
  """int [n]: row i's fold, i mod `folds`."""
  return np.arange(n) % folds


def fit_predict(x_fit, y_fit, x_new, *, l2: float, max_iter: int) -> np.ndarray:
  """Probabilities [len(x_new), C] of the probe fitted on (x_fit [n, D], soft y_fit [n, C]); a
  class with no weight in the fit gets probability 0, and a fit with one class predicts it."""
  from sklearn.linear_model import LogisticRegression
  n, c = y_fit.shape
  rows, cls = np.nonzero(y_fit > 0)
  out = np.zeros((len(x_new), c))
  if len(np.unique(cls)) == 1:
    out[:, cls[0]] = 1.0
    return out
  clf = LogisticRegression(C=1.0 / (l2 * n), max_iter=max_iter, tol=1e-8)
  clf.fit(x_fit[rows], cls, sample_weight=y_fit[rows, cls])
  out[:, clf.classes_] = clf.predict_proba(x_new)
  return out


def clean(features, labels, /, *, folds: int = 5, l2: float = 1e-3, max_iter: int = 1000,
          drop_disagreeing: bool = False):
  """features [N, D], weak labels [N, C] -> (cross-fitted probe probabilities [N, C], keep [N]).

  keep_i = True, or with `drop_disagreeing` argmax(labels_i) == argmax(new_i)."""
  folds = cleaning.integer('logreg', 'folds', folds, lo=2)
  l2 = cleaning.number('logreg', 'l2', l2, 0.0, float('inf'), open_lo=True, open_hi=True)
  max_iter = cleaning.integer('logreg', 'max_iter', max_iter)
  drop = cleaning.flag('logreg', 'drop_disagreeing', drop_disagreeing)
  x, y = cleaning.inputs('logreg', features, labels, min_rows=folds)
  fold = folds_of(len(x), folds)
  new = np.empty_like(y)
  for f in range(folds):
    held = fold == f
    new[held] = fit_predict(x[~held], y[~held], x[held], l2=l2, max_iter=max_iter)
  keep = ~cleaning.disagrees(y, new) if drop else np.ones(len(y), bool)
  return new, keep
