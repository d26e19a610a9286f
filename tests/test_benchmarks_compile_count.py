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
  # warm: every shaped computation is read from the persistent cache, none compiled
  assert warm['totals']['compiles'] < cold['totals']['compiles']
  assert all(r['hit'] for r in warm['records'] if r['kind'] in bench.SHAPED), [
      r for r in warm['records'] if r['kind'] in bench.SHAPED and not r['hit']]
  assert 'cold cache: compiles per stage and epoch' in printed and 'load average start' in printed
  assert re.search(r'ceiling\s+0\s+setup\s+features', printed), printed
