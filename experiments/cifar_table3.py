"""Table 3 of Bender et al. (2020): CIFAR-10 PGD accuracy at several L∞ budgets.

Rows M-S, BVGG16-Off and M-S-Off (trained as in cifar_table2, whose trained models are reused
when the settings match), with the paper's Adv-CNN / Adv-BNN rows quoted for reference. At
--preset robust (and robust_mix: the Adv rows on half clean, half PGD loss) the rows are VGG16
and the Adv-CNN and Adv-BNN trained here (PGD adversarial training), each beside the paper's
quoted numbers. At --preset verdict (the CIFAR study's reading) the robust_mix run's trained
Adv-CNN and Adv-BNN rows are shown beside the D3 rows (same test images and PGD).

  python -m experiments.cifar_table3 --budgets 0.015,0.035 [--preset smoke|cpu|paper]
  python -m experiments.cifar_table3 --preset robust_mix --models_dir results/cifar_table2/robust_mix/models

PGD uses the table's 40 steps of 0.001, as the paper: those steps travel at most 0.04, so
budgets above 0.04 cannot be used in full (the paper's flat 0.055 / 0.07 columns). Beside it
(--scale_step, on by default) the table shows PGD with the step 2.5·ε/iterations, which can
reach every budget.
"""
import copy
import os

from absl import flags

from d3_tf import paper
from d3_tf.benchmark import CIFAR10
from d3_tf.presets import PRESET_ROWS
from d3_tf.settings import ConfigError, parse_methods
from experiments import common

BINARY = "cifar_table3"
ROWS = ("M-S", "BVGG16-Off", "M-S-Off")
common.define_table_flags(BINARY, "Same presets as cifar_table2 (smoke / cpu / robust / "
                          "robust_mix / paper).",
                          "cifar10", "smoke", methods=False)
_BUDGETS = flags.DEFINE_string("budgets", ",".join(str(b) for b in paper.TABLE3_BUDGETS),
                               "Comma-separated L∞ budgets in [0, 1]; 0.0 = clean accuracy.")
_METHODS = flags.DEFINE_list(
    "methods", None, f"Rows to run (default: {', '.join(ROWS)}; --preset robust and robust_mix: "
    f"{', '.join(PRESET_ROWS[('cifar10', 'robust')])}). Rows not trained yet are trained first.")
common.validate("methods", common.list_of(CIFAR10.all_rows, ", ".join(CIFAR10.all_rows)))
# Rows a preset's table shows beside its own: another Table 3 run's rows on the same test
# images and PGD (the verdict preset's D3 rows beside the Adv-CNN and Adv-BNN trained here).
REFERENCES = {"verdict": ("results/cifar_table3/robust_mix", ("Adv-CNN", "Adv-BNN"))}
_SCALE_STEP = flags.DEFINE_bool("scale_step", True,
                                "Also attack with the step 2.5·ε/iterations, beside the paper's "
                                "fixed --pgd_step (a column of its own per budget).")


def parse_budgets(text):
  """'0.0,0.015' -> (0.0, 0.015); malformed lists raise ConfigError (one line)."""
  values = []
  for item in text.split(","):
    item = item.strip()
    try:
      value = float(item)
    except ValueError:
      raise ConfigError(f"budget {item!r} is not a number (--budgets "
                                   "takes comma-separated numbers like 0.015,0.035)") from None
    if value != value or value < 0 or value > 1:
      raise ConfigError(f"budget {item} outside [0, 1] (0.0 = clean)")
    if value in values:
      raise ConfigError(f"budget {item} given twice")
    values.append(value)
  return tuple(values)


def _check_budgets(text):
  try:
    parse_budgets(text)
  except ConfigError as e:
    raise flags.ValidationError(str(e)) from None
  return True


flags.register_validator("budgets", _check_budgets)


def references(folder, rows, settings):
  """{"preset", "results", "command", "git_commit", "rows"}: ``rows`` of the Table 3 run in
  ``folder``, once it attacked the same test images with the same PGD as ``settings``."""
  from d3_tf import store  # pylint: disable=g-import-not-at-top
  path = os.path.join(folder, "results.json")
  theirs = store.read_json(path)
  if theirs is None or any(r not in theirs["rows"] for r in rows):
    raise ConfigError(f"{path}: no Table 3 rows {', '.join(rows)} to show beside this table")
  protocol = ("n_eval", "eps", "pgd_step", "pgd_iters", "dataset")
  changed = [k for k in protocol if theirs["settings"][k] != getattr(settings, k)]
  if changed:
    raise ConfigError(f"{path} attacked other images or with another PGD ({', '.join(changed)})")
  return {"preset": theirs["preset"], "results": path, "command": theirs.get("command"),
          "git_commit": theirs.get("git_commit"), "rows": {r: theirs["rows"][r] for r in rows}}


def main(argv):
  del argv
  from d3_tf import attacks, experiment, pipeline, tables  # pylint: disable=g-import-not-at-top
  budgets = parse_budgets(_BUDGETS.value)
  settings = common.settings_from_flags("cifar10")
  methods = parse_methods(_METHODS.value or list(PRESET_ROWS.get(
      ("cifar10", flags.FLAGS.preset), ROWS)), "cifar10")
  common.describe(settings, BINARY, len(methods))
  out = common.table_outputs(BINARY)
  train, test = common.load_table_data(settings)
  if flags.FLAGS.train_only:
    common.train_only(settings, methods, train, test)
    return
  report = tables.table_report(BINARY, flags.FLAGS.preset, settings, out, lambda r: (
      tables.budget_markdown(r, "Table 3 — CIFAR-10, PGD budgets")))
  report.set(("budgets",), list(budgets))
  report.set(("scale_step",), _SCALE_STEP.value)
  if flags.FLAGS.preset in REFERENCES:
    report.set(("references",), references(*REFERENCES[flags.FLAGS.preset], settings))
  runner = experiment.Runner(settings, flags.FLAGS.models_dir, train, test,
                             sources=common.preset_sources("cifar10"))
  steps = {"budgets": lambda b: settings.pgd_step}
  if _SCALE_STEP.value:
    steps["budgets_scaled"] = lambda b: 2.5 * b / settings.pgd_iters
  todo = lambda row: [(key, b) for key in steps for b in budgets
                      if str(b) not in (row or {}).get(key, {}) and (b > 0 or key == "budgets")]
  by_name = {m.name: m for m in methods}

  def evaluate(name):
    """The row's budgets not measured yet, each written as it lands (a killed run resumes at
    the next one)."""
    row = copy.deepcopy(report.get("rows", name) or {})
    est = runner.classifier(runner.train(by_name[name]))
    for key, b in todo(row):
      step = steps[key](b)
      if b == 0:  # clean accuracy
        value = attacks.accuracy_on(est, runner.xe, runner.ye)
      else:
        attack = attacks.make_attack(est, "pgd", b, eps_step=step, max_iter=settings.pgd_iters)
        value = attacks.robust_accuracy(est, runner.xe, runner.ye, attack,
                                        desc=f"PGD eps={b} step={step:.5f}")["adversarial"]
      row.setdefault(key, {})[str(b)] = value
      report.put(("rows", name), row)
      print(f"row {name}: eps {b}, step {step:.5f} -> {value:.1f}%")
    return row

  pipeline.run_rows(report, list(by_name), lambda name: ("rows", name), evaluate,
                    seed=settings.seed, done=lambda row: row is not None and not todo(row))
  report.save()
  common.print_outputs(out)


if __name__ == "__main__":
  common.run(main)
