"""Table 2 and Figure 3 of Bender et al. (2020): CIFAR-10 VGG16, L∞ ε = 0.03.

Rows VGG16, BVGG16, BVGG16-Off, M, M-V, M-S, M-V-S, M-S-Off, M-V-S-Off (λM=10, λS=20 as in
Sec. 5.4; λV=40 as on MNIST, since the paper reports V rows without giving λV); columns
Std. (clean), FGSM, PGD (40 steps of 0.001) and black-box, each beside the paper's number.

  python -m experiments.cifar_table2 --preset smoke   # tiny VGG, 128 images: plumbing only
  python -m experiments.cifar_table2 --preset cpu     # reduced VGG16 (1/4 width), hours
  python -m experiments.cifar_table2 --preset paper   # full VGG16, 50k images: GPU work
"""
from absl import flags

from d3_tf import experiment, paper, tables
from experiments import common

BINARY = "cifar_table2"
common.define_table_flags(BINARY, "smoke: VGG16 at 1/16 width on 128 images, 1 epoch, K=2 "
                          "(plumbing only). cpu: HONESTLY REDUCED - VGG16 at 1/4 width, 5k "
                          "images, 3 epochs, 200 attacked images. paper: full VGG16, 50k images, "
                          "100 epochs, full test set (GPU).")
_METHODS = flags.DEFINE_list("methods", None, "Rows to run, by the paper's shorthand "
                             f"(default all): {', '.join(experiment.TABLE_ROWS['cifar10'])}.")
_BLACKBOX = flags.DEFINE_bool("blackbox", True, "Train a surrogate VGG16 and fill the "
                              "black-box column.")


def main(argv):
  del argv
  settings = common.settings_from_flags("cifar10")
  methods = experiment.parse_methods(_METHODS.value or experiment.TABLE_ROWS["cifar10"],
                                     "cifar10")
  common.describe(settings, BINARY, len(methods), 50000)
  train, test = common.load_table_data(settings)
  out = common.output_dir(BINARY)
  _, figures = tables.run_accuracy_table(
      BINARY, flags.FLAGS.preset, settings, methods, train, test, out, flags.FLAGS.models_dir,
      paper.TABLE2, "Table 2 — CIFAR-10, L∞ ε = 0.03", None, _BLACKBOX.value,
      common.audit_kwargs())
  with open(f"{out}/table.md") as f:
    print(f.read())
  print(f"results: {out}/results.json, {out}/table.md" + "".join(f", {p}" for p in figures))


if __name__ == "__main__":
  common.run(main)
