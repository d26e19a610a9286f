"""Orbax checkpoints: every N steps, on SIGTERM (preemption), keep the last K, atomic.

Orbax writes each step into a temporary directory and renames it only when complete, so a crash
(or SIGKILL) mid-save never leaves a half-written checkpoint as the latest. Restores go into the
abstract state (`jax.eval_shape` of the init, with shardings), so nothing is allocated twice. A
checkpoint damaged afterwards (a truncated array file, an emptied metadata file) is moved aside to
`<dir>.unreadable/` and the newest readable step that `keep` retained is restored instead, with one
line saying so. Whether checkpoints belong to the current config is a separate question, answered
before restoring by the run's fingerprint (`check_fingerprint`).
"""
import json
import logging
import os
import shutil
import sys

import jax
import orbax.checkpoint as ocp
from absl import logging as absl_logging

from w2s import errors, preemption
from w2s.errors import UserError

Preempted = preemption.Preempted  # raised after the state was saved on SIGTERM/SIGINT


def check_writable(workdir: str) -> None:
  """UserError unless `workdir` exists-or-can-be-created and accepts files; writes nothing lasting."""
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise UserError(f'cannot create workdir {workdir!r} ({e.strerror}); choose a writable --workdir') from e
  probe = os.path.join(workdir, f'.w2s_write_probe_{os.getpid()}')
  try:
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise UserError(f'workdir {workdir!r} is not writable ({e.strerror}); choose a writable --workdir '
                    'or fix its permissions') from e


class Checkpointer:
  """Saves/restores a TrainState pytree plus a small JSON record under `directory`."""

  def __init__(self, directory: str, *, every_steps: int, keep: int = 3):
    self.every_steps = every_steps
    self._manager = ocp.CheckpointManager(
        os.path.abspath(directory),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=True))
    preemption.install()
    _quiet_async_disk_full()

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def restore(self, abstract_state):
    """(state, record) from the newest readable checkpoint, or (None, None) when there is none.

    The config was checked against the run's fingerprint before this is called, so a step that
    fails to restore is damaged: it is moved aside and the next older step is tried.
    """
    errors = []
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        out = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), record=ocp.args.JsonRestore()))
      except Exception as e:  # pylint: disable=broad-except  # orbax/tensorstore raise many kinds
        errors.append((step, ' '.join(str(e).split())[:160] or type(e).__name__))
        continue
      if errors and jax.process_index() == 0:
        bad = ', '.join(str(s) for s, _ in errors)
        print(f'warning: checkpoint step {bad} in {self._manager.directory} is unreadable '
              f'({errors[0][1]}); moved to {self._aside_dir()}; resuming from step {step}',
              flush=True)
      self._move_aside([s for s, _ in errors])
      return out['state'], out['record']
    if errors:
      raise UserError(f'no readable checkpoint in {self._manager.directory} (step {errors[0][0]}: '
                      f'{errors[0][1]}); delete that directory to start the run over')
    return None, None

  def _aside_dir(self) -> str:
    return str(self._manager.directory).rstrip('/') + '.unreadable'

  def _move_aside(self, steps) -> None:
    if not steps:
      return
    if jax.process_index() == 0:
      os.makedirs(self._aside_dir(), exist_ok=True)
      for step in steps:
        src = os.path.join(str(self._manager.directory), str(step))
        if os.path.isdir(src):
          dst = os.path.join(self._aside_dir(), str(step))
          shutil.rmtree(dst, ignore_errors=True)
          os.replace(src, dst)
    self._manager.reload()

  def save(self, step: int, state, record: dict, *, force: bool = False) -> bool:
    if not force and (step % self.every_steps):
      return False
    if self._manager.latest_step() == step:
      return False
    return self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), record=ocp.args.JsonSave(record)), force=True)

  def preempted(self, step: int) -> bool:
    """True on every process once SIGTERM/SIGINT arrived (single process) or the pod is
    preempted (several processes: orbax agrees on the step through JAX's preemption sync)."""
    if jax.process_count() > 1:
      return self._manager.reached_preemption(step)
    return preemption.requested()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


class _DiskFullRecords(logging.Filter):
  """Drops orbax's error records of a write that failed for lack of space.

  Each of orbax's async writer threads logs its failure with a traceback (a full disk gives some
  300 lines), and the same error is raised again in the main thread at the next save or at
  `close()`, where `w2s.main` reports it as one `error: disk full` line. Errors of any other
  kind are left to print.
  """

  def filter(self, record: logging.LogRecord) -> bool:
    # orbax's own records, and asyncio's "Task exception was never retrieved" for an orbax write
    if record.levelno < logging.ERROR or not (f'{os.sep}orbax{os.sep}' in record.pathname
                                              or record.name == 'asyncio'):
      return True
    exc = record.exc_info[1] if record.exc_info else None
    return not (errors.disk_full(exc) or errors.disk_full(record.getMessage()))


def _closed_loop_callback(args) -> bool:
  """An 'Event loop is closed' RuntimeError from a write that finished (e.g. failed: disk full)
  after orbax's event loop had already stopped on an earlier failure: noise, never the cause."""
  if not (isinstance(args.exc_value, RuntimeError)
          and str(args.exc_value) == 'Event loop is closed'):
    return False
  tb = args.exc_traceback
  while tb is not None:
    if tb.tb_frame.f_code.co_name == 'call_soon_threadsafe':
      return True
    tb = tb.tb_next
  return False


_QUIET = []


def _quiet_async_disk_full() -> None:
  """Keeps a full disk to the one line `w2s.main` prints (idempotent; see `_DiskFullRecords`)."""
  if _QUIET:
    return
  _QUIET.append(_DiskFullRecords())
  absl_logging.get_absl_logger().addFilter(_QUIET[0])
  logging.getLogger('asyncio').addFilter(_QUIET[0])
  previous = sys.unraisablehook

  def hook(args):
    if not _closed_loop_callback(args):
      previous(args)
  sys.unraisablehook = hook


def fingerprint_path(workdir: str) -> str:
  return os.path.join(workdir, 'fingerprint.json')


def check_fingerprint(workdir: str, fingerprint: dict, has_checkpoints: bool) -> None:
  """Refuses to resume checkpoints that a different config produced; records the config.

  `fingerprint` holds everything that can change the run's result (not log_every and the like).
  A workdir with checkpoints and a different (or no) recorded fingerprint is a UserError naming
  the first keys that differ, and a damaged record (emptied, truncated) a UserError saying so;
  otherwise the fingerprint is (re)written, atomically.
  """
  path = fingerprint_path(workdir)
  fp = json.loads(json.dumps(fingerprint, sort_keys=True, default=str))
  if has_checkpoints:
    old = _recorded_fingerprint(path, workdir)
    if old != fp:
      diff = _diff(old, fp) if old is not None else 'no record of their config'
      raise UserError(f'{workdir} holds checkpoints of a different config ({diff}); use a fresh '
                      f'--workdir, or delete {workdir} to retrain')
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    tmp = f'{path}.tmp.{os.getpid()}'
    with open(tmp, 'w') as f:
      json.dump(fp, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def _recorded_fingerprint(path: str, workdir: str) -> dict | None:
  """The config recorded beside the checkpoints; None when there is no record."""
  try:
    with open(path) as f:
      old = json.load(f)
  except FileNotFoundError:
    return None
  except (OSError, ValueError) as e:  # emptied or truncated: JSONDecodeError
    why = ' '.join(str(e).split()) or type(e).__name__
  else:
    if isinstance(old, dict):
      return old
    why = f'a JSON {type(old).__name__}, not a config record'
  raise UserError(f'{path} is unreadable ({why}): the record of which config made the checkpoints '
                  f'in {workdir} is damaged, so they cannot be resumed safely; restore that file '
                  f'from a backup, or delete {workdir} to retrain')


def _diff(old: dict, new: dict, prefix: str = '') -> str:
  """'a.b: 1 -> 2, c: ...' for the differing leaves."""
  out = []
  for k in sorted(set(old) | set(new)):
    a, b = old.get(k, '<absent>'), new.get(k, '<absent>')
    if a == b:
      continue
    if isinstance(a, dict) and isinstance(b, dict):
      out.append(_diff(a, b, f'{prefix}{k}.'))
    else:
      out.append(f'{prefix}{k}: {str(a)[:40]} -> {str(b)[:40]}')
  return ', '.join(x for x in out if x)[:300]
