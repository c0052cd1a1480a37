"""Figures 1-3 of Bender et al. (2020) from the table binaries' results.json files.

Figure 1: per-epoch FGSM / PGD accuracy during MNIST training (mnist_table1 logs it).
Figure 2: MNIST PGD-40 accuracy versus L∞ and L2 budget (mnist_table1 sweeps).
Figure 3: the same on CIFAR-10 (cifar_table2 sweeps).
With --study <grid>: Figure 1 of a verdict-study grid from its rows' epoch logs, those still
training included (results/study/<grid>/figure1.png; the `full` grid beside the paper's Table 1).

  python -m experiments.figures --preset smoke
  python -m experiments.figures --study full
"""
import os

from absl import flags

from d3_tf import plots, store, study
from d3_tf.presets import PRESETS
from d3_tf.settings import ConfigError
from experiments import common

_PRESET = flags.DEFINE_enum("preset", "quick", sorted({p for _, p in PRESETS}),
                            "Which results to plot (sets the default directories).")
_MNIST_DIR = flags.DEFINE_string("mnist_dir", None,
                                 "mnist_table1 output (default results/mnist_table1/<preset>).")
_CIFAR_DIR = flags.DEFINE_string("cifar_dir", None,
                                 "cifar_table2 output (default results/cifar_table2/<preset>).")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None,
                                  "Where the PNGs go (default results/figures/<preset>; with "
                                  "--study, the grid's folder).")
_STUDY = flags.DEFINE_enum("study", None, list(study.GRIDS), "Draw Figure 1 of this study grid "
                           "(results/study/<grid>, its kept models' epoch logs) instead.")


def main_study(grid):
  folder = os.path.join("results", "study", grid)
  results = store.read_json(os.path.join(folder, "results.json"), {"configs": {}})
  rows_dir = os.path.join(folder, "models")
  if not os.path.isdir(rows_dir):
    rows_dir = os.path.join("results", "models")
  out = common.writable(_OUTPUT_DIR.value or folder, "output_dir")
  made = study.figure1(results, study.grid(grid), study.GRIDS[grid].base(), rows_dir,
                       os.path.join(out, "figure1.png"))
  print(f"figure: {made}" if made else f"figure: none (no epoch logs under {rows_dir})")


def main(argv):
  del argv
  if _STUDY.value:
    return main_study(_STUDY.value)
  preset = _PRESET.value
  mnist_dir = _MNIST_DIR.value or os.path.join("results", "mnist_table1", preset)
  cifar_dir = _CIFAR_DIR.value or os.path.join("results", "cifar_table2", preset)
  out = _OUTPUT_DIR.value or os.path.join("results", "figures", preset)
  made = []
  mnist = store.read_json(os.path.join(mnist_dir, "results.json"))
  cifar = store.read_json(os.path.join(cifar_dir, "results.json"))
  if mnist is None and cifar is None:
    raise ConfigError(f"no results.json in {mnist_dir} or {cifar_dir}; run "
                      f"python -m experiments.mnist_table1 --preset {preset} first")
  os.makedirs(out, exist_ok=True)
  if mnist:
    made.append(plots.figure1(mnist, os.path.join(out, "figure1.png"), mnist["settings"]["eps"]))
    made.append(plots.figure_budgets(mnist, os.path.join(out, "figure2.png"), "MNIST"))
  if cifar:
    made.append(plots.figure_budgets(cifar, os.path.join(out, "figure3.png"), "CIFAR-10"))
  made = [m for m in made if m]
  print("figures: " + (", ".join(made) if made else "none (the results hold no epoch logs "
                       "or sweeps)"))


if __name__ == "__main__":
  common.run(main, tensorflow=False)
