"""Settings, presets and flag validation: every bad value is one line, before any work."""
import dataclasses
import hashlib
import json
import os
import subprocess
import sys

import pytest

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
    "train_only": ["maybe"],
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
          ("figures", "--preset=foo"), ("mnist_table1", "--epochs")]


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
  assert {f.name for f in dataclasses.fields(cfg.Settings)} - {"dataset", "arch"} <= set(out)
  assert set(out) == set(BAD_TABLE_FLAGS)


@pytest.mark.parametrize("binary,arg", CASES)
def test_bad_flag_is_one_line_and_writes_nothing(tmp_path, binary, arg):
  proc = run_binary(binary, arg, "--output_dir=out", "--models_dir=models", cwd=tmp_path) \
      if binary in ("mnist_table1", "cifar_table2", "cifar_table3") else \
      run_binary(binary, arg, cwd=tmp_path)
  lines = [l for l in (proc.stdout + proc.stderr).splitlines() if l.strip()]
  assert proc.returncode != 0
  assert len(lines) == 1, lines
  assert lines[0].startswith("error: ") and arg.split("=")[0] in lines[0], lines[0]
  assert os.listdir(tmp_path) == []


def test_messages_name_value_and_range(tmp_path):
  line = run_binary("mnist_table1", "--eps", "5", cwd=tmp_path).stderr.strip()
  assert line == "error: flag --eps=5.0: must be in (0, 1] (L∞, pixel units)"
  line = run_binary("mnist_table1", "--num_draws", "0", cwd=tmp_path).stderr.strip()
  assert line == "error: flag --num_draws=0: must be an integer ≥ 1"


def test_presets_are_valid_and_bad_settings_raise():
  for preset in cfg.PRESETS.values():
    preset.validate()
  base = cfg.PRESETS[("mnist", "cpu")]
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
  assert settings == cfg.PRESETS[("mnist", "cpu")]
  defaults = cfg.Settings()
  for preset in cfg.PRESETS.values():
    if all(getattr(preset, k) == getattr(defaults, k) for k in cfg.LATER_TRAINING_FIELDS):
      assert preset.training_hash() == _hash_before_later_fields(preset)
  assert cfg.PRESETS[("mnist", "cpu")].training_hash() == "b7580a37af"  # its committed models
  assert cfg.PRESETS[("mnist", "robust")].training_hash() == "96fe1abc2d"
  assert cfg.PRESETS[("cifar10", "robust")].training_hash() == "8501ba56e1"
  assert cfg.PRESETS[("cifar10", "robust_mix")].training_hash() == "8f270ab632"
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
  preset = cfg.PRESETS[("mnist", "verdict")]
  same, = [s for s in (c.settings(study.BASE) for c in study.grid("verdict"))
           if s.lambda_s == cfg.VERDICT_READING["lambda_s"]]
  assert preset.training_hash() == same.training_hash()
  assert preset.training_hash() != cfg.PRESETS[("mnist", "cpu")].training_hash()
  assert (preset.penalty_reduction, preset.n_train, preset.epochs) == ("sum", 10000, 3)
  long = {c.name: c for c in study.grid("long")}["long/verdict"].settings(study.BASE)
  assert (long.n_train, long.epochs, long.lambda_s) == (0, 10, preset.lambda_s)
  assert "verdict" in cfg.AUDITED_PRESETS


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


def test_study_save_keeps_rows_another_process_wrote_to_the_same_grid():
  """Two processes on the rows of one grid: each read results.json when it started; the one
  that saves last must keep what the other wrote meanwhile, and its own rows win."""
  from d3_tf import study  # pylint: disable=g-import-not-at-top
  mine = {"configs": {"long/verdict": {"overrides": {}, "rows": {"M": {"pgd": 5.5}}}}}
  on_disk = {"configs": {"long/verdict": {"overrides": {}, "rows": {"BNN": {"pgd": 0.0},
                                                                    "M": {"pgd": 99.0}}},
                         "long/sum/-5/loss": {"overrides": {"seed": 0},
                                              "rows": {"M-S": {"pgd": 1.0}}}}}
  merged = study.merge_rows(mine, on_disk)
  assert merged["configs"]["long/verdict"]["rows"] == {"M": {"pgd": 5.5}, "BNN": {"pgd": 0.0}}
  assert merged["configs"]["long/sum/-5/loss"] == on_disk["configs"]["long/sum/-5/loss"]
  assert study.merge_rows({"configs": {}}, None) == {"configs": {}}
