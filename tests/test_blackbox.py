"""experiments.blackbox: a saved model re-scored on saved transfer sets, sets checked."""
import json
import os
import subprocess
import sys

import numpy as np

import d3_tf
from d3_tf import advsets, attacks, data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(args, cwd):
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  env.pop(data.ENV_VAR, None)  # the first test images of the embedded slice
  return subprocess.run([sys.executable, "-m", "experiments.blackbox", "--data_source",
                         "embedded", *args], cwd=cwd, env=env, capture_output=True, text=True,
                        timeout=600)


def test_rescore_matches_the_model_and_refuses_a_foreign_set(tmp_path):
  _, (xt, yt) = data.load_mnist(source="embedded", n_test=20)
  model = d3_tf.build("mnist_cnn", bayesian=False, seed=4)
  model.save_weights(str(tmp_path / "cnn" / "w"))
  rng = np.random.RandomState(0)
  near = np.clip(xt + rng.uniform(-0.1, 0.1, xt.shape), 0, 1).astype(np.float32)
  meta = {"eps": 0.1, "norm": "inf", "n": 20}
  advsets.save(str(tmp_path / "a.npz"), near, yt, dict(meta, source="noise"))
  advsets.save(str(tmp_path / "b.npz"), xt, yt, dict(meta, source="clean"))
  proc = run(["--model", "cnn/w.index", "--arch", "mnist_cnn", "--name", "cnn",
              "--sets", "a.npz,b.npz", "--output_dir", "out"], tmp_path)
  assert proc.returncode == 0, proc.stderr[-3000:]
  row = json.load(open(tmp_path / "out" / "blackbox.json"))["rows"]["cnn"]
  est = attacks.classifier(model)
  assert row["per_set"]["noise"] == attacks.accuracy_on(est, near, yt)
  assert row["per_set"]["clean"] == row["clean"] == attacks.accuracy_on(est, xt, yt)
  assert row["blackbox"] == min(row["per_set"].values()) and row["seed"] == 0
  advsets.save(str(tmp_path / "far.npz"), np.clip(xt + 0.3, 0, 1), yt, dict(meta, source="far"))
  proc = run(["--model", "cnn/w.index", "--arch", "mnist_cnn", "--sets", "far.npz"], tmp_path)
  lines = [l for l in (proc.stdout + proc.stderr).splitlines() if l.strip()]
  assert proc.returncode == 1 and "beyond ε=0.1" in lines[-1]
  assert lines[-1].startswith("error: transfer set far:")
