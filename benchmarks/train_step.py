"""Times D3 training steps and PGD steps; prints ratios measured in ONE run.

  python -m benchmarks.train_step                 # MNIST CNN, batch 64
  python -m benchmarks.train_step --vgg16         # also VGG16 (batch 32; 10-60 s/step on CPU)

Training rows (K=10, all three penalties):
  K full passes  the whole network per draw (the literal reading of "K passes");
  loop           the reference ``draws_mode="loop"``: trunk once, head K times, K
                 backward passes for the K input gradients;
  vectorized     ``draws_mode="vectorized"``: K weight samples per layer in one batched
                 computation, one head backward, one batched trunk VJP.
  subsampled     the penalties on 16 examples of the batch (``penalty_examples``; CE and
                 KL on the whole batch), with loop and with vectorized draws; the ratio
                 line uses the faster of the two.
Attack rows: one PGD step through the ART wrapper with K=10 logit averaging, trunk once
(loop and vectorized heads) versus K full passes. Evaluation rows: the table's white-box
columns (clean, FGSM, PGD-40 at the dataset's ε) on --eval_n images with K=10, with loop
draws and with the default evaluation draws (``settings.FASTEST_EVAL_DRAWS``), timed whole
after an untraced warm-up on a few images.

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

from d3_tf.settings import FASTEST_EVAL_DRAWS

_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps per configuration (median reported; "
                              "VGG16 uses a third of them, at least 3).")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps first (tracing, caches).")
_VGG16 = flags.DEFINE_bool("vgg16", False, "Also time VGG16 (batch 32; slow on CPU).")
_VGG_WIDTH = flags.DEFINE_float("vgg_width", 1.0, "Channel multiplier of the timed VGG16.")
_PROFILE = flags.DEFINE_bool("profile", False, "Also profile one warm step of each row (TF "
                             "profiler) and print its top ops by summed op time.")
_EVAL_N = flags.DEFINE_integer("eval_n", 1000, "Test-sized images of the MNIST evaluation rows "
                               "(VGG16 uses --eval_n_vgg).")
_EVAL_N_VGG = flags.DEFINE_integer("eval_n_vgg", 32, "Images of the VGG16 evaluation rows.")
_ROWS = flags.DEFINE_multi_string("rows", None, "Only these rows, by their full label; "
                                  "repeat the flag, e.g. --rows 'K=1 train' --rows 'K=10 D3 "
                                  "train, loop' (labels contain commas; default: all rows).")
_MODELS = flags.DEFINE_list("models", None, "Models to time (default: mnist, plus vgg16 "
                            "with --vgg16), e.g. --models vgg16.")
_ONE = flags.DEFINE_string("one", None, "Internal: run one configuration (JSON) and print JSON.")

CONFIGS = {
    "mnist": dict(arch="mnist_cnn", batch=64, shape=(28, 28, 1), eps=0.3, step=0.01),
    "vgg16": dict(arch="vgg16", batch=32, shape=(32, 32, 3), eps=0.03, step=0.001),
}
flags.register_validator("models", lambda v: v is None or set(v) <= set(CONFIGS),
                         f"must be a subset of {', '.join(CONFIGS)}")
SUBSAMPLED = ("K=10 D3 train, loop, penalties on 16",
              "K=10 D3 train, vectorized, penalties on 16")
EVAL_LOOP, EVAL_DEFAULT = "PGD-40 eval, loop draws", "PGD-40 eval, default draws"
ROWS = [("K=1 train", dict(kind="train", k=1, penalties=False)),
        ("K=10 D3 train, K full passes", dict(kind="train_full", k=10, penalties=True)),
        ("K=10 D3 train, loop", dict(kind="train", k=10, penalties=True)),
        ("K=10 D3 train, vectorized", dict(kind="train", k=10, penalties=True,
                                           mode="vectorized")),
        (SUBSAMPLED[0], dict(kind="train", k=10, penalties=True, penalty_examples=16)),
        (SUBSAMPLED[1], dict(kind="train", k=10, penalties=True, penalty_examples=16,
                             mode="vectorized")),
        ("K=10 PGD step, K full passes", dict(kind="attack_full", k=10, penalties=False)),
        ("K=10 PGD step, trunk once (loop)", dict(kind="attack", k=10, penalties=False)),
        ("K=10 PGD step, trunk once (vectorized)", dict(kind="attack", k=10, penalties=False,
                                                        mode="vectorized")),
        (EVAL_LOOP, dict(kind="eval", k=10, penalties=False, mode="loop")),
        (EVAL_DEFAULT, dict(kind="eval", k=10, penalties=False, mode="default"))]
flags.register_validator("rows", lambda v: v is None or set(v) <= {label for label, _ in ROWS},
                         "must be row labels as printed, e.g. 'K=1 train'")


def _median_time(fn, steps, warmup):
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def _full_passes_model(arch, arch_kwargs, **kwargs):
  """A D3Model whose K draws each run the WHOLE network (trunk included)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from d3_tf import models, penalties, training  # pylint: disable=g-import-not-at-top

  def full_passes(model, x, y, training_, noise, directions):
    del noise, directions
    with tf.GradientTape(persistent=True) as tape:
      tape.watch(x)
      logits = [model.head(model.trunk(x, training=training_), training=training_)
                for _ in range(model.num_draws)]
      sums = [penalties.summed_outputs(l, y, model.y_mode) for l in logits]
    return tf.stack(logits), penalties.unit_gradients(tape, sums, x)

  class FullPasses(training.D3Model):
    engines = {"loop": full_passes}

  model = FullPasses(*models.ARCHITECTURES[arch](**(arch_kwargs or {})), **kwargs)
  model(tf.zeros((1,) + tuple(model.trunk.input_shape[1:])))
  return model


def run_one(cfg):
  """Builds the model for one configuration and times it (in this process)."""
  import d3_tf  # pylint: disable=g-import-not-at-top  (first: it selects Keras 2)
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tf_keras  # pylint: disable=g-import-not-at-top
  from d3_tf import attacks  # pylint: disable=g-import-not-at-top

  base = CONFIGS[cfg["model"]]
  if cfg["kind"] == "eval":
    return _run_eval(cfg, base)
  rng = np.random.default_rng(0)
  x = tf.constant(rng.uniform(size=(base["batch"],) + base["shape"]).astype(np.float32))
  y = tf.constant(rng.integers(0, 10, size=base["batch"]))
  lam = 1.0 if cfg["penalties"] else 0.0
  arch_kwargs = {"width": cfg["width"]} if base["arch"] == "vgg16" else None
  kwargs = dict(num_draws=cfg["k"], lambda_m=lam, lambda_v=lam, lambda_s=lam)
  if cfg["kind"] == "train_full":
    model = _full_passes_model(base["arch"], arch_kwargs, **kwargs)
  else:
    model = d3_tf.build(base["arch"], arch_kwargs=arch_kwargs,
                        draws_mode=cfg.get("mode", "loop"),
                        penalty_examples=cfg.get("penalty_examples", 0), **kwargs)
  if cfg["kind"].startswith("train"):
    model.compile(optimizer=tf_keras.optimizers.Adam(1e-3))
    step = tf.function(model.train_step)
    seconds = _median_time(lambda: step((x, y)), cfg["steps"], cfg["warmup"])
    if cfg.get("profile"):
      result_ops = _profile(lambda: step((x, y)))
  else:
    est = attacks.classifier(model, trunk_once=cfg["kind"] == "attack")
    attack = attacks.pgd(est, 0.3, 0.01, max_iter=1)
    xn, yn = x.numpy(), np.eye(10, dtype=np.float32)[y.numpy()]
    seconds = _median_time(lambda: attack.generate(xn, y=yn), cfg["steps"], cfg["warmup"])
    if cfg.get("profile"):
      result_ops = _profile(lambda: attack.generate(xn, y=yn))
  peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  result = {"seconds": seconds, "images_per_s": base["batch"] / seconds, "peak_mb": peak_mb}
  if cfg.get("profile"):
    result["top_ops"] = result_ops
  return result


def _run_eval(cfg, base):
  """The table's white-box columns on ``cfg["n"]`` images, timed whole (one run)."""
  import d3_tf  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from d3_tf import attacks  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(cfg["n"],) + base["shape"]).astype(np.float32)
  y = rng.integers(0, 10, size=cfg["n"])
  arch_kwargs = {"width": cfg["width"]} if base["arch"] == "vgg16" else None
  model = d3_tf.build(base["arch"], arch_kwargs=arch_kwargs, num_draws=cfg["k"])
  mode = FASTEST_EVAL_DRAWS[base["arch"]] if cfg["mode"] == "default" else cfg["mode"]
  est = attacks.classifier(model, draws_mode=mode)
  run = lambda n: attacks.white_box(est, x[:n], y[:n], base["eps"], base["step"], 40)
  run(2)  # tracing: a first shape, then the relaxed one (reduce_retracing)
  run(3)
  t0 = time.perf_counter()
  run(cfg["n"])
  seconds = time.perf_counter() - t0
  peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  return {"seconds": seconds, "images_per_s": cfg["n"] / seconds, "peak_mb": peak_mb,
          "mode": mode}


def _profile(fn, top=6):
  """Runs ``fn`` once under the TF profiler: [(op type, ms summed over threads, %)]."""
  import collections  # pylint: disable=g-import-not-at-top
  import glob  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow.tsl.profiler.protobuf import xplane_pb2  # pylint: disable=g-import-not-at-top

  logdir = tempfile.mkdtemp(prefix="d3_profile_")
  tf.profiler.experimental.start(logdir)
  fn()
  tf.profiler.experimental.stop()
  space = xplane_pb2.XSpace()
  with open(sorted(glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True))[-1], "rb") as f:
    space.ParseFromString(f.read())
  ms = collections.Counter()
  for plane in space.planes:
    for line in plane.lines:
      if plane.name.startswith("/host:CPU") and line.name.startswith("tf_Compute"):
        for event in line.events:
          name = plane.event_metadata[event.metadata_id].name.split(":")[-1]
          if name != "Process":  # the function-call wrapper around the ops
            ms[name] += event.duration_ps / 1e9
  total = sum(ms.values())
  return [(name, round(t, 1), round(100 * t / total, 1)) for name, t in ms.most_common(top)]


def target_lines(name, res, cfg):
  """The issue's ratio lines: subsampled penalties and the default evaluation draws."""
  t = {label: r["seconds"] for label, r in res.items()}
  lines = []
  sub = [t[label] for label in SUBSAMPLED if label in t]
  if sub and "K=10 D3 train, loop" in t:
    lines.append(f"{name} K=10 loop/subsampled(16 of {cfg['batch']}): "
                 f"{t['K=10 D3 train, loop'] / min(sub):.1f}x")
  if EVAL_LOOP in t and EVAL_DEFAULT in t:
    lines.append(f"{name} PGD-40 eval loop/default: {t[EVAL_LOOP] / t[EVAL_DEFAULT]:.1f}x")
  return lines


def summary(name, res):
  """The one-line verdict for a model from the rows' results."""
  t = {label: r["seconds"] for label, r in res.items()}
  mem = {label: r["peak_mb"] for label, r in res.items()}
  loop, vec = t["K=10 D3 train, loop"], t["K=10 D3 train, vectorized"]
  full_attack = t["K=10 PGD step, K full passes"]
  once = min(t["K=10 PGD step, trunk once (loop)"], t["K=10 PGD step, trunk once (vectorized)"])
  return (f"{name} K=10 loop/vectorized: {loop / vec:.1f}x, vectorized/K=1: "
          f"{vec / t['K=1 train']:.1f}x, full passes/vectorized: "
          f"{t['K=10 D3 train, K full passes'] / vec:.1f}x, peak memory vectorized/loop: "
          f"{mem['K=10 D3 train, vectorized'] / mem['K=10 D3 train, loop']:.2f}x, "
          f"attack full/trunk-once: {full_attack / once:.1f}x")


def main(argv):
  del argv
  if _ONE.value:
    print("RESULT " + json.dumps(run_one(json.loads(_ONE.value))))
    return
  models = _MODELS.value or ["mnist"] + (["vgg16"] if _VGG16.value else [])
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  lines, targets = [], []
  for name in models:
    res = {}
    steps = _STEPS.value if name == "mnist" else max(3, _STEPS.value // 3)
    width = _VGG_WIDTH.value if name == "vgg16" else 1.0
    print(f"\n{name} (batch {CONFIGS[name]['batch']}{f', width {width}' if width != 1 else ''})"
          f", median of {steps} warm steps")
    print(f"{'configuration':40s} {'ms/step':>10s} {'images/s':>10s} {'peak MB':>9s}")
    for label, cfg in ROWS:
      if _ROWS.value and label not in _ROWS.value:
        continue
      if cfg.get("mode") == "default" and FASTEST_EVAL_DRAWS[CONFIGS[name]["arch"]] == "loop":
        # the default IS the loop row: timing it twice would only measure noise
        res[label] = dict(res[EVAL_LOOP], mode="loop")
        print(f"{label + ' (= loop draws, not re-run)':40s}")
        continue
      cfg = dict(cfg, model=name, steps=steps, warmup=_WARMUP.value, width=width,
                 profile=_PROFILE.value and cfg["kind"] != "eval",
                 n=_EVAL_N.value if name == "mnist" else _EVAL_N_VGG.value)
      proc = subprocess.run([sys.executable, "-m", "benchmarks.train_step", "--one",
                             json.dumps(cfg)], capture_output=True, text=True, env=env,
                            check=False)
      line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
      if not line:
        print(f"{label:40s} failed: {proc.stderr.strip().splitlines()[-1:]}")
        continue
      r = res[label] = json.loads(line[0][7:])
      shown = label + (f" ({cfg['n']} images, s; default = {r['mode']})"
                       if cfg["kind"] == "eval" and cfg["mode"] == "default" else
                       f" ({cfg['n']} images, s)" if cfg["kind"] == "eval" else "")
      scale = 1 if cfg["kind"] == "eval" else 1000
      print(f"{shown:40s} {scale * r['seconds']:10.1f} {r['images_per_s']:10.1f} "
            f"{r['peak_mb']:9.0f}", flush=True)
      if r.get("top_ops"):
        print("    top ops: " + ", ".join(f"{op} {t:.0f} ms ({p:.0f}%)"
                                         for op, t, p in r["top_ops"]))
    if len(res) == len(ROWS):
      lines.append(summary(name, res))
    targets += target_lines(name, res, CONFIGS[name])
  print()
  print("\n".join(lines + targets))


if __name__ == "__main__":
  app.run(main)
