"""benchmarks/compile_count.py on the tiny main job: it counts every compile, and the job meets
issue 13's goal (one compile per stage and length bucket, none after a stage's first epoch)."""
import importlib.util
import os
import re

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'benchmarks',
                     'compile_count.py')


def _load():
  spec = importlib.util.spec_from_file_location('compile_count_bench', BENCH)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def test_compile_count_tiny_main_job(monkeypatch, capsys):
  # the jobs run on one CPU device as the CLI does, not on the tests' 8 fake ones; every compile
  # is written to the cache (JAX's time threshold would make the warm counts depend on speed)
  flags = re.sub(r'--xla_force_host_platform_device_count=\d+', '',
                 os.environ.get('XLA_FLAGS', '')).strip()
  if flags:
    monkeypatch.setenv('XLA_FLAGS', flags)
  else:  # an XLA_FLAGS of blanks is read as a file name
    monkeypatch.delenv('XLA_FLAGS', raising=False)
  monkeypatch.setenv('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
  bench = _load()
  out = bench.main(['--config', 'configs/w2s_offline.py:runlocal,losses=xent', '--seeds', '1',
                    '--quiet'])
  printed = capsys.readouterr().out
  cold, warm = out['cold'], out['warm']
  strong = ('ceiling', 'student_xent')
  assert [s[0] for s in cold['stages']] == ['weak', *strong]
  recs = cold['records']
  of = lambda kind, stages: [r for r in recs if r['kind'] == kind and r['stage'] in stages]
  # every stage trains through a compiled step (the student's may be the ceiling's, read back)
  for stage in ('weak', *strong):
    assert of('train step', (stage,)), stage
  for res in (cold, warm):
    totals = res['totals']
    assert totals['train_after_epoch1'] == 0, totals  # no train-step compile after epoch 1
    assert totals['repeats'] == {k: 0 for k in bench.SHAPED}, totals  # no shape compiled twice
  # one eval jit for the strong head: the evaluations of both stages and their predictions
  # compile it once (a jit per `predict` call compiled it at every evaluation)
  strong_eval = of('eval', strong) + of('predict', strong)
  assert len(strong_eval) == 1 and strong_eval[0]['stage'] == 'ceiling', strong_eval
  # feature extraction: one compile per length bucket, batch shape fixed
  feats = of('features', ('ceiling',))
  shapes = [r['shapes'] for r in feats]
  assert len(feats) >= 2 and len(set(shapes)) == len(shapes), shapes
  assert len({s.split(',')[0] for s in shapes}) == 1, shapes
  # issue 22: text batches in geometric buckets (16, 32, 64 for T = 64), train and eval alike,
  # one compile each at most
  token_shapes = [r['shapes'] for r in of('train step', ('weak',)) + of('eval', ('weak',))]
  lengths = {int(re.search(r'input_ids\[\d+, (\d+)\]', sh).group(1)) for sh in token_shapes}
  assert lengths and lengths <= {16, 32, 64}, token_shapes
  assert len(of('train step', ('weak',))) <= len(lengths), token_shapes
  # the held-out score: one jit per loss, so the student's is the ceiling's (no retrace, no read)
  assert not of('eval loss', ('student_xent',)), of('eval loss', strong)
  # CPU seconds of the compiles and of the job, and the share printed
  t = cold['totals']
  assert 0 < t['compile_cpu_s'] <= t['cpu_s'] and 0 < t['cpu_share'] <= 1, t
  assert all(r['cpu_s'] is not None for r in recs), [r for r in recs if r['cpu_s'] is None]
  assert '% of CPU' in printed and '% of wall' in printed
  # warm: every shaped computation is read from the persistent cache, none compiled
  assert warm['totals']['compiles'] < cold['totals']['compiles']
  assert all(r['hit'] for r in warm['records'] if r['kind'] in bench.SHAPED), [
      r for r in warm['records'] if r['kind'] in bench.SHAPED and not r['hit']]
  assert 'cold cache: compiles per stage and epoch' in printed and 'load average start' in printed
  assert re.search(r'ceiling\s+0\s+setup\s+features', printed), printed


def test_sweep_workers_get_the_compilation_cache(monkeypatch, tmp_path, capsys):
  """`w2s.sweep --workers N` points run in processes that never call `compile_cache.enable`:
  `run_workers` hands them the cache through the environment (`compile_cache.child_env`), which
  JAX reads at import (checked in a real child), the off switch and an unusable directory too."""
  import subprocess
  import sys
  from w2s import compile_cache, sweep_workers
  for var in ('JAX_COMPILATION_CACHE_DIR', 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS',
              'JAX_ENABLE_COMPILATION_CACHE', compile_cache.DISABLE_ENV):
    monkeypatch.delenv(var, raising=False)
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
  want = {'JAX_COMPILATION_CACHE_DIR': compile_cache.default_dir(),
          'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': str(compile_cache.MIN_COMPILE_SECS)}
  assert compile_cache.child_env() == want and os.path.isdir(want['JAX_COMPILATION_CACHE_DIR'])
  seen = []

  class Done:  # a point process that has finished, successfully
    returncode = 0

    def __init__(self, cmd, env):
      seen.append((cmd, env))

    def poll(self):
      return 0
  with monkeypatch.context() as m:  # the subprocess module's own Popen, for this call only
    m.setattr(sweep_workers.subprocess, 'Popen', Done)
    sweep_workers.run_workers('cfg.py', str(tmp_path), ['a', 'b'], workers=2, gpus=[])
  assert [c[-1] for c, _ in seen] == ['--only=a', '--only=b']
  assert all({k: env.get(k) for k in want} == want for _, env in seen), seen
  # what a child makes of it: JAX's own config, with no w2s call
  probe = ('import jax; c = jax.config; print(c.jax_enable_compilation_cache, '
           'c.jax_compilation_cache_dir, c.jax_persistent_cache_min_compile_time_secs)')
  out = subprocess.run([sys.executable, '-c', probe], env={**os.environ, **seen[0][1]},
                       capture_output=True, text=True, check=True).stdout.split()
  assert out == ['True', want['JAX_COMPILATION_CACHE_DIR'], str(compile_cache.MIN_COMPILE_SECS)]
  # a threshold the user set stays theirs; the off switch and an unusable directory turn it off
  monkeypatch.setenv('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '5')
  assert compile_cache.child_env() == {'JAX_COMPILATION_CACHE_DIR': want[
      'JAX_COMPILATION_CACHE_DIR']}
  monkeypatch.setenv(compile_cache.DISABLE_ENV, '0')
  assert compile_cache.child_env() == {'JAX_ENABLE_COMPILATION_CACHE': 'false'}
  monkeypatch.delenv(compile_cache.DISABLE_ENV)
  (tmp_path / 'a_file').write_text('in the way')
  capsys.readouterr()
  assert compile_cache.child_env(str(tmp_path / 'a_file' / 'c')) == {
      'JAX_ENABLE_COMPILATION_CACHE': 'false'}
  assert capsys.readouterr().err.startswith('warning: compilation cache')
