"""One row pipeline: train-or-load → evaluate → audit → provenance → merge-and-write.

Every binary that produces rows (Tables 1-3, the study, the audit of table rows, the diversity
measurement) runs them through :func:`run_rows` into a :class:`Report`. A report is a JSON file
and its markdown, rewritten after every row: re-read from disk just before each write, so rows
that another process wrote meanwhile are kept (this process's rows win), and written
atomically, so a run killed at any point loses at most the row it was on. Provenance (command,
git commit, library versions, seed, wall time) is taken here, once per run, in one format.

No TensorFlow at import (``versions`` imports the libraries it names when called).
"""
import copy
import json
import os
import platform
import subprocess
import sys
import time

from d3_tf import store


def versions():
  """The versions of the libraries a result depends on."""
  import art  # pylint: disable=g-import-not-at-top
  import numpy  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_probability as tfp  # pylint: disable=g-import-not-at-top
  import tf_keras  # pylint: disable=g-import-not-at-top
  return {"python": platform.python_version(), "tensorflow": tf.__version__,
          "tf_keras": tf_keras.__version__, "tensorflow_probability": tfp.__version__,
          "adversarial_robustness_toolbox": art.__version__, "numpy": numpy.__version__}


def git_commit(here=None):
  """HEAD of the repository holding ``here`` (this package), '+uncommitted-changes' if the
  code differs from it; None outside a repository."""
  here = here or os.path.dirname(os.path.abspath(__file__))
  try:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                            text=True, timeout=10, check=True).stdout.strip()
    # Results written while a run goes (its own report, runs beside it) do not change the code.
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                            ":/", ":(exclude,top)results"], cwd=here, capture_output=True,
                           text=True, timeout=10, check=True).stdout.strip()
    return commit + ("+uncommitted-changes" if dirty else "")
  except (OSError, subprocess.SubprocessError):
    return None


def command(binary):
  """This run's command line, as a user types it."""
  return " ".join(["python", "-m", f"experiments.{binary}"] + sys.argv[1:])


def provenance(binary):
  """The command, the code and the library versions, taken once as a run starts (a long run
  outlives later commits)."""
  return {"command": command(binary), "git_commit": git_commit(), "versions": versions()}


def _at(tree, path, make=False):
  """The dict at ``path`` (a tuple of keys) in ``tree``; made on the way with ``make``."""
  for key in path:
    if key not in tree:
      if not make:
        return None
      tree[key] = {}
    tree = tree[key]
  return tree


class Report:
  """A JSON report of rows and its markdown, merged with the file on disk at every write.

  ``fresh`` is the record of a new file; ``header`` (e.g. provenance, settings) is written
  over the file's at every write; ``order`` may reorder the merged record before it is
  written (the tables keep the paper's row order). Rows are set by path, e.g.
  ``("rows", "M")`` or ``("configs", "sum/-3/loss", "rows", "M")``. The markdown goes to
  ``markdown`` (default: beside the JSON, same stem).
  """

  def __init__(self, path, render, fresh, header=None, order=None, markdown=None):
    self.path, self.render, self.order = path, render, order
    self.markdown = markdown or os.path.splitext(path)[0] + ".md"
    self.data = store.read_json(path) or copy.deepcopy(fresh)
    self.header = dict(header or {})
    self.data.update(self.header)
    self.mine = {}  # path -> value set by this process
    self.saved = time.time()

  def get(self, *path):
    """The value at ``path``, None when absent."""
    *parent, key = path
    tree = _at(self.data, parent)
    return None if tree is None else tree.get(key)

  def set(self, path, value):
    """Sets ``value`` at ``path`` (kept over the file's at every write)."""
    self.mine[tuple(path)] = value
    *parent, key = path
    _at(self.data, parent, make=True)[key] = value

  def put(self, path, value):
    """Sets ``value`` at ``path`` and writes the report."""
    self.set(path, value)
    self.save()

  def save(self):
    """Re-reads the file, applies the header and this process's values, adds this process's
    seconds since its last write to ``wall_seconds`` and writes JSON and markdown."""
    merged = store.read_json(self.path) or self.data
    merged.update(self.header)
    for path, value in self.mine.items():
      *parent, key = path
      _at(merged, parent, make=True)[key] = value
    now = time.time()
    merged["wall_seconds"] = merged.get("wall_seconds", 0.0) + now - self.saved
    self.saved = now
    self.data = self.order(merged) if self.order else merged
    store.atomic_write(self.path, json.dumps(self.data, indent=1))
    store.atomic_write(self.markdown, self.render(self.data))
    return self.data


def stamp(report, row, seed, seconds):
  """Adds to ``row["provenance"]`` the command and commit of ``report``'s run, the seed and
  ``seconds`` of wall time, added to the wall time the row already records (a row finished
  over several runs), keeping what else it records there."""
  before = row.get("provenance", {})
  row["provenance"] = dict(before, command=report.data.get("command"),
                           git_commit=report.data.get("git_commit"), seed=seed,
                           wall_seconds=before.get("wall_seconds", 0.0) + seconds)
  return row


def run_rows(report, names, path, evaluate, seed=None, log=print, redo=False,
             done=lambda row: row is not None):
  """The row pipeline: for each name whose row in ``report`` (at ``path(name)``) is not
  ``done`` yet (default: absent; every name with ``redo``), ``evaluate(name)`` (train or
  load, evaluate, audit: a dict; it may write parts of the row as they land, to resume a
  killed run), stamped with its provenance (command and commit of this run, seed, wall
  seconds) and written. Returns the rows made."""
  made = {}
  for name in names:
    if not redo and done(report.get(*path(name))):
      log(f"row {name}: already done, skipped")
      continue
    t0 = time.time()
    row = evaluate(name)
    stamp(report, row, seed, time.time() - t0)
    report.put(path(name), row)
    made[name] = row
  return made
