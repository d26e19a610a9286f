"""Scores per seed, summaries over seeds (mean and Student-t 95% interval; paired differences
between student losses, which share seeds), the printed table and the figures (`figures`)."""
import os

import numpy as np

from w2s import plots, scores
from w2s.protocols import overlap_stage, queries

# per-seed, per-student-loss numbers that get a mean and CI over seeds
METRICS = ('acc_weak', 'acc_student', 'acc_ceiling', 'pgr', 'agreement', 'acc_weak_wrong',
           'acc_weak_right', 'auroc_student', 'ece_student')
# metrics whose loss-vs-loss paired difference is reported
PAIRED_METRICS = ('acc_student', 'pgr')
SMOKE = 'SMOKE TEST (runlocal: tiny splits and models, not a result) - '  # title prefix


def score_seed(weak_probs, student_probs, ceiling_probs, labels) -> dict:
  """Test-set numbers of one seed and one student loss ([N, C] probabilities, labels [N])."""
  acc_w = scores.accuracy(weak_probs, labels)
  acc_s = scores.accuracy(student_probs, labels)
  acc_c = scores.accuracy(ceiling_probs, labels)
  p = scores.pgr(acc_w, acc_s, acc_c)
  out = {'acc_weak': acc_w, 'acc_student': acc_s, 'acc_ceiling': acc_c, 'pgr': p.value,
         'pgr_undefined': p.reason, 'agreement': scores.agreement(student_probs, weak_probs),
         'auroc_student': scores.auroc(student_probs, labels),
         'ece_student': scores.ece(student_probs, labels)}
  out.update(scores.accuracy_by_weak_correctness(student_probs, weak_probs, labels))
  return out


def seed_line(record: dict, losses: list[str]) -> str:
  first = record[losses[0]]
  parts = [f'seed {record["seed"]}: weak {first["acc_weak"]:.4f}  ceiling {first["acc_ceiling"]:.4f}']
  for name in losses:
    r = record[name]
    pgr = 'undefined' if r.get('pgr_undefined') else f'{r["pgr"]:.2f}'
    parts.append(f'{name} {r["acc_student"]:.4f} (PGR {pgr})')
  return '[weak_to_strong] ' + '  '.join(parts)


def summarize(per_seed: list[dict], losses: list[str], config: dict,
              metrics: tuple[str, ...] = METRICS) -> dict:
  """{'per_seed', 'summary': {loss: {metric: {mean, lo, hi, n, n_nan, values, interval}}},
  'paired': {'b - a': {metric: ...}}, 'seeds', 'config'}.

  'paired' holds, for every student loss b after the first (a), the per-seed difference b - a of
  student accuracy and PGR: the students share seeds, splits and weak labels, so this is the
  interval to quote when saying one loss beats another."""
  summary = {}
  for name in losses:
    summary[name] = {}
    for m in metrics:
      s = scores.summarize_seeds([r[name][m] for r in per_seed])
      summary[name][m] = s._asdict()
    undefined = [r[name]['pgr_undefined'] for r in per_seed if r[name]['pgr_undefined']]
    if undefined:
      summary[name]['pgr_undefined'] = undefined
  paired = {f'{b} - {losses[0]}': {m: scores.paired_difference(
      [r[b][m] for r in per_seed], [r[losses[0]][m] for r in per_seed])._asdict()
      for m in PAIRED_METRICS} for b in losses[1:]}
  return {'per_seed': per_seed, 'summary': summary, 'paired': paired,
          'seeds': [r['seed'] for r in per_seed], 'config': config}


def smoke_note(config) -> str:
  """'SMOKE TEST (runlocal) - ' for a config made by a `runlocal` preset, else ''."""
  return SMOKE if (config or {}).get('smoke') else ''


def interval_note(n_seeds: int) -> str:
  """How the printed intervals were made, or that there are none."""
  if n_seeds < scores.MIN_SEEDS_FOR_INTERVAL:
    return f'n={n_seeds} seed{"s" * (n_seeds != 1)}: no interval, the values per seed'
  return f'{n_seeds} seeds, mean [95% t-interval]'


def table(results: dict) -> str:
  """A readable table: accuracy (%) and PGR, mean [95% t-interval] over seeds, one row per student
  loss, then the paired differences between losses."""
  fmt = scores.fmt_summary
  rows = [('loss', 'weak acc', 'student acc', 'ceiling acc', 'PGR', 'agreement',
           'acc | weak wrong')]
  notes = []
  n_seeds = len(results['seeds'])
  for name, s in results['summary'].items():  # the config's student order
    pgr = fmt(s['pgr'])
    if s['pgr'].get('n_nan'):
      pgr += f' ({s["pgr"]["n"]} of {n_seeds} seeds)'
      notes += [f'{name}, seed {r["seed"]}: PGR undefined: {r[name]["pgr_undefined"]}'
                for r in results['per_seed'] if r[name].get('pgr_undefined')]
    rows.append((name, fmt(s['acc_weak'], 100), fmt(s['acc_student'], 100),
                 fmt(s['acc_ceiling'], 100), pgr, fmt(s['agreement'], 100),
                 fmt(s['acc_weak_wrong'], 100)))
  for pair, d in results.get('paired', {}).items():
    notes.append(f'paired difference {pair} (same seeds): student acc '
                 f'{fmt(d["acc_student"], 100)} points, PGR {fmt(d["pgr"])}')
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  lines = ['  '.join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
  lines.insert(1, '  '.join('-' * w for w in widths))
  extra = ''.join(f'\n\n{t}' for t in _section_tables(results))
  return (f'{smoke_note(results.get("config"))}weak-to-strong results, test set, '
          f'{interval_note(n_seeds)}:\n' + '\n'.join(lines + notes) + extra)


def _section_tables(results: dict) -> list[str]:
  """The optional sections' tables: overlap rows vs the rest, students per query budget."""
  out = []
  if 'overlap' in results:
    out.append(overlap_stage.table(results['overlap'], list(results['summary'])))
  if 'queries' in results:
    out.append(queries.table(results['queries']))
  return out


def plot(results: dict, workdir: str, test_probs: list[dict] | None = None,
         stage_root: str | None = None) -> list[str]:
  """Writes the figures of `figures` into `workdir` as <name>.png; returns their paths."""
  return [plots.save(fig, os.path.join(workdir, f'{name}.png'))
          for name, fig in figures(results, test_probs, stage_root).items()]


def figures(results: dict, test_probs: list[dict] | None = None,
            stage_root: str | None = None) -> dict:
  """{name: matplotlib Figure} of a weak-to-strong run, every title with the smoke and interval
  notes; bars carry 95% t-intervals (none below 3 seeds) and each seed's value:

    accuracy     test accuracy of weak / each student / ceiling, on an axis from zero or a
                 visibly broken one
    pgr          PGR per student loss
    weak_split   each student's accuracy where the weak label is right vs wrong
    reliability  (given `test_probs`: per seed {'label': [N], 'weak', 'ceiling',
                 'student_<loss>': [N, C]} test probabilities) reliability diagrams, seeds pooled
    curves       (given `stage_root`, where `per_seed[i]['stages']` paths start) each stage kind's
                 held-out curves over steps, a band over seeds and the step `select='best'` kept
    pgr_budget   (with `student.queries`) PGR against the number of B's true labels bought
  """
  smoke, note = smoke_note(results.get('config')), interval_note(len(results['seeds']))
  out = {'accuracy': _accuracy(results, smoke, note), 'pgr': _pgr(results, smoke, note),
         'weak_split': _weak_split(results, smoke, note)}
  if test_probs:
    out['reliability'] = _reliability(results, test_probs)
  if 'queries' in results:
    out['pgr_budget'] = queries.figure(results['queries'],
                                       f'{smoke}PGR against the ground-truth budget\n{note}')
  if stage_root is not None:
    fig = _curves(results, stage_root)
    if fig is not None:
      out['curves'] = fig
  return out


STUDENT, WEAK, CEILING = '#4477aa', '#999999', '#228833'


def _accuracy(results, smoke, note):
  summ = results['summary']
  losses = list(summ)
  first = summ[losses[0]]
  names = ['weak'] + [f'student\n{n}' for n in losses] + ['ceiling']
  stats = [first['acc_weak']] + [summ[n]['acc_student'] for n in losses] + [first['acc_ceiling']]
  fig = plots.pyplot().figure(figsize=(1.5 * len(names) + 1.5, 3.8), layout='constrained')
  va = plots.ValueAxes(fig, fig.add_gridspec(1, 1)[0], plots.value_span(stats, 100))
  for ax in va.axes:
    plots.seed_bars(ax, range(len(names)), stats, 100,
                    [WEAK] + [STUDENT] * len(losses) + [CEILING])
  va.axes[-1].set_xticks(range(len(names)), names)
  va.finish('test accuracy (%)')
  fig.suptitle(f'{smoke}weak-to-strong test accuracy\n{note}', fontsize=9)
  return fig


def _pgr(results, smoke, note):
  summ = results['summary']
  losses = list(summ)
  fig, ax = plots.pyplot().subplots(figsize=(1.4 * len(losses) + 2, 3.6), layout='constrained')
  plots.seed_bars(ax, range(len(losses)), [summ[n]['pgr'] for n in losses], 1.0, STUDENT)
  ax.axhline(0, color='black', lw=0.8)
  ax.axhline(1, color=CEILING, lw=0.8, ls='--')
  ax.set_xticks(range(len(losses)), losses)
  ax.set_xlabel('student loss')
  ax.set_ylabel('PGR (0 = weak, 1 = ceiling)')
  ax.grid(axis='y', alpha=0.3)
  undefined = [f'{n} on {summ[n]["pgr"]["n_nan"]} of {len(results["seeds"])} seeds'
               for n in losses if summ[n]['pgr'].get('n_nan')]
  fig.suptitle(f'{smoke}performance gap recovered\n{note}' + (
      f'\nPGR undefined (ceiling not above weak): {", ".join(undefined)}' if undefined else ''),
               fontsize=9)
  return fig


def _weak_split(results, smoke, note):
  """Grouped bars: per student loss, accuracy on test rows the weak label gets right / wrong."""
  summ = results['summary']
  losses = list(summ)
  parts = (('acc_weak_right', 'weak label right', '#88ccee', 'n_weak_right'),
           ('acc_weak_wrong', 'weak label wrong', '#cc6677', 'n_weak_wrong'))
  span = plots.value_span([summ[n][m] for n in losses for m, *_ in parts], 100)
  fig = plots.pyplot().figure(figsize=(1.8 * len(losses) + 2.5, 3.8), layout='constrained')
  va = plots.ValueAxes(fig, fig.add_gridspec(1, 1)[0], span)
  x = np.arange(len(losses))
  for j, (m, label, color, count) in enumerate(parts):
    rows = [r[losses[0]].get(count) for r in results['per_seed']]
    rows = f' (~{np.mean(rows):.0f} test rows)' if all(isinstance(c, int) for c in rows) else ''
    for ax in va.axes:
      plots.seed_bars(ax, x + (j - 0.5) * 0.4, [summ[n][m] for n in losses], 100, color,
                      width=0.38, label=label + rows if ax is va.axes[0] else None)
  va.axes[-1].set_xticks(x, [f'student {n}' for n in losses])
  va.finish('student test accuracy (%)')
  fig.legend(loc='outside lower center', ncol=2, fontsize=8, frameon=False)
  fig.suptitle(f'{smoke}student accuracy where the weak supervisor is right / wrong\n'
               f'(how much of its errors it imitates), {note}', fontsize=9)
  return fig


def _color(results, kind: str):
  """One color per stage kind in every figure: weak grey, ceiling green, students in tab10 order
  (green skipped), other stages (chain, relabelling rounds) after them."""
  fixed = {'weak': '#777777', 'ceiling': CEILING}
  if kind in fixed:
    return fixed[kind]
  kinds = [f'student_{n}' for n in results['summary']]
  kinds += sorted({k for r in results['per_seed'] for k in r.get('stages', {})} - set(kinds))
  return plots.series_color(kinds.index(kind) if kind in kinds else len(kinds))


def _models(results):
  """[(key of test_probs, label, color)]: weak, each student, ceiling."""
  students = [(f'student_{n}', f'student {n}') for n in results['summary']]
  return [(k, label, _color(results, k))
          for k, label in [('weak', 'weak'), *students, ('ceiling', 'ceiling')]]


def _reliability(results, test_probs):
  """One reliability diagram, every model over it; each seed's test predictions pooled."""
  plt = plots.pyplot()
  fig, (ax, hist) = plt.subplots(2, 1, figsize=(6.2, 6.2), sharex=True, height_ratios=[3, 1],
                                 layout='constrained')
  ax.plot([0, 1], [0, 1], ':', color='black', lw=1, label='perfectly calibrated')
  n_rows = 0
  for key, label, color in _models(results):
    have = [t for t in test_probs if key in t]
    if not have:
      continue
    probs, labels = [t[key] for t in have], [t['label'] for t in have]
    ece = scores.summarize_seeds([scores.ece(p, y) for p, y in zip(probs, labels)])._asdict()
    plots.reliability(ax, hist, probs, labels, label=label, color=color, seed_ece=ece)
    n_rows = sum(len(p) for p in probs)
  num_classes = np.shape(test_probs[0]['weak'])[-1]
  ax.set_xlim(1.0 / num_classes - 0.02, 1.0)
  ax.set_ylim(0, 1.02)
  ax.set_ylabel('accuracy in the bin')
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7.5, loc='lower right')
  hist.set_xlabel('confidence (top-label probability), 15 equal-width bins')
  hist.set_ylabel('test predictions')
  hist.grid(alpha=0.3)
  n = len(test_probs)
  ece = ('mean [95% t-interval] of the seeds\' ECE' if n >= scores.MIN_SEEDS_FOR_INTERVAL
         else 'each seed\'s ECE (no interval below 3 seeds)')
  fig.suptitle(f'{smoke_note(results.get("config"))}reliability on the test set, {n} seed'
               f'{"s" * (n != 1)} pooled ({n_rows} predictions per model)\nin the legend: {ece}',
               fontsize=9)
  return fig


def held_out_against(kind: str) -> str:
  """What a stage kind's held-out accuracy is measured against (its own label source)."""
  if kind in ('weak', 'ceiling') or kind.startswith('ceiling_'):
    return 'held-out acc. vs ground truth of val'
  if kind.startswith('student_') and '_round' not in kind:
    return 'held-out acc. vs WEAK labels of val'
  return "held-out acc. vs its teacher's labels of val"


def _curves(results, root):
  """Per stage kind: held-out accuracy (top) and loss (bottom) over steps, against the stage's own
  labels, each seed thin, mean and band over seeds, the step `select='best'` kept starred."""
  kinds = {}
  for rec in results['per_seed']:
    for kind, rel in rec.get('stages', {}).items():
      kinds.setdefault(kind, []).append(rel)
  data = {}
  for kind, rels in kinds.items():
    dirs = [os.path.join(root, rel) for rel in rels]
    (acc, selected), (loss, _) = (plots.stage_curves(dirs, k)
                                  for k in ('val_accuracy', 'val_loss'))
    if any(len(steps) for steps, _ in acc):
      data[kind] = acc, loss, selected
  if not data:
    return None
  plt = plots.pyplot()
  fig, axes = plt.subplots(2, len(data), figsize=(3.3 * len(data) + 0.6, 5.6), squeeze=False,
                           sharex='col', layout='constrained')
  n_seeds = 0
  for j, (kind, (acc, loss, selected)) in enumerate(data.items()):
    color = _color(results, kind)
    n_seeds = max(n_seeds, plots.seed_band(axes[0][j], acc, k=100, color=color, label=kind,
                                           selected=selected))
    plots.seed_band(axes[1][j], loss, color=color, label=kind, selected=selected)
    axes[0][j].set_title(f'{kind.replace("_", " ")}\n{held_out_against(kind)}', fontsize=8.5)
    axes[1][j].set_xlabel('step')
  vals = [100 * v for acc, _, _ in data.values() for _, curve in acc for v in curve]
  pad = 0.06 * (max(vals) - min(vals)) + 0.5  # one scale over the accuracy row (bands may overrun)
  for ax in axes[0]:
    ax.set_ylim(max(0.0, min(vals) - pad), min(100.0, max(vals)) + pad)
  for ax in axes.ravel():
    ax.grid(alpha=0.3)
  axes[0][0].set_ylabel("held-out accuracy (%)\nvs the stage's own labels")
  axes[1][0].set_ylabel("held-out loss\n(the stage's own objective)")
  marked = any(s is not None for _, _, selected in data.values() for s in selected)
  fig.legend(handles=plots.legend_keys(n_seeds, marks=marked), loc='outside lower center', ncol=4,
             fontsize=7.5, frameon=False)
  fig.suptitle(f'{smoke_note(results.get("config"))}held-out curves of every stage (val slice)',
               fontsize=9)
  return fig
