"""Black-box (transfer) accuracy of a saved model on saved adversarial sets: evaluation only.

Re-scores a trained model's black-box column with other surrogates' sets, e.g. the strong
MadryLab-style surrogates of `mnist_table1 --preset robust`, without retraining anything:

  python -m experiments.blackbox --model results/study/long/models/<hash>/M/final/weights.index \\
      --arch mnist_cnn --bayesian --estimator reparam_conv --name M \\
      --sets results/mnist_table1/robust/models/<hash>/sets/blackbox_madry_natural_1000.npz,... \\
      --output_dir results/study/long/blackbox_strong

Every set is checked against the first n test images of --dataset (shape, labels, [0, 1], the
ε-ball of its own metadata) and refused in one line otherwise. The model is evaluated as the
tables evaluate it (a Bayesian head: the K-draw logit average, on a seeded stream of draws).
The report (blackbox.json / blackbox.md in --output_dir) keeps the rows of earlier runs.
"""
import os
import time

from absl import flags

from d3_tf import settings as cfg
from experiments import common, model_flags

model_flags.define("The model to evaluate")
flags.mark_flag_as_required("model")
_SETS = flags.DEFINE_list("sets", None, "Adversarial sets (.npz written by the table binaries: "
                          "x, y and their metadata), comma-separated.")
flags.mark_flag_as_required("sets")
flags.register_validator("sets", lambda v: v is None or all(os.path.isfile(p) for p in v),
                         message="must be existing .npz files")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where blackbox.json / blackbox.md go "
                                  "(default: results/blackbox/<name>).")
_N_CLEAN = flags.DEFINE_integer("n_clean", 0, "Test images of the clean accuracy (0 = the sets' "
                                "images).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the Bayesian head's weight draws.")
common.validate("seed", cfg.COUNT)
common.validate("n_clean", cfg.COUNT)

FLAGS = flags.FLAGS


def markdown(report):
  sources = sorted({s for row in report["rows"].values() for s in row["per_set"]})
  lines = ["# Black-box accuracy on saved transfer sets", "",
           "Accuracy (%) on each surrogate's PGD examples of the first test images; "
           "*black-box* is the lowest, as in the tables.", "",
           "| model | clean (test images) | " + " | ".join(sources) + " | black-box |",
           "|---" * (3 + len(sources)) + "|"]
  for name, row in report["rows"].items():
    cells = [f"{row['per_set'][s]:.1f}" if s in row["per_set"] else "—" for s in sources]
    lines.append(f"| {name} | {row['clean']:.1f} ({row.get('n_clean', row['n'])}) | "
                 + " | ".join(cells) + f" | {row['blackbox']:.1f} |")
  lines += ["", "Sets (surrogate: its clean accuracy / its accuracy on its own set, images):"]
  for source, meta in sorted(report["sets"].items()):
    lines.append(f"- {source}: {meta.get('source_clean_accuracy', float('nan')):.1f} / "
                 f"{meta.get('source_adversarial_accuracy', float('nan')):.1f}%, "
                 f"{meta['n']} images, PGD-{meta.get('max_iter')} × {meta.get('eps_step')} at "
                 f"ε = {meta['eps']} ({meta.get('norm', 'inf')}), from `{meta['path']}`")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from d3_tf import advsets, attacks, audit, pipeline, training  # pylint: disable=g-import-not-at-top
  t0 = time.time()
  out = common.writable(_OUTPUT_DIR.value or os.path.join("results", "blackbox",
                                                          model_flags.name()), "output_dir")
  sets = [(path,) + advsets.load(path) for path in FLAGS.sets]
  n = min(len(xa) for _, xa, _, _ in sets)
  n_clean = _N_CLEAN.value or n
  model, xc, yc = model_flags.load(max(n, n_clean), "n_clean")
  x, y = xc[:n], yc[:n]
  tf.keras.utils.set_random_seed(_SEED.value)
  if isinstance(model, training.D3Model):
    est = attacks.classifier(model, seed=_SEED.value)
  else:
    est = audit.Target(model).estimator()
  row = {"clean": attacks.accuracy_on(est, xc[:n_clean], yc[:n_clean]), "n_clean": n_clean,
         "n": n, "per_set": {}, "model": FLAGS.model}
  metas = {}
  for path, xa, ya, meta in sets:
    source = meta.get("source", os.path.basename(path))
    audit.check_transfer_set(source, x, y, xa[:n], ya[:n], meta["eps"], meta.get("norm", "inf"))
    row["per_set"][source] = attacks.accuracy_on(est, xa[:n], ya[:n])
    metas[source] = dict(meta, path=path)
    print(f"{model_flags.name()}: {row['per_set'][source]:.1f}% on {source}'s {n} examples")
  row["blackbox"] = min(row["per_set"].values())
  report = pipeline.Report(os.path.join(out, "blackbox.json"), markdown, {"rows": {}, "sets": {}},
                           header={"versions": pipeline.versions()})
  row.update(command=pipeline.command("blackbox"), git_commit=pipeline.git_commit(),
             seed=_SEED.value, wall_seconds=time.time() - t0)
  for source, meta in metas.items():
    report.set(("sets", source), meta)
  report.put(("rows", model_flags.name()), row)
  print(markdown(report.data))
  print(f"results: {report.path}, {report.markdown}")


if __name__ == "__main__":
  common.run(main)
