"""Runs a table and writes results.json and table.md (ours beside the paper's numbers)."""

import dataclasses
import json
import os

from d3_tf import distribute, experiment, paper, pipeline, progress, store
from d3_tf.benchmark import BENCHMARKS, EXTRA_ROWS
from d3_tf.settings import DEFAULTS, ConfigError, Settings

COLUMNS = (("clean", "Clean"), ("fgsm", "FGSM"), ("pgd", "PGD"), ("blackbox", "Black-box"))
AUDIT_COLUMN = ("audited", "Audited")


def table_report(binary, preset, settings, output_dir, render):
  """The table's Report (d3_tf.pipeline): the rows of an earlier run with the same settings
  (to resume), a fresh record, or a ConfigError when the file holds other settings."""
  path = os.path.join(output_dir, "results.json")
  current = json.loads(json.dumps(dataclasses.asdict(settings)))
  results = store.read_json(path)
  if results is not None:
    # fields added since the file was written read as their defaults
    stored = json.loads(json.dumps(dataclasses.asdict(
        Settings.from_dict(results.get("settings", {})))))
    if stored != current:
      changed = sorted(k for k in current if stored.get(k) != current[k])
      raise ConfigError(f"{path} holds results made with other settings "
                        f"({', '.join(changed)}); use another --output_dir or remove that file")
  order = BENCHMARKS[settings.dataset].all_rows

  def in_paper_order(record):
    record["rows"] = {k: record["rows"][k] for k in sorted(record["rows"], key=order.index)}
    return record
  return pipeline.Report(path, render, {"binary": binary, "preset": preset, "rows": {}},
                         header=dict(pipeline.provenance(binary), settings=current),
                         order=in_paper_order, markdown=os.path.join(output_dir, "table.md"))


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
  extra = [f"{k} {s[k]}" for k in ("posterior_init", "y_mode", "penalty_examples")
           if s.get(k, getattr(DEFAULTS, k)) != getattr(DEFAULTS, k)]
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
    audit = next((row["audit"] for row in results["rows"].values()
                  if isinstance(row.get("audit"), dict)), {})
    n_audit = audit.get("n")
    square = audit.get("settings", {}).get("square_queries") != 0
    lines += ["", "Audited: per-example worst case over EOT-PGD, APGD-CE/DLR with EOT "
              "(AutoAttack)" + (", Square" if square else "") + " and transfer attacks on the "
              "first " + (f"{n_audit} " if n_audit else "") +
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
  def line(name, row, label):
    cells = []
    for b in budgets:
      ours = row["budgets"].get(str(b))
      ref = paper.table3_value(name, b)
      more = [_fmt(row.get("budgets_scaled", {}).get(str(b), ours if b == 0 else None))]
      cells += [_fmt(ours)] + (more if scaled else []) + [_fmt(ref), _delta(ours, ref)]
    return f"| {label} | " + " | ".join(cells) + " |"
  for name, row in results["rows"].items():
    lines.append(line(name, row, f"{name} (trained here; paper: Liu et al.'s, quoted)" if name
                      in paper.TABLE3_REFERENCE_ONLY else name))
  references = results.get("references", {})
  for name, row in references.get("rows", {}).items():  # another run's rows, same test images
    lines.append(line(name, row, f"{name} (trained here, `{references['preset']}` preset; "
                                 "paper: Liu et al.'s, quoted)"))
  shown = set(results["rows"]) | set(references.get("rows", {}))
  for name in [n for n in paper.TABLE3_REFERENCE_ONLY if n not in shown]:
    cells = []
    for b in budgets:
      cells += ["—"] + (["—"] if scaled else []) + [_fmt(paper.table3_value(name, b)), "—"]
    lines.append(f"| {name} (Liu et al., quoted) | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def audit_row(runner, method, row, sets, audit_settings, log=print):
  """(audited accuracy, audit report without per-example lists) of a trained row: the first
  ``audit_settings.n`` evaluation images, the row's black-box sets as transfer attacks."""
  from d3_tf import audit  # pylint: disable=g-import-not-at-top
  transfer = {name: (xa, ya) for name, (xa, ya, _) in (sets or {}).items()}
  report = audit.run_audit(runner.train(method), runner.xe, runner.ye, runner.s.eps,
                           audit_settings, transfer_sets=transfer, whitebox=row["pgd"],
                           blackbox=row.get("blackbox"), log=log,
                           draws_mode=runner.s.eval_draws())
  for key in [k for k in report if k.startswith("per_example")]:
    report.pop(key)
  return report["audited_robust_accuracy"], report


def evaluate_row(runner, method, sets, audit_settings=None, log=print):
  """A table row: the columns of ``runner.evaluate`` and, with ``audit_settings``, the
  audited column (worst case and the audit's report)."""
  row = runner.evaluate(method, sets)
  if audit_settings:
    row["audited"], row["audit"] = audit_row(runner, method, row, sets, audit_settings, log)
  return row


def accuracy_markdown(results):
  """The table.md of Tables 1-2: the dataset's table beside the paper's (d3_tf.benchmark)."""
  bench = BENCHMARKS[results["settings"]["dataset"]]
  return table_markdown(results, bench.paper_table, bench.table_heading(), bench.paper_clean)


def run_accuracy_table(binary, preset, settings, methods, train, test, output_dir, models_dir,
                       blackbox=True, audit_settings=None, log=print, strategy=None,
                       sources=None):
  """Tables 1-2: clean / FGSM / PGD / black-box for each method; resumable.

  Rows already in ``output_dir/results.json`` (same settings) are skipped; results, table.md
  and the figures are rewritten after every row. With ``audit_settings`` (an
  ``audit.AuditSettings``) each row also gets its audited robust accuracy. ``sources``: rows
  taken from another folder (``presets.Sources``).
  """
  figures = []

  def render(results):
    """table.md; the figures beside it after every row (a stopped run keeps them)."""
    if distribute.is_chief():
      figures[:] = table_figures(results, settings, output_dir)
    return accuracy_markdown(results)

  report = table_report(binary, preset, settings, output_dir, render)
  runner = experiment.Runner(settings, models_dir, train, test, log=log, strategy=strategy,
                             sources=sources)
  pending = [m for m in methods if report.get("rows", m.name) is None]
  # surrogates and their sets only when a row needs them (not for a finished table)
  sets = runner.blackbox_sets() if blackbox and pending else None
  if sets:
    report.set(("blackbox_sets",), {name: meta for name, (_, _, meta) in sets.items()})
  by_name = {m.name: m for m in methods}
  made = pipeline.run_rows(
      report, [m.name for m in methods], lambda name: ("rows", name),
      lambda name: evaluate_row(runner, by_name[name], sets, audit_settings, log),
      seed=settings.seed, log=log)
  for name, row in made.items():
    log(f"row {name}: " + ", ".join(f"{k} {row[k]:.1f}" for k, _ in COLUMNS if k in row))
  return report.save(), figures


def table_figures(results, settings, output_dir):
  """The figures of a table's results so far: Figure 1 (per-epoch attacks, where the dataset
  has it) and the PGD-vs-budget figure (2 or 3); the paths of those drawn."""
  from d3_tf import plots  # pylint: disable=g-import-not-at-top
  bench = BENCHMARKS[settings.dataset]
  made = [plots.figure1(results, os.path.join(output_dir, "figure1.png"), settings.eps)
          if bench.epoch_figure else None,
          plots.figure_budgets(results, os.path.join(output_dir, bench.budget_figure),
                               bench.title)]
  return [m for m in made if m]
