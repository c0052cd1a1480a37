"""The verdict table and figure over every study grid (and chosen table runs).

Reads results/study/<grid>/results.json for every grid run so far (and the results.json of
each --tables folder), averages each configuration's seeds and writes
<output_dir>/verdict.md (the paper's white-box claims, the best PGD accuracy any configuration
reached at ≥ --clean_min % clean and at ≥ --clean_near %, its audited accuracy; then every
configuration) and verdict.png (PGD and audited accuracy against ΩM over all configurations).

  python -m experiments.verdict
  python -m experiments.verdict --tables results/mnist_table1/cpu
"""
import glob
import os

from absl import flags

from d3_tf import settings as cfg
from d3_tf import store, verdict
from experiments import common

_STUDY_DIR = flags.DEFINE_string("study_dir", os.path.join("results", "study"),
                                 "Folder holding one subfolder per study grid.")
_TABLES = flags.DEFINE_list("tables", [], "Table output folders to include (mnist_table1).")
_CLEAN_MIN = flags.DEFINE_float("clean_min", 97.0, "Clean accuracy (%) a configuration needs "
                                "to count for a claim.")
_CLEAN_NEAR = flags.DEFINE_float("clean_near", 90.0, "A second, lower floor: the claims table "
                                 "again for configurations that trade clean accuracy for "
                                 "robustness (not shown when ≥ --clean_min).")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Default: <study_dir>/verdict.")
for _name in ("clean_min", "clean_near"):
  common.validate(_name, (lambda v: 0 <= v <= 100, "in [0, 100]"))


def main(argv):
  del argv
  from d3_tf import plots  # pylint: disable=g-import-not-at-top
  paths = sorted(glob.glob(os.path.join(_STUDY_DIR.value, "*", "results.json")))
  paths += [os.path.join(t, "results.json") for t in _TABLES.value]
  found = []
  for path in paths:
    results = store.read_json(path)
    if results is None:
      raise cfg.ConfigError(f"no results.json in {os.path.dirname(path)}")
    found += verdict.entries(os.path.basename(os.path.dirname(path)), results)
  if not found:
    raise cfg.ConfigError(f"no study results under {_STUDY_DIR.value}; run "
                          "python -m experiments.study first")
  agg = verdict.aggregate(found)
  out = _OUTPUT_DIR.value or os.path.join(_STUDY_DIR.value, "verdict")
  os.makedirs(out, exist_ok=True)
  text = verdict.markdown(agg, _CLEAN_MIN.value, _CLEAN_NEAR.value, verdict.cost(found))
  store.atomic_write(os.path.join(out, "verdict.md"), text)
  figure = plots.figure_diversity(verdict.diversity_points(agg),
                                  os.path.join(out, "verdict.png"))
  print(text)
  print(f"verdict: {os.path.join(out, 'verdict.md')}" + (f", {figure}" if figure else ""))


if __name__ == "__main__":
  common.run(main, tensorflow=False)
