"""Pairwise scores of the preference protocol: per-response scores kept by example id, which
response a judge, a reward model or a policy prefers, pairwise accuracy against the gold preference, PGR, agreement with the weak judge and the
Super(ficial)-alignment split (Yang et al. 2024, "Super(ficial)-alignment: Strong Models May
Deceive Weak Models in Weak-to-Strong Generalization"), and the Delta judge's reported pair
correctness (Geng et al. 2025).

A pair's scores are [N, 2], one per response: rewards r(x, y_k) of a reward model (Bradley-Terry,
Ouyang et al. 2022), or for a DPO-family policy its implicit reward beta * (log pi(y_k|x) -
log pi_ref(y_k|x)) (Rafailov et al. 2023, sec. 5), whose argmax does not depend on beta > 0. The
preferred response is the argmax (response 0 on ties), compared with the gold label (the index of
the correct response).
"""
import os

import numpy as np

from w2s import plots, scores
from w2s.protocols import by_id_store
from w2s.protocols import results as results_lib

# per-seed, per-student numbers summarised over seeds (results_lib.summarize)
METRICS = ('acc_weak', 'acc_student', 'acc_ceiling', 'pgr', 'agreement', 'acc_weak_wrong',
           'acc_weak_right', 'weak_right_minus_wrong')


class Scores:
  """[N, 2] per-response scores of pairs by one trained (or frozen) model, kept by example id in a
  `ByIdStore` `<root>/<what>/<name>-<key>/` (one per model stage, score kind and tokenization
  `key`): a rerun, another student or another seed reads them instead of restoring the model.
  `what`: 'rewards' (`sequence.reward_apply_fn`), 'logp' / 'ref_logp' (`logprob_apply_fn`)."""

  def __init__(self, root: str, trained, what: str, apply_fn, *, key, batch_size: int, mesh,
               name: str | None = None):
    self.trained, self.apply_fn, self.mesh, self.batch_size = trained, apply_fn, mesh, batch_size
    kind = trained.stage.kind
    self.store = by_id_store.ByIdStore(root, what, name or kind, ('scores',),
                                       (trained.stage.key, what, key),
                                       spec={'stage': kind, 'scores': what})

  def of(self, rows) -> np.ndarray:
    """[N, 2] float32 scores of `rows` (pair examples with 'id'), in their order."""
    from w2s.predict import predict
    what = f'{self.store.family} {self.store.name}'

    def produce(sub):
      out = predict(self.trained.module, self.trained.params(), sub, batch_size=self.batch_size,
                    mesh=self.mesh, name=what, apply_fn=self.apply_fn)
      return {'id': out['id'], 'scores': out['logits']}
    return self.store.get(rows, produce, chunk=max(8 * self.batch_size, 256),
                          what=what)['scores']


def preferred(pair_scores) -> np.ndarray:
  """[N, 2] scores -> [N] int64 index of the preferred response (0 on ties)."""
  s = np.asarray(pair_scores, np.float64)
  return (s[:, 1] > s[:, 0]).astype(np.int64)


def soft_preference(rewards) -> np.ndarray:
  """[N, 2] rewards -> [N, 2] float32 Bradley-Terry preference softmax(r): label[:, 0] =
  sigmoid(r_0 - r_1), the weak judge's soft label (Burns et al. 2023)."""
  r = np.asarray(rewards, np.float64)
  p0 = 1.0 / (1.0 + np.exp(-(r[:, 0] - r[:, 1])))
  return np.stack([p0, 1.0 - p0], axis=1).astype(np.float32)


def implicit_rewards(logp, ref_logp, beta: float = 1.0) -> np.ndarray:
  """[N, 2] beta * (log pi(y|x) - log pi_ref(y|x)) of a policy's and its reference's sequence
  log-probs [N, 2] (DPO's implicit reward)."""
  return beta * (np.asarray(logp, np.float64) - np.asarray(ref_logp, np.float64))


def policy_pair_correct(logp, ref_logp, gold, beta: float = 1.0) -> np.ndarray:
  """[N] float64 1.0 where the policy's implicit reward prefers the gold response (gold [N] int
  index of the preferred response)."""
  return (preferred(implicit_rewards(logp, ref_logp, beta)) == np.asarray(gold)).astype(np.float64)


def score(weak_pred, student_pred, gold, acc_ceiling: float) -> dict:
  """One seed's numbers for one student from [N] preferred-response indices on test."""
  weak_pred, student_pred, gold = (np.asarray(x, np.int64) for x in (weak_pred, student_pred, gold))
  right = (student_pred == gold).astype(np.float64)
  weak_right = weak_pred == gold
  acc_w, acc_s = float(weak_right.mean()), float(right.mean())
  p = scores.pgr(acc_w, acc_s, acc_ceiling)
  mean = lambda m: float(right[m].mean()) if m.any() else float('nan')
  on_right, on_wrong = mean(weak_right), mean(~weak_right)
  return {'acc_weak': acc_w, 'acc_student': acc_s, 'acc_ceiling': float(acc_ceiling),
          'pgr': p.value, 'pgr_undefined': p.reason,
          'agreement': float(np.mean(student_pred == weak_pred)),
          'acc_weak_wrong': on_wrong, 'acc_weak_right': on_right,
          'weak_right_minus_wrong': on_right - on_wrong,
          'n_weak_wrong': int((~weak_right).sum()), 'n_weak_right': int(weak_right.sum())}


# the Delta judge's pairs of B (preference_delta.correct_shares): reported, never trained on
DELTA_SHARES = ('chosen_correct', 'rejected_correct', 'delta_right', 'delta_wrong')


def delta_summary(per_seed: list[dict]) -> dict:
  """{share: seed summary} of the Delta pairs' correctness shares ({} for another judge, or when
  the judge has no extractor)."""
  judges = [r['judge'] for r in per_seed]
  if not judges or any(DELTA_SHARES[0] not in j for j in judges):
    return {}
  return {k: scores.summarize_seeds([j[k] for j in judges])._asdict() for k in DELTA_SHARES}


def seed_line(record: dict, names: list[str]) -> str:
  parts = [f'seed {record["seed"]}: weak judge {record["judge"]["acc_test"]:.4f}']
  if DELTA_SHARES[0] in record['judge']:
    j = record['judge']
    parts.append(f'(Delta pairs of B: {j["n_pairs_b"]} kept, {j["n_identical_b"]} identical '
                 f'dropped, chosen correct {j["chosen_correct"]:.4f}, rejected correct '
                 f'{j["rejected_correct"]:.4f})')
  for n in names:
    r = record[n]
    pgr = 'undefined' if r.get('pgr_undefined') else f'{r["pgr"]:.2f}'
    parts.append(f'{n} {r["acc_student"]:.4f} (ceiling {r["acc_ceiling"]:.4f}, PGR {pgr})')
  return '[preference] ' + '  '.join(parts)


def table(results: dict) -> str:
  """The weak-to-strong table (pairwise accuracy), then the Super(ficial)-alignment split."""
  fmt = scores.fmt_summary
  head = results_lib.table(results).replace(
      'weak-to-strong results', 'preference weak-to-strong results (pairwise accuracy)', 1)
  kinds = results.get('kinds', {})
  rows = [('student', 'kind', 'acc | judge right', 'acc | judge wrong', 'right - wrong')]
  for name, s in results['summary'].items():
    rows.append((name, kinds.get(name, ''), fmt(s['acc_weak_right'], 100),
                 fmt(s['acc_weak_wrong'], 100), fmt(s['weak_right_minus_wrong'], 100)))
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  lines = ['  '.join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
  lines.insert(1, '  '.join('-' * w for w in widths))
  out = (head + '\nSuper(ficial)-alignment: student accuracy (%) on test pairs the weak judge '
         'gets right / wrong (a large gap: good where the judge can check, bad where it cannot):'
         '\n' + '\n'.join(lines))
  shares = results.get('delta') or {}
  if shares:
    out += ('\nDelta pairs of B (%; chosen = the larger weak model\'s answer; B\'s gold used '
            'only here): ' + ', '.join(f'{k.replace("_", " ")} {fmt(shares[k], 100)}'
                                       for k in DELTA_SHARES))
  return out


def ceilings(results: dict) -> dict:
  """{kind: the seed summary of its ceiling's accuracy} (from its first student)."""
  out = {}
  for name, kind in results.get('kinds', {}).items():
    out.setdefault(kind, results['summary'][name]['acc_ceiling'])
  return out


def accuracy_figure(results: dict):
  """Test pairwise accuracy of the weak judge, each student and each kind's ceiling."""
  summ, kinds = results['summary'], results.get('kinds', {})
  names = list(summ)
  ceil = ceilings(results)
  labels = (['weak judge'] + [f'{n}\n({kinds.get(n, "")})' for n in names]
            + [f'ceiling\n({k})' for k in ceil])
  stats = ([summ[names[0]]['acc_weak']] + [summ[n]['acc_student'] for n in names]
           + list(ceil.values()))
  colors = ([results_lib.WEAK] + [results_lib.STUDENT] * len(names)
            + [results_lib.CEILING] * len(ceil))
  fig = plots.pyplot().figure(figsize=(1.5 * len(labels) + 1.5, 3.8), layout='constrained')
  va = plots.ValueAxes(fig, fig.add_gridspec(1, 1)[0], plots.value_span(stats, 100))
  for ax in va.axes:
    plots.seed_bars(ax, range(len(labels)), stats, 100, colors)
  va.axes[-1].set_xticks(range(len(labels)), labels)
  va.finish('test pairwise accuracy (%)')
  smoke = results_lib.smoke_note(results.get('config'))
  note = results_lib.interval_note(len(results['seeds']))
  fig.suptitle(f'{smoke}preference weak-to-strong: pairwise accuracy on test\n{note}', fontsize=9)
  return fig


def plot(results: dict, workdir: str, stage_root: str) -> list[str]:
  """The weak-to-strong figures (`results.figures`) with the accuracy one per student kind."""
  figs = results_lib.figures(results, stage_root=stage_root)
  plots.pyplot().close(figs['accuracy'])
  figs['accuracy'] = accuracy_figure(results)
  return [plots.save(fig, os.path.join(workdir, f'{name}.png')) for name, fig in figs.items()]
