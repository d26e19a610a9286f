"""A sweep's points run in worker processes (`python -m w2s.sweep --workers N [--gpus 0,1,..]`).

Each point is `python -m w2s.sweep --config=SPEC --workdir=DIR --only=NAME [--config.k=v ...]`, so
a worker checks and runs its point exactly as a sweep of that one point would.
"""
import os
import signal
import subprocess
import sys
import time

from w2s.errors import UserError


# a point stopped by the signal: exit 143 at a safe point, or killed by it before its handler was
# installed (nothing started then)
_PREEMPTED_EXITS = (143, -signal.SIGTERM, -signal.SIGINT)


def run_workers(spec: str, workdir: str, names: list[str], workers: int, gpus: list[str],
                flags=()) -> None:
  """Each point in its own process, `workers` at a time (worker i pinned to gpus[i] if given),
  all with the persistent compilation cache (`compile_cache.child_env`: one compile per
  computation across the points, not one per point).

  SIGTERM / SIGINT here is passed on to the running points, which stop at their next safe point
  and exit 143; no new point starts, and once they all stopped the sweep raises Preempted. A
  point that exited 143 was preempted, not failed."""
  from w2s import compile_cache, preemption
  cache_env = compile_cache.child_env()  # every point reuses what the others compiled
  queue, running, failed, stopped, forwarded = list(names), [], [], [], False
  while running or (queue and not preemption.requested()):
    if preemption.requested() and not forwarded:
      forwarded = True
      for _, _, proc in running:
        proc.send_signal(signal.Signals[preemption.signal_name()])
    while queue and len(running) < workers and not preemption.requested():
      slot = next(i for i in range(workers) if i not in [s for s, _, _ in running])
      env = {**os.environ, **cache_env}
      if gpus:
        env['CUDA_VISIBLE_DEVICES'] = gpus[slot % len(gpus)]
      name = queue.pop(0)
      cmd = [sys.executable, '-m', 'w2s.sweep', f'--config={spec}', f'--workdir={workdir}',
             f'--only={name}', *flags]
      running.append((slot, name, subprocess.Popen(cmd, env=env)))
    finished = [r for r in running if r[2].poll() is not None]
    if not finished:
      time.sleep(0.2)
    for r in finished:
      running.remove(r)
      if r[2].returncode in _PREEMPTED_EXITS:
        stopped.append(r[1])
      elif r[2].returncode:
        failed.append(f'{r[1]} (exit {r[2].returncode})')
  failures = (f'{len(failed)} sweep point(s) failed: {", ".join(failed)}' if failed else '')
  if stopped or (queue and preemption.requested()):  # else every point ended before it
    cause = (f'{preemption.signal_name()} received' if preemption.requested() else
             'points preempted')
    raise preemption.Preempted(
        f'sweep: {cause}; {len(stopped)} running point(s) stopped at a safe point'
        f'{" (" + ", ".join(stopped) + ")" if stopped else ""}, {len(queue)} not started'
        f'{"; " + failures if failures else ""}; rerun the same command to finish them (done '
        'points, stages and checkpoints are kept)')
  if failed:
    raise UserError(f'{failures}; rerun the sweep to finish them (done points and stages are '
                    'kept)')
