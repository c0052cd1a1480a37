"""The verdict table and figures over every study grid (and chosen table runs).

Reads results/study/<grid>/results.json for every grid run so far (and the results.json of
each --tables folder), averages each configuration's seeds and writes <output_dir>/verdict.md:
for each dataset (MNIST against the paper's Table 1, CIFAR-10 against Table 2) the paper's
white-box claims, the best PGD accuracy any configuration reached at ≥ --clean_min % clean and
at ≥ --clean_near %, its audited accuracy, then every configuration; and one figure per dataset,
verdict_<dataset>.png (PGD and audited accuracy against ΩM over its configurations).

  python -m experiments.verdict
  python -m experiments.verdict --tables results/mnist_table1/cpu,results/cifar_table2/verdict
"""
import glob
import os

from absl import flags

from d3_tf import settings as cfg
from d3_tf import store, study, verdict
from d3_tf.benchmark import BENCHMARKS
from experiments import common

_STUDY_DIR = flags.DEFINE_string("study_dir", os.path.join("results", "study"),
                                 "Folder holding one subfolder per study grid.")
_TABLES = flags.DEFINE_list("tables", [], "Table output folders to include (mnist_table1, "
                            "cifar_table2).")
_FLOORS = ", ".join(f"{b.title} {b.claim_floors[0]:g}" for b in BENCHMARKS.values())
_CLEAN_MIN = flags.DEFINE_float("clean_min", None, "Clean accuracy (%) a configuration needs "
                                f"to count for a claim (default: the dataset's, {_FLOORS}).")
_CLEAN_NEAR = flags.DEFINE_float(
    "clean_near", None, "A second, lower floor: the claims table again for configurations that "
    "trade clean accuracy for robustness (not shown when ≥ --clean_min; default: the "
    "dataset's, " + ", ".join(f"{b.title} {b.claim_floors[1]:g}" for b in BENCHMARKS.values())
    + ").")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Default: <study_dir>/verdict.")
for _name in ("clean_min", "clean_near"):
  common.validate(_name, (lambda v: 0 <= v <= 100, "in [0, 100]"))


def dataset_of(path, results):
  """The dataset a results.json measured: a table run's settings, else its study grid's."""
  if "settings" in results:
    return results["settings"]["dataset"]
  grid = study.GRIDS.get(results.get("grid") or os.path.basename(os.path.dirname(path)))
  if grid is None:
    raise cfg.ConfigError(f"{path}: neither a table run nor a study grid's results")
  return grid.dataset


def main(argv):
  del argv
  from d3_tf import plots  # pylint: disable=g-import-not-at-top
  paths = sorted(glob.glob(os.path.join(_STUDY_DIR.value, "*", "results.json")))
  paths += [os.path.join(t, "results.json") for t in _TABLES.value]
  found = {}  # {dataset: entries}
  for path in paths:
    results = store.read_json(path)
    if results is None:
      raise cfg.ConfigError(f"no results.json in {os.path.dirname(path)}")
    found.setdefault(dataset_of(path, results), []).extend(
        verdict.entries(os.path.basename(os.path.dirname(path)), results))
  if not any(found.values()):
    raise cfg.ConfigError(f"no study results under {_STUDY_DIR.value}; run "
                          "python -m experiments.study first")
  out = _OUTPUT_DIR.value or os.path.join(_STUDY_DIR.value, "verdict")
  os.makedirs(out, exist_ok=True)
  sections, figures = [], []
  for bench in (b for b in BENCHMARKS.values() if found.get(b.name)):
    agg = verdict.aggregate(found[bench.name])
    sections.append(verdict.section(agg, bench, _CLEAN_MIN.value, _CLEAN_NEAR.value,
                                    verdict.cost(found[bench.name])))
    figures.append(plots.figure_diversity(
        verdict.diversity_points(agg), os.path.join(out, f"verdict_{bench.name}.png"),
        title=bench.title))
  text = verdict.markdown(sections)
  store.atomic_write(os.path.join(out, "verdict.md"), text)
  print(text)
  print(f"verdict: {os.path.join(out, 'verdict.md')}" + "".join(f", {f}" for f in figures if f))


if __name__ == "__main__":
  common.run(main, tensorflow=False)
