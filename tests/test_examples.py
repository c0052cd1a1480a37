"""The README's library examples: the README shows each file verbatim, and each file runs."""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = ("own_model", "audit_own_model")
# Start-up noise that library use must not print (d3_tf/quiet.py).
NOISE = ("Unable to register", "InitializeLog", "PyTorch not found", "add_variable",
         "retracing", "cuInit", "cuda drivers")


def readme_blocks():
  readme = open(os.path.join(ROOT, "README.md")).read()
  return re.findall(r"```python\n(.*?)```", readme, flags=re.S)


@pytest.mark.parametrize("name", EXAMPLES)
def test_readme_shows_the_example_file_verbatim(name):
  code = open(os.path.join(ROOT, "examples", f"{name}.py")).read()
  assert code in readme_blocks(), f"README.md's block for examples/{name}.py differs from the file"


def run_example(name, **kwargs):
  call = f"import {name}; {name}.main(" + ", ".join(f"{k}={v}" for k, v in kwargs.items()) + ")"
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.path.join(ROOT, "examples"))
  for key in ("TF_CPP_MIN_LOG_LEVEL", "TF_USE_LEGACY_KERAS"):  # as a user's fresh shell
    env.pop(key, None)
  return subprocess.run([sys.executable, "-c", call], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=600)


def test_own_model_example_runs_and_prints_only_its_lines():
  proc = run_example("own_model", n_train=128, n_test=64, n_attack=8, epochs=1, num_draws=2)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stdout.splitlines()
  assert len(lines) == 3, proc.stdout
  assert lines[0].startswith("trained 1 epochs on 128 images: cross-entropy ")
  assert re.fullmatch(r"clean accuracy on 64 test images: \d+\.\d%", lines[1])
  assert lines[2].startswith("PGD-40: 8 images, clean ")
  for noise in NOISE:
    assert noise not in proc.stdout + proc.stderr, noise


def test_audit_example_runs_on_a_random_keras_model():
  proc = run_example("audit_own_model", n_train=128, n_audit=8, epochs=1, steps=5, sanity_n=8,
                     passes=4)
  assert proc.returncode == 0, proc.stderr[-3000:]
  [line] = proc.stdout.splitlines()
  assert re.fullmatch(r"clean \d+\.\d%, worst-case audited \d+\.\d%, expected \d+\.\d%, "
                      r"logits random: True", line), line
  for noise in NOISE:
    assert noise not in proc.stdout + proc.stderr, noise
