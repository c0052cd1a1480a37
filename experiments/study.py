"""The verdict study: does Defense Through Diverse Directions work, and under which reading?

Trains and evaluates a grid of configurations (d3_tf/study.py) for rows of the paper's table
on the grid's dataset (every grid so far: MNIST, Table 1), on the protocol of that dataset's
committed --preset cpu table (its surrogate sets, ε, PGD), and writes
results/study/<grid>/{results.json,study.md,diversity.png,figure1.png} after every row.
Resumable like the tables: a finished (configuration, row) is skipped and a killed training
continues from its last epoch.

  python -m experiments.study --grid main           # {sum, mean} × ρ₀ {−5, −3} × {loss, true_logit}
  python -m experiments.study --grid init           # ρ₀ ∈ {−4, −2.5, −2}, printed sums
  python -m experiments.study --grid lambda_s       # λS scaled down, printed sums, ρ₀ = −3
  python -m experiments.study --grid lambda_m       # λM scaled down, printed sums, ρ₀ = −3
  python -m experiments.study --grid verdict        # M-S at λM 10, λS 0.4 / 0.04: picks the preset
  python -m experiments.study --grid long --keep_models   # 60k × 10 epochs: the paper's reading,
                                                          # the verdict's; models kept beside the results
  python -m experiments.study --grid full --configs full/verdict --rows M --keep_models
                                                    # the paper's 100 epochs of 60k images
  python -m experiments.study --grid main --configs sum/-3/loss --rows M --seeds 1,2
  python -m experiments.study --grid smoke          # seconds per row, embedded slice (tests)
"""
import json
import os
import sys
import time

from absl import flags

from d3_tf import settings as cfg
from d3_tf import store, study
from experiments import common

_GRID = flags.DEFINE_enum("grid", "main", list(study.GRIDS), "Which grid to run.")
_CONFIGS = flags.DEFINE_list("configs", None, "Only these configurations of the grid "
                             "(default: all), e.g. sum/-3/loss.")
_ROWS = flags.DEFINE_list("rows", None, "Only these rows of each chosen configuration "
                          "(default: all of its rows), e.g. M.")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seeds; each configuration runs once per seed.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Default: results/study/<grid>.")
_MODELS_DIR = flags.DEFINE_string("models_dir", os.path.join("results", "models"),
                                  "Trained models (shared with the table binaries).")
_KEEP_MODELS = flags.DEFINE_bool(
    "keep_models", False, "Keep the grid's own rows (epoch checkpoint, final weights, logs; "
    "not TensorBoard) in <output_dir>/models instead of --models_dir, to be committed with "
    "the results: a fresh checkout then resumes an unfinished row from its last epoch. The "
    "surrogates and black-box sets stay in --models_dir.")
_AUDIT = flags.DEFINE_bool("audit", True, "Audit every row (EOT-PGD, APGD-CE/DLR, transfer).")
_DIVERSITY_N = flags.DEFINE_integer("diversity_n", 200, "Test images of the ΩM/ΩS measurement.")
common.validate("seeds", common.int_list(0))
common.validate("diversity_n", cfg.POSITIVE_INT)


def main(argv):
  del argv
  from d3_tf import audit, experiment, plots, tables  # pylint: disable=g-import-not-at-top
  grid = study.GRIDS[_GRID.value]
  configs = study.grid(_GRID.value, tuple(int(s) for s in _SEEDS.value), _CONFIGS.value,
                       _ROWS.value)
  base, protocol, audit_kwargs = grid.base(), grid.protocol(), grid.audit()  # protocol: its
  n_train = [c.settings(base).n_train for c in configs] + [protocol.n_train]  # surrogate sets
  (x, y), (xt, yt) = common.load_data(grid.dataset, None if 0 in n_train else max(n_train),
                                      base.n_eval and max(base.n_eval, base.n_clean),
                                      embedded_default=grid.smoke)
  out = common.writable(_OUTPUT_DIR.value or os.path.join("results", "study", _GRID.value),
                        "output_dir")
  common.writable(_MODELS_DIR.value, "models_dir")
  path = os.path.join(out, "results.json")
  results = store.read_json(path) or {"grid": _GRID.value, "configs": {}, "wall_seconds": 0.0}
  results.update(audit=audit_kwargs, versions=tables.versions(), git_commit=tables.git_commit(),
                 command=" ".join(["python -m experiments.study"] + sys.argv[1:]))
  saved = time.time()

  def save():
    """results.json, study.md and the figures after every row: a stopped grid loses nothing,
    and rows another process wrote to the same grid meanwhile are kept."""
    nonlocal saved
    on_disk = store.read_json(path) or {"wall_seconds": 0.0}
    study.merge_rows(results, on_disk)
    now = time.time()  # each process adds its own seconds since its last save
    results["wall_seconds"] = on_disk["wall_seconds"] + now - saved
    saved = now
    store.atomic_write(path, json.dumps(results, indent=1))
    store.atomic_write(os.path.join(out, "study.md"), study.markdown(results))
    return [plots.figure_diversity(study.diversity_points(results),
                                   os.path.join(out, "diversity.png"), base.num_draws),
            study.figure1(results, study.grid(_GRID.value) + configs, base, rows_dir,
                          os.path.join(out, "figure1.png"))]

  rows_dir = os.path.join(out, "models") if _KEEP_MODELS.value else _MODELS_DIR.value
  sets = None
  for c in configs:
    s = c.settings(base)
    entry = results["configs"].setdefault(c.name, {"overrides": dict(c.overrides), "rows": {}})
    entry["settings_hash"] = s.training_hash()
    pending = [r for r in c.rows if r not in entry["rows"]]
    if not pending:
      print(f"{c.name}: already done, skipped")
      continue
    runner = experiment.Runner(s, rows_dir, (x[:s.n_train or None], y[:s.n_train or None]),
                               (xt, yt))
    if grid.conventional_from and s.warm_start_lr:
      runner.adopt_conventional(grid.conventional_from)
    for name in pending:
      method = cfg.parse_method(name, grid.dataset)
      print(f"{c.name} {name}: training / loading", flush=True)
      model = runner.train(method)
      if sets is None and grid.surrogates_from:  # the grid's own (strong) surrogates
        sets = study.surrogate_sets(*grid.surrogates_from, runner.xe, runner.ye, protocol,
                                    os.path.join(_MODELS_DIR.value, "surrogate_sets"))
      if sets is None:  # after the first training: two grids run at once do not race for them
        sets = experiment.Runner(protocol, _MODELS_DIR.value, (x[:protocol.n_train or None],
                                                               y[:protocol.n_train or None]),
                                 (xt, yt)).blackbox_sets()
      # Which surrogates made them: they are retrained where --models_dir lacks them.
      sources = {source: {k: meta[k] for k in ("source_fingerprint", "source_clean_accuracy")}
                 for source, (_, _, meta) in sets.items()}
      t_eval = time.time()  # the row's own evaluation, not the one-off black-box sets
      row = runner.evaluate(method, sets)
      if _AUDIT.value:
        row["audited"], row["audit"] = tables.audit_row(runner, method, row, sets, audit_kwargs)
      if method.bayesian:
        n = min(_DIVERSITY_N.value, len(runner.xe))
        row["diversity"] = audit.direction_diversity(model, runner.xe[:n], runner.ye[:n])
      row.update(study.gradient_stats(runner.classifier(model), runner.xe, runner.ye))
      row["eval_seconds"] = time.time() - t_eval
      row["provenance"] = {"git_commit": results["git_commit"], "command": results["command"],
                           "seed": s.seed, "blackbox_sets": sources}
      entry["rows"][name] = row
      save()
      print(f"{c.name} {name}: clean {row['clean']:.1f}, PGD {row['pgd']:.1f}, audited "
            f"{row.get('audited', float('nan')):.1f}", flush=True)
  figures = save()
  print(study.markdown(results))
  print(f"results: {path}" + "".join(f", {f}" for f in figures if f))


if __name__ == "__main__":
  common.run(main)
