"""The experiment binaries end to end at --preset smoke, resume, and bad input."""
import dataclasses
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from d3_tf import data, experiment
from d3_tf.benchmark import BENCHMARKS
from experiments import cifar_table3
from tests.conftest import needs_data_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_binary(name, *args, cwd, timeout=900, data_dir=None):
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  env.pop(data.ENV_VAR, None)
  if data_dir:
    env[data.ENV_VAR] = data_dir
  return subprocess.run([sys.executable, "-m", f"experiments.{name}", *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=timeout)


def _check_results(out_dir, rows):
  results = json.load(open(os.path.join(out_dir, "results.json")))
  assert list(results["rows"]) == rows
  for row in results["rows"].values():
    for key in ("clean", "fgsm", "pgd", "blackbox"):
      assert 0.0 <= row[key] <= 100.0
  assert results["versions"]["tensorflow"].startswith("2.18")
  assert results["settings"]["n_train"] == 256 and results["wall_seconds"] > 0
  table = open(os.path.join(out_dir, "table.md")).read()
  for name in rows:
    line = next(l for l in table.splitlines() if l.startswith(f"| {name} |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert len(cells) == 13 and cells[5] != "—" and cells[8] != "—"  # paper FGSM, PGD filled
  return results


def test_mnist_table1_smoke_resumes_without_retraining(tmp_path):
  common = ["--preset", "smoke", "--output_dir", "out", "--models_dir", "models"]
  first = run_binary("mnist_table1", "--methods", "CNN,M-S", *common, cwd=tmp_path)
  assert first.returncode == 0, first.stderr[-3000:]
  assert "embedded in the package" in first.stdout
  _check_results(tmp_path / "out", ["CNN", "M-S"])
  [model_root] = [p for p in (tmp_path / "models").iterdir() if p.is_dir()]
  finals = {n: os.path.getmtime(model_root / n / "final" / "weights.index") for n in ("CNN", "M-S")}

  rows = ["CNN", "BNN-Off", "M-S"]  # an -Off row too (its offline set), in the paper's order
  common += ["--methods", ",".join(reversed(rows))]
  second = run_binary("mnist_table1", *common, cwd=tmp_path)
  assert second.returncode == 0, second.stderr[-3000:]
  assert "row CNN: already done, skipped" in second.stdout
  assert "row M-S: already done, skipped" in second.stdout
  results = _check_results(tmp_path / "out", rows)
  for name, mtime in finals.items():
    assert os.path.getmtime(model_root / name / "final" / "weights.index") == mtime
  assert set(results["blackbox_sets"]) == {"madry_natural", "madry_adversarial"}
  assert results["rows"]["M-S"]["epochs"]["1"]["pgd"] <= 100
  assert (tmp_path / "out" / "figure1.png").stat().st_size > 1000
  assert (tmp_path / "out" / "figure2.png").stat().st_size > 1000
  assert (model_root / "M-S" / "tensorboard").is_dir()

  third = run_binary("mnist_table1", *common, cwd=tmp_path)
  assert third.stdout.count("already done, skipped") == 3
  # a finished table needs no models: nothing is trained into an empty --models_dir
  fresh = run_binary("mnist_table1", *common[:-3], "fresh_models", *common[-2:], cwd=tmp_path)
  assert fresh.returncode == 0 and fresh.stdout.count("already done, skipped") == 3
  assert ": training" not in fresh.stdout  # neither a surrogate nor a row
  assert not list((tmp_path / "fresh_models").glob("*/madry_natural"))

  figs = run_binary("figures", "--mnist_dir", "out", "--output_dir", "figs", cwd=tmp_path)
  assert figs.returncode == 0, figs.stderr[-2000:]
  assert (tmp_path / "figs" / "figure1.png").exists()

  changed = run_binary("mnist_table1", *common, "--epochs", "2", cwd=tmp_path)
  assert changed.returncode == 1
  assert "other settings (epochs)" in changed.stderr.strip().splitlines()[-1]


def test_audit_column_and_audit_binary(tmp_path):
  common = ["--preset", "smoke", "--output_dir", "out", "--models_dir", "models"]
  proc = run_binary("mnist_table1", "--methods", "BNN", "--noblackbox", "--audit",
                    "--audit_n", "8", "--audit_steps", "3", "--audit_restarts", "1",
                    "--audit_eot", "1", "--audit_square_queries", "5", *common, cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr[-3000:]
  row = json.load(open(tmp_path / "out" / "results.json"))["rows"]["BNN"]
  assert 0 <= row["audited"] <= 100 and row["audit"]["n"] == 8
  header = next(l for l in open(tmp_path / "out" / "table.md") if l.startswith("| method"))
  assert header.strip().endswith("Audited (worst / expected) |")
  # A row another run wrote (earlier or beside this one) is kept.
  other = {"clean": 50.0, "sanity_numbers": {"whitebox": None}, "audited_robust_accuracy": 0.0,
           "prediction_disagreement": 0.0, "sanity_checks": [], "attacks": {}}
  (tmp_path / "out" / "audit.json").write_text(json.dumps({"rows": {"M": other}}))
  audit = run_binary("audit", "--results_dir", "out", "--models_dir", "models", "--methods",
                     "BNN", "--n", "8", "--steps", "3", "--restarts", "1", "--eot", "1",
                     "--apgd_eot", "1", "--square_queries", "5", "--sanity_n", "8", cwd=tmp_path)
  assert audit.returncode == 0, audit.stderr[-3000:]
  report = json.load(open(tmp_path / "out" / "audit.json"))
  assert report["rows"]["BNN"]["audited_robust_accuracy"] <= report["rows"]["BNN"]["clean"]
  provenance = report["rows"]["BNN"]["provenance"]  # rows of several runs keep their own
  assert "--methods BNN" in provenance["command"] and provenance["git_commit"]
  assert report["rows"]["M"] == other
  assert "sanity checks" in open(tmp_path / "out" / "audit.md").read()
  missing = run_binary("audit", "--results_dir", "out", "--models_dir", "models", "--methods",
                       "M-S", cwd=tmp_path)
  assert missing.returncode == 1 and "row M-S is not trained" in missing.stderr
  div = run_binary("diversity", "--results_dir", "out", "--models_dir", "models", "--methods",
                   "BNN", "--n", "6", cwd=tmp_path)
  assert div.returncode == 0, div.stderr[-3000:]
  measured = json.load(open(tmp_path / "out" / "diversity.json"))["rows"]["BNN"]
  assert 0 <= measured["omega_m"] <= 1 + 1e-5 and measured["n"] == 6
  assert "| BNN |" in open(tmp_path / "out" / "diversity.md").read()


@needs_data_dir
def test_cifar_binaries_smoke(tmp_path):
  common = ["--preset", "smoke", "--models_dir", "models"]
  t2 = run_binary("cifar_table2", "--methods", "VGG16,M-S", "--output_dir", "t2", *common,
                  cwd=tmp_path, data_dir=os.environ[data.ENV_VAR])
  assert t2.returncode == 0, t2.stderr[-3000:]
  results = json.load(open(tmp_path / "t2" / "results.json"))
  assert 0 <= results["rows"]["M-S"]["pgd"] <= 100
  assert "| VGG16 |" in open(tmp_path / "t2" / "table.md").read()
  # the smoke preset, like cpu, warm-starts the Bayesian rows from the conventional one
  assert "row M-S: starts from the trained VGG16 row" in t2.stdout
  assert "row VGG16: training on 128 images for 2 epochs" in t2.stdout
  assert "row M-S: training on 128 images for 1 epoch (" in t2.stdout
  assert "128 training images × 1 epoch (" in open(tmp_path / "t2" / "table.md").read()
  t3 = run_binary("cifar_table3", "--budgets", "0.0,0.015", "--methods", "M-S,M-S-Off",
                  "--output_dir", "t3", *common, cwd=tmp_path, data_dir=os.environ[data.ENV_VAR])
  assert t3.returncode == 0, t3.stderr[-3000:]
  assert "M-S: trained model found, loaded" in t3.stdout  # reused from cifar_table2
  res3 = json.load(open(tmp_path / "t3" / "results.json"))
  assert list(res3["rows"]) == ["M-S", "M-S-Off"]
  for row in res3["rows"].values():
    assert set(row["budgets"]) == {"0.0", "0.015"}
    assert set(row["budgets_scaled"]) == {"0.015"}  # the paper's step and the scaled one
    assert all(0 <= v <= 100 for v in [*row["budgets"].values(), *row["budgets_scaled"].values()])
  table = open(tmp_path / "t3" / "table.md").read()
  assert "| M-S | " in table and "88.4" in table and "Adv-BNN" in table
  assert "| 0.015 | scaled step | paper | Δ |" in table
  t3v = run_binary("cifar_table3", "--budgets", "0.015", "--methods", "VGG16", "--output_dir",
                   "t3v", *common, cwd=tmp_path, data_dir=os.environ[data.ENV_VAR])
  assert t3v.returncode == 0, t3v.stderr[-3000:]
  assert set(json.load(open(tmp_path / "t3v" / "results.json"))["rows"]) == {"VGG16"}


@pytest.mark.parametrize("text,message", [
    ("abc", "not a number"), ("0.1,0.1", "twice"), ("-0.1", "outside"), ("1.5", "outside"),
    ("0.1,,0.2", "not a number"), ("nan", "outside")])
def test_budget_parsing_rejects(text, message):
  with pytest.raises(experiment.ConfigError, match=message):
    cifar_table3.parse_budgets(text)


def test_budget_parsing_accepts():
  assert cifar_table3.parse_budgets("0.0, 0.015,0.035") == (0.0, 0.015, 0.035)


@pytest.mark.parametrize("binary,args", [
    ("mnist_table1", ["--preset", "smoke", "--models_dir", "models"]),
    ("study", ["--grid", "smoke", "--models_dir", "models"]),
    ("audit", ["--model", "m.keras", "--data_source", "embedded", "--n", "8"]),
])
def test_unwritable_output_folder_refused_before_any_work(tmp_path, binary, args):
  (tmp_path / "m.keras").write_text("not a model: never read, the output check comes first")
  (tmp_path / "file").write_text("a file where the output folder should go")
  proc = run_binary(binary, *args, "--output_dir", "file/out", cwd=tmp_path, timeout=300)
  assert proc.returncode == 1, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines()[-1].startswith("error: --output_dir file/out: cannot "
                                                         "write there")
  assert "Traceback" not in proc.stderr
  assert not (tmp_path / "models").exists() or not os.listdir(tmp_path / "models")  # no training


def test_audit_help_and_n_beyond_the_test_set(tmp_path):
  proc = run_binary("audit", "--help", cwd=tmp_path, timeout=300)
  for text in ("--model", "--arch", "--output_dir", "results/audit/<name>",
               "zero accuracy at ε=1", "--data_source embedded"):
    assert text in proc.stdout, text
  (tmp_path / "m.keras").write_text("x")
  proc = run_binary("audit", "--model", "m.keras", "--data_source", "embedded", "--n", "20000",
                    cwd=tmp_path, timeout=300)
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1] == ("error: --n=20000: the mnist test set here "
                                                  "has 1000 images")
  proc = run_binary("audit", "--model", "m.keras", "--norm", "l2", "--eps", "0", cwd=tmp_path,
                    timeout=300)
  assert proc.returncode == 1 and "--eps: 0.0 is invalid: must be a finite number > 0 for L2" \
      in proc.stderr and "Traceback" not in proc.stderr


def test_help_lists_every_flag(tmp_path):
  proc = run_binary("mnist_table1", "--helpfull", cwd=tmp_path, timeout=300)
  for flag in ("--preset", "--methods", "--num_draws", "--lambda_m", "--sweep_l2", "--data_dir",
               "--models_dir", "--output_dir", "--n_train", "--epoch_eval_n"):
    assert flag in proc.stdout


def test_keep_epochs_keeps_the_weights_of_the_chosen_epochs(tmp_path, mnist_small):
  x, y, xt, yt = mnist_small
  settings = experiment.Settings(n_train=64, n_eval=8, epochs=3, batch_size=64, num_draws=2,
                                 keep_epochs=(1, 3))
  assert settings.training_hash() == dataclasses.replace(settings, keep_epochs=()).training_hash()
  runner = experiment.Runner(settings, str(tmp_path), (x[:64], y[:64]), (xt, yt), log=print)
  model = runner.train(experiment.parse_method("BNN", "mnist"))
  row = runner.store.row_dir("BNN")
  assert sorted(d for d in os.listdir(row) if d.startswith("epoch_")) == ["epoch_1", "epoch_3"]
  kept = runner.plan.build(experiment.parse_method("BNN", "mnist"), 64)
  kept.load_weights(os.path.join(row, "epoch_3", "weights")).expect_partial()
  for a, b in zip(kept.get_weights(), model.get_weights()):  # epoch 3 is the final model
    np.testing.assert_array_equal(a, b)
  first = runner.plan.build(experiment.parse_method("BNN", "mnist"), 64)
  first.load_weights(os.path.join(row, "epoch_1", "weights")).expect_partial()
  assert any(np.any(a != b) for a, b in zip(first.get_weights(), model.get_weights()))


# The model folders of committed results: a change to a preset, to the hash or to a new
# field's default would orphan them (their rows would silently retrain).
PINNED_HASHES = {
    ("mnist", "quick"): "9c2d9520fd", ("mnist", "smoke"): "f710c7e1ab",
    ("mnist", "cpu"): "b7580a37af", ("mnist", "paper"): "afe8a436b1",
    ("cifar10", "smoke"): "ad11b5975d", ("cifar10", "cpu"): "c6a1eccc55",
    ("cifar10", "paper"): "164a7902ed", ("mnist", "verdict"): "559ca99af9",
    ("mnist", "robust"): "96fe1abc2d", ("cifar10", "robust"): "8501ba56e1",
    ("cifar10", "robust_mix"): "8f270ab632", ("cifar10", "verdict"): "a8fa1f6423",
}
PINNED_STUDY_HASHES = {
    ("main", "sum/-3/loss"): "23a31c567d", ("main", "mean/-5/loss"): "d2c4ca0b69",
    ("main", "bnn/-3"): "867b33fd16", ("init", "sum/-2/loss"): "ea27931170",
    ("lambda_s", "sum/-3/loss/lambda_s=0.04"): "6208d65921",
    ("lambda_m", "sum/-3/loss/lambda_m=10"): "48692affa8",
    ("verdict", "sum/-3/loss/lambda_m=10/lambda_s=0.04"): "559ca99af9",
    ("long", "long/sum/-5/loss"): "5e7871ce7c", ("long", "long/verdict"): "8f20560ac9",
    ("full", "full/verdict"): "f7150f6aef", ("full", "full/sum/-5/loss"): "d7c5694192",
    ("full", "full/verdict/continued"): "20b1f50b7d",
    ("cifar", "cifar/bvgg16/-3"): "43cb4bfa8b", ("cifar", "cifar/sum/-3/loss"): "a8fa1f6423",
    ("cifar", "cifar/bvgg16/-2"): "7c46e6bcef", ("cifar", "cifar/sum/-2/loss"): "01b33324fc",
    ("cifar", "cifar/bvgg16/-1"): "2b932cd024", ("cifar", "cifar/sum/-1/loss"): "de4ba52537",
}


def test_presets_and_estimate():
  assert {k: s.training_hash() for k, s in experiment.PRESETS.items()} == PINNED_HASHES
  for (dataset, _), s in experiment.PRESETS.items():
    assert s.dataset == dataset
  from d3_tf import study  # pylint: disable=g-import-not-at-top
  for (grid, name), pinned in PINNED_STUDY_HASHES.items():
    config = next(c for c in study.grid(grid) if c.name == name)
    assert config.settings(study.GRIDS[grid].base()).training_hash() == pinned, (grid, name)
  # a non-training field (kept epochs) leaves the hash alone
  assert dataclasses.replace(experiment.PRESETS[("mnist", "cpu")], keep_epochs=(5,)
                             ).training_hash() == PINNED_HASHES[("mnist", "cpu")]
  paper_mnist = experiment.PRESETS[("mnist", "paper")]
  assert paper_mnist.epochs == 100 and paper_mnist.num_draws == 10
  assert (paper_mnist.lambda_m, paper_mnist.lambda_v, paper_mnist.lambda_s) == (20, 40, 40)
  cifar = experiment.PRESETS[("cifar10", "paper")]
  assert (cifar.lambda_m, cifar.lambda_s, cifar.eps, cifar.pgd_step) == (10, 20, 0.03, 0.001)
  # 9 rows x 100 epochs x 938 steps x 0.69 s
  np.testing.assert_allclose(experiment.estimate_hours(paper_mnist, 9),
                             9 * 100 * 938 * 0.69 / 3600)
  # the cost is per image: halving the batch doubles the steps, each half as long
  half_batch = dataclasses.replace(paper_mnist, batch_size=32)
  np.testing.assert_allclose(experiment.estimate_hours(half_batch, 9),
                             experiment.estimate_hours(paper_mnist, 9), rtol=1e-3)


def test_method_parsing():
  m = experiment.parse_method("M-V-S-Off", "mnist")
  assert (m.bayesian, m.penalties, m.off) == (True, "mvs", True)
  assert not experiment.parse_method("CNN", "mnist").bayesian
  assert experiment.parse_method("BVGG16-Off", "cifar10").off
  assert experiment.parse_method("BNN", "mnist").penalties == ""
  with pytest.raises(experiment.ConfigError, match="valid: VGG16"):
    experiment.parse_method("CNN", "cifar10")


def test_ci_runs_the_readme_test_command():
  readme = open(os.path.join(ROOT, "README.md")).read()
  ci = open(os.path.join(ROOT, ".ci", "run")).read()
  commands = re.findall(r"^pip install .*$", readme, flags=re.M)
  assert len(commands) == 2
  assert commands[1] in ci
  assert commands[0].endswith("&& python -m experiments.mnist_table1")  # the quick start


def test_study_smoke_grid_end_to_end_resume_and_rand_stage(tmp_path):
  """The smoke grid end to end with --keep_models (the grid's rows under <output_dir>/models,
  committed with the results; the surrogates in --models_dir), resumed without work, a row
  evaluated again from its kept model, then the rand stage."""
  args = ("--grid", "smoke", "--output_dir", "out", "--models_dir", "models", "--keep_models")
  proc = run_binary("study", *args, cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "\r" not in proc.stdout  # one line per epoch / attack in a log
  results = json.load(open(tmp_path / "out" / "results.json"))
  assert set(results["configs"]) == {"sum/-5/loss", "mean/-5/loss"}
  assert set(results["configs"]["sum/-5/loss"]["rows"]) == {"BNN", "M"}
  for entry in results["configs"].values():
    for row in entry["rows"].values():
      for key in ("clean", "fgsm", "pgd", "blackbox", "audited", "zero_gradient_pct"):
        assert 0 <= row[key] <= 100
      assert row["audited"] <= row["clean"] and row["train_seconds"] > 0
      assert 0 < row["diversity"]["omega_m"] <= 1 + 1e-6
      assert row["eval_seconds"] > 0
      assert row["provenance"]["seed"] == 0 and row["provenance"]["git_commit"]
      sources = row["provenance"]["blackbox_sets"]
      assert set(sources) == {"madry_natural", "madry_adversarial"}
      assert all(len(v["source_fingerprint"]) == 32 for v in sources.values())
  assert entry["overrides"]["penalty_reduction"] == "mean"
  assert (tmp_path / "out" / "diversity.png").exists()
  assert set(results["configs"]["sum/-5/loss"]["rows"]["M"]["epochs"]) == {"1"}  # Figure 1 log
  assert (tmp_path / "out" / "figure1.png").exists()
  assert len(list((tmp_path / "out" / "models").glob("mnist-*/M/final/weights.index"))) == 2
  assert not list((tmp_path / "models").glob("*/M"))
  assert list((tmp_path / "models").glob("*/madry_natural/final/weights.index"))
  again = run_binary("study", *args, cwd=tmp_path)
  assert again.returncode == 0 and again.stdout.count("already done, skipped") == 2
  assert json.load(open(tmp_path / "out" / "results.json"))["configs"] == results["configs"]
  # a row missing from the results is evaluated again from its kept model, not trained
  del results["configs"]["mean/-5/loss"]["rows"]["M"]
  json.dump(results, open(tmp_path / "out" / "results.json", "w"))
  # the rand stage: every row whose PGD beats the BNN's by the gain (here any), once
  rand = run_binary("study", *args, "--rand_gain=-100", cwd=tmp_path)
  assert rand.returncode == 0, rand.stderr[-3000:]
  assert "mean/-5/loss M: training / loading" in rand.stdout  # evaluated again ...
  assert "row M: training" not in rand.stdout  # ... from its kept model
  configs = json.load(open(tmp_path / "out" / "results.json"))["configs"]
  audited = {(name, row) for name, entry in configs.items()
             for row, r in entry["rows"].items() if "audit_rand" in r}
  assert audited == {("sum/-5/loss", "M"), ("mean/-5/loss", "M")}
  report = configs["sum/-5/loss"]["rows"]["M"]["audit_rand"]
  assert report["protocol"] == "rand" and report["n"] == 16
  assert 0 <= report["audited_robust_accuracy"] <= report["clean"]
  assert not any(k.startswith("per_example") for k in report)
  worst = f"{report['audited_robust_accuracy']:.1f} / {report['expected_robust_accuracy']:.1f}"
  assert worst in (tmp_path / "out" / "study.md").read_text()
  assert "rand protocol" not in run_binary("study", *args, "--rand_gain=-100",
                                           cwd=tmp_path).stdout  # done: not again
  # the weights kept after epoch 1 (epoch 2 was not kept), evaluated beside the results
  kept = run_binary("study", *args, "--checkpoints", "1,2", "--rows", "M", cwd=tmp_path)
  assert kept.returncode == 0, kept.stderr[-3000:]
  assert "kept weights found, loaded" in kept.stdout and "row M: training" not in kept.stdout
  assert json.load(open(tmp_path / "out" / "results.json"))["configs"] == configs
  checkpoints = json.load(open(tmp_path / "out" / "checkpoints.json"))
  assert list(checkpoints["configs"]) == ["sum/-5/loss"]  # mean/-5/loss keeps no epoch
  [(epoch, row)] = checkpoints["configs"]["sum/-5/loss"]["rows"]["M"].items()
  assert epoch == "1" and "epochs" not in row and row["provenance"]["git_commit"]
  assert row["audit"]["protocol"] == "full" and row["audit_rand"]["protocol"] == "rand"
  assert row["audit_rand"]["audited_robust_accuracy"] <= row["audit_rand"]["clean"]
  assert 0 < row["diversity"]["omega_m"] <= 1 + 1e-6
  assert "| sum/-5/loss | M | 1 | " in (tmp_path / "out" / "checkpoints.md").read_text()
  assert "already done" in run_binary("study", *args, "--checkpoints", "1", "--rows", "M",
                                      cwd=tmp_path).stdout


@needs_data_dir
def test_study_runs_a_grid_on_cifar10(tmp_path):
  """The study takes its dataset from the grid: CIFAR-10 rows, surrogate and protocol."""
  proc = run_binary("study", "--grid", "cifar_smoke", "--output_dir", "out", "--models_dir",
                    "models", cwd=tmp_path, data_dir=os.environ[data.ENV_VAR])
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.load(open(tmp_path / "out" / "results.json"))
  rows = results["configs"]["mean/-5/loss"]["rows"]
  assert set(rows) == {"M"}
  for row in rows.values():
    assert set(row["provenance"]["blackbox_sets"]) == {"vgg16_natural"}
    assert row["n_eval"] == 16 and 0 < row["diversity"]["omega_m"] <= 1 + 1e-6
    assert 0 <= row["audited"] <= row["clean"]
  assert list((tmp_path / "models").glob("cifar10-vgg16-*/VGG16/final/weights.index"))


def test_epoch_curves_of_rows_still_training(tmp_path):
  """Figure 1 of a grid draws the epoch logs of rows that have not finished yet."""
  from d3_tf import store, study  # pylint: disable=g-import-not-at-top
  config = study.grid("full", only=["full/verdict"])[0]
  s = config.settings(study.BASE)
  store.atomic_write(str(tmp_path / f"mnist-mnist_cnn-{s.training_hash()}" / "M" / "epochs.json"),
                     json.dumps({"1": {"clean": 99.0, "fgsm": 50.0, "pgd": 10.0}}))
  curves = study.epoch_curves([config], study.BASE, str(tmp_path))
  assert curves == {"rows": {"M full/verdict": {"epochs": {
      "1": {"clean": 99.0, "fgsm": 50.0, "pgd": 10.0}}}}}
  path = study.figure1({"configs": {}}, [config], study.BASE, str(tmp_path),
                       str(tmp_path / "figure1.png"))
  assert path and os.path.getsize(path) > 0


def test_figure1_keeps_one_row_of_two_configurations_apart(monkeypatch, tmp_path):
  """Colour by row, line style by configuration (the study's long grid has M-S twice)."""
  from d3_tf import plots  # pylint: disable=g-import-not-at-top
  figures = []
  monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
  epochs = {"1": {"fgsm": 50.0, "pgd": 10.0}, "2": {"fgsm": 40.0, "pgd": 5.0}}
  rows = {name: {"epochs": epochs} for name in ("M-S paper", "M-S verdict", "M paper")}
  plots.figure1({"rows": rows}, str(tmp_path / "figure1.png"), 0.3)
  lines = {line.get_label(): line for line in figures[0].axes[1].get_lines()}
  assert lines["M-S paper"].get_color() == lines["M-S verdict"].get_color()
  assert lines["M-S paper"].get_color() != lines["M paper"].get_color()
  assert lines["M-S paper"].get_linestyle() != lines["M-S verdict"].get_linestyle()
  assert lines["M-S paper"].get_linestyle() == lines["M paper"].get_linestyle()


def test_every_row_of_a_table_has_a_style_of_its_own():
  """Figures 1-3 tell every row of a table apart (the Adv rows too), '-Off' by its marker."""
  from d3_tf import plots  # pylint: disable=g-import-not-at-top
  for rows in (b.all_rows for b in BENCHMARKS.values()):
    styles = [plots.style(name) for name in rows]
    assert len(set(styles)) == len(rows), list(zip(rows, styles))
  assert plots.style("M-S-Off") == (plots.style("M-S")[0], "+")


def test_train_only_trains_an_adv_row_and_evaluates_nothing(tmp_path):
  proc = run_binary("mnist_table1", "--preset", "smoke", "--methods", "Adv-CNN", "--noblackbox",
                    "--train_only", "--output_dir", "out", "--models_dir", "models", cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "PGD-10 adversarial training at ε=0.3" in proc.stdout
  [root] = [p for p in (tmp_path / "models").iterdir() if p.is_dir()]
  assert (root / "Adv-CNN" / "final" / "weights.index").exists()
  log = (root / "Adv-CNN" / "log.csv").read_text()
  assert "adv_eps" in log.splitlines()[0]
  assert not (tmp_path / "out").exists()  # nothing evaluated, no table


def test_adopt_conventional_copies_a_row_trained_under_the_same_settings(tmp_path, mnist_small):
  """A warm-started grid shares one trained conventional row between its configurations."""
  from d3_tf import training  # pylint: disable=g-import-not-at-top
  x, y, xt, yt = mnist_small
  theirs = experiment.Settings(n_train=64, n_eval=8, epochs=1, num_draws=2, lambda_m=1.0)
  source = experiment.Runner(theirs, str(tmp_path / "a"), (x[:64], y[:64]), (xt, yt))
  cnn = training.build("mnist_cnn", bayesian=False, seed=3)
  cnn.save_weights(os.path.join(source.store.row_dir("CNN"), "final", "weights"))
  mine = dataclasses.replace(theirs, posterior_init=-3.0, lambda_m=5.0)  # Bayesian fields only
  runner = experiment.Runner(mine, str(tmp_path / "b"), (x[:64], y[:64]), (xt, yt))
  assert runner.store.root != source.store.root and not runner.store.is_trained("CNN")
  assert runner.store.adopt_conventional(source.store.root)
  loaded = runner.train(experiment.parse_method("CNN", "mnist"))  # loaded, not trained
  for a, b in zip(loaded.get_weights(), cnn.get_weights()):
    np.testing.assert_array_equal(a, b)
  assert not runner.store.adopt_conventional(source.store.root)  # it has its own now
  other = experiment.Runner(dataclasses.replace(mine, learning_rate=1e-2), str(tmp_path / "c"),
                            (x[:64], y[:64]), (xt, yt))
  with pytest.raises(experiment.ConfigError, match="learning_rate 0.001 \\(here 0.01\\)"):
    other.store.adopt_conventional(source.store.root)


def test_blackbox_sets_from_the_rows_of_another_model_folder(tmp_path, mnist_small):
  """Runner sources: the black-box column's surrogates are trained rows of another folder,
  their sets kept once in <models_dir>/surrogate_sets; the conventional row is adopted."""
  from d3_tf import training  # pylint: disable=g-import-not-at-top
  x, y, xt, yt = mnist_small
  s = dataclasses.replace(experiment.PRESETS[("mnist", "smoke")], pgd_iters=3, n_eval=8)
  theirs = experiment.Runner(s, str(tmp_path / "m"), (x[:8], y[:8]), (xt, yt)).store.root
  cnn = training.build("mnist_cnn", bayesian=False, seed=3)
  cnn.save_weights(os.path.join(theirs, "CNN", "final", "weights"))
  sources = experiment.Sources(conventional_from=theirs, surrogates_from=theirs,
                               surrogates=("CNN",))
  mine = dataclasses.replace(s, posterior_init=-3.0)
  runner = experiment.Runner(mine, str(tmp_path / "b"), (x[:8], y[:8]), (xt, yt),
                             sources=sources)
  xa, ya, meta = runner.blackbox_sets()["CNN"]
  assert xa.shape == xt[:8].shape and np.abs(xa - xt[:8]).max() <= s.eps + 1e-6
  np.testing.assert_array_equal(ya, yt[:8])
  assert meta["source"] == "CNN" and meta["max_iter"] == 3 and meta["n"] == 8
  assert os.path.exists(tmp_path / "b" / "surrogate_sets" / "blackbox_mnist_CNN_8.npz")
  assert not runner.store.is_trained("CNN")  # adopted when a row needs it, not before
  for a, b in zip(runner.conventional().get_weights(), cnn.get_weights()):
    np.testing.assert_array_equal(a, b)
  assert runner.store.is_trained("CNN")
  madry = training.build("madry_mnist", bayesian=False, seed=4)  # a surrogate, its own arch
  madry.save_weights(os.path.join(theirs, "madry_natural", "final", "weights"))
  loaded = experiment.trained_rows(theirs, ("madry_natural",))["madry_natural"]
  assert len(loaded.weights) == len(madry.weights) > 0
  for a, b in zip(loaded.get_weights(), madry.get_weights()):
    np.testing.assert_array_equal(a, b)
  bayesian = dataclasses.replace(sources, surrogates=("BNN",))
  with pytest.raises(experiment.ConfigError, match="no trained BNN row"):
    experiment.Runner(mine, str(tmp_path / "b"), (x[:8], y[:8]), (xt, yt),
                      sources=bayesian).blackbox_sets()
