"""Table 1 and Figures 1-2 of Bender et al. (2020): MNIST, L∞ ε = 0.3.

Rows CNN, BNN, BNN-Off, M, M-V, M-S, M-V-S, M-S-Off, M-V-S-Off (λM=20, λV=40, λS=40, K=10);
columns clean, FGSM, PGD-40 and black-box accuracy, each beside the paper's number.

  python -m experiments.mnist_table1 --preset smoke     # minutes, embedded MNIST slice
  python -m experiments.mnist_table1 --preset cpu       # a few hours on 2 CPU cores
  python -m experiments.mnist_table1 --preset paper     # 100 epochs, full data: GPU
"""
from absl import flags

from d3_tf import experiment, paper, tables
from experiments import common

BINARY = "mnist_table1"
common.define_table_flags(BINARY, "smoke: 256 embedded training images, 1 epoch, K=2, short "
                          "attacks (plumbing, minutes). cpu: 10k images, 5 epochs, K=10, PGD-40 "
                          "on 1,000 test images (a few hours on 2 cores). paper: 60k images, "
                          "100 epochs, full test set (GPU).")
_METHODS = flags.DEFINE_list("methods", None, "Rows to run, by the paper's shorthand "
                             f"(default all): {', '.join(experiment.TABLE_ROWS['mnist'])}.")
_BLACKBOX = flags.DEFINE_bool("blackbox", True, "Train surrogates and fill the black-box column.")


def main(argv):
  del argv
  flags_ = flags.FLAGS
  settings = common.settings_from_flags("mnist")
  methods = experiment.parse_methods(_METHODS.value or experiment.TABLE_ROWS["mnist"], "mnist")
  common.describe(settings, BINARY, len(methods), 60000)
  train, test = common.load_table_data(settings)
  out = common.output_dir(BINARY)
  _, figures = tables.run_accuracy_table(
      BINARY, flags_.preset, settings, methods, train, test, out, flags_.models_dir,
      paper.TABLE1, "Table 1 — MNIST, L∞ ε = 0.3", paper.TABLE1_CLEAN, _BLACKBOX.value,
      common.audit_kwargs())
  with open(f"{out}/table.md") as f:
    print(f.read())
  print(f"results: {out}/results.json, {out}/table.md" + "".join(f", {p}" for p in figures))


if __name__ == "__main__":
  common.run(main)
