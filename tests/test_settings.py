"""Settings, presets and flag validation: every bad value is one line, before any work."""
import dataclasses
import hashlib
import json
import os
import subprocess
import sys

import pytest

from d3_tf import presets
from d3_tf.audit_inputs import AUDITS
from d3_tf import settings as cfg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# At least one bad value for every flag of the table binaries (Settings fields and the rest).
BAD_TABLE_FLAGS = {
    "width": ["0", "-1", "nan"], "n_train": ["-5", "1.5"], "n_eval": ["-1"],
    "epochs": ["-1", "0", "two"], "batch_size": ["0"], "num_draws": ["0"],
    "learning_rate": ["-1", "0", "inf"], "lambda_m": ["nan", "-1"], "lambda_v": ["-0.5"],
    "lambda_s": ["inf"], "variance_variant": ["v4"], "y_mode": ["logit"],
    "penalty_reduction": ["avg"], "draws_mode": ["batched"], "estimator": ["bayes"],
    "kl_weight": ["-1"], "eps": ["5", "0", "-0.1", "nan"], "pgd_step": ["0", "-0.01"],
    "pgd_iters": ["0"], "offline_iters": ["0"], "offline_n": ["-1"], "surrogate_epochs": ["0"],
    "surrogate_adv_iters": ["0"], "epoch_eval_n": ["-1"], "epoch_eval_pgd_iters": ["0"],
    "sweep_linf": ["0.1,abc", "0.1,2", "0"], "sweep_l2": ["-1", "x"], "sweep_n": ["-2"],
    "seed": ["-1"], "eval_draws_mode": ["fast"], "penalty_examples": ["-1"], "n_clean": ["-3"], "posterior_init": ["nan", "-100"], "norm_floor": ["0", "-1e-12"],
    "lr_schedule": ["step"], "conventional_epochs": ["-1"], "warm_start_lr": ["-1e-4", "nan"],
    "adv_iters": ["0"], "adv_warmup_epochs": ["-1", "inf"], "surrogate_adv_mode": ["madry"],
    "surrogate_adv_epochs": ["-1"], "adv_epochs": ["-2"], "adv_warm_start_lr": ["-1"],
    "adv_warm_start_warmup": ["-1", "nan"], "adv_clean_weight": ["1", "-0.1", "nan"],
    "keep_epochs": ["0", "1.5", "x"],
    "train_only": ["maybe"], "status": ["maybe"],
    "preset": ["foo"], "methods": ["XYZ", "M,X"], "blackbox": ["maybe"], "audit": ["maybe"],
    "output_dir": None, "models_dir": None, "distribute": ["tpu"], "audit_n": ["0"],
    "audit_eot": ["0", "a"], "audit_steps": ["0"], "audit_restarts": ["0"],
    "audit_square_queries": ["-1"], "data_dir": ["/nonexistent/d3_tf_data"],
    "data_source": ["web"],
}
CASES = [("mnist_table1", f"--{name}={value}") for name, values in BAD_TABLE_FLAGS.items()
         for value in values or []]
CASES += [("cifar_table2", "--preset=quick"), ("cifar_table3", "--budgets=0.015,0.015"),
          ("cifar_table3", "--budgets=abc"), ("audit", "--eot=0"), ("audit", "--n=0"),
          ("audit", "--eps=2"), ("diversity", "--n=0"), ("diversity", "--methods=Q"),
          ("figures", "--preset=foo"), ("mnist_table1", "--epochs"),
          ("cifar_table3", "--methods=VGG16,CNN")]
# Whole messages, as the binaries print them.
MESSAGES = {
    "--methods=M,X": "flag --methods=['M', 'X']: must be a comma-separated list of CNN, BNN",
    "--methods=VGG16,CNN": "flag --methods=['VGG16', 'CNN']: must be a comma-separated list "
                           "of VGG16, BVGG16",
    "--budgets=0.015,0.015": "error: flag --budgets=0.015,0.015: budget 0.015 given twice",
    "--num_draws=0": "error: flag --num_draws=0: must be an integer ≥ 1",
}


def run_binary(name, *args, cwd):
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  return subprocess.run([sys.executable, "-m", f"experiments.{name}", *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=300)


def test_every_table_flag_has_a_bad_value_case():
  # in a subprocess: the binaries define their flags in absl's global FLAGS
  code = ("from absl import flags; import experiments.mnist_table1; "
          "print(' '.join(f.name for f in flags.FLAGS.flags_by_module_dict()"
          "['experiments.common']))")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       check=True, timeout=120).stdout.split()
  flagged = {f.name for f in dataclasses.fields(cfg.Settings) if f.metadata["help"]}
  assert flagged - {"dataset", "arch"} <= set(out) and "continued_from" not in out
  assert set(out) == set(BAD_TABLE_FLAGS)


# Parses each case's flags inside ONE process per binary (absl's global FLAGS hold one
# binary's flags at a time) and prints each parse error as the binaries print it.
_PARSE_ALL = """
import importlib, json, sys
from absl import flags
importlib.import_module("experiments." + sys.argv[1])
out = []
for args in json.loads(sys.argv[2]):
  try:
    flags.FLAGS(["binary"] + args)
    out.append(None)
  except flags.Error as e:
    out.append(f"error: {e}")
  flags.FLAGS.unparse_flags()
print(json.dumps(out))
"""


@pytest.mark.parametrize("binary", sorted({b for b, _ in CASES}))
def test_every_bad_flag_is_refused_in_one_line_naming_it(tmp_path, binary):
  cases = [arg for b, arg in CASES if b == binary]
  extra = ["--output_dir=out", "--models_dir=models"] if "table" in binary else []
  proc = subprocess.run([sys.executable, "-c", _PARSE_ALL, binary,
                         json.dumps([[arg] + extra for arg in cases])], cwd=tmp_path,
                        capture_output=True, text=True, timeout=300, env=dict(
                            os.environ, PYTHONPATH=ROOT + os.pathsep
                            + os.environ.get("PYTHONPATH", "")))
  assert proc.returncode == 0, proc.stderr[-2000:]
  for arg, message in zip(cases, json.loads(proc.stdout.splitlines()[-1])):
    assert message is not None, f"{binary} {arg} was accepted"
    assert "\n" not in message and arg.split("=")[0] in message, (arg, message)
    assert MESSAGES.get(arg, "") in message, (arg, message)
  assert os.listdir(tmp_path) == []


def test_bad_flag_is_one_line_exit_1_and_writes_nothing(tmp_path):
  """The binaries' contract, end to end (every other bad value is checked in-process)."""
  proc = run_binary("mnist_table1", "--eps=5", "--output_dir=out", "--models_dir=models",
                    cwd=tmp_path)
  lines = [l for l in (proc.stdout + proc.stderr).splitlines() if l.strip()]
  assert proc.returncode == 1
  assert lines == ["error: flag --eps=5.0: must be in (0, 1] (L∞, pixel units)"]
  assert os.listdir(tmp_path) == []


def test_presets_are_valid_and_bad_settings_raise():
  for preset in presets.PRESETS.values():
    preset.validate()
  base = presets.PRESETS[("mnist", "cpu")]
  for field, value in [("epochs", 0), ("eps", 1.5), ("lambda_s", float("nan")),
                       ("estimator", "x"), ("sweep_l2", (1.0, -1.0)), ("num_draws", 2.5)]:
    with pytest.raises(cfg.ConfigError, match=f"--{field}="):
      dataclasses.replace(base, **{field: value}).validate()


def _hash_before_later_fields(s):
  """The training hash as computed before posterior_init / norm_floor existed."""
  blob = json.dumps({k: getattr(s, k) for k in cfg.TRAINING_FIELDS}, sort_keys=True)
  return hashlib.md5(blob.encode()).hexdigest()[:10]


def test_later_fields_at_default_keep_the_training_hash():
  committed = json.load(open(os.path.join(ROOT, "results", "mnist_table1", "cpu",
                                          "results.json")))["settings"]
  assert "posterior_init" not in committed  # written before the field existed
  settings = cfg.Settings.from_dict(committed)
  assert settings == presets.PRESETS[("mnist", "cpu")]
  defaults = cfg.Settings()
  for preset in presets.PRESETS.values():
    if all(getattr(preset, k) == getattr(defaults, k) for k in cfg.LATER_TRAINING_FIELDS):
      assert preset.training_hash() == _hash_before_later_fields(preset)
  assert presets.PRESETS[("mnist", "cpu")].training_hash() == "b7580a37af"  # its committed models
  assert presets.PRESETS[("mnist", "robust")].training_hash() == "96fe1abc2d"
  assert presets.PRESETS[("cifar10", "robust")].training_hash() == "8501ba56e1"
  assert presets.PRESETS[("cifar10", "robust_mix")].training_hash() == "8f270ab632"
  for field, value in [("posterior_init", -3.0), ("norm_floor", 1e-12), ("penalty_examples", 16),
                       ("lr_schedule", "cosine"), ("conventional_epochs", 7),
                       ("warm_start_lr", 1e-4), ("adv_warm_start_warmup", 1.0),
                       ("adv_clean_weight", 0.5)]:
    changed = dataclasses.replace(settings, **{field: value})
    assert changed.training_hash() != settings.training_hash()


@pytest.mark.parametrize("binary", ["audit", "diversity", "figures"])
def test_analysis_binaries_without_results_print_one_clean_line(tmp_path, binary):
  """TensorFlow is started (audit, diversity) but its start-up messages stay out."""
  args = (["--mnist_dir=none", "--cifar_dir=none"] if binary == "figures" else
          ["--results_dir=none"])
  proc = run_binary(binary, *args, cwd=tmp_path)
  lines = [l for l in (proc.stdout + proc.stderr).splitlines() if l.strip()]
  assert proc.returncode == 1
  assert len(lines) == 1 and lines[0].startswith("error: no results.json in none"), lines
  assert os.listdir(tmp_path) == []


def test_study_configurations_differ_in_training_hash_when_their_settings_differ():
  from d3_tf import study  # pylint: disable=g-import-not-at-top
  settings_by_hash = {}
  for name in study.GRIDS:
    base = study.GRIDS[name].base()
    for c in study.grid(name, seeds=(0, 1)):
      s = c.settings(base)  # validates
      assert s.seed == (1 if c.name.endswith("/seed=1") else 0)
      settings_by_hash.setdefault(s.training_hash(), set()).add(
          json.dumps(dataclasses.asdict(s), sort_keys=True))
  # a shared model folder is only right for identical settings (e.g. bnn/-3 and mean/-3/loss:
  # the BNN row has no penalty to reduce); anything else would overwrite another's models
  assert all(len(group) == 1 for group in settings_by_hash.values())
  lam = study.grid("lambda_m")[0].settings(study.BASE)
  assert (lam.lambda_m, lam.penalty_reduction, lam.posterior_init) == (10.0, "sum", -3.0)


def test_verdict_preset_trains_as_the_study_at_its_reading():
  """The verdict preset is the study's protocol at the chosen reading and budget: its rows
  share model folders with the study's configuration there (long runs, seeds)."""
  from d3_tf import study  # pylint: disable=g-import-not-at-top
  preset = presets.PRESETS[("mnist", "verdict")]
  same, = [s for s in (c.settings(study.BASE) for c in study.grid("verdict"))
           if s.lambda_s == presets.VERDICT_READING["lambda_s"]]
  assert preset.training_hash() == same.training_hash()
  assert preset.training_hash() != presets.PRESETS[("mnist", "cpu")].training_hash()
  assert (preset.penalty_reduction, preset.n_train, preset.epochs) == ("sum", 10000, 3)
  long = {c.name: c for c in study.grid("long")}["long/verdict"].settings(study.BASE)
  assert (long.n_train, long.epochs, long.lambda_s) == (0, 10, preset.lambda_s)
  assert presets.TABLE_AUDITS[("mnist", "verdict")] == AUDITS["full"]


def test_cifar_verdict_preset_is_the_grid_cell_at_the_mnist_verdict_reading():
  """Table 2 at the CIFAR reading closest to MNIST's pattern reuses the grid's trained M and
  M-S: the preset and the grid cell share one training hash (one model folder)."""
  from d3_tf import study  # pylint: disable=g-import-not-at-top
  preset = presets.PRESETS[("cifar10", "verdict")]
  base = study.GRIDS["cifar"].base()
  cell, = [c for c in study.grid("cifar") if c.name == "cifar/sum/-3/loss"]
  assert preset.training_hash() == cell.settings(base).training_hash()
  assert (preset.penalty_reduction, preset.posterior_init, preset.epochs) == ("sum", -3.0, 2)
  assert (preset.penalty_reduction, preset.posterior_init) == tuple(
      presets.VERDICT_READING[k] for k in ("penalty_reduction", "posterior_init"))
  assert presets.TABLE_AUDITS[("cifar10", "verdict")] == AUDITS["study"]
  sources = presets.PRESET_SOURCES[("cifar10", "verdict")]
  assert sources == study.GRIDS["cifar"].sources and sources.surrogates == ("VGG16", "Adv-CNN")
  # the warm-start check: the same cell from scratch (another folder), every other cell warm
  configs = {c.name: c.settings(base) for c in study.grid("cifar")}
  scratch = configs.pop("cifar/sum/-3/loss/scratch")
  assert scratch.warm_start_lr == 0 and scratch.training_hash() != preset.training_hash()
  assert dataclasses.replace(scratch, warm_start_lr=preset.warm_start_lr).training_hash() == \
      preset.training_hash()
  assert all(s.warm_start_lr == preset.warm_start_lr for s in configs.values())
  assert {s.posterior_init for s in configs.values()} == {-5.0, -3.0, -2.0, -1.5, -1.0}
  assert study.GRIDS["cifar"].rand_gain == 3.0 and study.GRIDS["cifar"].rand_audit().eot


def _results(rows_by_config):
  return {"configs": {name: {"rows": {row: {"pgd": pgd} for row, pgd in rows.items()}}
                      for name, rows in rows_by_config.items()}}


def test_rand_candidates_are_rows_that_beat_the_bayesian_baseline_of_their_posterior():
  from d3_tf import study  # pylint: disable=g-import-not-at-top
  configs = study.grid("cifar")
  base = study.GRIDS["cifar"].base()
  results = _results({"cifar/bvgg16/-3": {"BVGG16": 1.0}, "cifar/bvgg16/-2": {"BVGG16": 4.0},
                      "cifar/sum/-3/loss": {"M": 3.9, "M-S": 4.0},
                      "cifar/sum/-2/loss": {"M": 6.0, "M-S": 9.0},
                      "cifar/mean/-5/loss": {"M": 50.0}})
  found = study.rand_candidates(configs, configs, base, results, 3.0)
  # M-S at −3 beats BVGG16 at −3 by exactly 3; at −2 only M-S (by 5); no baseline at −5
  assert sorted(found) == [("cifar/sum/-2/loss", "M-S"), ("cifar/sum/-3/loss", "M-S")]
  assert study.rand_candidates(configs, configs, base, results, float("inf")) == []
  # the scratch cell's baseline is its own BVGG16 (another start), not the warm-started one
  scratch = _results({"cifar/bvgg16/-3": {"BVGG16": 0.0},
                      "cifar/sum/-3/loss/scratch": {"BVGG16": 10.0, "M-S": 12.0}})
  assert study.rand_candidates(configs, configs, base, scratch, 3.0) == []
  seeded = study.grid("cifar", seeds=(1,))  # another seed: another baseline
  assert study.rand_candidates(seeded, seeded, base, _results(
      {"cifar/bvgg16/-3/seed=1": {"BVGG16": 0.0}, "cifar/sum/-3/loss": {"M-S": 9.0},
       "cifar/sum/-3/loss/seed=1": {"M-S": 2.0}}), 3.0) == []


def test_study_rows_filter_keeps_the_chosen_rows_and_rejects_unknown_ones():
  from d3_tf import study  # pylint: disable=g-import-not-at-top
  full = study.grid("main", seeds=(1,), only=["sum/-3/loss", "bnn/-3"])
  only_m = study.grid("main", seeds=(1,), only=["sum/-3/loss", "bnn/-3"], rows=["M"])
  assert [(c.name, c.rows) for c in full] == [("sum/-3/loss/seed=1", ("M", "M-S")),
                                              ("bnn/-3/seed=1", ("BNN",))]
  # the configuration without an M row is dropped; the kept one trains as before
  assert [(c.name, c.rows) for c in only_m] == [("sum/-3/loss/seed=1", ("M",))]
  assert (only_m[0].settings(study.BASE).training_hash()
          == full[0].settings(study.BASE).training_hash())
  with pytest.raises(cfg.ConfigError, match="has row M-V"):
    study.grid("main", only=["sum/-3/loss"], rows=["M-V"])


def test_report_keeps_rows_another_process_wrote_and_its_own_win(tmp_path):
  """Two processes on the rows of one report: each read it when it started; the one that
  writes last keeps what the other wrote meanwhile, and its own rows win."""
  from d3_tf import pipeline  # pylint: disable=g-import-not-at-top
  path = str(tmp_path / "results.json")
  render = lambda r: ",".join(sorted(r["configs"]))
  fresh = {"configs": {}}
  mine = pipeline.Report(path, render, fresh, header={"command": "mine"})
  other = pipeline.Report(path, render, fresh, header={"command": "other"})
  other.put(("configs", "long/verdict", "rows", "BNN"), {"pgd": 0.0})
  other.put(("configs", "long/verdict", "rows", "M"), {"pgd": 99.0})
  other.put(("configs", "long/sum/-5/loss", "rows", "M-S"), {"pgd": 1.0})
  mine.set(("configs", "long/verdict", "settings_hash"), "abc")
  mine.put(("configs", "long/verdict", "rows", "M"), {"pgd": 5.5})
  on_disk = json.load(open(path))
  assert on_disk["configs"]["long/verdict"] == {"settings_hash": "abc", "rows": {
      "BNN": {"pgd": 0.0}, "M": {"pgd": 5.5}}}
  assert on_disk["configs"]["long/sum/-5/loss"] == {"rows": {"M-S": {"pgd": 1.0}}}
  assert on_disk["command"] == "mine" and mine.get("configs", "long/verdict", "rows", "BNN")
  assert open(str(tmp_path / "results.md")).read() == "long/sum/-5/loss,long/verdict"
  assert fresh == {"configs": {}}  # the fresh record is copied, not filled


def test_run_rows_skips_done_rows_and_stamps_provenance(tmp_path):
  from d3_tf import pipeline  # pylint: disable=g-import-not-at-top
  report = pipeline.Report(str(tmp_path / "r.json"), str, {"rows": {"A": {"x": 1}}},
                           header={"command": "c", "git_commit": "g"})
  made = pipeline.run_rows(report, ["A", "B"], lambda n: ("rows", n),
                           lambda n: {"x": 2}, seed=3, log=lambda s: None)
  assert list(made) == ["B"] and report.get("rows", "A") == {"x": 1}
  prov = report.get("rows", "B")["provenance"]
  assert (prov["command"], prov["git_commit"], prov["seed"]) == ("c", "g", 3)
  # a row finished over two runs (Table 3's budgets): done decides, the wall time adds up
  report.put(("rows", "C"), {"b": {"0.1": 5.0}, "provenance": {"wall_seconds": 100.0}})
  part = lambda n: dict(report.get("rows", n), b={"0.1": 5.0, "0.2": 1.0})
  made = pipeline.run_rows(report, ["A", "C"], lambda n: ("rows", n), part, seed=3,
                           log=lambda s: None, done=lambda row: "0.2" in row.get("b", {"0.2": 0}))
  assert list(made) == ["C"] and report.get("rows", "C")["b"] == {"0.1": 5.0, "0.2": 1.0}
  assert 100.0 <= report.get("rows", "C")["provenance"]["wall_seconds"] < 110.0
  assert prov["wall_seconds"] >= 0.0