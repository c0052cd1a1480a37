"""Robustness audit of trained table rows: adaptive attacks and sanity checks.

Takes rows trained by mnist_table1 / cifar_table2 (same --preset, or --results_dir) and runs
EOT-PGD (R fresh weight draws per gradient), APGD-CE/APGD-DLR with EOT through ART's
AutoAttack, the Square attack, and transfer from the posterior-mean network and the black-box
surrogates, as a per-example worst case: the "audited robust accuracy". Sanity checks
(accuracy 0% at ε=1, monotone in ε and steps, white-box ≤ black-box) print pass/fail.

  python -m experiments.audit --table mnist_table1 --preset cpu --methods M-S
"""
import glob
import os

import numpy as np
from absl import flags

from d3_tf import settings as cfg
from d3_tf import store
from experiments import common

common.define_trained_rows_flags(["M-S"])
_N = flags.DEFINE_integer("n", 1000, "Test images audited (the first n of the table's slice).")
_EPS = flags.DEFINE_float("eps", None, "L∞ budget (default: the table's ε).")
_EOT = flags.DEFINE_list("eot", ["1", "10"], "EOT sample counts R for EOT-PGD, e.g. 1,10,20,50.")
_STEPS = flags.DEFINE_integer("steps", 100, "Iterations of EOT-PGD and APGD.")
_RESTARTS = flags.DEFINE_integer("restarts", 5, "Random restarts of EOT-PGD and APGD.")
_APGD_EOT = flags.DEFINE_integer("apgd_eot", 10, "EOT samples R of APGD-CE / APGD-DLR.")
_SQUARE = flags.DEFINE_integer("square_queries", 1000, "Square attack queries (0 = skip).")
_SANITY_N = flags.DEFINE_integer("sanity_n", 100, "Images used by the sanity checks.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of random starts and restarts.")


def markdown(report):
  lines = ["# Robustness audit", "",
           f"Per-example worst case over every attack (lower is stronger). ε = {report['eps']}, "
           f"{report['n']} test images.", "",
           "| method | clean | paper-protocol PGD | black-box | audited | prediction "
           "disagreement | sanity checks |", "|---|---|---|---|---|---|---|"]
  for name, row in report["rows"].items():
    failed = [c["check"] for c in row["sanity_checks"] if not c["passed"]]
    bb = row["sanity_numbers"].get("blackbox")
    lines.append(f"| {name} | {row['clean']:.1f} | {row['sanity_numbers']['whitebox']:.1f} | "
                 f"{'—' if bb is None else f'{bb:.1f}'} | {row['audited_robust_accuracy']:.1f} "
                 f"| {row['prediction_disagreement']:.1f} | "
                 f"{'all pass' if not failed else 'FAIL: ' + '; '.join(failed)} |")
  for name, row in report["rows"].items():
    lines += ["", f"## {name}", "", "| attack | examples attacked | accuracy on them | "
              "audited after |", "|---|---|---|---|"]
    for attack, a in row["attacks"].items():
      acc = "—" if a["accuracy_on_attacked"] is None else f"{a['accuracy_on_attacked']:.1f}"
      lines.append(f"| {attack} | {a['attacked']} | {acc} | {a.get('audited_after', 0):.1f} |")
    lines += [""] + [f"- {'PASS' if c['passed'] else 'FAIL'}: {c['check']} ({c['detail']})"
                     for c in row["sanity_checks"]]
  return "\n".join(lines) + "\n"


for _name in ("n", "steps", "restarts", "apgd_eot", "sanity_n"):
  common.validate(_name, cfg.POSITIVE_INT)
common.validate("square_queries", cfg.COUNT)
common.validate("seed", cfg.COUNT)
common.validate("eps", cfg.RULES["eps"])
common.validate("eot", common.int_list(1))


def main(argv):
  del argv
  from d3_tf import advsets, audit  # pylint: disable=g-import-not-at-top
  eot = tuple(int(r) for r in _EOT.value)
  table, settings, runner, methods, out = common.trained_rows()
  n = min(_N.value, len(runner.xe))
  x, y = runner.xe[:n], runner.ye[:n]
  transfer = {}
  for path in sorted(glob.glob(os.path.join(runner.root, "sets", "blackbox_*.npz"))):
    xa, ya, meta = advsets.load(path)
    if len(xa) >= n and np.array_equal(ya[:n], y):
      transfer[meta["source"]] = xa[:n]
  report = store.read_json(os.path.join(out, "audit.json"), {"rows": {}})
  eps = _EPS.value if _EPS.value is not None else settings.eps
  report.update({"eps": eps, "n": n})
  for method in methods:
    row_table = table["rows"].get(method.name, {})
    print(f"auditing {method.name}")
    report["rows"][method.name] = audit.run_audit(
        runner.train(method), x, y, eps, eot=eot, steps=_STEPS.value, restarts=_RESTARTS.value,
        apgd_eot=_APGD_EOT.value, square_queries=_SQUARE.value, transfer_sets=transfer,
        seed=_SEED.value, sanity_n=_SANITY_N.value, whitebox=row_table.get("pgd"),
        blackbox=row_table.get("blackbox"), draws_mode=settings.eval_draws())
    paths = common.write_report(out, "audit", report, markdown)
  print(markdown(report))
  print(f"results: {', '.join(paths)}")


if __name__ == "__main__":
  common.run(main)
