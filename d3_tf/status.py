"""Where a study's or a table's rows stand, read from their files alone (no TensorFlow): a
long grid runs across sessions, and whoever picks it up asks what is done, what is training
and what is left.

A (configuration, row) is *done* once the results.json holds it; *trained* once its
model folder has final weights (its evaluation is what is left); *training* while the folder
holds a row's clock (``train_time.json``: the epochs finished and the seconds spent so far,
over every resumed run; a row that continues another folder's starts from that row's clock);
else *not started*. The training left is estimated, in this order of trust, from the row's
own pace, from the pace of the finished rows listed beside it with the same name, or of the
same kind (penalised, Bayesian, deterministic; seconds per training step), or from the
dataset's measured step (``presets.estimate_hours``: a penalised row on idle cores).
"""
import os
import statistics

from d3_tf import presets
from d3_tf.benchmark import BENCHMARKS
from d3_tf.settings import models_folder, parse_method, row_epochs
from d3_tf.store import read_json


def _clock(settings, rows_dir, row):
  """(train_time.json of the row, or of the row it continues, or {}; whether the row has a
  clock of its own; whether its final weights exist)."""
  folder = os.path.join(models_folder(settings, rows_dir), row)
  clock = read_json(os.path.join(folder, "train_time.json"))
  own = clock is not None
  if not own and settings.continued_from:
    clock = read_json(os.path.join(settings.continued_from, row, "train_time.json"))
  return clock or {}, own, os.path.exists(os.path.join(folder, "final", "weights.index"))


def _kind(row, dataset):
  """'penalised', 'Bayesian' (the plain ELBO) or 'deterministic': rows of one kind train at
  about one pace."""
  method = parse_method(row, dataset)
  return "penalised" if method.penalties else "Bayesian" if method.bayesian else "deterministic"


def _steps(settings, epochs, n=None):
  """Training steps of ``epochs`` epochs of ``n`` images (default: the settings')."""
  n = n or settings.n_train or BENCHMARKS[settings.dataset].n_train
  return epochs * -(-n // settings.batch_size)


def rows(configs, base, rows_dir, results):
  """[{configuration, row, state, epochs, of, seconds, left_hours, basis}] for every row of
  ``configs`` on ``base``; ``results``: the study's results.json (``{"configs": ...}``)."""
  found, pace = [], {}  # {row name or kind: [seconds per step of each finished such row]}
  for c in configs:
    s = c.settings(base)
    for row in c.rows:
      clock, own, trained = _clock(s, rows_dir, row)
      result = results.get("configs", {}).get(c.name, {}).get("rows", {}).get(row)
      state = ("done" if result is not None else "trained" if trained
               else "training" if own else "not started")
      epochs = row_epochs(s, parse_method(row, s.dataset))
      r = dict(configuration=c.name, row=row, state=state, epochs=clock.get("epochs", 0),
               of=epochs, seconds=clock.get("seconds", 0.0))
      left = _steps(s, epochs - r["epochs"], clock.get("n"))
      if state in ("done", "trained"):
        if r["epochs"] and r["seconds"]:
          per_step = r["seconds"] / _steps(s, r["epochs"], clock.get("n"))
          for key in (row, _kind(row, s.dataset)):
            pace.setdefault(key, []).append(per_step)
        r.update(left_hours=0.0, basis="—")
      elif r["epochs"]:  # the clock counts the unfinished epoch's seconds too: errs slower
        r.update(left_hours=left * r["seconds"] / _steps(s, r["epochs"], clock.get("n")) / 3600,
                 basis="its own pace" if own else "the pace of the row it continues")
      else:
        r.update(left_steps=left)
      found.append((s, r))
  for s, r in found:
    if "left_steps" not in r:
      continue
    left = r.pop("left_steps")
    key = next((k for k in (r["row"], _kind(r["row"], s.dataset)) if pace.get(k)), None)
    if key:
      hours = left * statistics.median(pace[key]) / 3600
      r["basis"] = f"{len(pace[key])} finished {key} row(s)"
    else:
      hours = presets.estimate_hours(s, 1) * left / _steps(s, s.epochs)  # per step
      r["basis"] = "the dataset's step"
    r["left_hours"] = max(hours - r["seconds"] / 3600, 0.0)
  return [r for _, r in found]


def markdown(configs, base, rows_dir, results):
  """``rows`` as a table, with the training hours left in all."""
  found = rows(configs, base, rows_dir, results)
  lines = ["| configuration | row | state | epochs | training so far | left | estimated from |",
           "|---" * 7 + "|"]
  for r in found:
    lines.append(f"| {r['configuration']} | {r['row']} | {r['state']} | "
                 f"{r['epochs']}/{r['of']:g} | {r['seconds'] / 3600:.1f} h | "
                 f"{r['left_hours']:.1f} h | {r['basis']} |")
  total = sum(r["left_hours"] for r in found)
  lines += ["", f"Training left: about {total:.1f} h of one core. Evaluation and audits come "
            "on top; a row's pace depends on what else shared the cores."]
  return "\n".join(lines) + "\n"


def table_markdown(binary, preset, settings, rows, models_dir, results_dir):
  """``markdown`` of a table binary's ``rows`` at ``preset`` (its results in ``results_dir``)."""
  from d3_tf import study  # pylint: disable=g-import-not-at-top
  name = f"preset {preset}"
  results = read_json(os.path.join(results_dir, "results.json"), {})
  return (f"{binary} --preset {preset} (models in {models_dir}):\n\n"
          + markdown([study.config(name, rows)], settings, models_dir,
                     {"configs": {name: {"rows": results.get("rows", {})}}}))
