"""The verdict study: does Defense Through Diverse Directions work, and under which reading?

Trains and evaluates a grid of configurations (d3_tf/study.py) for rows of the paper's table
on the grid's dataset (MNIST's Table 1; CIFAR-10's Table 2 for the cifar grids), on the
protocol of that dataset's committed --preset cpu table (ε, PGD; its surrogate sets, or the
grid's strong surrogates), and writes
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
  python -m experiments.study --grid full --configs full/verdict/continued --keep_models --checkpoints 10,25,50,100
                                                    # audits its kept epochs beside the training
  python -m experiments.study --grid main --configs sum/-3/loss --rows M --seeds 1,2
  python -m experiments.study --grid cifar --configs cifar/bvgg16/-3,cifar/sum/-3/loss --keep_models
                                                    # CIFAR-10 at MNIST's verdict reading; rows
                                                    # with a PGD gain ≥ 3 also get the rand audit
  python -m experiments.study --grid smoke          # seconds per row, embedded slice (tests)
  python -m experiments.study --grid cifar --keep_models --status   # what is done, what is left
"""
import os
import time

from absl import flags

from d3_tf import settings as cfg
from d3_tf import status, store, study
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
_RAND_GAIN = flags.DEFINE_float(
    "rand_gain", None, "After the rows: the rand protocol's audit (AutoAttack's version for "
    "random models: APGD-CE/DLR, EOT 20) of every row whose PGD beats the Bayesian baseline's "
    "(BNN / BVGG16 on the same posterior, data, budget and seed) by this many points or more. "
    "Default: the grid's (3 for cifar, none (inf) for the others).")
_CHECKPOINTS = flags.DEFINE_list(
    "checkpoints", None, "Instead of training: evaluate and audit the weights the chosen rows "
    "kept after these epochs (--keep_epochs), e.g. 10,25,50,100: every one kept and not done "
    "yet, with the rand protocol's audit too, into <output_dir>/checkpoints.{json,md}. Runs "
    "beside the grid's training run; epochs not reached yet are left for a later run.")
_STATUS = flags.DEFINE_bool(
    "status", False, "Print where the chosen configurations' rows stand (done, trained, "
    "training: epochs and hours so far, not started) and the training hours left, from the "
    "files alone (no TensorFlow, nothing trained), then exit.")
common.validate("seeds", common.int_list(0))
common.validate("checkpoints", common.int_list(1))
common.validate("diversity_n", cfg.POSITIVE_INT)


def _audit_rand(runner, method, row, audit, label):
  """(result, seconds) of AutoAttack's rand version (``audit``) on the images ``row`` was
  audited on, announced as ``label``."""
  from d3_tf import tables  # pylint: disable=g-import-not-at-top
  print(f"{label}: the rand protocol's audit", flush=True)
  t0 = time.time()
  _, result = tables.audit_row(runner, method, row, None, audit)
  return result, time.time() - t0


def rand_stage(report, grid, configs, base, runner_of, gain):
  """AutoAttack's rand version (``grid.rand_audit()``) on every row of ``configs`` whose PGD
  beats its Bayesian baseline's by ``gain`` points (``study.rand_candidates``), once each:
  written into the row as ``audit_rand`` (and its seconds)."""
  everything = study.grid(_GRID.value, tuple(int(s) for s in _SEEDS.value))
  by_name = {c.name: c for c in configs}
  for name, row in study.rand_candidates(configs, everything, base, report.data, gain):
    path = ("configs", name, "rows", row)
    if report.get(*path, "audit_rand") is not None:
      continue
    audit_rand, seconds = _audit_rand(runner_of(by_name[name].settings(base)),
                                      cfg.parse_method(row, grid.dataset), report.get(*path),
                                      grid.rand_audit(), f"{name} {row} (PGD gain ≥ {gain:g})")
    report.set(path + ("audit_rand_seconds",), seconds)
    report.put(path + ("audit_rand",), audit_rand)


def checkpoint_stage(out, configs, base, runner_of, evaluate, grid):
  """The weights each row of ``configs`` kept after the --checkpoints epochs: the study's
  evaluation (``evaluate``), written, then the rand protocol's audit (a killed run resumes at
  the audit), into checkpoints.json and checkpoints.md."""
  from d3_tf import pipeline  # pylint: disable=g-import-not-at-top
  rand = grid.rand_audit()
  report = pipeline.Report(os.path.join(out, "checkpoints.json"), study.checkpoints_markdown,
                           {"grid": _GRID.value, "configs": {}},
                           header=dict(pipeline.provenance("study"), audit=grid.audit().record(),
                                       rand_audit=rand.record()))
  for c in configs:
    runner = runner_of(c.settings(base))
    for name in c.rows:
      method = cfg.parse_method(name, grid.dataset)
      path = lambda epoch, name=name, c=c: ("configs", c.name, "rows", name, epoch)

      def one(epoch, runner=runner, method=method, path=path, config=c.name):
        runner.at_epoch(method, int(epoch))
        row = report.get(*path(epoch))
        if row is None:
          row = evaluate(runner, f"{config} epoch {epoch}", method.name)
          row.pop("epochs", None)
          row.pop("train_seconds", None)  # the run's seconds so far, not up to this epoch
          report.put(path(epoch), row)
        row["audit_rand"], row["audit_rand_seconds"] = _audit_rand(
            runner, method, row, rand, f"{config} {method.name} epoch {epoch}")
        return row

      kept = [e for e in _CHECKPOINTS.value if runner.store.kept(name, int(e))]
      pipeline.run_rows(report, kept, path, one, seed=runner.s.seed,
                        done=lambda row: row is not None and "audit_rand" in row)
  print(study.checkpoints_markdown(report.save()))


def main(argv):
  del argv
  grid = study.GRIDS[_GRID.value]
  configs = study.grid(_GRID.value, tuple(int(s) for s in _SEEDS.value), _CONFIGS.value,
                       _ROWS.value)
  base, protocol = grid.base(), grid.protocol()  # protocol: its surrogate sets
  out = common.writable(_OUTPUT_DIR.value or os.path.join("results", "study", _GRID.value),
                        "output_dir")
  rows_dir = os.path.join(out, "models") if _KEEP_MODELS.value else _MODELS_DIR.value
  if _STATUS.value:
    results = store.read_json(os.path.join(out, "results.json"), {})
    print(f"grid {_GRID.value} (models in {rows_dir}):\n")
    print(status.markdown(configs, base, rows_dir, results))
    return
  from d3_tf import audit, audit_checks, experiment, pipeline, plots, tables  # pylint: disable=g-import-not-at-top
  audit_settings = grid.audit() if _AUDIT.value else None
  n_train = [c.settings(base).n_train for c in configs] + [protocol.n_train]
  (x, y), (xt, yt) = common.load_data(grid.dataset, None if 0 in n_train else max(n_train),
                                      base.n_eval and max(base.n_eval, base.n_clean),
                                      embedded_default=grid.smoke)
  common.writable(_MODELS_DIR.value, "models_dir")
  figures = []

  def render(results):
    """study.md; the figures beside it (a stopped grid loses nothing)."""
    figures[:] = [plots.figure_diversity(study.diversity_points(results),
                                         os.path.join(out, "diversity.png"), base.num_draws),
                  study.figure1(results, study.grid(_GRID.value) + configs, base, rows_dir,
                                os.path.join(out, "figure1.png"))]
    return study.markdown(results)

  report = pipeline.Report(os.path.join(out, "results.json"), render,
                           {"grid": _GRID.value, "configs": {}},
                           header=dict(pipeline.provenance("study"),
                                       audit=(audit_settings or grid.audit()).record()),
                           markdown=os.path.join(out, "study.md"))
  sets = None

  def blackbox_sets():
    """The grid's strong surrogates' sets (``grid.sources``), else the protocol's (made after
    the first training: two grids run at once do not race for them)."""
    return experiment.Runner(protocol, _MODELS_DIR.value, (x[:protocol.n_train or None],
                                                           y[:protocol.n_train or None]),
                             (xt, yt), sources=grid.sources).blackbox_sets()

  def evaluate(runner, config, name):
    nonlocal sets
    method = cfg.parse_method(name, grid.dataset)
    print(f"{config} {name}: training / loading", flush=True)
    model = runner.train(method)
    sets = sets or blackbox_sets()
    t_eval = time.time()  # the row's own evaluation, not the one-off black-box sets
    row = tables.evaluate_row(runner, method, sets, audit_settings)
    if method.bayesian:
      n = min(_DIVERSITY_N.value, len(runner.xe))
      row["diversity"] = audit.direction_diversity(model, runner.xe[:n], runner.ye[:n])
    row.update(audit_checks.gradient_stats(runner.classifier(model), runner.xe, runner.ye))
    row["eval_seconds"] = time.time() - t_eval
    # Which surrogates made the sets: they are retrained where --models_dir lacks them.
    row["provenance"] = {"blackbox_sets": {
        source: {k: meta[k] for k in ("source_fingerprint", "source_clean_accuracy")}
        for source, (_, _, meta) in sets.items()}}
    print(f"{config} {name}: clean {row['clean']:.1f}, PGD {row['pgd']:.1f}, audited "
          f"{row.get('audited', float('nan')):.1f}", flush=True)
    return row

  runner_of = lambda s: experiment.Runner(s, rows_dir, (x[:s.n_train or None],
                                                       y[:s.n_train or None]), (xt, yt),
                                          sources=grid.sources)
  if _CHECKPOINTS.value:
    checkpoint_stage(out, configs, base, runner_of, evaluate, grid)
    return
  for c in configs:
    s = c.settings(base)
    report.set(("configs", c.name, "overrides"), dict(c.overrides))
    report.set(("configs", c.name, "settings_hash"), s.training_hash())
    if all(report.get("configs", c.name, "rows", r) is not None for r in c.rows):
      print(f"{c.name}: already done, skipped")
      continue
    runner = runner_of(s)
    print(f"configuration {c.name}", flush=True)
    pipeline.run_rows(report, c.rows, lambda r, c=c: ("configs", c.name, "rows", r),
                      lambda r, runner=runner, c=c: evaluate(runner, c.name, r), seed=s.seed)
  gain = grid.rand_gain if _RAND_GAIN.value is None else _RAND_GAIN.value
  if _AUDIT.value and gain != float("inf"):
    rand_stage(report, grid, configs, base, runner_of, gain)
  results = report.save()
  print(study.markdown(results))
  print(f"results: {report.path}" + "".join(f", {f}" for f in figures if f))


if __name__ == "__main__":
  common.run(main)
