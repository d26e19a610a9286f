"""The colabs run top to bottom (nbclient, the current interpreter as kernel), so they cannot rot:
weak_to_strong.ipynb shows a real weak-to-strong gap (about 3 minutes on a 2-core CPU),
self_training.ipynb its rounds, their pseudo-label quality and plot (about 1 minute),
pixel_debate.ipynb the judge before and after debate, pictures of games and the weak-to-strong step
(about 3 minutes)."""
import ast
import json
import os

import pytest

import xla_test_flags  # tests/xla_test_flags.py

nbclient = pytest.importorskip('nbclient')
nbformat = pytest.importorskip('nbformat')
pytest.importorskip('ipykernel')

NOTEBOOK = os.path.join(os.path.dirname(__file__), os.pardir, 'colabs', 'weak_to_strong.ipynb')


def _kernel_env(workdir):
  env = dict(os.environ, W2S_NOTEBOOK_WORKDIR=str(workdir), JAX_PLATFORMS='cpu')
  # conftest.py fakes 8 CPU devices and cheap codegen for the tests; the notebook runs as a user's
  env['XLA_FLAGS'] = xla_test_flags.strip(env.get('XLA_FLAGS', ''))
  return env


def _execute(path, tmp_path, workdir):
  """Runs the notebook at `path` (committed with its outputs cleared) with its workdir under
  tmp_path; -> (the executed notebook, all it printed). tmp_path/executed.ipynb keeps what it
  showed, for a failing CI run."""
  nb = nbformat.read(path, as_version=4)
  assert all(not c.get('outputs') for c in nb.cells if c.cell_type == 'code'), 'commit it cleared'
  client = nbclient.NotebookClient(
      nb, timeout=600, kernel_name='python3', allow_errors=False,
      resources={'metadata': {'path': str(tmp_path)}})  # the kernel's cwd
  try:
    client.execute(env=_kernel_env(workdir))
  finally:
    nbformat.write(nb, str(tmp_path / 'executed.ipynb'))
  text = ''.join(o.text for c in nb.cells if c.cell_type == 'code'
                 for o in c.outputs if o.output_type == 'stream')
  assert 'pip install' not in text  # the checkout path installs nothing
  return nb, text


@pytest.mark.slow
def test_notebook_runs_and_recovers_part_of_the_gap(tmp_path):
  workdir = tmp_path / 'run'
  nb, text = _execute(NOTEBOOK, tmp_path, workdir)
  assert 'weak-to-strong results, test set, n=2 seeds: no interval' in text
  images = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs
            if 'image/png' in o.get('data', {})]
  assert len(images) >= 3  # accuracy.png, pgr.png, and accuracy.png with the custom loss

  results = json.loads((workdir / 'results.json').read_text())
  summary = results['summary']
  assert set(summary) == {'xent', 'logconf', 'smoothed'}, sorted(summary)
  assert len(results['seeds']) == 2
  weak = summary['xent']['acc_weak']['mean']
  ceiling = summary['xent']['acc_ceiling']['mean']
  assert ceiling > weak + 0.02, (weak, ceiling)  # a real gap to recover
  students = [summary[n]['acc_student']['mean'] for n in ('xent', 'logconf')]
  assert sum(students) / 2 > weak, (weak, students)  # the students beat their supervisor
  for name in summary:  # PGR is defined for every seed and loss
    pgr = summary[name]['pgr']
    assert pgr['n'] == 2 and pgr['n_nan'] == 0, (name, pgr)
  assert (workdir / 'accuracy.png').stat().st_size > 0 and (workdir / 'pgr.png').stat().st_size > 0
  assert (workdir / 'user_code' / 'my_losses.py').exists()
  # The rerun with the custom loss trained only the new student (one stage per seed); the weak,
  # ceiling and xent/logconf stages were reused from the workdir.
  rerun = next(c for c in nb.cells if c.cell_type == 'code' and 'before = set(' in c.source)
  rerun_text = ''.join(o.text for o in rerun.outputs if o.output_type == 'stream')
  line = next(l for l in rerun_text.splitlines() if l.startswith('new stages'))
  new = ast.literal_eval(line.split(':', 1)[1].strip())
  assert len(new) == 2 and all('smoothed' in n for n in new), new


SELF_TRAINING = os.path.join(os.path.dirname(__file__), os.pardir, 'colabs', 'self_training.ipynb')


@pytest.mark.slow
def test_self_training_notebook_runs_rounds_and_plots_them(tmp_path):
  """colabs/self_training.ipynb: rounds of pseudo-labels on MNIST-5k, their table and plot, and a
  second policy that reuses round 0."""
  root = tmp_path / 'run'
  nb, text = _execute(SELF_TRAINING, tmp_path, root)
  assert 'self-training, test set, n=2 seeds: no interval' in text
  assert 'gain of the last round' in text
  rows = [l.split()[0] for l in text.splitlines() if l[:1].isdigit() and 'no interval' in l]
  assert {'0', '1', '2'} <= set(rows), rows  # the per-round table: round 0 (supervised), 1, 2
  images = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs
            if 'image/png' in o.get('data', {})]
  assert len(images) >= 2  # rounds.png of each policy

  for policy in ('threshold', 'curriculum'):
    results = json.loads((root / policy / 'results.json').read_text())
    assert (root / policy / 'rounds.png').stat().st_size > 0
    rounds = results['summary']['rounds']
    assert [r['round'] for r in rounds] == [0, 1, 2]
    for r in rounds:  # 2 seeds: the values, no interval
      assert r['acc']['n'] == 2 and r['acc']['lo'] is None, (policy, r)  # NaN is null in JSON
      assert all(0.0 <= v <= 1.0 for v in r['acc']['values']), (policy, r)
    assert rounds[0]['acc']['mean'] > 0.3  # 40 labels teach a CNN far above chance (0.1)
    for seed in results['per_seed']:  # pseudo-label quality against U's hidden labels, per round
      assert 'pseudo' not in seed['rounds'][0]
      for r in seed['rounds'][1:]:
        q = r['pseudo']
        assert 0.0 < q['coverage'] <= 1.0 and 0.0 <= q['accuracy'] <= 1.0, (policy, r)
        assert q['n_selected'] == round(q['coverage'] * seed['n_unlabelled'])
  cur = json.loads((root / 'curriculum' / 'results.json').read_text())['per_seed']
  assert [round(r['pseudo']['coverage'], 1) for r in cur[0]['rounds'][1:]] == [0.2, 0.4]
  # the curriculum run trained its rounds 1 and 2 only; round 0 came from the threshold run
  rerun = next(c for c in nb.cells if c.cell_type == 'code' and 'before = set(' in c.source)
  line = next(l for o in rerun.outputs if o.output_type == 'stream'
              for l in o.text.splitlines() if l.startswith('new stages'))
  new = ast.literal_eval(line.split(':', 1)[1].strip())
  assert len(new) == 4 and all(n.startswith(('round1-', 'round2-')) for n in new), new


PIXEL_DEBATE = os.path.join(os.path.dirname(__file__), os.pardir, 'colabs', 'pixel_debate.ipynb')


@pytest.mark.slow
def test_pixel_debate_notebook_shows_debate_helping_the_judge(tmp_path):
  """colabs/pixel_debate.ipynb: one seed, k = 4, the study's per-seed settings; the judge from
  random pixels vs after debate, pictures of games, the students, and a rerun that trains
  nothing."""
  root = tmp_path / 'run'
  nb, text = _execute(PIXEL_DEBATE, tmp_path, root)
  printed = {}
  for line in text.splitlines():  # 'judge from 4 random pixels: 43.2%', 'judge after debate ...'
    if line.startswith('judge ') and '%' in line:
      printed[line.split(':')[0]] = float(line.split(':')[1].split('%')[0]) / 100
  assert len(printed) == 3, printed
  s = json.loads((root / 'k4' / 'results.json').read_text())['summary']
  random, runner_up, worst = (s[f'k4/{m}']['mean'] for m in
                              ('judge_random', 'greedy/debate_runner_up', 'greedy/debate_all'))
  assert printed == {'judge from 4 random pixels': pytest.approx(random, abs=6e-4),
                     'judge after debate vs the runner-up liar': pytest.approx(runner_up, abs=6e-4),
                     'judge after debate vs every lie (worst case)': pytest.approx(worst, abs=6e-4)}
  assert all(0.0 <= v <= 1.0 for v in (random, runner_up, worst))
  # The study's 5 seeds: random 40-44%, after debate 84-86% (runner-up) and 76-77% (every lie).
  assert runner_up > random + 0.2 and worst > random + 0.15, (random, runner_up, worst)
  # not implied game by game (the two game sets draw their first movers apart), but 8 points apart
  assert runner_up > worst, (runner_up, worst)
  students = s['k4/student/plain']['mean'], s['k4/greedy/student/debate']['mean']
  assert students[1] > students[0] + 0.03, students  # debate-aided labels teach a better student
  for name in ('debate_games', 'liar_wins'):
    assert (root / 'k4' / f'{name}.png').stat().st_size > 0
  images = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs
            if 'image/png' in o.get('data', {})]
  assert len(images) == 2  # the protocol's grid of games, and the games the liar wins
  assert 'move  side' in text and 'P(honest)' in text  # one game move by move
  rerun = next(c for c in nb.cells if c.cell_type == 'code' and 'before = set(' in c.source)
  rerun_text = ''.join(o.text for o in rerun.outputs if o.output_type == 'stream')
  line = next(l for l in rerun_text.splitlines() if l.startswith('new stages'))
  assert ast.literal_eval(line.split(':', 1)[1].strip()) == []
  assert 'same results: True' in rerun_text
  assert rerun_text.count('done earlier, skipped') == 9  # strong, ceiling, judge, 3 debates, 3 students
