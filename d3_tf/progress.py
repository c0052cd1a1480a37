"""Progress that reads well on a terminal and in a log file.

On a terminal (stdout is a TTY): tqdm bars, as ART and Keras draw them. Otherwise
(stdout redirected to a file or a pipe): no bars and no carriage returns; each
finished attack prints one line (:func:`done`), Keras prints one line per
epoch (:func:`keras_verbose`) and a training row one line at each backup within an
epoch (:func:`pace`).
"""

import sys
import time

from tqdm.auto import tqdm


def interactive():
  """True when stdout is a terminal: draw progress bars."""
  return sys.stdout.isatty()


def keras_verbose():
  """Keras ``fit`` verbosity: a bar on a terminal, else one line per epoch."""
  return 1 if interactive() else 2


def bar(iterable, desc):
  """``iterable`` wrapped in a transient tqdm bar on a terminal; unchanged otherwise."""
  return tqdm(iterable, desc=desc, leave=False) if interactive() else iterable


class Timer:
  """Starts a clock; :meth:`done` prints one line with the seconds in a log (no bar)."""

  def __init__(self):
    self.t0 = time.monotonic()

  def done(self, text):
    if not interactive():
      print(f"{text} ({time.monotonic() - self.t0:.0f} s)", flush=True)


def count(n, noun):
  """'1 epoch', '3 epochs', '1.5 epochs': ``n`` (a whole float without its '.0') and ``noun``,
  plural unless n is 1."""
  return f"{n:g} {noun}{'' if n == 1 else 's'}"


def _duration(seconds):
  """'40 s', '12 min', '3.4 h'."""
  if seconds < 60:
    return f"{seconds:.0f} s"
  return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def pace(epoch, epochs, step, steps, steps_run, seconds):
  """One line on a training run's progress within epoch ``epoch`` (0-based) of ``epochs``:
  ``step`` of its ``steps`` reached, and the ends of the epoch and of the run at this run's
  pace (``steps_run`` steps in ``seconds``). ``epochs`` or ``steps`` None: not known."""
  line = f"  epoch {epoch + 1}/{epochs or '?'}: step {step}/{steps or '?'}"
  if steps_run <= 0 or seconds <= 0:
    return line
  rate = steps_run / seconds
  line += f", {rate:.2f} steps/s"
  if steps:
    line += f"; epoch ends in about {_duration((steps - step) / rate)}"
    if epochs and epochs > epoch + 1:
      left = (epochs - epoch - 1) * steps + steps - step
      line += f", the run in about {_duration(left / rate)}"
  return line
