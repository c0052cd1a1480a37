"""The verdict over study grids: seeds averaged, claims picked under the clean threshold."""
import json
import os
import subprocess
import sys

import numpy as np

from d3_tf import verdict
from d3_tf.benchmark import CIFAR10, MNIST

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _row(clean, pgd, audited=None, omega_m=None):
  r = {"clean": clean, "fgsm": pgd + 10, "pgd": pgd, "blackbox": 50.0}
  if audited is not None:
    r["audited"] = audited
  if omega_m is not None:
    r["diversity"] = {"omega_m": omega_m}
  return r


def _grid():
  return {"grid": "main", "configs": {
      "sum/-3/loss": {"overrides": {"seed": 0}, "rows": {
          "M": _row(97.5, 20.0, 2.0, 0.12), "M-S": _row(60.0, 90.0, 0.0, 0.9)}},
      "sum/-3/loss/seed=1": {"overrides": {"seed": 1}, "rows": {"M": _row(98.5, 24.0, 4.0, 0.14)}},
      "mean/-5/loss": {"overrides": {"seed": 0}, "rows": {
          "M": _row(99.0, 1.0, 0.0, 0.8), "BNN": _row(99.2, 0.0, 0.0, 0.5)}}}}


def _cifar_grid():
  return {"grid": "cifar", "configs": {"cifar/sum/-3/loss": {"overrides": {"seed": 0}, "rows": {
      "M-S": _row(80.0, 5.4, 0.0, 0.51), "M": _row(30.0, 11.0, 0.0, 0.09)}}}}


def _text(agg, bench=MNIST, **kwargs):
  return verdict.markdown([verdict.section(agg, bench, **kwargs)])


def test_each_dataset_is_held_to_its_own_paper_table_and_floors():
  agg = verdict.aggregate(verdict.entries("cifar", _cifar_grid()))
  text = _text(agg, CIFAR10)
  assert "## Table 2 — CIFAR-10, L∞ ε = 0.03" in text and "(ε = 0.03)" in text
  # M-S at 80% clean counts at CIFAR-10's 75% floor, against Table 2's 47.7
  assert "| M-S | 47.7 | 5.4 | 80.0 | 0.0 | 0.510 | cifar: cifar/sum/-3/loss |" in text
  assert "| M | 6.1 | no run reached 75% clean |" in text  # M learned too little (30%)
  assert "| M | 6.1 | no run reached 50% clean |" in text
  assert "| M-S | 94.0 |" not in text  # MNIST's Table 1 is not CIFAR's
  assert "| M-S | 47.7 | no run reached 97% clean |" in _text(agg, CIFAR10, clean_min=97.0)


def test_seeds_are_averaged_with_sample_std():
  agg = verdict.aggregate(verdict.entries("main", _grid()))
  m = agg[("main", "sum/-3/loss", "M")]
  assert m["seeds"] == [0, 1]
  np.testing.assert_allclose(m["pgd"]["mean"], 22.0)
  np.testing.assert_allclose(m["pgd"]["std"], np.std([20.0, 24.0], ddof=1))
  np.testing.assert_allclose(m["omega_m"]["mean"], 0.13)
  assert agg[("main", "mean/-5/loss", "BNN")]["pgd"]["n"] == 1
  assert verdict.fmt(m["pgd"]) == "22.0 ± 2.8 (2)" and verdict.fmt(None) == "—"


def test_best_claim_respects_the_clean_threshold():
  agg = verdict.aggregate(verdict.entries("main", _grid()))
  best = verdict.best_per_claim(agg, clean_min=97.0)
  assert set(best) == {"M"}  # M-S reached 90% PGD but only 60% clean: it does not count
  assert best["M"][1] == "sum/-3/loss"
  best = verdict.best_per_claim(agg, clean_min=50.0)
  assert best["M-S"][1] == "sum/-3/loss"
  text = _text(agg)
  assert "| M | 55.2 | 22.0 ± 2.8 (2) |" in text
  assert "| M-S | 94.0 | no run reached 97% clean |" in text
  assert "| M-S | 94.0 | no run reached 90% clean |" in text  # the second, lower floor
  lowered = _text(agg, clean_near=50.0)
  assert "| M-S | 94.0 | 90.0 | 60.0 | 0.0 | 0.900 | main: sum/-3/loss |" in lowered
  assert "best PGD (clean ≥ 90%)" not in _text(agg, clean_near=97.0)


def test_cost_sums_the_seconds_each_cell_records():
  grid = _grid()
  grid["configs"]["sum/-3/loss"]["rows"]["M"].update(train_seconds=100.0, eval_seconds=30.0)
  grid["configs"]["mean/-5/loss"]["rows"]["BNN"].update(train_seconds=50.0)
  table = {"preset": "cpu", "settings": {"seed": 0},
           "rows": {"M-V": dict(_row(98.0, 3.0), train_seconds=3600.0)}}
  found = verdict.entries("main", grid) + verdict.entries("cpu", table)
  spent = verdict.cost(found)
  assert spent == {"cells": 6, "train_seconds": 3750.0, "eval_seconds": 30.0}
  text = _text(verdict.aggregate(found), spent=spent)
  assert "6 trained (configuration, row, seed) cells" in text and "1.0 h of training" in text
  assert "trained (configuration" not in _text(verdict.aggregate(found))


def test_table_runs_count_as_one_configuration():
  table = {"preset": "cpu", "settings": {"seed": 0}, "rows": {"M-V": _row(98.0, 3.0)}}
  agg = verdict.aggregate(verdict.entries("cpu", table))
  assert verdict.best_per_claim(agg)["M-V"][1] == "preset cpu"


def test_binary_writes_table_and_figure(tmp_path):
  for name, grid in (("main", _grid()), ("cifar", _cifar_grid())):
    os.makedirs(tmp_path / "study" / name)
    json.dump(grid, open(tmp_path / "study" / name / "results.json", "w"))
  env = dict(os.environ, PYTHONPATH=ROOT)
  proc = subprocess.run([sys.executable, "-m", "experiments.verdict", "--study_dir", "study"],
                        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  out = tmp_path / "study" / "verdict"
  assert (out / "verdict_mnist.png").exists() and (out / "verdict_cifar10.png").exists()
  mnist, cifar = (out / "verdict.md").read_text().split("## Table 2 — CIFAR-10")
  assert "| M | 55.2 | 22.0 ± 2.8 (2) |" in mnist and "cifar/sum" not in mnist
  assert "| M-S | 47.7 | 5.4 |" in cifar and "| main |" not in cifar and "| main |" in mnist
  empty = subprocess.run([sys.executable, "-m", "experiments.verdict", "--study_dir", "none"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
  lines = [l for l in (empty.stdout + empty.stderr).splitlines() if l.strip()]
  assert empty.returncode != 0 and len(lines) == 1 and "no study results" in lines[0]


def test_table_note_gives_the_audited_image_count():
  import dataclasses  # pylint: disable=g-import-not-at-top
  from d3_tf import paper, presets, tables  # pylint: disable=g-import-not-at-top
  s = dataclasses.asdict(presets.PRESETS[("mnist", "cpu")])
  row = {"clean": 97.0, "fgsm": 50.0, "pgd": 10.0, "blackbox": 40.0, "n_eval": 1000}
  results = {"preset": "cpu", "settings": s,
             "rows": {"M": dict(row, audited=0.5, audit={"n": 200}), "BNN": row}}
  text = tables.table_markdown(results, paper.TABLE1, "Table 1")
  assert "attacks on the first 200 test images" in text and "Square and transfer" in text
  assert "| M |" in text and text.count("| 0.5 |") == 1
  results["rows"]["M"]["audit"]["settings"] = {"square_queries": 0}  # an audit without Square
  text = tables.table_markdown(results, paper.TABLE1, "Table 1")
  assert "(AutoAttack) and transfer attacks" in text and "Square" not in text
  del results["rows"]["M"]["audit"]
  assert "attacks on the first test images" in tables.table_markdown(results, paper.TABLE1, "T")


def test_table_marks_reference_rows_and_shows_worst_and_expected():
  import dataclasses  # pylint: disable=g-import-not-at-top
  from d3_tf import paper, presets, tables  # pylint: disable=g-import-not-at-top
  s = dataclasses.asdict(presets.PRESETS[("mnist", "robust")])
  row = {"clean": 98.0, "fgsm": 90.0, "pgd": 88.0, "blackbox": 95.0, "n_eval": 1000}
  results = {"preset": "robust", "settings": s, "rows": {
      "Adv-CNN": dict(row, audited=86.5, audit={"n": 200, "expected_robust_accuracy": 86.5}),
      "CNN": dict(row, audited=0.0, audit={"n": 200, "expected_robust_accuracy": 0.2})}}
  text = tables.table_markdown(results, paper.TABLE1, "Table 1")
  assert "Audited (worst / expected) |" in text
  assert "| Adv-CNN (not in the paper) | 98.0 | — | — | 90.0 | — | — |" in text
  assert text.rstrip().count("| 86.5 / 86.5 |") == 1 and "| 0.0 / 0.2 |" in text
  budgets = {"preset": "robust", "settings": dataclasses.asdict(
      presets.PRESETS[("cifar10", "robust")]), "budgets": [0.015], "scale_step": False,
             "rows": {"Adv-CNN": {"budgets": {"0.015": 40.0}}}}
  mix = tables.setup_line(dataclasses.asdict(presets.PRESETS[("cifar10", "robust_mix")]), 500,
                         ("VGG16", "Adv-CNN", "Adv-BNN"))
  assert "the Adv-CNN 6 epochs" in mix and "ε ramped up over 1 epoch," in mix
  assert "loss 0.5·clean + 0.5·PGD" in mix and "0.5·clean" not in tables.setup_line(
      dataclasses.asdict(presets.PRESETS[("cifar10", "robust")]), 500, ("Adv-CNN",))
  text = tables.budget_markdown(budgets, "Table 3")
  assert "| Adv-CNN (trained here; paper: Liu et al.'s, quoted) | 40.0 | 58.3 | -18.3 |" in text
  assert "| Adv-BNN (Liu et al., quoted) | — | 68.7 | — |" in text
  assert text.count("Adv-CNN") == 1
  # another run's trained rows beside a table's own (the verdict preset's Table 3)
  beside = dict(budgets, rows={"M-S": {"budgets": {"0.015": 1.0}}}, references={
      "preset": "robust_mix", "rows": {"Adv-BNN": {"budgets": {"0.015": 46.4}}}})
  text = tables.budget_markdown(beside, "Table 3")
  assert "| M-S | 1.0 | 61.3 | -60.3 |" in text
  assert ("| Adv-BNN (trained here, `robust_mix` preset; paper: Liu et al.'s, quoted) | 46.4 | "
          "68.7 | -22.3 |") in text
  assert "| Adv-CNN (Liu et al., quoted) | — | 58.3 | — |" in text and text.count("Adv-BNN") == 1


def test_table3_references_need_the_same_test_images_and_pgd(tmp_path):
  import dataclasses  # pylint: disable=g-import-not-at-top
  import pytest  # pylint: disable=g-import-not-at-top
  from d3_tf import presets, settings as cfg  # pylint: disable=g-import-not-at-top
  from experiments import cifar_table3  # pylint: disable=g-import-not-at-top
  s = presets.PRESETS[("cifar10", "verdict")]
  theirs = {"preset": "robust_mix", "command": "c", "git_commit": "g",
            "settings": dataclasses.asdict(presets.PRESETS[("cifar10", "robust_mix")]),
            "rows": {"Adv-CNN": {"budgets": {"0.0": 69.2}}}}
  (tmp_path / "results.json").write_text(json.dumps(theirs))
  got = cifar_table3.references(str(tmp_path), ("Adv-CNN",), s)
  assert got["rows"] == theirs["rows"] and (got["preset"], got["command"]) == ("robust_mix", "c")
  with pytest.raises(cfg.ConfigError, match="no Table 3 rows Adv-BNN"):
    cifar_table3.references(str(tmp_path), ("Adv-BNN",), s)
  with pytest.raises(cfg.ConfigError, match=r"another PGD \(n_eval\)"):
    cifar_table3.references(str(tmp_path), ("Adv-CNN",), dataclasses.replace(s, n_eval=100))


def test_git_commit_ignores_results_but_not_code(tmp_path):
  from d3_tf import pipeline  # pylint: disable=g-import-not-at-top
  git = lambda *a: subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *a],
                                  cwd=tmp_path, check=True, capture_output=True, text=True)
  git("init", "-q")
  (tmp_path / "results").mkdir()
  (tmp_path / "results" / "table.json").write_text("{}")
  (tmp_path / "code.py").write_text("x = 1\n")
  git("add", ".")
  git("commit", "-qm", "one")
  head = git("rev-parse", "HEAD").stdout.strip()
  (tmp_path / "results" / "table.json").write_text('{"rows": {}}')  # a run writing its report
  assert pipeline.git_commit(str(tmp_path)) == head
  (tmp_path / "code.py").write_text("x = 2\n")
  assert pipeline.git_commit(str(tmp_path)) == head + "+uncommitted-changes"
  assert pipeline.git_commit(str(tmp_path / "results")) == head + "+uncommitted-changes"


def test_every_committed_table_regenerates_from_its_results():
  """The renderers keep every committed table.md, study.md and checkpoints.md: regenerated
  from its JSON, each is the committed file byte for byte."""
  import glob  # pylint: disable=g-import-not-at-top
  from d3_tf import tables  # pylint: disable=g-import-not-at-top
  from d3_tf import study  # pylint: disable=g-import-not-at-top
  render = {"mnist_table1": tables.accuracy_markdown, "cifar_table2": tables.accuracy_markdown,
            "cifar_table3": lambda r: tables.budget_markdown(
                r, "Table 3 — CIFAR-10, PGD budgets"), "study": study.markdown}
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  checked = 0
  for path in sorted(glob.glob(os.path.join(root, "results", "**", "results.json"),
                               recursive=True)):
    results = json.load(open(path))
    binary = "study" if "grid" in results else results.get("binary")
    table = os.path.join(os.path.dirname(path), "study.md" if binary == "study" else "table.md")
    if binary in render and os.path.exists(table):
      assert render[binary](results) == open(table).read(), path
      checked += 1
  for path in glob.glob(os.path.join(root, "results", "study", "*", "checkpoints.json")):
    kept = open(os.path.join(os.path.dirname(path), "checkpoints.md")).read()
    assert study.checkpoints_markdown(json.load(open(path))) == kept, path
    checked += 1
  assert checked >= 21  # 13 tables, 7 study grids, the full grid's kept epochs


def test_a_tables_figures_are_drawn_from_the_rows_so_far(tmp_path):
  from d3_tf import presets, tables  # pylint: disable=g-import-not-at-top
  sweep = [{"eps": 0.015, "norm": "inf", "accuracy": 1.0}]
  results = {"rows": {"M": {"clean": 80.0, "sweep_inf": sweep}}}  # one row landed so far
  made = tables.table_figures(results, presets.PRESETS[("cifar10", "verdict")], str(tmp_path))
  assert made == [str(tmp_path / "figure3.png")] and os.path.getsize(made[0]) > 1000
  assert tables.table_figures({"rows": {"M": {"clean": 80.0}}},  # nothing to draw yet
                              presets.PRESETS[("cifar10", "verdict")], str(tmp_path / "x")) == []
