"""Progress that reads well on a terminal and in a log file.

On a terminal (stdout is a TTY): tqdm bars, as ART and Keras draw them. Otherwise
(stdout redirected to a file or a pipe): no bars and no carriage returns; each
finished attack prints one line (:func:`done`) and Keras prints one line per
epoch (:func:`keras_verbose`).
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
