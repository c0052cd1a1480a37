"""Times D3 training steps and one attack step; prints ratios measured in ONE run.

  python -m benchmarks.train_step                 # MNIST CNN, batch 64
  python -m benchmarks.train_step --vgg16         # also VGG16 (slow on CPU: 10-40 s/step)

Each configuration runs in its own subprocess so its peak memory (max RSS) is its own.
Times are the median of --steps warm steps after --warmup steps (tracing excluded).
"""
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags

_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps per configuration (median reported).")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps first (tracing, caches).")
_VGG16 = flags.DEFINE_bool("vgg16", False, "Also time VGG16 (batch 32; slow on CPU).")
_ONE = flags.DEFINE_string("one", None, "Internal: run one configuration (JSON) and print JSON.")

CONFIGS = {
    "mnist": dict(arch="mnist_cnn", batch=64, shape=(28, 28, 1), width=1.0),
    "vgg16": dict(arch="vgg16", batch=32, shape=(32, 32, 3), width=1.0),
}


def _median_time(fn, steps, warmup):
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def run_one(cfg):
  """Builds the model for one configuration and times it (in this process)."""
  import d3_tf  # pylint: disable=g-import-not-at-top  (first: it selects Keras 2)
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tf_keras  # pylint: disable=g-import-not-at-top
  from d3_tf import attacks  # pylint: disable=g-import-not-at-top

  base = CONFIGS[cfg["model"]]
  rng = np.random.default_rng(0)
  x = tf.constant(rng.uniform(size=(base["batch"],) + base["shape"]).astype(np.float32))
  y = tf.constant(rng.integers(0, 10, size=base["batch"]))
  lam = 1.0 if cfg["penalties"] else 0.0
  model = d3_tf.build(base["arch"], num_draws=cfg["k"], lambda_m=lam, lambda_v=lam, lambda_s=lam,
                      arch_kwargs={"width": base["width"]} if base["arch"] == "vgg16" else None)
  if cfg["kind"] == "train":
    model.compile(optimizer=tf_keras.optimizers.Adam(1e-3))
    step = tf.function(model.train_step)
    seconds = _median_time(lambda: step((x, y)), cfg["steps"], cfg["warmup"])
  else:
    est = attacks.classifier(model, trunk_once=cfg["kind"] == "attack")
    attack = attacks.pgd(est, 0.3, 0.01, max_iter=1)
    xn, yn = x.numpy(), np.eye(10, dtype=np.float32)[y.numpy()]
    seconds = _median_time(lambda: attack.generate(xn, y=yn), cfg["steps"], cfg["warmup"])
  peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  return {"seconds": seconds, "images_per_s": base["batch"] / seconds, "peak_mb": peak_mb}


def main(argv):
  del argv
  if _ONE.value:
    print("RESULT " + json.dumps(run_one(json.loads(_ONE.value))))
    return
  models = ["mnist"] + (["vgg16"] if _VGG16.value else [])
  rows = [("K=1 train", dict(kind="train", k=1, penalties=False)),
          ("K=10 BNN train (no penalties)", dict(kind="train", k=10, penalties=False)),
          ("K=10 D3 train (M,V,S), loop", dict(kind="train", k=10, penalties=True)),
          ("K=10 PGD step (ART), trunk once", dict(kind="attack", k=10, penalties=False)),
          ("K=10 PGD step (ART), K full passes", dict(kind="attack_full", k=10,
                                                      penalties=False))]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  for name in models:
    res = {}
    steps = _STEPS.value if name == "mnist" else max(3, _STEPS.value // 3)
    print(f"\n{name} (batch {CONFIGS[name]['batch']}), median of {steps} warm steps")
    print(f"{'configuration':40s} {'ms/step':>10s} {'images/s':>10s} {'peak MB':>9s}")
    for label, cfg in rows:
      cfg = dict(cfg, model=name, steps=steps, warmup=_WARMUP.value)
      proc = subprocess.run([sys.executable, "-m", "benchmarks.train_step", "--one",
                             json.dumps(cfg)], capture_output=True, text=True, env=env,
                            check=False)
      line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
      if not line:
        print(f"{label:40s} failed: {proc.stderr.strip().splitlines()[-1:]}")
        continue
      r = res[label] = json.loads(line[0][7:])
      print(f"{label:40s} {1000 * r['seconds']:10.1f} {r['images_per_s']:10.1f} "
            f"{r['peak_mb']:9.0f}")
    if len(res) == len(rows):
      k1, bnn, d3, once, full = (res[l]["seconds"] for l, _ in rows)
      print(f"{name} K=10 D3/K=1: {d3 / k1:.1f}x, K=10 D3/BNN: {d3 / bnn:.1f}x, "
            f"BNN K=10/K=1: {bnn / k1:.1f}x, attack full/trunk-once: {full / once:.1f}x")


if __name__ == "__main__":
  app.run(main)
