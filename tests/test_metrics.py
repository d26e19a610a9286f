"""Telemetry: TensorBoard tags grouped by split and an HParams session per run (read back with
TensorBoard's own readers), the progress line's smoothed ETA (a fake clock), elapsed time and
`stage k/N`, one line rewritten in place in a notebook, and TFDS quiet while building user files."""
import io
import json
import os
import sys
import types

import pytest
from ml_collections import ConfigDict

from w2s import metrics, train


def _train(steps, eval_every=0):
  return dict(optimizer=dict(name='adam', learning_rate=1e-2),
              schedule=dict(name='cosine', warmup_frac=0.0), batch_size=32, num_epochs=0.0,
              num_steps=steps, accum_steps=1, eval_every=eval_every,
              select='best' if eval_every else 'last', patience=0)


def _tiny_weak_to_strong() -> ConfigDict:
  """Digits, a linear weak model and an MLP strong one, two student losses: ~20 s on a CPU."""
  c = ConfigDict()
  c.protocol = dict(name='weak_to_strong')
  c.dataset = dict(name='digits')
  c.splits = dict(weak_fraction=0.5, val_fraction=0.1, balance=False, max_weak=200,
                  max_strong=400, max_val=100, max_test=200)
  c.seeds = (0,)
  c.weak = dict(model=dict(name='mlp', size='linear'), loss=dict(name='xent'), train=_train(20))
  c.strong = dict(model=dict(name='mlp', size='small'), loss=dict(name='xent'),
                  train=_train(30, eval_every=10))
  c.student_losses = dict(xent=dict(name='xent'), logconf=dict(name='logconf'))
  c.student_order = ('xent', 'logconf')
  c.chain = ()
  c.relabel_rounds = 0
  c.eval_batch_size = 256
  c.log_every = 10
  c.checkpoint_every = 100
  c.keep_checkpoints = 1
  c.mesh = dict(num_devices=0)
  return c


def _session_groups(logdir):
  """TensorBoard's HParams view of `logdir`: {session run: ({hparam: value}, {metric: value})},
  from the plugin's own backend (what the browser's table lists)."""
  from tensorboard import context
  from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
  from tensorboard.plugins import base_plugin
  from tensorboard.plugins.hparams import api_pb2, backend_context, list_session_groups
  mux = plugin_event_multiplexer.EventMultiplexer()
  mux.AddRunsFromDirectory(logdir)
  mux.Reload()
  tb = base_plugin.TBContext(logdir=logdir, multiplexer=mux,
                             data_provider=data_provider.MultiplexerDataProvider(mux, logdir))
  request = api_pb2.ListSessionGroupsRequest(start_index=0, slice_size=100,
                                             allowed_statuses=[api_pb2.STATUS_SUCCESS])
  groups = list_session_groups.Handler(context.RequestContext(), backend_context.Context(tb), '',
                                       request).run().session_groups
  value = lambda v: getattr(v, v.WhichOneof('kind'))
  return {g.name: ({k: value(v) for k, v in g.hparams.items()},
                   {m.name.tag: m.value for m in g.metric_values}) for g in groups}


def _scalar_tags(run_dir):
  from tensorboard.backend.event_processing import event_accumulator
  acc = event_accumulator.EventAccumulator(str(run_dir))
  acc.Reload()
  return acc, set(acc.Tags()['scalars'])


def test_tensorboard_tags_grouped_and_an_hparams_session_per_run(tmp_path, capfd):
  """A tiny weak-to-strong run end to end: every stage's curves under train/ and val/ (metrics.jsonl
  keeps its flat keys), the run's config and results (test accuracies, PGR per student loss) in
  the HParams view, and `stage k/N` on the progress lines."""
  results = train.train_and_evaluate(_tiny_weak_to_strong(), str(tmp_path / 'run'))
  err = capfd.readouterr().err
  for k, kind in enumerate(('weak', 'ceiling', 'student_xent', 'student_logconf'), 1):
    assert f'[{kind}, stage {k}/4] 10/' in err, err
  assert '[student_xent labels test, stage 3/4] 1/1 (100%)' in err
  ceiling = next((tmp_path / 'run' / 'stages').glob('ceiling-*'))
  acc, tags = _scalar_tags(ceiling)
  assert {'train/loss', 'train/accuracy', 'train/learning_rate', 'train/grad_norm',
          'train/examples_per_sec', 'val/loss', 'val/accuracy'} <= tags, tags
  assert not {t for t in tags if '/' not in t}  # no flat tag left
  assert [e.step for e in acc.Scalars('val/accuracy')] == [10, 20, 30]
  records = metrics.read_records(str(ceiling))
  assert {'loss', 'val_loss', 'learning_rate'} <= set(records[-1])  # the JSONL keys stay flat
  hp_run = tmp_path / 'run' / metrics.HPARAMS_RUN
  _, hp_tags = _scalar_tags(hp_run)
  assert {'results/xent/pgr', 'results/logconf/acc_student', 'results/xent/acc_ceiling'} <= hp_tags
  # TensorBoard's HParams view over the run's parent, with a second run beside it
  train.train_and_evaluate(_supervised(), str(tmp_path / 'sup'))
  groups = _session_groups(str(tmp_path))
  assert set(groups) == {'run/hparams', 'sup/hparams'}
  hp, scores = groups['run/hparams']
  summary = results['summary']
  for loss in ('xent', 'logconf'):
    for m in ('acc_student', 'acc_weak', 'acc_ceiling', 'pgr'):
      assert scores[f'results/{loss}/{m}'] == pytest.approx(summary[loss][m]['mean'], abs=1e-6)
  assert hp['strong.model.name'] == 'mlp' and hp['weak.model.size'] == 'linear'
  assert hp['splits.max_weak'] == 200 and hp['seeds'] == '[0]'
  hp, scores = groups['sup/hparams']
  saved = json.load(open(tmp_path / 'sup' / 'results.json'))
  assert scores['results/accuracy'] == pytest.approx(saved['accuracy'], abs=1e-6)
  assert hp['protocol.name'] == 'supervised' and hp['num_steps'] == 40
  # a rerun replaces the session (one start summary, not two)
  train.train_and_evaluate(_supervised(), str(tmp_path / 'sup'))
  assert len(os.listdir(tmp_path / 'sup' / metrics.HPARAMS_RUN)) == 1


def _supervised():
  import importlib.util
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs',
                      'supervised.py')
  spec = importlib.util.spec_from_file_location('w2s_test_supervised', path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config('runlocal')


def test_tags_and_result_metrics():
  assert [metrics.tb_tag(k) for k in ('loss', 'val_accuracy', 'test_loss', 'train/x')] == [
      'train/loss', 'val/accuracy', 'test/loss', 'train/x']
  results = {'summary': {'xent': {'pgr': {'mean': 0.5, 'lo': 0.1, 'hi': 0.9, 'n': 2},
                                  'pgr_undefined': ['ceiling <= weak'],
                                  'acc_student': {'mean': float('nan'), 'n': 0}}},
             'accuracy': 0.75, 'per_seed': [{'accuracy': 1.0}], 'paired': {'a - b': {'x': 1.0}},
             'provenance': {'wall_seconds': 3.0}, 'ok': True}
  assert metrics.result_metrics(results) == {'results/xent/pgr': 0.5, 'results/accuracy': 0.75}
  flat = metrics.flat_hparams({'a': {'b': 1, 'c': None, 'd': (1, 2)}, 'e': 'x', 'f': {}})
  assert flat == {'a.b': 1, 'a.d': '[1, 2]', 'e': 'x'}


class _Clock:
  def __init__(self):
    self.t = 0.0

  def __call__(self):
    return self.t


def test_eta_is_smoothed_over_a_slow_first_interval():
  """The first 10 steps take 100 s (compilation), then 1 s per 10 steps. The last interval alone
  says 80 s left after step 20; the ETA instead comes down smoothly (tqdm's EMA, 0.3) and equals
  the true remaining time once the rate is steady."""
  clock, out = _Clock(), io.StringIO()
  p = metrics.Progress('weak', 100, clock=clock, stream=out, inline=False)
  etas = []
  for done, dt in ((10, 100.0), (20, 1.0), (30, 1.0), (40, 1.0)):
    clock.t += dt
    p.update(done, 32)
    etas.append(p.eta_s(done))
  # EMA of the seconds per interval (bias-corrected) x intervals left
  ema = lambda xs: (sum(0.3 * 0.7 ** i * x for i, x in enumerate(reversed(xs))) /
                    (1 - 0.7 ** len(xs)))
  expected = [9 * ema([100.0]), 8 * ema([100.0, 1.0]), 7 * ema([100.0, 1.0, 1.0]),
              6 * ema([100.0, 1.0, 1.0, 1.0])]
  assert etas == pytest.approx(expected)
  assert etas[0] == pytest.approx(900.0) and 300 < etas[1] < 400 and etas[3] < 110
  assert all(a / b < 2.7 for a, b in zip(etas, etas[1:]))  # no hours-to-minutes fall
  lines = out.getvalue().splitlines()
  assert lines[0] == '[weak] 10/100 (10%)  3.2 ex/s  elapsed 01:40  ETA 15:00'
  assert lines[1].startswith('[weak] 20/100 (20%)  320.0 ex/s  elapsed 01:41  ETA 05:34')
  steady = metrics.Progress('s', 100, clock=clock, stream=io.StringIO(), inline=False)
  for done in range(10, 60, 10):
    clock.t += 2.0
    steady.update(done)
  assert steady.eta_s(50) == pytest.approx(10.0)  # 50 steps at 5 steps/s


def test_stage_k_of_n_and_elapsed_on_the_line():
  clock, out = _Clock(), io.StringIO()
  with metrics.stage((2, 5)):
    p = metrics.Progress('ceiling', 40, clock=clock, stream=out, inline=False)
  clock.t = 3723.0
  p.update(20, 2, 'loss 0.5000')
  outside = metrics.Progress('eval', 4, clock=clock, stream=out, inline=False)
  clock.t += 1.0
  outside.update(4)
  first, second = out.getvalue().splitlines()
  assert first == ('[ceiling, stage 2/5] 20/40 (50%)  0.0 ex/s  elapsed 1:02:03  ETA 1:02:03  '
                   'loss 0.5000')
  assert second.startswith('[eval] 4/4 (100%)')
  from w2s.protocols.stages import Stage, number_stages
  plan = [Stage('/tmp', kind, seed=1) for kind in ('weak', 'ceiling', 'student')]
  number_stages(plan, seed_index=1, num_seeds=2)
  assert [s.position for s in plan] == [(4, 6), (5, 6), (6, 6)]


def test_in_a_notebook_the_line_is_rewritten_in_place(monkeypatch):
  assert not metrics.in_notebook()
  shell = types.SimpleNamespace(kernel=object())
  monkeypatch.setitem(sys.modules, 'ipykernel', types.ModuleType('ipykernel'))
  monkeypatch.setattr('IPython.get_ipython', lambda: shell, raising=False)
  assert metrics.in_notebook()
  clock, out = _Clock(), io.StringIO()
  p = metrics.Progress('weak', 30, clock=clock, stream=out)  # inline: detected
  for done, extra in ((10, 'loss 12.3456'), (20, 'loss 1.2'), (30, 'loss 1.1')):
    clock.t += 1.0
    p.update(done, 1, extra)
  text = out.getvalue()
  assert text.count('\r') == 3 and text.count('\n') == 1 and text.endswith('loss 1.1\n')
  parts = text.split('\r')[1:]
  assert len(parts[1]) == len(parts[0])  # the shorter line covers the longer one before it
  p2 = metrics.Progress('eval', 5, clock=clock, stream=out)
  clock.t += 1.0
  p2.update(2)  # a run stopped before its last step: close() ends its line, once
  p2.close()
  p2.close()
  assert out.getvalue().endswith('ETA 00:01\n') and out.getvalue().count('\n') == 2


def test_building_from_user_files_prints_one_line(tmp_path, capfd, caplog):
  """No "Using custom data configuration" warnings and no TFDS bars (stderr is no terminal)."""
  from w2s import registry
  caplog.set_level('INFO')
  os.makedirs(tmp_path / 'sciq')
  for split, rows in (('train', range(6)), ('test', range(6, 8))):
    with open(tmp_path / 'sciq' / f'{split}.jsonl', 'w') as f:
      for i in rows:
        f.write(json.dumps(dict(question=f'q{i}', correct_answer='a', distractor1='b',
                                distractor2='c', distractor3='d', support='')) + '\n')
  for _ in range(2):  # built once, then read
    registry.build('datasets', dict(name='sciq', path=str(tmp_path / 'sciq')),
                   data_dir=str(tmp_path / 'tfds'))
  err = capfd.readouterr().err
  lines = [l for l in err.splitlines() if l.strip()]
  assert len(lines) == 1 and lines[0].startswith('[data] preparing w2s_sciq in '), err
  assert '\r' not in err and 'custom data configuration' not in err
  assert not [r for r in caplog.records if 'custom data configuration' in r.getMessage()]
