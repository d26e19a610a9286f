"""The hardened CLI as a user meets it: checked configs, refused stale resumes, preemption at
stage boundaries and in feature extraction, user losses checked before any stage trains, and
honest results.json / --dry_run / --list / --help.

Every case runs the real `python -m w2s.main` in a subprocess (1 CPU device unless a case needs
more). The weak-to-strong runs share one workdir (`w2s_run`): trained once through a SIGTERM and
a SIGINT, then reused by the cases that must leave its results untouched.
"""
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

import digest  # tests/digest.py
import xla_test_flags  # tests/xla_test_flags.py

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUPERVISED = os.path.join(REPO, 'configs', 'supervised.py')
W2S = os.path.join(REPO, 'configs', 'w2s_offline.py')
W2S_ARG = 'runlocal,seeds=1'


def _env(devices=1, paths=()):
  env = dict(os.environ)
  env['XLA_FLAGS'] = xla_test_flags.xla_flags(devices)
  env['PYTHONPATH'] = os.pathsep.join([REPO, os.path.join(REPO, 'tests'), *map(str, paths)])
  env['JAX_PLATFORMS'] = 'cpu'
  # workdir-local feature cache: the interruption cases watch and compare <workdir>/features,
  # and must see an extraction the session's shared cache may already hold
  env['W2S_CACHE_DIR'] = ''
  return env


def _cmd(*args):
  return [sys.executable, '-m', 'w2s.main', *map(str, args)]


def _cli(*args, devices=1, paths=(), timeout=300):
  return subprocess.run(_cmd(*args), env=_env(devices, paths), capture_output=True, text=True,
                        timeout=timeout, cwd=REPO)


def _one_error(out, *words) -> str:
  """The single `error:` line of a failed run (exit 2), checked to contain `words`."""
  lines = out.stderr.strip().splitlines()
  assert out.returncode == 2, (out.returncode, out.stderr[-3000:])
  assert len(lines) == 1 and lines[0].startswith('error: '), out.stderr[-3000:]
  for w in words:
    assert w in lines[0], (w, lines[0])
  return lines[0]


_digest = digest.tree_digest


def _strict_json(text: str):
  """json.loads that refuses NaN / Infinity (what allow_nan=False promises)."""
  def refuse(name):
    raise ValueError(f'bare {name} in results.json')
  return json.loads(text, parse_constant=refuse)


def _sup(workdir, *overrides, arg='runlocal'):
  return (f'--config={SUPERVISED}:{arg}', f'--workdir={workdir}', *overrides)


# ------------------------------------------------------------------------------------------------
# 1. stale-config resume


def test_resume_under_a_different_config_is_refused_and_results_kept(tmp_path):
  wd = tmp_path / 'run'
  first = _cli(*_sup(wd))
  assert first.returncode == 0, first.stderr[-3000:]
  ckpt, results = wd / 'checkpoints', wd / 'results.json'
  before = _digest(ckpt), _digest(results)
  first_loss = _strict_json(results.read_text())['final_train_loss']
  assert first_loss is not None

  stale = _cli(*_sup(wd, '--config.optimizer.learning_rate=0.5', '--config.seed=3'))
  _one_error(stale, 'different config', 'learning_rate', 'seed')
  assert (_digest(ckpt), _digest(results)) == before

  # log_every cannot change the result: the finished run is accepted (nothing retrained)
  ok = _cli(*_sup(wd, '--config.log_every=5'))
  assert ok.returncode == 0, ok.stderr[-3000:]
  assert 'error' not in ok.stderr
  assert _digest(ckpt) == before[0]
  rerun = _strict_json(results.read_text())
  assert rerun['final_train_loss'] == first_loss  # a finished rerun reports its last loss
  assert rerun['steps'] == 40


# ------------------------------------------------------------------------------------------------
# 2. nested typos in a config file

TYPO_CONFIG = '''
from configs import w2s_offline


def get_config(arg=None):
  c = w2s_offline.get_config('runlocal,seeds=1' + ('' if arg != 'user_loss' else
                                                   ',losses=xent+custom_losses:scaled_xent'))
  with c.unlocked():
    if arg == 'num_epoch':
      c.weak.train.num_epoch = 2
    elif arg == 'dataset':
      c.weak.dataset = dict(name='sst2')
    elif arg == 'input_transform':
      c.weak.input_transform = dict(name='truncate')
    elif arg == 'aux_coeff':
      c.student_losses.logconf.aux_coeff = 0.3
    elif arg == 'user_loss':
      c.student_losses.scaled_xent.scal = 2.0
    elif arg == 'no_tokenizer':
      del c['tokenizer']
  return c
'''


@pytest.fixture
def typo_config(tmp_path):
  path = tmp_path / 'typo_config.py'
  path.write_text(TYPO_CONFIG)
  return path


TYPOS = {  # case: (words the error line names, run for real instead of --dry_run)
    'num_epoch': (["weak.train: unknown key 'num_epoch'", "did you mean 'num_epochs'",
                   'valid keys: ', 'num_steps'], True),
    'dataset': (["weak: unknown key 'dataset'", 'valid keys: ', 'model', 'tokenizer'], False),
    'input_transform': (["weak: unknown key 'input_transform'", 'valid keys: ', 'input'], False),
    'aux_coeff': (["student_losses.logconf", "no option 'aux_coeff'", "did you mean 'aux_coef'",
                   'warmup_frac'], False),
}


@pytest.mark.parametrize('case', list(TYPOS))
def test_nested_typo_is_one_line_naming_key_and_valid_ones(tmp_path, typo_config, case):
  words, real = TYPOS[case]
  wd = tmp_path / 'wd'
  args = (f'--config={typo_config}:{case}', f'--workdir={wd}' if real else '--dry_run')
  out = _cli(*args)
  _one_error(out, *words)
  assert out.stdout == ''
  assert not glob.glob(str(wd / 'stages' / '*' / 'done.json'))
  if real:  # the real path refuses before any stage starts
    assert not (wd / 'stages').exists()


# ------------------------------------------------------------------------------------------------
# 3. nonsense values

NONSENSE = {
    'no length': (['--config.num_steps=0', '--config.num_epochs=0'],
                  ['num_steps and num_epochs are both 0']),
    'learning_rate': (['--config.optimizer.learning_rate=-1'], ['learning_rate=-1', 'must be',
                                                                '> 0']),
    'batch_size': (['--config.batch_size=-4'], ['batch_size=-4 must be > 0']),
    'log_every': (['--config.log_every=0'], ['log_every=0 must be > 0']),
    'checkpoint_every': (['--config.checkpoint_every=0'], ['checkpoint_every=0 must be > 0']),
}


@pytest.mark.parametrize('case', list(NONSENSE))
def test_nonsense_value_is_one_line_with_the_reason(case):
  overrides, words = NONSENSE[case]
  _one_error(_cli(f'--config={SUPERVISED}:runlocal', '--dry_run', *overrides), *words)


def test_nonsense_values_refused_by_the_real_run_and_in_nested_sections(tmp_path):
  wd = tmp_path / 'wd'
  _one_error(_cli(*_sup(wd, '--config.optimizer.learning_rate=-1')), 'learning_rate', '> 0')
  assert not (wd / 'checkpoints').exists()
  _one_error(_cli(f'--config={W2S}:{W2S_ARG}', '--dry_run', '--config.weak.train.batch_size=-4'),
             'weak.train.batch_size=-4 must be > 0')


# ------------------------------------------------------------------------------------------------
# 4. SIGTERM at a stage boundary, SIGINT during feature extraction (one shared workdir)


class _Watched:
  """A CLI subprocess whose stdout/stderr are read as they come (so a test can react to them)."""

  def __init__(self, args, env):
    self.proc = subprocess.Popen(_cmd(*args), env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, cwd=REPO)
    self._bufs = {'out': bytearray(), 'err': bytearray()}
    self._threads = [threading.Thread(target=self._drain, args=(pipe, self._bufs[k]), daemon=True)
                     for k, pipe in (('out', self.proc.stdout), ('err', self.proc.stderr))]
    for t in self._threads:
      t.start()

  @staticmethod
  def _drain(pipe, buf):
    for chunk in iter(lambda: os.read(pipe.fileno(), 4096), b''):
      buf.extend(chunk)

  @property
  def stderr(self) -> str:
    return self._bufs['err'].decode(errors='replace')

  def wait_for(self, ready, timeout=240) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline and self.proc.poll() is None:
      if ready():
        return True
      time.sleep(0.02)
    return False

  def finish(self, timeout=240):
    rc = self.proc.wait(timeout=timeout)
    for t in self._threads:
      t.join(timeout=10)
    text = lambda k: self._bufs[k].decode(errors='replace').replace('\r', '\n')
    return subprocess.CompletedProcess(self.proc.args, rc, text('out'), text('err'))


def _files(folder) -> dict:
  """{relative path: (size, mtime_ns)} of every file under `folder`."""
  out = {}
  for root, _, files in os.walk(folder):
    for f in files:
      st = os.stat(os.path.join(root, f))
      out[os.path.relpath(os.path.join(root, f), folder)] = (st.st_size, st.st_mtime_ns)
  return out


def _done(workdir):
  return sorted(os.path.basename(os.path.dirname(p))
                for p in glob.glob(os.path.join(workdir, 'stages', '*', 'done.json')))


@pytest.fixture(scope='module')
def w2s_run(tmp_path_factory):
  """w2s_offline runlocal (1 seed) trained through two interruptions in one workdir:
  SIGTERM as soon as the weak stage's done.json appears, SIGINT as soon as the rerun's strong
  feature extraction shows (a new cache chunk or its progress line), then a plain rerun."""
  wd = tmp_path_factory.mktemp('w2s') / 'run'
  args = (f'--config={W2S}:{W2S_ARG}', f'--workdir={wd}')
  rec = {'workdir': wd, 'args': args}

  first = _Watched(args, _env())
  rec['weak_done_seen'] = first.wait_for(lambda: glob.glob(str(wd / 'stages' / 'weak-*' /
                                                                 'done.json')))
  first.proc.send_signal(signal.SIGTERM)
  rec['sigterm'] = first.finish()
  rec['done_after_sigterm'] = _done(wd)
  weak_dirs = glob.glob(str(wd / 'stages' / 'weak-*'))
  rec['weak_digest'] = _digest(*weak_dirs) if weak_dirs else None

  # Each extraction prints one line as it starts ('[strong features ...] extracting N of M rows'),
  # before its first chunk: the run extracts only its splits' rows, a few hundred per call, over
  # before a new chunk could be noticed. The rerun compiles afresh (no persistent cache), which
  # keeps its extraction busy long after that line.
  cached = set(_files(wd / 'features'))
  second = _Watched(args, {**_env(), 'W2S_COMPILATION_CACHE': '0'})
  rec['features_seen'] = second.wait_for(lambda: '[strong features' in second.stderr
                                         or set(_files(wd / 'features')) - cached)
  second.proc.send_signal(signal.SIGINT)
  rec['sigint'] = second.finish()
  rec['done_after_sigint'] = _done(wd)
  rec['features_after_sigint'] = _files(wd / 'features')

  rec['final'] = _cli(*args)
  rec['results_text'] = ((wd / 'results.json').read_text() if (wd / 'results.json').exists()
                         else None)
  rec['weak_digest_final'] = _digest(*weak_dirs) if weak_dirs else None
  rec['features_final'] = _files(wd / 'features')
  return rec


def _preempted_line(out) -> str:
  lines = [l for l in out.stderr.splitlines() if l.startswith('preempted:')]
  assert out.returncode == 143, (out.returncode, out.stderr[-3000:])
  assert len(lines) == 1, out.stderr[-3000:]
  assert 'rerun the same command to resume' in lines[0]
  assert 'Traceback' not in out.stderr
  return lines[0]


# The cases below share the w2s_run workdir (about 90 s to make on a 2-core CPU).
SLOW = pytest.mark.slow


@SLOW
def test_sigterm_right_after_a_stage_exits_143_and_rerun_skips_it(w2s_run):
  assert w2s_run['weak_done_seen'], w2s_run['sigterm'].stderr[-3000:]
  line = _preempted_line(w2s_run['sigterm'])
  print(line)
  assert 'SIGTERM' in line
  assert [d.split('-')[0] for d in w2s_run['done_after_sigterm']] == ['weak']
  final = w2s_run['final']
  assert final.returncode == 0, final.stderr[-3000:]
  assert '[weak] done earlier, skipped' in final.stdout
  assert w2s_run['weak_digest_final'] == w2s_run['weak_digest']  # the finished stage untouched
  kinds = sorted(d.split('-')[0] for d in _done(w2s_run['workdir']))
  assert kinds == ['ceiling', 'student_logconf', 'student_xent', 'weak']


@SLOW
def test_sigint_during_feature_extraction_exits_143_and_rerun_resumes(w2s_run):
  assert w2s_run['features_seen'], w2s_run['sigint'].stderr[-3000:]
  line = _preempted_line(w2s_run['sigint'])
  print(line)
  assert 'SIGINT' in line and 'feature' in line, line
  assert [d.split('-')[0] for d in w2s_run['done_after_sigint']] == ['weak']
  assert w2s_run['final'].returncode == 0, w2s_run['final'].stderr[-3000:]
  # the rerun resumed the extraction: what the interrupted runs cached is kept, not recomputed
  kept = w2s_run['features_after_sigint']
  assert kept, 'the interrupted extraction cached nothing'
  assert {k: w2s_run['features_final'].get(k) for k in kept} == kept


@SLOW
def test_results_json_has_no_bare_nan_and_has_provenance(w2s_run):
  assert w2s_run['results_text'] is not None, w2s_run['final'].stderr[-3000:]
  results = _strict_json(w2s_run['results_text'])
  prov = results['provenance']
  for key in ('config', 'versions', 'git', 'devices', 'wall_seconds'):
    assert key in prov, key
  assert prov['config']['protocol']['name'] == 'weak_to_strong'
  assert prov['devices']['count'] == 1 and prov['wall_seconds'] > 0
  assert prov['versions']['jax']
  assert set(results['summary']) == {'xent', 'logconf'}
  for stats in results['summary'].values():  # an undefined PGR is null, with its count of NaNs
    assert stats['pgr']['mean'] is None or isinstance(stats['pgr']['mean'], float)


# ------------------------------------------------------------------------------------------------
# 6. user losses and other input errors fail before any stage, leaving earlier results unchanged

BAD_LOSSES = '''
import jax.numpy as jnp


def no_mask(*, logits, labels, step_frac, batch=None):
  return -jnp.sum(labels * logits, -1), {}


def scalar(*, logits, labels, mask, step_frac, batch=None):
  return -jnp.mean(labels * logits), {}
'''


@pytest.fixture
def bad_losses(tmp_path):
  (tmp_path / 'bad_losses.py').write_text(BAD_LOSSES)
  return tmp_path


BEFORE_ANY_STAGE = {  # case: (config, overrides, devices, words of the error line)
    'loss missing mask': (f'{W2S}:{W2S_ARG},losses=xent+bad_losses:no_mask', [], 1,
                          ["loss 'bad_losses:no_mask' fails when called", "'mask'"]),
    'loss returns a scalar': (f'{W2S}:{W2S_ARG},losses=xent+bad_losses:scalar', [], 1,
                              ["loss 'bad_losses:scalar' returned", 'per-example losses [B]']),
    'user loss typo': ('TYPO:user_loss', [], 1, ["no option 'scal'", "did you mean 'scale'"]),
    'no tokenizer': ('TYPO:no_tokenizer', [], 1, ['no tokenizer section', 'tokenizer=dict(']),
    'eval_batch_size': (f'{W2S}:{W2S_ARG}', ['--config.eval_batch_size=100'], 8,
                        ['eval_batch_size=100', 'not divisible', '8 devices']),
}


@SLOW
@pytest.mark.parametrize('case', list(BEFORE_ANY_STAGE))
def test_input_error_fails_before_any_stage_and_keeps_results(w2s_run, bad_losses, typo_config,
                                                               case):
  config, overrides, devices, words = BEFORE_ANY_STAGE[case]
  config = config.replace('TYPO', str(typo_config))
  wd = w2s_run['workdir']
  before = _digest(wd / 'stages', wd / 'results.json')
  t0 = time.time()
  out = _cli(f'--config={config}', f'--workdir={wd}', *overrides, devices=devices,
             paths=[bad_losses])
  _one_error(out, *words)
  # no stage was reached: not even a finished one was skipped ('[weak] done earlier' on stdout)
  assert out.stdout == '', out.stdout
  assert time.time() - t0 < 60
  assert _digest(wd / 'stages', wd / 'results.json') == before


def test_bad_user_loss_fails_before_the_weak_stage_trains(tmp_path, bad_losses):
  wd = tmp_path / 'fresh'
  out = _cli(f'--config={W2S}:{W2S_ARG},losses=xent+bad_losses:no_mask', f'--workdir={wd}',
             paths=[bad_losses])
  _one_error(out, "'mask'")
  assert not (wd / 'stages').exists()


@pytest.mark.parametrize('config', [f'{W2S}:{W2S_ARG},losses=xent+bad_losses:no_mask',
                                    f'{SUPERVISED}:runlocal,loss=bad_losses:no_mask'],
                         ids=['weak_to_strong', 'supervised'])
def test_dry_run_refuses_a_loss_the_real_run_refuses(bad_losses, config):
  _one_error(_cli(f'--config={config}', '--dry_run', paths=[bad_losses]), "'mask'")


def test_dry_run_refuses_an_eval_batch_the_devices_do_not_divide():
  _one_error(_cli(f'--config={SUPERVISED}:runlocal', '--config.eval_batch_size=100', '--dry_run',
                  devices=8),
             'eval_batch_size=100 is not divisible')


@SLOW
def test_dotted_user_loss_trains_only_its_student_in_a_stage_dir_without_colon(w2s_run):
  wd = w2s_run['workdir']
  out = _cli(f'--config={W2S}:{W2S_ARG},losses=xent+custom_losses:scaled_xent', f'--workdir={wd}')
  assert out.returncode == 0, out.stderr[-3000:]
  for kind in ('weak', 'ceiling', 'student_xent'):  # shared with the earlier run
    assert f'[{kind}] done earlier, skipped' in out.stdout, kind
  stage = glob.glob(str(wd / 'stages' / 'student_scaled_xent-seed0-*'))
  assert len(stage) == 1 and os.path.exists(os.path.join(stage[0], 'done.json'))
  assert not [d for d in os.listdir(wd / 'stages') if ':' in d]
  results = _strict_json((wd / 'results.json').read_text())
  assert list(results['summary']) == ['xent', 'scaled_xent']


# ------------------------------------------------------------------------------------------------
# 7. --list, --dry_run, --help


def test_list_prints_every_plugin_kind():
  out = _cli('--list')
  assert out.returncode == 0, out.stderr[-3000:]
  kinds = dict(l.split(': ', 1) for l in out.stdout.splitlines() if ': ' in l)
  for kind, name in (('losses', 'logconf'), ('models', 'bert'), ('datasets', 'digits'),
                     ('protocols', 'weak_to_strong'), ('views', 'truncate')):
    assert name in kinds.get(kind, '').split(', '), (kind, out.stdout)


def test_dry_run_prints_the_readable_config_and_writes_nothing(tmp_path):
  wd = tmp_path / 'never'
  out = _cli(*_sup(wd, '--dry_run', '--config.optimizer.learning_rate=0.002'))
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.startswith("# config checked by protocol 'supervised'")
  assert 'learning_rate: 0.002' in out.stdout
  assert '_fields' not in out.stdout and '!!python' not in out.stdout, out.stdout[:500]
  assert not wd.exists()
  w2s = _cli(f'--config={W2S}:{W2S_ARG}', '--dry_run')  # --workdir is optional with --dry_run
  assert w2s.returncode == 0, w2s.stderr[-3000:]
  assert 'student_losses:' in w2s.stdout and 'aux_coef: 0.5' in w2s.stdout


def test_help_lists_config_and_workdir():
  out = _cli('--help')
  assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
  assert '--config' in out.stdout and '--workdir' in out.stdout


def _small_disk(mount_dir) -> list[str] | None:
  """A command prefix that runs the rest on a 64 KiB tmpfs mounted at `mount_dir` (an unprivileged
  user + mount namespace), or None where the kernel or container does not allow it."""
  prefix = ['unshare', '-rm', 'sh', '-c', 'mount -t tmpfs -o size=64k tmpfs "$0" && exec "$@"',
            str(mount_dir)]
  try:
    probe = subprocess.run(prefix + ['true'], capture_output=True, timeout=30)
  except (OSError, subprocess.TimeoutExpired):
    return None
  return prefix if probe.returncode == 0 else None


@pytest.mark.skipif(not os.path.exists('/dev/full'), reason='needs /dev/full (Linux)')
@pytest.mark.parametrize('where', ['metrics.jsonl', 'checkpoints'])
def test_disk_full_is_one_line_and_keeps_earlier_results(tmp_path, where):
  """Writes that fail with ENOSPC end in one error line, exit 2, and nothing else on stderr:
  metrics.jsonl on /dev/full, or checkpoints on a full filesystem (orbax's async writer threads
  then fail, each of which used to log its traceback: some 300 lines before the error)."""
  wd = tmp_path / 'run'
  wd.mkdir()
  (wd / 'results.json').write_text('{"earlier": true}')
  cmd = _cmd(f'--config={SUPERVISED}:runlocal', f'--workdir={wd}')
  if where == 'metrics.jsonl':
    os.symlink('/dev/full', wd / 'metrics.jsonl')
  else:
    (wd / 'checkpoints').mkdir()
    prefix = _small_disk(wd / 'checkpoints')
    if prefix is None:
      pytest.skip('cannot mount a small tmpfs here (unshare -rm: no user namespaces)')
    cmd = prefix + cmd
  out = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300, cwd=REPO)
  assert out.returncode == 2, out.stderr[-3000:]
  lines = [l for l in out.stderr.splitlines() if not l.startswith('[')]  # not progress lines
  assert len(lines) == 1 and lines[0].startswith('error: disk full'), (len(lines),
                                                                      out.stderr[-3000:])
  assert 'Traceback' not in out.stderr
  assert json.loads((wd / 'results.json').read_text()) == {'earlier': True}


# ------------------------------------------------------------------------------------------------
# 8. a damaged stage record (done.json) is one line, like a damaged outputs.npz

LLP = os.path.join(REPO, 'configs', 'llp.py')


def _damage(path, how):
  if how == 'emptied':
    open(path, 'w').close()
  else:  # truncated
    text = open(path).read()
    open(path, 'w').write(text[:len(text) // 2])


@pytest.mark.parametrize('name', ['done.json', 'outputs.npz'])
@pytest.mark.parametrize('how', ['emptied', 'truncated'])
def test_damaged_stage_file_is_a_user_error_naming_it(tmp_path, name, how):
  import numpy as np
  from w2s.errors import UserError
  from w2s.protocols.stages import Stage
  stage = Stage(str(tmp_path), 'llp', {'bags': 8}, seed=0)
  stage.finish({'test_probs': np.full((4, 3), 1 / 3, np.float32)}, {'train_metrics': {'loss': 1.0}})
  assert stage.record()['train_metrics'] == {'loss': 1.0} and stage.done()
  path = os.path.join(stage.dir, name)
  if name == 'outputs.npz':
    with open(path, 'r+b') as f:
      f.truncate(0 if how == 'emptied' else os.path.getsize(path) // 2)
  else:
    _damage(path, how)
  read = stage.record if name == 'done.json' else stage.outputs
  with pytest.raises(UserError) as e:
    read()
  line = str(e.value)
  assert '\n' not in line and f'{path} is unreadable' in line and f'delete {stage.dir}' in line


LLP_ARG = f'--config={LLP}:runlocal,seeds=1,steps=8'


@pytest.fixture(scope='module')
def llp_run(tmp_path_factory):
  """A finished llp runlocal workdir (read-only: each case damages its own copy)."""
  wd = tmp_path_factory.mktemp('llp') / 'llp'
  first = _cli(LLP_ARG, f'--workdir={wd}')
  assert first.returncode == 0, first.stderr[-3000:]
  return wd


@pytest.mark.parametrize('how', ['emptied', 'truncated'])
def test_damaged_done_json_of_a_finished_stage_is_one_line_and_keeps_everything(tmp_path, how,
                                                                                llp_run):
  wd = tmp_path / 'llp'
  shutil.copytree(llp_run, wd)
  args = (LLP_ARG, f'--workdir={wd}')
  [done] = glob.glob(str(wd / 'stages' / 'llp-*' / 'done.json'))
  _damage(done, how)
  kept = lambda: {k: v for k, v in _files(wd).items() if not k.endswith('.lock')}
  before = kept()
  out = _cli(*args)
  _one_error(out, f'{done} is unreadable', f'delete {os.path.dirname(done)}')
  assert kept() == before  # nothing rewritten: results.json, outputs.npz, the damaged record


# ------------------------------------------------------------------------------------------------
# 9. a dotted plug-in path reaches plug-in code only

SYSTEM_CONFIG = '''
from configs import supervised


def get_config(arg=None):
  c = supervised.get_config('runlocal')
  with c.unlocked():
    c.dataset = dict(name='digits', command='true')  # a key os.system(command=...) would take
  return c
'''

USER_PLUGINS = '''
import os
from json import dumps
from os import system

from custom_losses import scaled_xent as loss  # a module's entry point may come from elsewhere


def my_loss(*, logits, labels, mask, step_frac, batch=None):
  return loss(logits=logits, labels=labels, mask=mask, step_frac=step_frac)


class MyModel:
  pass


not_code = 3
'''


@pytest.mark.parametrize('extra', [[], ['--dry_run']], ids=['run', 'dry_run'])
def test_dotted_path_to_os_system_is_refused_and_nothing_runs(tmp_path, extra):
  config = tmp_path / 'system_config.py'
  config.write_text(SYSTEM_CONFIG)
  marker = tmp_path / 'ran'
  wd = tmp_path / 'wd'
  out = _cli(f'--config={config}', *(extra or [f'--workdir={wd}']), '--config.dataset.name=os:system',
             f'--config.dataset.command=touch {marker}')
  _one_error(out, "'os:system'", 'standard library')
  assert not marker.exists() and not (wd / 'stages').exists() and not (wd / 'checkpoints').exists()


@pytest.fixture
def user_plugins(tmp_path, monkeypatch):
  (tmp_path / 'user_plugins.py').write_text(USER_PLUGINS)
  monkeypatch.syspath_prepend(str(tmp_path))
  monkeypatch.syspath_prepend(os.path.join(REPO, 'tests'))
  yield 'user_plugins'
  sys.modules.pop('user_plugins', None)


@pytest.mark.parametrize('name,words', [
    ('user_plugins:system', ["'user_plugins:system' is a builtin_function_or_method"]),
    ('user_plugins:os', ["'user_plugins:os' is a module"]),
    ('user_plugins:dumps', ["'user_plugins' imports 'dumps' from 'json'"]),
    ('user_plugins:not_code', ["is a int, not a function or class"]),
    ('subprocess:run', ['standard library']),
    ('os.path:join', ['standard library']),
    ('user_plugins:', ['not a dotted path']),
    ('user_plugins:missing', ["has no attribute 'missing'"]),
])
def test_dotted_path_refuses_builtins_modules_and_imported_names(user_plugins, name, words):
  from w2s import registry
  from w2s.errors import UserError
  with pytest.raises(UserError) as e:
    registry.get('losses', name)
  for w in words:
    assert w in str(e.value), (w, str(e.value))
  assert '\n' not in str(e.value)


def test_dotted_path_reaches_a_users_own_functions_classes_and_entry_points(user_plugins):
  import custom_losses
  from w2s import options, registry
  module = sys.modules.get('user_plugins') or __import__('user_plugins')
  assert registry.get('losses', 'user_plugins:my_loss') is module.my_loss
  assert registry.get('models', 'user_plugins:MyModel') is module.MyModel
  # `loss` is imported from custom_losses, but it is the module's entry point for losses
  assert registry.get('losses', 'user_plugins:loss') is custom_losses.scaled_xent
  assert registry.get('losses', 'custom_losses:scaled_xent') is custom_losses.scaled_xent
  p = options.plugin('losses', dict(name='custom_losses:scaled_xent', scale=2.0), 'loss')
  assert p.entry() is custom_losses.scaled_xent and p.hparams == {'scale': 2.0}
