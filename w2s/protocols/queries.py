"""A budgeted ground-truth query for the weak-to-strong students (issue 23; the idea of
EleutherAI/w2s's underspecification experiments: the student may buy a few true labels).

`student.queries=dict(budget=(0, 16, 64, 256), by='weak_entropy' | 'weak_margin' | 'random')` in
a weak_to_strong config trains, per seed and student loss, one more student per budget k > 0: the
same student (loss, train section, teacher) on B, except that the k rows of B its supervisor is
least sure about (or k random rows) carry their ground-truth label (one-hot) instead of the
supervisor's soft label. THIS USES B'S GROUND TRUTH ON PURPOSE: k rows of it per student, and
nothing else (selection still reads the supervisor's labels of val; test labels only score).

The supervisor is what the plain student learns from: the weak model, or the last learner of a
bootstrapping chain, or the cleaned labels (`clean`), on the rows of B the student trains on.
  weak_entropy  the k rows of highest entropy -sum_c p_c log p_c of the supervisor's label
  weak_margin   the k rows of smallest margin p_(1) - p_(2) (top two classes)
  random        the first k rows of one permutation (seeded by the run's seed) of B's ids
Ties go to the smaller example id, so the choice does not depend on row order, and a larger budget
queries a superset of a smaller one's rows (the same ranking, cut later).

Budget 0 is the plain student: the same stage (same key), trained once. Each k > 0 is its own
stage `student_<loss>_q<k>`, keyed by the plain student's key parts plus {'by', 'budget'}, so
adding a budget to a finished run trains only that student. Relabelling rounds are refused with
queries (a queried student is one stage). The report (results' 'queries') gives each budget's test
accuracy and PGR per loss over seeds (`summarize`, `table`, `figure`: pgr_budget.png).
"""
import dataclasses

import numpy as np

from w2s import options, plots, scores
from w2s.errors import UserError
from w2s.protocols.stages import Stage

KEYS = ('budget', 'by')
BY = ('weak_entropy', 'weak_margin', 'random')
METRICS = ('acc_student', 'pgr')


@dataclasses.dataclass(frozen=True)
class Queries:
  budgets: tuple[int, ...]   # sorted, distinct, >= 0
  by: str

  def spec(self, k: int) -> dict:
    return {'by': self.by, 'budget': k}


def resolve(section, relabel_rounds: int = 0) -> Queries | None:
  """`student.queries` checked into `Queries`, or None when absent / empty."""
  s = options.plain(section)
  if s is None or s == {}:
    return None
  if not isinstance(s, dict):
    raise UserError(f'student.queries={s!r} must be a dict, e.g. dict(budget=(0, 16, 64), '
                    "by='weak_entropy')")
  options.check_keys(s, KEYS, 'student.queries')
  raw = s.get('budget', ())
  raw = (raw,) if isinstance(raw, int) else raw
  if (not isinstance(raw, (list, tuple)) or not raw or not all(
      isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in raw)):
    raise UserError(f'student.queries.budget={raw!r} must be a non-empty tuple of ints >= 0 '
                    '(rows of B whose ground truth a student buys), e.g. (0, 16, 64)')
  by = s.get('by', 'weak_entropy')
  if by not in BY:
    raise UserError(f"student.queries.by={by!r} must be one of {', '.join(map(repr, BY))}")
  if relabel_rounds:
    raise UserError(f'student.queries trains one student per budget, but relabel_rounds='
                    f'{relabel_rounds}; set relabel_rounds=0 or drop student.queries')
  return Queries(tuple(sorted(set(raw))), by)


def uncertainty(probs, by: str) -> np.ndarray:
  """[N] how unsure the supervisor is of each row (higher = queried first), probs [N, C]."""
  p = np.asarray(probs, np.float64)
  if by == 'weak_entropy':
    from scipy import special  # here, not at import: the CLI's start-up stays light
    return special.entr(p).sum(axis=-1)
  if by == 'weak_margin':
    top = np.sort(p, axis=-1)
    return -(top[:, -1] - top[:, -2])
  raise UserError(f"student.queries.by={by!r} must be one of {', '.join(map(repr, BY))}")


def select(probs, ids, k: int, by: str, seed: int) -> np.ndarray:
  """Positions (into the rows of `probs` / `ids`) of the k rows to query, in query order.

  Args:
    probs: [N, C] the supervisor's labels of B's rows (unused for 'random').
    ids: [N] their example ids (ties go to the smaller id; 'random' permutes the sorted ids).
    k: the budget, 0 <= k <= N.
    by: 'weak_entropy' | 'weak_margin' | 'random'.
    seed: the run's seed ('random' only).
  """
  ids = np.asarray(ids)
  n = len(ids)
  if not 0 <= k <= n:
    raise UserError(f'student.queries.budget {k} exceeds the {n} rows of B the student trains '
                    f'on; use budgets <= {n} (or a larger splits.max_strong)')
  if by == 'random':
    order = np.argsort(ids, kind='stable')
    order = order[np.random.default_rng(seed).permutation(n)]
  else:
    order = np.lexsort((ids, -uncertainty(probs, by)))  # last key first: uncertainty, then id
  return order[:k]


def plan(root: str, base, queries: Queries | None, student_parts: tuple, name: str,
         seed: int) -> list[Stage]:
  """The queried students of one loss and seed (budgets > 0); [] without queries.
  `student_parts`: the plain student's key parts after `base` (model, train, loss, teacher)."""
  if queries is None:
    return []
  return [Stage(root, f'student_{name}_q{k}', base, *student_parts, queries.spec(k), seed=seed)
          for k in queries.budgets if k > 0]


def labels_with_queries(teacher_probs, truth, ids, k: int, by: str, seed: int):
  """(the supervisor's labels [N, C] with the k selected rows replaced by their one-hot ground
  truth `truth` [N, C], the selected positions)."""
  rows = select(teacher_probs, ids, k, by, seed)
  labels = np.array(teacher_probs, np.float32, copy=True)
  labels[rows] = np.asarray(truth, np.float32)[rows]
  return labels, rows


def check_budget(queries: Queries | None, n_rows: int) -> None:
  """Every budget fits in B (called once B's rows are known, before anything trains)."""
  if queries is not None and queries.budgets[-1] > n_rows:
    select(np.zeros((n_rows, 2)), np.arange(n_rows), queries.budgets[-1], queries.by, 0)


def students(stages: list[Stage], queries: Queries, fit, b: dict, probs: dict, name: str,
             seed: int, *, teacher, truth, test_probs) -> dict:
  """Trains (or finds done) the queried students of one loss and seed and scores every budget.

  Args:
    stages: `plan`'s stages (budgets > 0, in order).
    fit: (stage, labels [N, C]) -> the stage's outputs: the plain student's training on B's rows.
    b: B's rows the student trains on ('id').
    probs: this seed's test {'label': [T], 'weak', 'ceiling', 'student_<name>': [T, C]}.
    teacher: [N, C] the supervisor's labels of b's rows; truth: [N, C] their one-hot ground truth
      (read for the bought rows only).
    test_probs: outputs -> [T, C] test probabilities in `probs`' row order.

  Returns:
    {budget (str): {'acc_student', 'pgr', 'pgr_undefined', 'n_bought', 'n_corrected'}} on test;
    k = 0 is the plain student; 'n_corrected' (report only) counts the bought rows whose
    supervisor label was wrong.
  """
  acc_w = scores.accuracy(probs['weak'], probs['label'])
  acc_c = scores.accuracy(probs['ceiling'], probs['label'])
  bought = {0: np.zeros(0, int)}
  student = {0: probs[f'student_{name}']}
  for st, k in zip(stages, [k for k in queries.budgets if k > 0]):
    labels, bought[k] = labels_with_queries(teacher, truth, b['id'], k, queries.by, seed)
    student[k] = test_probs(fit(st, labels))
  out = {}
  for k in queries.budgets:
    acc = scores.accuracy(student[k], probs['label'])
    p = scores.pgr(acc_w, acc, acc_c)
    wrong = np.asarray(teacher)[bought[k]].argmax(-1) != np.asarray(truth)[bought[k]].argmax(-1)
    out[str(k)] = {'acc_student': acc, 'pgr': p.value, 'pgr_undefined': p.reason,
                   'n_bought': int(k), 'n_corrected': int(wrong.sum())}
  return out


def summarize(per_seed: list[dict]) -> dict:
  """{loss: {budget (str): {metric: summary over seeds}}} of the per-seed 'queries' records; with
  budget 0 listed, each k > 0 also has 'acc_student - k0' and 'pgr - k0': the per-seed difference
  to the plain student (paired: same seeds, splits and weak labels), summarised the same way."""
  out = {}
  for name, budgets in per_seed[0]['queries'].items():
    values = lambda k, m: [r['queries'][name][k][m] for r in per_seed]
    out[name] = {k: {m: scores.summarize_seeds(values(k, m))._asdict() for m in METRICS}
                 for k in budgets}
    for k in (k for k in budgets if k != '0' and '0' in budgets):
      out[name][k].update({f'{m} - k0': scores.paired_difference(values(k, m), values('0', m))
                           ._asdict() for m in METRICS})
  return out


def table(summary: dict) -> str:
  """Accuracy (%) and PGR per budget and loss, mean [95% t-interval] over seeds, and the paired
  difference to budget 0 where it was run."""
  fmt = scores.fmt_summary
  rows = [('loss', 'budget k', 'student acc', 'PGR', 'acc - (k=0), paired', 'PGR - (k=0), paired')]
  for name, by_k in summary.items():
    rows += [(name, k, fmt(s['acc_student'], 100), fmt(s['pgr']),
              fmt(s['acc_student - k0'], 100) if 'acc_student - k0' in s else '',
              fmt(s['pgr - k0']) if 'pgr - k0' in s else '') for k, s in by_k.items()]
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  lines = ['  '.join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
  lines.insert(1, '  '.join('-' * w for w in widths))
  return ('students with k ground-truth labels of B bought (student.queries; k = 0 is the plain '
          'student):\n' + '\n'.join(lines))


def figure(summary: dict, title: str):
  """PGR against the budget, one line per loss (mean, t-interval band, each seed's value)."""
  fig, ax = plots.pyplot().subplots(figsize=(5.6, 3.8), layout='constrained')
  for i, (name, by_k) in enumerate(summary.items()):
    ks = [int(k) for k in by_k]
    plots.seed_line(ax, ks, [s['pgr'] for s in by_k.values()], color=plots.series_color(i),
                    label=name)
  ax.axhline(0, color='black', lw=0.8)
  ax.axhline(1, color='#228833', lw=0.8, ls='--')
  ax.set_xscale('symlog', linthresh=max(1, min((int(k) for s in summary.values() for k in s
                                                if int(k) > 0), default=1)))
  budgets = sorted({int(k) for s in summary.values() for k in s})
  ax.set_xticks(budgets, [str(k) for k in budgets])
  ax.minorticks_off()
  ax.set_xlabel('ground-truth labels of B bought (k)')
  ax.set_ylabel('PGR (0 = weak, 1 = ceiling)')
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, title='student loss', title_fontsize=8)
  fig.suptitle(title, fontsize=9)
  return fig
