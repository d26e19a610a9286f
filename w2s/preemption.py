"""SIGTERM / SIGINT as a request to stop cleanly, checked wherever a run spends time.

A scheduler preempts a job with SIGTERM (and a person with Ctrl-C, SIGINT). Dying on the spot
loses work, and catching the signal in one place (the train loop) swallows it everywhere else.
So the entry point calls `install()` once: the signal only sets a flag, and every long loop
(training, prediction, feature extraction, between stages) calls `check(where)` at a point where
its work so far is safe on disk; `check` raises `Preempted`, which `w2s.main` turns into one line
and exit status 143. Rerunning the same command resumes from what was saved.
"""
import signal
import threading

_EVENT = threading.Event()
_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_received: list[str] = []


class Preempted(Exception):
  """Raised at a safe point after SIGTERM/SIGINT; rerunning the same command resumes."""


def _handler(signum, frame):
  del frame
  _received.append(signal.Signals(signum).name)
  _EVENT.set()


def install() -> None:
  """Turns SIGTERM and SIGINT into a stop request (main thread only; idempotent)."""
  if threading.current_thread() is not threading.main_thread():
    return
  for s in _SIGNALS:
    if signal.getsignal(s) is not _handler:
      signal.signal(s, _handler)


def requested() -> bool:
  """True once SIGTERM or SIGINT arrived (in this process)."""
  return _EVENT.is_set()


def signal_name() -> str:
  return _received[-1] if _received else 'SIGTERM'


def check(where: str, saved: str = 'work done so far is saved') -> None:
  """Raises Preempted naming `where` if a stop was requested; call it where work is on disk."""
  if _EVENT.is_set():
    raise Preempted(f'{where}: {signal_name()} received; {saved}; rerun the same command to resume')


def reset() -> None:
  """Forgets a received signal (tests and notebooks that continue after a Preempted)."""
  _EVENT.clear()
  _received.clear()
