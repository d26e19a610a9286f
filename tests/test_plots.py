"""Figures of the main job (`results.figures`), of `w2s.report` and their pieces (`w2s.plots`):
results built as the protocol builds them (`score_seed` / `summarize` on synthetic probabilities,
stages written by `metrics.Writer` and `Stage.finish`), the files written, and what each figure
draws checked on its matplotlib objects."""
import json
import os

import numpy as np
import pytest
from matplotlib.container import BarContainer, ErrorbarContainer

from test_report import _probs, _w2s_results, _write  # noqa: E402  (tests/ on sys.path)
from w2s import metrics, plots, report, report_plots, scores
from w2s.protocols import results as results_lib
from w2s.protocols import self_training_results
from w2s.protocols.stages import Stage

KINDS = ('weak', 'ceiling', 'student_xent', 'student_logconf')
STEPS = (10, 20, 30, 40)


def _spread(rng, y, acc):
  """[N, 2] probabilities right on about `acc` of the rows, confidence spread over [0.5, 1)."""
  pred = _probs(rng, y, acc).argmax(-1)
  conf = rng.uniform(0.5, 1.0, len(y))[:, None]
  return np.where(np.eye(2)[pred] == 1, conf, 1 - conf)


def _stages(root, seed, rng, val=True):
  """{kind: stage dir relative to root}: each stage's metrics.jsonl (train and held-out records,
  as `train.run_loop` writes them) and done.json with the step `select='best'` kept."""
  rels = {}
  for kind in KINDS:
    stage = Stage(str(root), kind, {'test': kind}, seed=seed)
    writer = metrics.Writer(stage.dir, enabled=True)
    val_loss = 0.7 - 0.02 * np.arange(len(STEPS)) + rng.normal(0, 0.03, len(STEPS))
    for step, loss in zip(STEPS, val_loss):
      writer.write(step, {'loss': loss + 0.1, 'accuracy': 0.7})
      if val:
        writer.write(step, {'val_loss': loss, 'val_accuracy': 1.3 - loss})
    writer.close()
    best = {'best_step': STEPS[int(np.argmin(val_loss))]} if val else {}
    stage.finish({'test_probs': np.zeros((1, 2), np.float32)}, {'steps': STEPS[-1], **best})
    rels[kind] = os.path.relpath(stage.dir, root)
  return rels


def _main_job(root, seeds, smoke=True, losses=('xent', 'logconf'), n=300):
  """(results, per-seed test probabilities) as weak_to_strong.run has them at its end."""
  rng = np.random.default_rng(len(seeds))
  per_seed, test_probs = [], []
  for seed in seeds:
    y = rng.integers(0, 2, n)
    probs = {'label': y, 'weak': _spread(rng, y, 0.65), 'ceiling': _spread(rng, y, 0.8)}
    rec = {'seed': seed, 'stages': _stages(root, seed, rng)}
    for i, name in enumerate(losses):
      probs[f'student_{name}'] = _spread(rng, y, 0.68 + 0.04 * i)
      rec[name] = results_lib.score_seed(probs['weak'], probs[f'student_{name}'],
                                         probs['ceiling'], y)
    per_seed.append(rec)
    test_probs.append(probs)
  config = {'protocol': {'name': 'weak_to_strong'}, 'smoke': smoke}
  return results_lib.summarize(per_seed, list(losses), config), test_probs


def _read_back(results):
  """The results as a later reader sees them (results.json: NaN -> null)."""
  from w2s import train
  return json.loads(json.dumps(train._json_safe(results)))


def test_main_job_writes_every_figure_and_smoke_titles_say_so(tmp_path):
  results, probs = _main_job(tmp_path, range(3))
  paths = results_lib.plot(results, str(tmp_path), test_probs=probs, stage_root=str(tmp_path))
  assert [os.path.basename(p) for p in paths] == ['accuracy.png', 'pgr.png', 'weak_split.png',
                                                  'reliability.png', 'curves.png']
  assert all(os.path.getsize(p) > 0 for p in paths)
  assert not [f for f in os.listdir(tmp_path) if '.tmp' in f]
  figs = results_lib.figures(results, probs, str(tmp_path))
  assert all(f.get_suptitle().startswith('SMOKE TEST') for f in figs.values()), \
      {k: f.get_suptitle() for k, f in figs.items()}
  real = results_lib.figures(_main_job(tmp_path / 'real', range(3), smoke=False)[0])
  assert set(real) == {'accuracy', 'pgr', 'weak_split'}  # no probabilities, no stages
  assert not any('SMOKE' in f.get_suptitle() for f in real.values())
  assert '3 seeds, mean [95% t-interval]' in real['accuracy'].get_suptitle()


def _bars(ax):
  return [c for c in ax.containers if isinstance(c, BarContainer)]


def test_accuracy_bars_have_seed_points_intervals_and_an_axis_from_zero_or_broken():
  results = _w2s_results(range(5))
  fig = results_lib.figures(results)['accuracy']
  upper, stub = fig.axes  # accuracies of 60-80%: a broken axis, its stub showing zero
  assert stub.get_ylim()[0] == 0 and upper.get_ylim()[0] > 40
  assert [t.get_text() for t in stub.get_xticklabels()] == ['weak', 'student\nxent',
                                                            'student\nlogconf', 'ceiling']
  [bars] = _bars(upper)
  s = results['summary']
  expected = [s['xent']['acc_weak'], s['xent']['acc_student'], s['logconf']['acc_student'],
              s['xent']['acc_ceiling']]
  np.testing.assert_allclose([b.get_height() for b in bars], [100 * e['mean'] for e in expected])
  assert len([c for c in upper.containers if isinstance(c, ErrorbarContainer)]) == 4
  dots = [l for l in upper.lines if l.get_marker() == 'o']
  np.testing.assert_allclose(sorted(np.concatenate([l.get_ydata() for l in dots])),
                             sorted(100 * np.concatenate([e['values'] for e in expected])))
  assert any(t.get_text() == 'axis broken' for t in upper.texts)
  # two seeds, read back from results.json (null interval ends): dots, no error bars
  two = results_lib.figures(_read_back(_w2s_results(range(2))))['accuracy']
  assert not [c for c in two.axes[0].containers if isinstance(c, ErrorbarContainer)]
  assert 'n=2 seeds: no interval' in two.get_suptitle()


def test_weak_split_groups_bars_by_student_loss_from_zero():
  results = _w2s_results(range(4))
  fig = results_lib.figures(results)['weak_split']
  ax = fig.axes[0]
  assert fig.axes[-1].get_ylim()[0] <= 0  # the zero the bars start from is on the axis
  right, wrong = _bars(ax)
  for bars, m in ((right, 'acc_weak_right'), (wrong, 'acc_weak_wrong')):
    means = [100 * results['summary'][n][m]['mean'] for n in ('xent', 'logconf')]
    np.testing.assert_allclose([b.get_height() for b in bars], means)
  assert [t.get_text().split(' (')[0] for t in fig.legends[0].get_texts()] == [
      'weak label right', 'weak label wrong']


def test_reliability_bins_are_those_of_scores_ece():
  rng = np.random.default_rng(3)
  y = [rng.integers(0, 3, 200), rng.integers(0, 3, 150)]
  probs = [rng.dirichlet(np.ones(3) * 0.7, len(l)) for l in y]
  fig, (ax, hist) = plots.pyplot().subplots(2, 1)
  out = plots.reliability(ax, hist, probs, y, label='m', color='k')
  pooled, labels = np.concatenate(probs), np.concatenate(y)
  assert out['counts'].sum() == len(labels)
  # ECE from the drawn bins equals scores.ece (same 15 bins, same edges)
  nonzero = out['counts'][out['counts'] > 0]
  ece = np.sum(nonzero / len(labels) * np.abs(out['accuracy'] - out['confidence']))
  assert ece == pytest.approx(scores.ece(pooled, labels), abs=1e-12) == pytest.approx(out['ece'])
  assert ax.get_legend_handles_labels()[1] == [f'm: ECE {100 * out["ece"]:.1f}% (pooled)']
  plots.pyplot().close(fig)


def test_reliability_figure_pools_seeds_and_names_the_ece_per_model(tmp_path):
  results, probs = _main_job(tmp_path, range(3))
  fig = results_lib.figures(results, probs)['reliability']
  ax, hist = fig.axes
  labels = ax.get_legend_handles_labels()[1]
  assert labels[0] == 'perfectly calibrated' and len(labels) == 5
  ece = scores.summarize_seeds([scores.ece(p['student_xent'], p['label']) for p in probs])
  assert labels[2] == (f'student xent: ECE {100 * ece.mean:.1f}% '
                       f'[{100 * ece.lo:.1f}, {100 * ece.hi:.1f}]')
  assert '3 seeds pooled (900 predictions per model)' in fig.get_suptitle()
  assert len(hist.patches) == 4  # one step histogram per model


def test_curves_band_over_seeds_and_mark_the_selected_step(tmp_path):
  results, _ = _main_job(tmp_path, range(3))
  fig = results_lib.figures(results, stage_root=str(tmp_path))['curves']
  axes = np.array(fig.axes).reshape(2, len(KINDS))
  assert len({ax.get_ylim() for ax in axes[0]}) == 1  # one accuracy scale
  titles = [ax.get_title() for ax in axes[0]]
  assert 'vs WEAK labels of val' in titles[2] and 'ground truth' in titles[0]
  for j, kind in enumerate(KINDS):
    stars = [l for l in axes[0][j].lines if l.get_marker() == '*']
    best = [json.load(open(tmp_path / r['stages'][kind] / 'done.json'))['best_step']
            for r in results['per_seed']]
    assert sorted(float(l.get_xdata()[0]) for l in stars) == sorted(best)
  assert len(fig.legends) == 1
  assert 'band: 95% t-interval of the mean over 3 seeds' in [
      t.get_text() for t in fig.legends[0].get_texts()]


def test_seed_band_is_a_t_interval_from_three_seeds_and_min_max_of_two():
  curves = [([1, 2, 3], [0.5, 0.6, 0.7]), ([1, 2, 3], [0.55, 0.7, 0.72]),
            ([1, 2, 3, 4], [0.45, 0.65, 0.74, 0.8])]
  plt = plots.pyplot()
  fig, (a, b) = plt.subplots(1, 2)
  assert plots.seed_band(a, curves, color='k', label='x') == 3
  lo, hi = scores.summarize_seeds([0.6, 0.7, 0.65])[1:3]
  band = a.collections[0].get_paths()[0].vertices[:, 1]
  assert np.isclose(band, lo).any() and np.isclose(band, hi).any()
  assert plots.seed_band(b, curves[:2], color='k', label='x') == 2
  band = b.collections[0].get_paths()[0].vertices[:, 1]
  assert band.min() == pytest.approx(0.5) and band.max() == pytest.approx(0.72)
  means = [l for l in a.lines if l.get_label() == 'x'][0]
  assert list(means.get_xdata()) == [1, 2, 3]  # the steps every seed logged
  plt.close(fig)


def test_axis_names_read_as_words():
  assert plots.axis_name('strong.model.layers') == 'strong model layers'
  assert plots.axis_name('splits.max_weak') == 'max weak'
  assert plots.axis_name('seeds') == 'seeds'


@pytest.fixture(autouse=True)
def _close_figures():
  yield
  plots.pyplot().close('all')


@pytest.fixture
def figures_saved(monkeypatch):
  """{file name: Figure} of every figure `plots.save` writes while the test runs."""
  saved, save = {}, plots.save
  monkeypatch.setattr(plots, 'save', lambda fig, path, **kw: saved.setdefault(
      os.path.basename(path), fig) and save(fig, path, **kw))
  return saved


def test_report_without_a_numeric_axis_draws_bars_not_lines(tmp_path, figures_saved):
  _write(tmp_path / 'a', _w2s_results(range(3)))
  _write(tmp_path / 'b', _w2s_results(range(2), smoke=True))
  report.report([str(tmp_path)], str(tmp_path / 'out'))
  for name in ('accuracy.png', 'pgr.png'):
    fig = figures_saved[name]
    assert fig.get_suptitle().startswith('SMOKE TEST') and 'no numeric swept axis' in \
        fig.get_suptitle()
    assert len(fig.legends) == 1 and not any(ax.get_legend() for ax in fig.axes)
    joining = [l for ax in fig.axes for l in ax.lines if _joins_points(l)]
    assert not joining, (name, [l.get_xydata() for l in joining])
  acc = figures_saved['accuracy.png']
  assert [t.get_text() for t in acc.axes[-1].get_xticklabels()] == ['a', 'b']
  assert sum(len(b) for b in _bars(acc.axes[0])) == 2 * 4  # weak, 2 students, ceiling per run


def _joins_points(line) -> bool:
  """A drawn line through points at different x (not dots, not a horizontal reference line)."""
  x, y = np.atleast_1d(line.get_xdata()), np.atleast_1d(line.get_ydata())
  reference = len(set(np.round(y.astype(float), 12))) == 1 and list(x) == [0, 1]
  return line.get_linestyle() not in ('None', 'none', '') and len(set(x)) > 1 and not reference


def _sweep(root, runs):
  """A sweep directory: each run's results.json and sweep.json (as w2s.sweep writes them)."""
  points = []
  for name, overrides, res in runs:
    _write(root / name, res)
    points.append({'name': name, 'overrides': overrides})
  with open(root / 'sweep.json', 'w') as f:
    json.dump({'points': points, 'axes': list(runs[0][1])}, f)


def test_report_over_a_numeric_axis_shares_one_scale_and_one_legend(tmp_path, figures_saved):
  _sweep(tmp_path, [(f'w{w}-l{l}', {'splits.max_weak': w, 'strong.model.layers': l},
                     _w2s_results(range(3 + l))) for w in (64, 128) for l in (1, 2, 3)])
  report.report([str(tmp_path)])
  acc = figures_saved['accuracy.png']
  assert [ax.get_title() for ax in acc.axes] == ['max weak = 64', 'max weak = 128']
  assert {ax.get_xlabel() for ax in acc.axes} == {'strong model layers'}
  assert len({ax.get_ylim() for ax in acc.axes}) == 1
  assert len(acc.legends) == 1 and not any(ax.get_legend() for ax in acc.axes)
  pgr = figures_saved['pgr.png']
  assert len({ax.get_ylim() for ax in pgr.axes}) == 1 and len(pgr.legends) == 1


def test_report_curves_are_held_out_accuracy_bands_or_one_panel_per_objective(
    tmp_path, figures_saved):
  res, _ = _main_job(tmp_path / 'w2s', range(3))
  _write(tmp_path / 'w2s', res)
  rng = np.random.default_rng(1)
  for name in ('llp_a', 'llp_b'):  # a protocol without a val slice: training loss only
    llp = {'per_seed': [{'seed': s, 'stages': {'llp': _stages(tmp_path / name, s, rng,
                                                              val=False)['weak']}}
                        for s in range(2)],
           'summary': {m: scores.summarize_seeds([0.5, 0.6])._asdict()
                       for m in ('acc', 'ece', 'train_acc')},
           'seeds': [0, 1], 'config': {'protocol': {'name': 'label_proportions'}}}
    _write(tmp_path / name, llp)
  report.report([str(tmp_path)], str(tmp_path / 'out'))
  fig = figures_saved['curves.png']
  held = [ax for ax in fig.axes if ax.get_visible() and 'held-out' in ax.get_ylabel()]
  loss = [ax for ax in fig.axes if ax.get_visible() and 'training loss' in ax.get_ylabel()]
  assert len(held) == len(KINDS) and len({ax.get_ylim() for ax in held}) == 1
  assert sorted(ax.get_title().split('\n')[0] for ax in loss) == ['llp: llp_a', 'llp: llp_b']
  assert all('no held-out evaluation logged' in ax.get_title() for ax in loss)
  assert len(fig.legends) == 1


def test_self_training_rounds_read_back_with_null_ends(tmp_path):
  per_seed = [{'seed': s, 'rounds': [{'acc': 0.8 + 0.01 * s, 'ece': 0.05},
                                     {'acc': 0.85 + 0.02 * s, 'ece': 0.04,
                                      'pseudo': {'accuracy': 0.9, 'coverage': 0.7 + 0.1 * s,
                                                 'utilisation': 0.6}}]} for s in range(2)]
  res = _read_back(self_training_results.summarize(per_seed, {'smoke': True}))
  assert res['summary']['rounds'][0]['acc']['lo'] is None
  fig = self_training_results.figure(res)
  assert fig.get_suptitle().startswith('SMOKE TEST') and 'no interval' in fig.get_suptitle()
  assert os.path.getsize(self_training_results.plot(res, str(tmp_path))) > 0
