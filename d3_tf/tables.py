"""Runs a table and writes results.json and table.md (ours beside the paper's numbers)."""

import dataclasses
import json
import os
import platform
import subprocess
import sys
import time

from d3_tf import distribute, experiment, paper, progress
from d3_tf.benchmark import BENCHMARKS, EXTRA_ROWS

COLUMNS = (("clean", "Clean"), ("fgsm", "FGSM"), ("pgd", "PGD"), ("blackbox", "Black-box"))
AUDIT_COLUMN = ("audited", "Audited")


def versions():
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


def load_results(path, binary, preset, settings):
  """Existing results for the same settings (to resume), a fresh record, or an error."""
  results = experiment.read_json(path)
  current = json.loads(json.dumps(dataclasses.asdict(settings)))
  if results is None:
    return {"binary": binary, "preset": preset, "settings": current, "rows": {},
            "wall_seconds": 0.0}
  # fields added since the file was written read as their defaults
  stored = json.loads(json.dumps(dataclasses.asdict(
      experiment.Settings.from_dict(results.get("settings", {})))))
  if stored != current:
    changed = sorted(k for k in current if stored.get(k) != current[k])
    raise experiment.ConfigError(f"{path} holds results made with other settings ({', '.join(changed)}); "
                     "use another --output_dir or remove that file")
  return results


def save_results(output_dir, results, markdown):
  experiment.atomic_write(os.path.join(output_dir, "results.json"),
                          json.dumps(results, indent=1))
  experiment.atomic_write(os.path.join(output_dir, "table.md"), markdown)


def _fmt(value):
  return "—" if value is None else (value if isinstance(value, str) else f"{value:.1f}")


def _delta(ours, ref):
  if ours is None or ref is None or isinstance(ref, str):
    return "—"
  return f"{ours - ref:+.1f}"


def setup_line(s, n_eval, rows=()):
  """One sentence with the settings that make a table's numbers what they are."""
  bench = BENCHMARKS[s["dataset"]]
  images, epochs = bench.n_train, bench.paper_epochs
  share = 100.0 * (s["n_train"] or images) * s["epochs"] / (images * epochs)
  reduction = {"sum": "as printed (sums over input dims)",
               "mean": "as means over input dims"}[s["penalty_reduction"]]
  extra = [f"{k} {s[k]}" for k, default in (("posterior_init", -5.0), ("y_mode", "loss"),
                                             ("penalty_examples", 0))
           if s.get(k, default) != default]
  extra += [f"λ{k[-1].upper()} {s[k]:g} (paper {v:g})"
            for k, v in bench.lambdas.items() if s[k] != v]
  if s.get("lr_schedule", "constant") != "constant":
    extra.append(f"{s['lr_schedule']} learning-rate schedule")
  conventional = bench.conventional
  if s.get("conventional_epochs"):
    extra.append(f"{conventional} row {progress.count(s['conventional_epochs'], 'epoch')}")
  if s.get("warm_start_lr"):
    extra.append(f"Bayesian rows START FROM THE TRAINED {conventional} ROW"
                 + (" (the Adv-BNN from the Adv-CNN)" if "Adv-BNN" in rows else "")
                 + f" (not the paper's from-scratch training), Adam {s['warm_start_lr']:g}")
  if "Adv-CNN" in rows or "Adv-BNN" in rows:
    warm = s.get("adv_warm_start_lr")  # the ramp Runner.adversary gives the Adv-CNN
    ramp = s.get("adv_warm_start_warmup", 0.0) if warm else s.get("adv_warmup_epochs", 1.0)
    extra.append(f"Adv rows: PGD-{s.get('adv_iters', 10)} adversarial training (random start, "
                 f"step 2.5ε/{s.get('adv_iters', 10)})"
                 + (f", the Adv-CNN {progress.count(s['adv_epochs'], 'epoch')}"
                    if s.get("adv_epochs") else "")
                 + (f", starting from the trained {conventional} row at Adam {warm:g}"
                    if warm else "")
                 + (f", ε ramped up over {progress.count(ramp, 'epoch')}" if ramp else "")
                 + (f", loss {s['adv_clean_weight']:g}·clean + "
                    f"{1 - s['adv_clean_weight']:g}·PGD" if s.get("adv_clean_weight") else ""))
  return (f"{s['n_train'] or 'all'} training images × {progress.count(s['epochs'], 'epoch')} "
          f"({share:.2g}% of the paper's training), batch {s['batch_size']}, "
          f"K={s['num_draws']}, penalties {reduction}, estimator {s['estimator']}"
          + "".join(f", {e}" for e in extra) +
          f"; attacks on {n_eval} test images"
          + (f" (clean accuracy on {s['n_clean']})" if s.get("n_clean") else "") +
          f", L∞ ε={s['eps']}, PGD {s['pgd_iters']} steps of {s['pgd_step']}")


def table_markdown(results, published, title, clean_reference=None):
  """Markdown table: for every cell, ours | paper | difference."""
  s = results["settings"]
  n_eval = next(iter(results["rows"].values()), {}).get("n_eval", "?")
  lines = [f"# {title}", "",
           f"Preset `{results['preset']}`: {setup_line(s, n_eval, results['rows'])}. "
           "Accuracy in %; Δ = ours − paper.", ""]
  audited = any("audited" in row for row in results["rows"].values())
  header = "| method |" + "".join(f" {label} | paper | Δ |" for _, label in COLUMNS)
  expected = any("expected_robust_accuracy" in row.get("audit", {})
                 for row in results["rows"].values())
  header += (f" {AUDIT_COLUMN[1]} (worst / expected) |" if expected else
             f" {AUDIT_COLUMN[1]} |") if audited else ""
  lines += [header, "|---" * (1 + 3 * len(COLUMNS) + audited) + "|"]
  for name, row in results["rows"].items():
    ref = published.get(name, {})
    cells = []
    for key, _ in COLUMNS:
      ref_value = ref.get(key, clean_reference if key == "clean" and name not in
                          EXTRA_ROWS else None)
      cells += [_fmt(row.get(key)), _fmt(ref_value), _delta(row.get(key), ref_value)]
    if audited:
      worst, mean = row.get("audited"), row.get("audit", {}).get("expected_robust_accuracy")
      cells.append(_fmt(worst) + (f" / {_fmt(mean)}" if mean is not None else ""))
    label = f"{name} (not in the paper)" if name in EXTRA_ROWS else name
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  if audited:
    n_audit = next((row["audit"].get("n") for row in results["rows"].values()
                    if isinstance(row.get("audit"), dict)), None)
    lines += ["", "Audited: per-example worst case over EOT-PGD, APGD-CE/DLR with EOT "
              "(AutoAttack), Square and transfer attacks on the first "
              + (f"{n_audit} " if n_audit else "") +
              "test images (experiments.audit; details in results.json)"
              + ("; expected: each example's chosen adversarial point re-scored over 20 "
                 "independent forward passes made after the attacks, averaged (for a random "
                 "model the worst case also counts prediction noise as attack success)"
                 if expected else "") + "."]
  bb = results.get("blackbox_sets")
  if bb:
    lines += ["", "Black-box: PGD examples transferred from locally trained conventional "
              "surrogates (the paper's MadryLab sets cannot be downloaded offline); the column "
              "is the lower of: " + ", ".join(
                  f"{k} (surrogate's own accuracy on its set {v.get('source_adversarial_accuracy', 0):.1f}%)"
                  for k, v in bb.items()) + "."]
  return "\n".join(lines) + "\n"


def budget_markdown(results, title):
  """Table 3 layout: PGD accuracy per budget, ours | paper | difference."""
  budgets, s = results["budgets"], results["settings"]
  scaled = results.get("scale_step", False)
  per = 4 if scaled else 3
  header = "".join(f" {b} | {'scaled step | ' if scaled else ''}paper | Δ |" for b in budgets)
  lines = [f"# {title}", "",
           f"Preset `{results['preset']}`; PGD {s['pgd_iters']} steps of {s['pgd_step']} (the "
           f"paper's: they travel at most {s['pgd_iters'] * s['pgd_step']:g}, so larger budgets "
           "are not used in full)"
           + ("; *scaled step*: PGD with steps of 2.5·ε / iterations" if scaled else "")
           + "; Δ = ours (paper's step) − paper; 0.0 = clean. Accuracy in %.", "",
           "| method |" + header, "|---" * (1 + per * len(budgets)) + "|"]
  for name, row in results["rows"].items():
    cells = []
    for b in budgets:
      ours = row["budgets"].get(str(b))
      ref = paper.table3_value(name, b)
      more = [_fmt(row.get("budgets_scaled", {}).get(str(b), ours if b == 0 else None))]
      cells += [_fmt(ours)] + (more if scaled else []) + [_fmt(ref), _delta(ours, ref)]
    label = f"{name} (trained here; paper: Liu et al.'s, quoted)" if name in \
        paper.TABLE3_REFERENCE_ONLY else name
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  for name in [n for n in paper.TABLE3_REFERENCE_ONLY if n not in results["rows"]]:
    cells = []
    for b in budgets:
      cells += ["—"] + (["—"] if scaled else []) + [_fmt(paper.table3_value(name, b)), "—"]
    lines.append(f"| {name} (Liu et al., quoted) | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def audit_row(runner, method, row, sets, audit_kwargs, log=print):
  """(audited accuracy, audit report without per-example lists) of a trained row."""
  from d3_tf import audit  # pylint: disable=g-import-not-at-top
  kwargs = dict(audit_kwargs)
  n = min(kwargs.pop("n"), len(runner.xe))
  transfer = {name: (xa[:n], ya[:n]) for name, (xa, ya, _) in (sets or {}).items()}
  report = audit.run_audit(runner.train(method), runner.xe[:n], runner.ye[:n], runner.s.eps,
                           transfer_sets=transfer, whitebox=row["pgd"],
                           blackbox=row.get("blackbox"), log=log,
                           draws_mode=runner.s.eval_draws(), **kwargs)
  for key in [k for k in report if k.startswith("per_example")]:
    report.pop(key)
  return report["audited_robust_accuracy"], report


class TableRun:
  """Resumable bookkeeping around a Runner: skip finished rows, save after each row."""

  def __init__(self, binary, preset, settings, output_dir, render):
    self.output_dir = output_dir
    self.path = os.path.join(output_dir, "results.json")
    self.results = load_results(self.path, binary, preset, settings)
    self.results.update({"versions": versions(), "git_commit": git_commit(),
                         "command": self.command(binary)})
    self.render = render
    self.t0 = time.time()
    self.wall0 = self.results.get("wall_seconds", 0.0)

  @staticmethod
  def command(binary):
    """The command line of this run, as a user would type it."""
    return " ".join([os.path.basename(sys.executable), "-m", f"experiments.{binary}"]
                    + sys.argv[1:])

  def done(self, name):
    return name in self.results["rows"]

  def add(self, name, row):
    """Records a row; rows are kept in the paper's table order."""
    rows = dict(self.results["rows"], **{name: row})
    order = BENCHMARKS[self.results["settings"]["dataset"]].all_rows
    self.results["rows"] = {k: rows[k] for k in sorted(rows, key=order.index)}
    self.save()

  def save(self):
    self.results["wall_seconds"] = self.wall0 + time.time() - self.t0
    save_results(self.output_dir, self.results, self.render(self.results))


def run_accuracy_table(binary, preset, settings, methods, train, test, output_dir, models_dir,
                       published, title, clean_reference=None, blackbox=True, audit_kwargs=None,
                       log=print, strategy=None):
  """Tables 1-2: clean / FGSM / PGD / black-box for each method; resumable.

  Rows already in ``output_dir/results.json`` (same settings) are skipped;
  results, table.md and the figures are rewritten after every row. With
  ``audit_kwargs`` (``n`` plus ``audit.run_audit`` arguments), each row also
  gets its audited robust accuracy (per-example worst case of adaptive attacks).
  """
  from d3_tf import plots  # pylint: disable=g-import-not-at-top

  render = lambda r: table_markdown(r, published, title, clean_reference)
  run = TableRun(binary, preset, settings, output_dir, render)
  runner = experiment.Runner(settings, models_dir, train, test, log=log, strategy=strategy)
  pending = []
  for method in methods:
    if run.done(method.name):
      log(f"row {method.name}: already done, skipped")
    else:
      pending.append(method)
  # surrogates and their sets only when a row needs them (not for a finished table)
  sets = runner.blackbox_sets() if blackbox and pending else None
  if sets:
    run.results["blackbox_sets"] = {name: meta for name, (_, _, meta) in sets.items()}
  for method in pending:
    row = runner.evaluate(method, sets)
    if audit_kwargs:
      row["audited"], row["audit"] = audit_row(runner, method, row, sets, audit_kwargs, log)
    row["provenance"] = {"git_commit": run.results["git_commit"],
                         "command": run.results["command"]}
    run.add(method.name, row)
    log(f"row {method.name}: " + ", ".join(
        f"{k} {run.results['rows'][method.name].get(k, float('nan')):.1f}"
        for k, _ in COLUMNS if k in run.results["rows"][method.name]))
  run.save()
  if not distribute.is_chief():
    return run.results, []
  bench = BENCHMARKS[settings.dataset]
  made = [plots.figure1(run.results, os.path.join(output_dir, "figure1.png"), settings.eps)
          if bench.epoch_figure else None,
          plots.figure_budgets(run.results, os.path.join(output_dir, bench.budget_figure),
                               bench.title)]
  return run.results, [m for m in made if m]
