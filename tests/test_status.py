"""Where a study's rows stand, from their files alone: states and the training left."""
import dataclasses
import json
import os
import subprocess
import sys

import pytest

from d3_tf import presets, status, study
from d3_tf.settings import models_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _clock(rows_dir, settings, row, epochs, seconds, final=False):
  folder = os.path.join(models_folder(settings, rows_dir), row)
  os.makedirs(os.path.join(folder, "final"), exist_ok=True)
  json.dump({"seconds": seconds, "epochs": epochs, "n": settings.n_train},
            open(os.path.join(folder, "train_time.json"), "w"))
  if final:
    open(os.path.join(folder, "final", "weights.index"), "w").close()


def test_states_and_the_training_left_at_each_rows_best_known_pace(tmp_path):
  base = dataclasses.replace(study.base("mnist", smoke=True), epochs=4)
  a, b, c = (study.config(n, rows, posterior_init=p) for n, rows, p in
             (("a", ("BNN", "M"), -3.0), ("b", ("M",), -4.0), ("c", ("M", "M-S", "BNN"), -5.0)))
  steps = -(-base.n_train // base.batch_size)  # per epoch
  rows_dir = str(tmp_path)
  _clock(rows_dir, a.settings(base), "M", 4, 8.0 * steps, final=True)  # 2 s a step
  _clock(rows_dir, b.settings(base), "M", 1, 3.0 * steps)  # 3 s a step so far
  _clock(rows_dir, c.settings(base), "M", 0, 5.0)  # started, no epoch finished
  results = {"configs": {"a": {"rows": {"BNN": {"clean": 99.0}}}}}
  found = {(r["configuration"], r["row"]): r
           for r in status.rows([a, b, c], base, rows_dir, results)}
  assert [(k, r["state"]) for k, r in found.items()] == [
      (("a", "BNN"), "done"), (("a", "M"), "trained"), (("b", "M"), "training"),
      (("c", "M"), "training"), (("c", "M-S"), "not started"), (("c", "BNN"), "not started")]
  assert found[("a", "M")]["left_hours"] == 0.0
  assert found[("b", "M")]["left_hours"] == pytest.approx(3 * steps * 3.0 / 3600)
  assert found[("b", "M")]["basis"] == "its own pace"
  # c's M: no epoch of its own yet, so the finished M's 2 s a step, less the 5 s spent
  assert found[("c", "M")]["left_hours"] == pytest.approx((4 * steps * 2.0 - 5.0) / 3600)
  assert found[("c", "M")]["basis"] == "1 finished M row(s)"
  # no finished M-S: the finished penalised rows' pace (a's M); no finished Bayesian row with
  # a clock (a's BNN has none): the dataset's measured step
  assert found[("c", "M-S")]["left_hours"] == pytest.approx(4 * steps * 2.0 / 3600)
  assert found[("c", "M-S")]["basis"] == "1 finished penalised row(s)"
  assert found[("c", "BNN")]["left_hours"] == pytest.approx(
      presets.estimate_hours(c.settings(base), 1))
  assert found[("c", "BNN")]["basis"] == "the dataset's step"
  text = status.markdown([a, b, c], base, rows_dir, results)
  assert "| b | M | training | 1/4 |" in text and "Training left: about" in text


def test_a_continued_row_starts_from_the_clock_of_the_row_it_continues(tmp_path):
  base = dataclasses.replace(study.base("mnist", smoke=True), epochs=10)
  source = os.path.join(str(tmp_path), "source")
  _clock(source, base, "BNN", 2, 20.0, final=True)  # continued_from names the model folder
  longer = study.config("longer", ("BNN",), epochs=12,
                        continued_from=models_folder(base, source))
  (r,) = status.rows([longer], base, str(tmp_path / "models"), {})
  assert (r["state"], r["epochs"], r["basis"]) == ("not started", 2,
                                                    "the pace of the row it continues")
  assert r["left_hours"] == pytest.approx(10 * 10.0 / 3600)  # 10 epochs left at 10 s each


def test_the_binaries_report_without_training(tmp_path):
  env = dict(os.environ, PYTHONPATH=ROOT)
  proc = subprocess.run([sys.executable, "-m", "experiments.study", "--grid", "smoke",
                         "--status", "--output_dir", "out", "--models_dir", "models"],
                        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.count("| not started |") == 3  # sum/-5/loss BNN and M, mean/-5/loss M
  assert not os.path.exists(tmp_path / "models")  # nothing trained, no folder made
  table = subprocess.run([sys.executable, "-m", "experiments.mnist_table1", "--preset", "smoke",
                          "--methods", "CNN,M", "--status", "--models_dir", "models"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
  assert table.returncode == 0, table.stderr[-2000:]
  assert "| preset smoke | CNN | not started |" in table.stdout
  assert "| preset smoke | M | not started |" in table.stdout
