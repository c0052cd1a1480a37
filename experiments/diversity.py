"""How diverse the trained rows' K input-gradient directions are (the D3 mechanism itself).

For each Bayesian row trained by mnist_table1 / cifar_table2: ΩM, ΩV and ΩS (Eq. 14, 17, 18 as
printed) of K fresh draws' unit input gradients on the first --n test images, whatever λ the
row was trained with, and the median / largest posterior σ. ΩM is 1 for identical directions
and 1/K for independent isotropic ones: a row whose robustness comes from diverse directions
should sit well below 1, and below the unpenalised BNN.

  python -m experiments.diversity --table mnist_table1 --preset cpu --methods BNN,M,M-S
"""
import os

from absl import flags

from d3_tf.settings import POSITIVE_INT, ConfigError
from experiments import common

common.define_trained_rows_flags(["BNN", "M", "M-V", "M-S", "M-V-S"])
_N = flags.DEFINE_integer("n", 200, "Test images (the first n of the table's slice).")
common.validate("n", POSITIVE_INT)


def markdown(report):
  lines = ["# Direction diversity", "",
           f"K = {report['num_draws']} fresh draws at test time, first {report['n']} test images; "
           f"Ω as printed (Eq. 14, 17, 18). ΩM = 1: identical directions; ΩM = "
           f"{1 / report['num_draws']:.2f} (1/K): independent isotropic directions.", "",
           "| method | ΩM | ΩV | ΩS | posterior σ median | σ max |", "|---|---|---|---|---|---|"]
  for name, row in report["rows"].items():
    lines.append(f"| {name} | {row['omega_m']:.3f} | {row['omega_v']:.2e} | "
                 f"{row['omega_s']:.2f} | {row['sigma_median']:.4f} | {row['sigma_max']:.4f} |")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  from d3_tf import audit, pipeline  # pylint: disable=g-import-not-at-top
  _, _, runner, methods, out = common.trained_rows()
  deterministic = [m.name for m in methods if not m.bayesian]
  if deterministic:
    raise ConfigError(f"rows {deterministic} have no weight draws; pick Bayesian rows")
  n = min(_N.value, len(runner.xe))
  report = pipeline.Report(os.path.join(out, "diversity.json"), markdown, {"rows": {}},
                           header=dict(n=n, num_draws=runner.s.num_draws,
                                       **pipeline.provenance("diversity")))
  by_name = {m.name: m for m in methods}

  def measure(name):
    print(f"measuring {name}")
    return audit.direction_diversity(runner.train(by_name[name]), runner.xe[:n], runner.ye[:n])

  pipeline.run_rows(report, list(by_name), lambda r: ("rows", r), measure,
                    seed=runner.s.seed, redo=True)
  print(markdown(report.data))
  print(f"results: {report.path}, {report.markdown}")


if __name__ == "__main__":
  common.run(main)
