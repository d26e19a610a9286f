"""Orbax checkpoints: every N steps, on SIGTERM (preemption), keep the last K, atomic.

Orbax writes each step into a temporary directory and renames it only when complete, so a crash
(or SIGKILL) mid-save never leaves a half-written checkpoint as the latest. Restores go into the
abstract state (`jax.eval_shape` of the init, with shardings), so nothing is allocated twice.
"""
import os
import signal
import threading

import jax
import orbax.checkpoint as ocp

from w2s.errors import UserError


class Preempted(Exception):
  """Raised after the state was saved on SIGTERM; rerunning the same command resumes."""


class _SigtermFlag:
  """Records SIGTERM instead of dying, so the loop can save and stop cleanly (process 0 view)."""

  def __init__(self):
    self.event = threading.Event()
    self._previous = None
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, lambda *_: self.event.set())

  def restore(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


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
    self._sigterm = _SigtermFlag()

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def restore(self, abstract_state):
    """(state, record) from the latest checkpoint, or (None, None) when there is none."""
    step = self._manager.latest_step()
    if step is None:
      return None, None
    try:
      out = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), record=ocp.args.JsonRestore()))
    except (ValueError, KeyError, TypeError) as e:
      raise UserError(f'checkpoint at step {step} in {self._manager.directory} does not match this '
                      f'config ({str(e).splitlines()[0][:200]}); use a fresh --workdir for a '
                      'different model/optimizer') from e
    return out['state'], out['record']

  def save(self, step: int, state, record: dict, *, force: bool = False) -> bool:
    if not force and (step % self.every_steps):
      return False
    if self._manager.latest_step() == step:
      return False
    return self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), record=ocp.args.JsonSave(record)), force=True)

  def preempted(self, step: int) -> bool:
    """True on every process once SIGTERM arrived (single process) or the pod is preempted."""
    if jax.process_count() > 1:
      return self._manager.reached_preemption(step)
    return self._sigterm.event.is_set()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
    self._sigterm.restore()
