"""Robustness audit of trained table rows or of any saved Keras model.

Trained table rows (same --preset as mnist_table1 / cifar_table2, or --results_dir), or a saved
model (--model): EOT-PGD (R fresh forward passes per gradient), APGD-CE/APGD-DLR with EOT, the
Square attack and transfer attacks as a per-example worst case, and the expected robust accuracy
(each example's chosen adversarial point re-scored over --passes independent forward passes).
--protocol rand is AutoAttack's version for randomised defences (APGD-CE, APGD-DLR, EOT 20, no
restarts). Sanity checks (zero accuracy at ε=1, monotone in ε and steps, white-box ≤ black-box)
print pass/fail.

  python -m experiments.audit --table mnist_table1 --preset cpu --methods M-S
  python -m experiments.audit --model my_model.keras --dataset mnist --eps 0.3 --protocol rand
  python -m experiments.audit --model weights.index --arch mnist_cnn --bayesian --dataset mnist

Without a data folder (--data_dir or $D3_DATA_DIR) and offline, add --data_source embedded:
the MNIST test images shipped in the package (the first 1,000).

Saved models load without unpickling: a .keras file (safe mode), a SavedModel folder, or
weights (a checkpoint prefix or .h5) of one of the project's architectures (--arch).
"""
import glob
import os
import time

from absl import flags

from d3_tf import audit_inputs
from d3_tf import settings as cfg
from d3_tf.benchmark import BENCHMARKS
from experiments import common, model_flags

common.define_trained_rows_flags(["M-S"])
_N = flags.DEFINE_integer("n", 1000, "Test images audited (the first n of the test set).")
_EPS = flags.DEFINE_float("eps", None, "Budget (default: the table's ε; with --model: 0.3 for "
                          "MNIST, 0.03 for CIFAR-10, L∞).")
_NORM = flags.DEFINE_enum("norm", "inf", ["inf", "l2"], "Norm of the budget.")
_PROTOCOL = flags.DEFINE_enum("protocol", "full", ["full", "rand", "standard"],
                              "full: transfer, EOT-PGD, APGD-CE/DLR with EOT, Square; rand: "
                              "AutoAttack's version for randomised models (APGD-CE and APGD-DLR, "
                              "EOT 20, no restarts); standard: APGD-CE/DLR without EOT, then Square "
                              "(deterministic models: warns if the model is random).")
_PASSES = flags.DEFINE_integer("passes", 20, "Independent forward passes of the expected "
                               "accuracy, drawn after the attacks.")
_EOT = flags.DEFINE_list("eot", ["1", "10"], "EOT sample counts R for EOT-PGD, e.g. 1,10,20,50.")
_STEPS = flags.DEFINE_integer("steps", 100, "Iterations of EOT-PGD and APGD.")
_RESTARTS = flags.DEFINE_integer("restarts", 5, "Random restarts of EOT-PGD and APGD.")
_APGD_EOT = flags.DEFINE_integer("apgd_eot", 10, "EOT samples R of APGD-CE / APGD-DLR.")
_SQUARE = flags.DEFINE_integer("square_queries", 1000, "Square attack queries (0 = skip).")
_SANITY_N = flags.DEFINE_integer("sanity_n", 100, "Images used by the sanity checks.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of random starts, restarts and weight draws.")
_SETS = flags.DEFINE_list("sets", None, "With --model and --protocol full: transfer sets (.npz "
                          "written by the table binaries or experiments.study, e.g. strong "
                          "surrogates' PGD examples of the first test images), tried first.")
flags.register_validator("sets", lambda v: v is None or all(os.path.isfile(p) for p in v),
                         message="must be existing .npz files")
model_flags.define("Audit this saved model instead of table rows")
flags.FLAGS["output_dir"].help = ("Where audit.json / audit.md go (default: --results_dir for "
                                  "table rows; results/audit/<name> for --model).")
flags.adopt_module_key_flags(common)  # --model, --arch, --output_dir, ... listed by --help


def _rule(check):
  """An absl validator from one of d3_tf.audit_inputs' checks (the API's rules, one line)."""
  def ok(value):
    if value is not None:
      try:
        check(value)
      except cfg.ConfigError as e:
        raise flags.ValidationError(str(e)) from None
    return True
  return ok


for _name in ("n", "steps", "restarts", "apgd_eot", "sanity_n", "passes"):
  flags.register_validator(_name, _rule(lambda v, n=_name: audit_inputs.check_count(
      n, v, prefix="--")))
flags.register_validator("square_queries", _rule(
    lambda v: audit_inputs.check_count("square_queries", v, lo=0, prefix="--")))
flags.register_validator("seed", _rule(lambda v: audit_inputs.check_count("seed", v, lo=0,
                                                                           prefix="--")))
common.validate("eot", common.int_list(1))
flags.register_multi_flags_validator(["eps", "norm"], _rule(
    lambda f: f["eps"] is None or audit_inputs.check_budget(f["eps"], f["norm"], prefix="--")))


def _fmt(value):
  return "—" if value is None else f"{value:.1f}"


def markdown(report):
  lines = ["# Robustness audit", "",
           f"Protocol `{report.get('protocol', 'full')}`, ε = {report['eps']} "
           f"({report.get('norm', 'inf')}), {report['n']} test images. Worst case: an example "
           "counts as robust only if every attack and every forward pass left it correct; "
           "expected: its chosen adversarial point re-scored over independent passes, averaged "
           "(± standard error over examples).", "",
           "| model | clean | paper-protocol PGD | black-box | audited (worst case) | "
           "audited (expected) | prediction disagreement | sanity checks |",
           "|---|---|---|---|---|---|---|---|"]
  for name, row in report["rows"].items():
    failed = [c["check"] for c in row["sanity_checks"] if not c["passed"]]
    expected = row.get("expected", {}).get("robust")
    mean = "—" if expected is None else f"{expected['accuracy']:.1f} ± {expected['stderr']:.1f}"
    lines.append(f"| {name} | {row['clean']:.1f} | {_fmt(row['sanity_numbers']['whitebox'])} | "
                 f"{_fmt(row['sanity_numbers'].get('blackbox'))} | "
                 f"{row['audited_robust_accuracy']:.1f} | {mean} | "
                 f"{row['prediction_disagreement']:.1f} | "
                 f"{'all pass' if not failed else 'FAIL: ' + '; '.join(failed)} |")
  for name, row in report["rows"].items():
    lines += ["", f"## {name}", "", "| attack | examples attacked | accuracy on them | "
              "audited after |", "|---|---|---|---|"]
    for attack, a in row["attacks"].items():
      lines.append(f"| {attack} | {a['attacked']} | {_fmt(a['accuracy_on_attacked'])} | "
                   f"{a.get('audited_after', 0):.1f} |")
    lines += [""] + [f"- {'PASS' if c['passed'] else 'FAIL'}: {c['check']} ({c['detail']})"
                     for c in row["sanity_checks"]]
    if "diversity" in row:
      d = row["diversity"]
      lines.append(f"- directions of K = {d['num_draws']} test-time draws: ΩM {d['omega_m']:.3f} "
                   f"(1/K = {d['omega_m_independent']:.3f} if independent), posterior σ "
                   f"median {d['sigma_median']:.4f}")
  return "\n".join(lines) + "\n"


def audit_settings(n):
  """The audit's settings (one AuditSettings) from the flags, on the first ``n`` images."""
  from d3_tf.audit_inputs import AuditSettings  # pylint: disable=g-import-not-at-top
  return AuditSettings(protocol=_PROTOCOL.value, norm=_NORM.value, n=n,
                       eot=tuple(int(r) for r in _EOT.value), steps=_STEPS.value,
                       restarts=_RESTARTS.value, apgd_eot=_APGD_EOT.value,
                       square_queries=_SQUARE.value, passes=_PASSES.value,
                       sanity_n=_SANITY_N.value, seed=_SEED.value)


def per_example(row):
  """One record per audited image: robust (worst case), which attack broke it, expected."""
  return [{"robust": r, "broken_by": b, "expected": e, "expected_clean": c}
          for r, b, e, c in zip(row.pop("per_example_robust"), row.pop("per_example_broken_by"),
                                row.pop("per_example_expected"),
                                row.pop("per_example_expected_clean"))]


def main_model():
  """Audit of one saved model on the first --n test images of --dataset."""
  from d3_tf import advsets, audit, pipeline, training  # pylint: disable=g-import-not-at-top
  t0, provenance = time.time(), pipeline.provenance("audit")  # the code as the audit starts
  name = model_flags.name()
  out = common.writable(FLAGS.output_dir or os.path.join("results", "audit",
                                                         name.replace(".", "_")), "output_dir")
  model, x, y = model_flags.load(_N.value, "n")
  eps = _EPS.value if _EPS.value is not None else BENCHMARKS[FLAGS.dataset].eps
  report = pipeline.Report(os.path.join(out, "audit.json"), markdown, {"rows": {}}, header=dict(
      {"eps": eps, "n": len(x), "norm": _NORM.value, "protocol": _PROTOCOL.value,
       "model": FLAGS.model, "dataset": FLAGS.dataset}, **provenance))
  transfer = {}
  for path in _SETS.value or ():
    xa, ya, meta = advsets.load(path)
    if len(xa) < len(x):
      raise cfg.ConfigError(f"--sets {path}: {len(xa)} examples for --n={len(x)} images")
    transfer[meta.get("source", os.path.basename(path))] = (xa[:len(x)], ya[:len(x)])
  row = audit.run_audit(model, x, y, eps, audit_settings(len(x)), transfer_sets=transfer)
  row["per_example"] = per_example(row)
  if isinstance(model, training.D3Model) and model.bayesian:  # the mechanism: ΩM, σ
    row["diversity"] = audit.direction_diversity(model, x, y)
  row["transfer_sets"] = list(_SETS.value or ())
  row["provenance"] = {"wall_seconds": time.time() - t0, "seed": _SEED.value}
  report.put(("rows", name), row)
  return report.data, (report.path, report.markdown)


def main_rows():
  """Audit of trained table rows (their black-box sets as transfer attacks)."""
  from d3_tf import advsets, audit, pipeline  # pylint: disable=g-import-not-at-top
  table, settings, runner, methods, out = common.trained_rows()
  n = min(_N.value, len(runner.xe))
  x, y = runner.xe[:n], runner.ye[:n]
  eps = _EPS.value if _EPS.value is not None else settings.eps
  transfer = {}
  for path in sorted(glob.glob(os.path.join(runner.store.root, "sets", "blackbox_*.npz"))):
    xa, ya, meta = advsets.load(path)
    if len(xa) < n or meta.get("norm", "inf") != _NORM.value or meta.get("eps", eps) > eps:
      print(f"transfer set {os.path.basename(path)} (ε={meta.get('eps')}, "
            f"{meta.get('norm')}, {len(xa)} images) does not fit this audit: not used")
      continue
    transfer[meta["source"]] = (xa[:n], ya[:n])  # checked by run_audit, refused if it fails
  # Rows accumulate over runs (one --methods at a time resumes a long audit): each keeps its
  # own provenance; rows audited beside this run are kept.
  report = pipeline.Report(os.path.join(out, "audit.json"), markdown, {"rows": {}}, header=dict(
      {"eps": eps, "n": n, "norm": _NORM.value, "protocol": _PROTOCOL.value},
      **pipeline.provenance("audit")))
  by_name = {m.name: m for m in methods}

  def evaluate(name):
    print(f"auditing {name}")
    row_table = table["rows"].get(name, {})
    row = audit.run_audit(runner.train(by_name[name]), x, y, eps, audit_settings(n),
                          transfer_sets=transfer, whitebox=row_table.get("pgd"),
                          blackbox=row_table.get("blackbox"), draws_mode=settings.eval_draws())
    row["per_example"] = per_example(row)
    return row

  # A row is audited again when asked for (new flags, new code).
  pipeline.run_rows(report, list(by_name), lambda r: ("rows", r), evaluate, seed=_SEED.value,
                    redo=True)
  return report.data, (report.path, report.markdown)


FLAGS = flags.FLAGS


def main(argv):
  del argv
  report, paths = main_model() if FLAGS.model else main_rows()
  print(markdown(report))
  print(f"results: {', '.join(paths)}")


if __name__ == "__main__":
  common.run(main)
