"""Flags and helpers shared by the experiment binaries (absl FLAGS live only here).

Nothing here starts TensorFlow at import: every flag is checked when it is parsed (one line
on stderr naming the flag, the value and the valid range; exit status 2), and ``run`` then
starts TensorFlow quietly (``d3_tf.quiet``) before the binary's ``main``. Binaries import
the TensorFlow modules (experiment, tables, audit, ...) inside ``main``.
"""
import dataclasses
import logging
import os
import sys
import tempfile

from absl import app
from absl import flags
from absl import logging as absl_logging

from d3_tf import data, distribute, presets, progress, quiet, store
from d3_tf import settings as cfg
from d3_tf.benchmark import BENCHMARKS, EXTRA_ROWS

FLAGS = flags.FLAGS

DATA_DIR = flags.DEFINE_string(
    "data_dir", None,
    f"Folder with the official files (mnist/*-ubyte.gz, cifar10/{data.CIFAR_ARCHIVE}); "
    f"defaults to ${data.ENV_VAR}. Without either, tensorflow_datasets is used, except "
    "that MNIST at --preset smoke uses the slice embedded in the package.")
flags.register_validator("data_dir", lambda v: v is None or os.path.isdir(v),
                         message="must be an existing folder")
DATA_SOURCE = flags.DEFINE_enum(
    "data_source", None, ["auto", "local", "tfds", "embedded"],
    "Where data comes from (default: embedded for MNIST smoke runs when no data dir is set, "
    "else auto = data dir if given, else tfds).")

_TUNABLE = [f for f in cfg.FIELDS if f.metadata["help"]]  # one flag each


def _floats(values):
  """A list flag's strings as a tuple of numbers, integers where written as such (None when
  one is not a number)."""
  try:
    return tuple(int(v) if v.strip().lstrip("-").isdigit() else float(v) for v in values)
  except ValueError:
    return None


def list_of(allowed, what):
  """A rule (``cfg.RULES`` form) for list flags whose every item is in ``allowed``."""
  return (lambda v: bool(v) and all(item in allowed for item in v),
          f"a comma-separated list of {what}")


def int_list(lo):
  """A rule (``cfg.RULES`` form) for list flags of integers ≥ ``lo``."""
  return (lambda v: bool(v) and all(x.isdigit() and int(x) >= lo for x in v),
          f"a comma-separated list of integers ≥ {lo}")


def validate(name, rule, convert=lambda v: v):
  """Registers ``rule`` (``cfg.RULES`` form) as the parse-time check of flag ``name``."""
  ok, what = rule
  flags.register_validator(name, lambda v: v is None or ok(convert(v)), message=f"must be {what}")


def define_setting_flags():
  """One flag per Settings field (default: the preset's value), checked when parsed."""
  for f in _TUNABLE:
    help_text = f.metadata["help"] + " Default: the preset's value."
    convert = lambda v: v
    if f.metadata["choices"]:
      flags.DEFINE_enum(f.name, None, f.metadata["choices"], help_text)
    elif f.type in ("tuple", tuple):
      flags.DEFINE_list(f.name, None, help_text)
      convert = _floats
    elif f.type in ("int", int):
      flags.DEFINE_integer(f.name, None, help_text)
    elif f.type in ("float", float):
      flags.DEFINE_float(f.name, None, help_text)
    else:
      flags.DEFINE_string(f.name, None, help_text)
    validate(f.name, f.metadata["rule"], convert)


def preset_names(dataset):
  """Preset names of a dataset, in PRESETS order."""
  return [p for d, p in presets.PRESETS if d == dataset]


def define_table_flags(binary, presets_doc, dataset, default_preset, methods=True):
  """Flags of every table binary; ``methods`` adds --methods and --blackbox."""
  flags.DEFINE_enum("preset", default_preset, preset_names(dataset), presets_doc)
  if methods:
    rows = BENCHMARKS[dataset].all_rows
    own = "; ".join(f"--preset {p}: {', '.join(r)}" for (d, p), r in presets.PRESET_ROWS.items()
                    if d == dataset)
    flags.DEFINE_list("methods", None, "Rows to run, by the paper's shorthand (default: the "
                      f"paper's rows, {', '.join(BENCHMARKS[dataset].rows)}"
                      + (f"; {own}" if own else "") + f"). Also {', '.join(EXTRA_ROWS)}: "
                      "PGD adversarial training (Madry et al.; Adv-BNN: Liu et al.), reference "
                      "rows not in the paper's table.")
    validate("methods", list_of(rows, ", ".join(rows)))
    flags.DEFINE_bool("blackbox", True, "Train the conventional surrogates and fill the "
                      "black-box column.")
    flags.DEFINE_bool("status", False, "Print where the preset's rows stand in --models_dir "
                      "(done, trained, training: epochs and hours so far, not started) and the "
                      "training hours left, from the files alone (no TensorFlow), then exit.")
  flags.DEFINE_string("output_dir", None,
                      f"Where results.json, table.md and the PNGs go "
                      f"(default: results/{binary}/<preset>).")
  flags.DEFINE_string("models_dir", os.path.join("results", "models"),
                      "Where trained models, epoch checkpoints, logs and adversarial sets go; "
                      "shared by the binaries, so rows with equal training settings are reused.")
  audited = [p for d, p in presets.TABLE_AUDITS if d == dataset]
  flags.DEFINE_bool("audit", None, "Add the audited column (adaptive attacks: EOT-PGD, "
                    "APGD-CE/DLR with EOT, Square, transfer). Default: on for --preset "
                    f"{', '.join(audited)}, off for the others.")
  flags.DEFINE_enum("distribute", "none", list(distribute.STRATEGIES),
                    "tf.distribute strategy: none, mirrored (all local GPUs) or multi_worker "
                    "(MultiWorkerMirroredStrategy from $TF_CONFIG). --batch_size is global.")
  flags.DEFINE_integer("audit_n", None, "Test images audited per row with --audit. "
                       f"Default: {_audit_default(dataset, 'n')}.")
  flags.DEFINE_bool("train_only", False, "Only train: the --methods rows, then (with "
                    "--blackbox) the surrogates and their sets; no evaluation. Lets separate "
                    "processes train rows side by side before one run evaluates them all.")
  flags.DEFINE_list("audit_eot", None, "EOT sample counts R of the audit's EOT-PGD. "
                    f"Default: {_audit_default(dataset, 'eot')}.")
  flags.DEFINE_integer("audit_steps", None, "Iterations of the audit's EOT-PGD and APGD. "
                       f"Default: {_audit_default(dataset, 'steps')}.")
  flags.DEFINE_integer("audit_restarts", None, "Random restarts of the audit's EOT-PGD and "
                       f"APGD. Default: {_audit_default(dataset, 'restarts')}.")
  flags.DEFINE_integer("audit_square_queries", None, "Square attack queries in the audit "
                       f"(0 = skip). Default: {_audit_default(dataset, 'square_queries')}.")
  for name in ("audit_n", "audit_steps", "audit_restarts"):
    validate(name, cfg.POSITIVE_INT)
  validate("audit_square_queries", cfg.COUNT)
  validate("audit_eot", int_list(1))
  define_setting_flags()


def _audit_default(dataset, field):
  """A flag help's default of an audit setting: its value for each preset of ``dataset``
  (presets.TABLE_AUDITS; the full audit's for the others)."""
  from d3_tf.audit_inputs import AUDITS  # pylint: disable=g-import-not-at-top
  show = lambda v: ",".join(map(str, v)) if isinstance(v, tuple) else str(v)
  values = {}
  for preset in preset_names(dataset):
    audit = presets.TABLE_AUDITS.get((dataset, preset), AUDITS["full"])
    values.setdefault(show(getattr(audit, field)), []).append(preset)
  return "; ".join(f"{v} for --preset {', '.join(p)}" for v, p in values.items())


def table_audit(dataset):
  """The table's audit (an AuditSettings: the preset's, presets.TABLE_AUDITS) with the
  --audit* flags applied, or None when the audit is off."""
  from d3_tf.audit_inputs import AUDITS  # pylint: disable=g-import-not-at-top
  preset = presets.TABLE_AUDITS.get((dataset, FLAGS.preset))
  if not (FLAGS.audit if FLAGS.audit is not None else preset is not None):
    return None
  eot = FLAGS.audit_eot and tuple(int(r) for r in FLAGS.audit_eot)
  given = {"n": FLAGS.audit_n, "eot": eot, "apgd_eot": eot and max(eot),
           "steps": FLAGS.audit_steps, "restarts": FLAGS.audit_restarts,
           "square_queries": FLAGS.audit_square_queries}
  return dataclasses.replace(preset or AUDITS["full"], seed=FLAGS.seed or 0,
                             **{k: v for k, v in given.items() if v is not None})


def settings_from_flags(dataset):
  """The preset's Settings with every flag that was given applied on top."""
  base = presets.PRESETS[(dataset, FLAGS.preset)]
  overrides = {}
  for f in _TUNABLE:
    value = getattr(FLAGS, f.name)
    if value is not None:
      if f.type in ("tuple", tuple):
        value = _floats(value)
      overrides[f.name] = value
  return dataclasses.replace(base, **overrides).validate()


def define_trained_rows_flags(default_methods):
  """Flags of the binaries that analyse rows trained by a table binary (audit, diversity)."""
  flags.DEFINE_enum("table", "mnist_table1", ["mnist_table1", "cifar_table2"],
                    "Which table's trained rows to analyse.")
  flags.DEFINE_enum("preset", "smoke", sorted({p for _, p in presets.PRESETS}),
                    "Preset of the table run (sets the default --results_dir).")
  flags.DEFINE_string("results_dir", None,
                      "The table's output dir (default results/<table>/<preset>).")
  flags.DEFINE_string("models_dir", os.path.join("results", "models"), "The table's --models_dir.")
  flags.DEFINE_string("output_dir", None, "Where this binary's JSON / markdown go "
                      "(default: --results_dir).")
  flags.DEFINE_list("methods", default_methods, "Rows to analyse (paper shorthand).")
  rows = sorted({r for b in BENCHMARKS.values() for r in b.all_rows})
  validate("methods", list_of(rows, "table rows (" + ", ".join(rows) + ")"))


def trained_rows():
  """(table results, settings, Runner, methods, output dir) from the flags above.

  Fails with a ConfigError when the table has not been run or a row is not trained.
  """
  from d3_tf import experiment  # pylint: disable=g-import-not-at-top
  results_dir = FLAGS.results_dir or os.path.join("results", FLAGS.table, FLAGS.preset)
  table = store.read_json(os.path.join(results_dir, "results.json"))
  if table is None:
    raise cfg.ConfigError(f"no results.json in {results_dir}; run python -m "
                          f"experiments.{FLAGS.table} --preset {FLAGS.preset} first")
  out = writable(FLAGS.output_dir or results_dir,
                 "output_dir" if FLAGS.output_dir else "results_dir")
  settings = cfg.Settings.from_dict(table["settings"])
  methods = cfg.parse_methods(FLAGS.methods, settings.dataset)
  train, test = load_table_data(settings)
  runner = experiment.Runner(settings, FLAGS.models_dir, train, test)
  for method in methods:
    if not runner.store.is_trained(method.name):
      raise cfg.ConfigError(f"row {method.name} is not trained in {runner.store.root}; run "
                            f"python -m experiments.{FLAGS.table} first")
  return table, settings, runner, methods, out


def writable(path, flag):
  """``path`` (a folder, made if missing) once a file can be written there; else a ConfigError
  naming ``--flag``. Binaries check every output folder before any work starts, so a run never
  trains or attacks for an hour and then fails at its first write."""
  try:
    os.makedirs(path, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path, prefix=".write_check"):
      pass
  except OSError as e:
    raise cfg.ConfigError(f"--{flag} {path}: cannot write there ({e.strerror or e})") from None
  return path


def output_dir(binary):
  return FLAGS.output_dir or os.path.join("results", binary, FLAGS.preset)


def table_outputs(binary):
  """A table binary's output folder, once it and --models_dir are writable (before any work;
  --train_only writes models only)."""
  writable(FLAGS.models_dir, "models_dir")
  return output_dir(binary) if FLAGS.train_only else writable(output_dir(binary), "output_dir")


def load_data(dataset, n_train=None, n_test=None, embedded_default=False):
  """Loads a dataset honouring --data_dir/--data_source; prints where it came from."""
  source = DATA_SOURCE.value
  if source is None:
    has_dir = bool(DATA_DIR.value or data.resolve_data_dir())
    embedded = embedded_default and BENCHMARKS[dataset].embedded and not has_dir
    source = "embedded" if embedded else "auto"
  if source == "embedded":
    print(f"data: the real MNIST slice embedded in the package ({data.EMBEDDED_SIZES['train']} "
          f"train / {data.EMBEDDED_SIZES['test']} test images of the official files); "
          f"set --data_dir or ${data.ENV_VAR} for the full set")
  else:
    folder = data.resolve_data_dir(DATA_DIR.value) if source != "tfds" else None
    print(f"data: {dataset} from {folder or 'tensorflow_datasets'}")
  return data.load(dataset, data_dir=DATA_DIR.value, n_train=n_train or None,
                   n_test=n_test or None, source=source)


def load_table_data(settings):
  n_test = settings.n_eval and max(settings.n_eval, settings.n_clean)
  return load_data(settings.dataset, settings.n_train, n_test,
                   embedded_default=FLAGS.preset in presets.EMBEDDED_PRESETS)


def describe(settings, binary, num_rows):
  print(f"{binary} --preset {FLAGS.preset}: {settings.n_train or 'all'} training images, "
        f"{progress.count(settings.epochs, 'epoch')}, K={settings.num_draws}, eval on "
        f"{settings.n_eval or 'all'} test images", flush=True)
  if FLAGS.preset == "paper":
    hours = presets.estimate_hours(settings, num_rows)
    print(f"estimate: training alone is ~{hours:,.0f} h on 2 CPU cores "
          f"(~{hours / 24:,.1f} days); plan for one or more GPUs")




def accuracy_table(binary, dataset):
  """Tables 1-2 from the flags of define_table_flags: the binaries' whole work."""
  from d3_tf import tables  # pylint: disable=g-import-not-at-top
  settings = settings_from_flags(dataset)
  try:
    strategy = distribute.make_strategy(FLAGS.distribute)
  except ValueError as e:
    raise cfg.ConfigError(str(e)) from None
  methods = cfg.parse_methods(FLAGS.methods or presets.PRESET_ROWS.get(
      (dataset, FLAGS.preset), BENCHMARKS[dataset].rows), dataset)
  if FLAGS.status:
    from d3_tf import status  # pylint: disable=g-import-not-at-top
    print(status.table_markdown(binary, FLAGS.preset, settings, [m.name for m in methods],
                                FLAGS.models_dir, output_dir(binary)))
    return
  describe(settings, binary, len(methods))
  out = table_outputs(binary)
  train, test = load_table_data(settings)
  if FLAGS.train_only:
    train_only(settings, methods, train, test, FLAGS.blackbox, strategy)
    return
  _, figures = tables.run_accuracy_table(
      binary, FLAGS.preset, settings, methods, train, test, out, FLAGS.models_dir,
      FLAGS.blackbox, table_audit(dataset), strategy=strategy,
      sources=preset_sources(dataset))
  if distribute.is_chief():
    print_outputs(out, figures)


def preset_sources(dataset):
  """The trained rows the preset takes from another folder (presets.PRESET_SOURCES), or None."""
  return presets.PRESET_SOURCES.get((dataset, FLAGS.preset))


def train_only(settings, methods, train, test, blackbox=False, strategy=None):
  """--train_only: trains the rows (and with ``blackbox`` the surrogates and their sets)."""
  from d3_tf import experiment  # pylint: disable=g-import-not-at-top
  runner = experiment.Runner(settings, FLAGS.models_dir, train, test, strategy=strategy,
                             sources=preset_sources(settings.dataset))
  for method in methods:
    runner.train(method)
  if blackbox:
    runner.blackbox_sets()
  print(f"trained: {', '.join(m.name for m in methods)} in {runner.store.root}")


def print_outputs(out, extra=()):
  with open(os.path.join(out, "table.md")) as f:
    print(f.read())
  print(f"results: {out}/results.json, {out}/table.md" + "".join(f", {p}" for p in extra))


def _parse_flags(argv):
  """absl's parser, but a bad flag is ONE line on stderr (absl adds a usage hint), exit 1."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


def run(main, tensorflow=True):
  """app.run with one-line errors: flags are checked when parsed, then TensorFlow starts
  quietly (unless ``tensorflow`` is False or the binary's --status is given: it reads files
  only), then ``main``; a DataError or ConfigError from bad input is one line on stderr and
  exit status 1."""
  def wrapped(argv):
    if len(argv) > 1:
      print(f"error: unexpected arguments {argv[1:]}", file=sys.stderr)
      sys.exit(1)
    if not sys.stdout.isatty():  # a log file gets each line as it is printed
      sys.stdout.reconfigure(line_buffering=True)
    quiet.filter_warnings()
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("art").setLevel(logging.WARNING)
    try:
      if tensorflow and not ("status" in FLAGS and FLAGS.status):
        quiet.start()
      return main(argv)
    except (data.DataError, cfg.ConfigError) as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(1)
  app.run(wrapped, flags_parser=_parse_flags)
