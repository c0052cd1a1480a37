"""The settings of a run and their validation (no TensorFlow here; presets: d3_tf.presets).

Each field of :class:`Settings` is defined once: its default, its rule, its help text (the
binaries' flag of the same name) and whether it changes what a trained model is (its hash).

A *method* is a row of Tables 1-3 in the paper's shorthand (Sec. 5.1): "CNN" /
"VGG16" conventional, "BNN" / "BVGG16" Bayesian with the plain ELBO, letters
M, V, S for the penalties of Eq. (14), (17), (18), and "-Off" for offline
adversarial training (Sec. 4.6). "Adv-CNN" and "Adv-BNN" are reference rows the paper quotes
from Liu et al. (2019), trained here: PGD adversarial training (Madry et al. 2018) of the
conventional net and of the plain BNN (``d3_tf.adversarial``).

This module imports nothing heavy, so that the binaries can check every flag
and print one line for a bad value before TensorFlow starts.
"""

import dataclasses
import hashlib
import json
import math
import os

from d3_tf.benchmark import BENCHMARKS

# The choices of every enum setting, one tuple each (the TensorFlow modules check theirs
# against these).
Y_MODES = ("loss", "true_logit", "all_logits")
PENALTY_REDUCTIONS = ("sum", "mean")
DRAWS_MODES = ("loop", "vectorized")
ESTIMATORS = ("flipout", "reparameterization", "reparam_conv")
VARIANCE_VARIANTS = ("v1", "v2", "v3")
ARCHS = ("mnist_cnn", "vgg16")
# The initial softplus⁻¹σ of tfp's default posterior (σ ≈ 0.0067).
POSTERIOR_INIT = -5.0
# The floor on ‖∇y‖² in Eq. 9 (d3_tf.penalties).
NORM_FLOOR = 1e-24
# The faster exact draws mode for attacks and evaluation, by architecture, measured with
# benchmarks.train_step on 2 CPU cores (docs/performance.md). Both modes sample the same
# per-example posterior; "auto" picks this one.
FASTEST_EVAL_DRAWS = {"mnist_cnn": "vectorized", "vgg16": "loop"}


class ConfigError(ValueError):
  """Bad user input (method names, budgets, settings): reported as one line."""


# ------------------------------------------------------------------ rules
def _integer(lo):
  return (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo,
          f"an integer ≥ {lo}")


def _number(lo=-math.inf, hi=math.inf, lo_open=False, what=None, hi_open=False):
  def ok(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
      return False
    return (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
  if what is None:
    what = "a finite number" + (f" {'>' if lo_open else '≥'} {lo:g}" if lo > -math.inf else "")
    what += f" and {'<' if hi_open else '≤'} {hi:g}" if hi < math.inf else ""
  return ok, what


def _each(rule):
  ok, what = rule
  return (lambda v: isinstance(v, (tuple, list)) and all(ok(x) for x in v),
          f"a comma-separated list, each {what}")


def _one_of(values):
  return (lambda v: v in values), "one of " + ", ".join(values)


COUNT, POSITIVE_INT = _integer(0), _integer(1)  # rules for other integer flags too
_LAMBDA = _number(0.0)


def _field(default, rule, help_text=None, hashed=None):
  """A Settings field. ``rule``: (predicate, what a valid value is), or a tuple of choices;
  ``help_text``: the flag's help (None: not a flag); ``hashed``: "always" (part of the model
  folder's hash) or "if_set" (a field added later: hashed only away from its default, so models
  trained before it existed keep their folders and finished tables stay done)."""
  choices = rule if isinstance(rule[0], str) else None
  return dataclasses.field(default=default, metadata={
      "rule": _one_of(choices) if choices else rule, "choices": choices, "help": help_text,
      "hashed": hashed})


@dataclasses.dataclass
class Settings:
  """Every setting of a table run; presets fill them, flags override them."""
  dataset: str = _field("mnist", tuple(BENCHMARKS), hashed="always")
  arch: str = _field("mnist_cnn", ARCHS, hashed="always")
  width: float = _field(1.0, _number(0.0, 4.0, lo_open=True),
                        "Channel multiplier of VGG16 (1.0 = the real VGG16).", "always")
  n_train: int = _field(0, COUNT, "Training images used (0 = all).", "always")
  n_eval: int = _field(0, COUNT, "Test images attacked for the table (0 = all).")
  epochs: int = _field(1, POSITIVE_INT, "Training epochs per row.", "always")
  batch_size: int = _field(64, POSITIVE_INT, "Training batch size.", "always")
  num_draws: int = _field(10, POSITIVE_INT, "K: Bayesian head draws in training, inference "
                          "and attacks.", "always")
  learning_rate: float = _field(1e-3, _number(0.0, lo_open=True), "Adam learning rate.",
                                "always")
  lambda_m: float = _field(20.0, _LAMBDA, "λM, weight of the mean penalty ΩM (Eq. 14) in "
                           "rows with M.", "always")
  lambda_v: float = _field(40.0, _LAMBDA, "λV, weight of the variance penalty ΩV (Eq. 15-17) "
                           "in rows with V.", "always")
  lambda_s: float = _field(40.0, _LAMBDA, "λS, weight of the non-sparse penalty ΩS (Eq. 18) "
                           "in rows with S.", "always")
  variance_variant: str = _field("v3", VARIANCE_VARIANTS, "ΩV variant: v1 (Eq. 15), v2 (Eq. "
                                 "16), v3 (Eq. 17, the paper's).", "always")
  y_mode: str = _field("loss", Y_MODES, "Scalar y whose input gradient is normalised: loss, "
                       "true_logit or all_logits.", "always")
  penalty_reduction: str = _field(
      "sum", PENALTY_REDUCTIONS, "sum: Eq. 14-18 as printed (sums over the D input dims); "
      "mean: each Ω divided by D before λ (docs/reproduction.md, 'Known gap').", "always")
  draws_mode: str = _field(
      "loop", DRAWS_MODES, "loop: the head runs K times, fresh weights per call (the paper's K "
      "passes, the reference; Flipout as tfp implements it). vectorized: the K weight samples "
      "of every Bayesian layer drawn at once and run as one batched computation (plain "
      "samples, no Flipout sign flips); see benchmarks/train_step.py.", "always")
  estimator: str = _field(
      "flipout", ESTIMATORS, "Bayesian layers: flipout (Convolution2DFlipout + DenseFlipout), "
      "reparameterization (both *Reparameterization) or reparam_conv "
      "(Convolution2DReparameterization + DenseFlipout: one conv kernel sample per draw shared "
      "by the batch, Sec. 5.2.1).", "always")
  kl_weight: float = _field(1.0, _number(0.0), "Factor on the KL term (1.0 = the ELBO, KL / "
                            "N_train).", "always")
  eps: float = _field(0.3, _number(0.0, 1.0, lo_open=True, what="in (0, 1] (L∞, pixel units)"),
                      "L∞ budget of FGSM, PGD and the black-box sets, in [0,1] pixel units.",
                      "always")
  pgd_step: float = _field(0.01, _number(0.0, 1.0, lo_open=True, what="in (0, 1] (pixel units)"),
                           "PGD step size (pixel units).", "always")
  pgd_iters: int = _field(40, POSITIVE_INT, "PGD iterations.")
  offline_iters: int = _field(40, POSITIVE_INT, "PGD iterations for the offline ('-Off') "
                              "training examples.", "always")
  offline_n: int = _field(0, COUNT, "Training images attacked for the offline set (0 = all).",
                          "always")
  surrogate_epochs: int = _field(1, POSITIVE_INT, "Training epochs of the black-box "
                                 "surrogates.", "always")
  surrogate_adv_iters: int = _field(40, POSITIVE_INT, "PGD iterations inside the adversarial "
                                    "surrogate's training.", "always")
  epoch_eval_n: int = _field(0, COUNT, "Test images attacked after every epoch for Figure 1 "
                             "(0 = off).")
  epoch_eval_pgd_iters: int = _field(40, POSITIVE_INT, "PGD iterations of the per-epoch "
                                     "evaluation.")
  sweep_linf: tuple = _field((), _each(_number(0.0, 1.0, lo_open=True, what="in (0, 1]")),
                             "L∞ budgets of the PGD sweep (Figures 2-3), comma-separated.")
  sweep_l2: tuple = _field((), _each(_number(0.0, lo_open=True)), "L2 budgets of the PGD "
                           "sweep (Figures 2-3), comma-separated.")
  sweep_n: int = _field(0, COUNT, "Test images attacked in the sweeps (0 = the --n_eval "
                        "images).")
  seed: int = _field(0, COUNT, "Random seed (data order, initialisation, draws, attacks).",
                     "always")
  posterior_init: float = _field(
      POSTERIOR_INIT, _number(-30.0, 10.0, what="a finite number in [-30, 10]"),
      "Initial softplus⁻¹σ of the Bayesian kernels (mean of N(·, 0.1)); -5 gives σ ≈ 0.007, "
      "-3 gives σ ≈ 0.049.", "if_set")
  norm_floor: float = _field(NORM_FLOOR, _number(0.0, 1.0, lo_open=True, what="in (0, 1]"),
                             "Floor on the squared gradient norm in Eq. 9 (1e-12 is "
                             "tf.math.l2_normalize's).", "if_set")
  eval_draws_mode: str = _field(
      "auto", ("auto",) + DRAWS_MODES, "K draws of attacks, evaluation and the audit: auto "
      "(the faster exact mode of the architecture, measured: vectorized for the MNIST CNN, loop "
      "for VGG16; docs/performance.md), loop or vectorized. Not a training setting.")
  penalty_examples: int = _field(
      0, COUNT, "Compute the penalties (Eq. 14-18) on a random subset of this many examples of "
      "each batch: an unbiased estimate of their batch mean at a fraction of the cost; CE and "
      "KL stay on the whole batch. 0 = every example (the paper). See docs/performance.md "
      "before using it.", "if_set")
  n_clean: int = _field(0, COUNT, "Test images of the clean column, when more than the "
                        "attacked ones (0 = the --n_eval images).")
  lr_schedule: str = _field("constant", ("constant", "cosine"), "constant: Adam at "
                            "--learning_rate throughout (the paper); cosine: the rate decays "
                            "to 0 over each row's training (cosine, per step).", "if_set")
  conventional_epochs: int = _field(0, COUNT, "Training epochs of the conventional row (CNN / "
                                    "VGG16) when it differs from the others (0 = --epochs).",
                                    "if_set")
  warm_start_lr: float = _field(
      0.0, _number(0.0), "0: every row is trained from scratch (the paper). > 0: the Bayesian "
      "rows start from the trained conventional row (its trunk, and its head's weights as "
      "posterior means; σ from --posterior_init) and are trained with their own loss at this "
      "Adam rate. A deviation from the paper.", "if_set")
  adv_iters: int = _field(10, POSITIVE_INT, "PGD iterations inside each adversarial training "
                          "step of the Adv-CNN / Adv-BNN rows (and of a "
                          "--surrogate_adv_mode=warmup surrogate); random start, step "
                          "2.5·eps/iterations.", "if_set")
  adv_warmup_epochs: float = _field(1.0, _number(0.0), "Epochs over which the adversarial "
                                    "training's eps ramps linearly from 0 to --eps (rows trained "
                                    "from scratch; a warm-started row starts at --eps).", "if_set")
  surrogate_adv_mode: str = _field(
      "art", ("art", "warmup"), "How the adversarial black-box surrogate is trained: art (ART's "
      "AdversarialTrainerMadryPGD, no eps ramp: the committed presets) or warmup (d3_tf's PGD "
      "training with the eps ramp, as the Adv rows).", "if_set")
  surrogate_adv_epochs: int = _field(0, COUNT, "Training epochs of the adversarial surrogate "
                                     "(0 = --surrogate_epochs).", "if_set")
  adv_epochs: int = _field(0, COUNT, "Training epochs of the Adv-CNN row (0 = those of the "
                           "conventional row).", "if_set")
  adv_warm_start_lr: float = _field(0.0, _number(0.0), "0: the Adv-CNN is trained from "
                                    "scratch. > 0: it starts from the trained conventional row "
                                    "and trains at this Adam rate (a deviation from Madry et "
                                    "al.).", "if_set")
  adv_warm_start_warmup: float = _field(0.0, _number(0.0), "Epochs over which eps ramps "
                                        "linearly from 0 to --eps for an Adv-CNN started from "
                                        "the trained conventional row (0: the full eps from the "
                                        "first step).", "if_set")
  adv_clean_weight: float = _field(
      0.0, _number(0.0, 1.0, hi_open=True, what="a number in [0, 1)"), "Weight w of the clean "
      "batch's loss in the Adv rows' training: loss = w·L(clean) + (1 − w)·L(PGD) (Goodfellow "
      "et al.'s mixed objective; 0 = PGD examples only, Madry et al.).", "if_set")
  keep_epochs: tuple = _field((), _each(_integer(1)), "Epochs (1-based, comma-separated) after "
                              "which each row's weights are kept in <row>/epoch_<e>/, e.g. for "
                              "audits along a long run; not a training setting (the model "
                              "folder stays the same).")
  # Not a flag: a study configuration that continues the trained rows of another model folder
  # (its path) to more epochs, instead of training them from the start (d3_tf.study).
  continued_from: str = _field("", (lambda v: isinstance(v, str), "a model folder's path"),
                               hashed="if_set")

  @classmethod
  def from_dict(cls, d):
    """Settings from results.json (lists back to tuples)."""
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

  def eval_draws(self):
    """The draws mode of attacks and evaluation: the forced one, or the arch's fastest."""
    if self.eval_draws_mode != "auto":
      return self.eval_draws_mode
    return FASTEST_EVAL_DRAWS[self.arch]

  def validate(self):
    """Raises ConfigError (one line naming the field as its flag) for the first bad value."""
    for f in FIELDS:
      check(f.name, getattr(self, f.name), f.metadata["rule"])
    return self

  def training_hash(self):
    fields = {f.name: getattr(self, f.name) for f in FIELDS if f.metadata["hashed"] == "always"}
    fields.update({f.name: getattr(self, f.name) for f in FIELDS
                   if f.metadata["hashed"] == "if_set" and getattr(self, f.name) != f.default})
    blob = json.dumps(fields, sort_keys=True)
    return hashlib.md5(blob.encode()).hexdigest()[:10]


def row_epochs(settings, method):
  """Training epochs of a row (a ``Method``): ``conventional_epochs`` for the conventional row
  if set (``adv_epochs`` for the Adv-CNN if set), else ``epochs``."""
  if method.adversarial and not method.bayesian and settings.adv_epochs:
    return settings.adv_epochs
  if not method.bayesian and settings.conventional_epochs:
    return settings.conventional_epochs
  return settings.epochs


def models_folder(settings, models_dir):
  """Where rows trained under ``settings`` live in ``models_dir`` (``d3_tf.rows``)."""
  return os.path.join(models_dir,
                      f"{settings.dataset}-{settings.arch}-{settings.training_hash()}")


FIELDS = dataclasses.fields(Settings)
DEFAULTS = Settings()
# Derived views of the fields' definitions.
RULES = {f.name: f.metadata["rule"] for f in FIELDS}
ENUMS = {f.name: f.metadata["choices"] for f in FIELDS if f.metadata["choices"]}
HELP = {f.name: f.metadata["help"] for f in FIELDS if f.metadata["help"]}
TRAINING_FIELDS = tuple(f.name for f in FIELDS if f.metadata["hashed"] == "always")
LATER_TRAINING_FIELDS = tuple(f.name for f in FIELDS if f.metadata["hashed"] == "if_set")


def check(name, value, rule):
  """Raises ConfigError naming ``--name``, the value and the valid range unless ``rule`` holds."""
  ok, what = rule
  if not ok(value):
    shown = ",".join(map(str, value)) if isinstance(value, (tuple, list)) else value
    raise ConfigError(f"--{name}={shown} is invalid: must be {what}")


def conventional_training(s):
  """The settings the conventional row's training reads (a deterministic net: none of the
  Bayesian or penalty fields): two Settings that agree here train the same conventional row."""
  return {"dataset": s.dataset, "arch": s.arch, "width": s.width, "n_train": s.n_train,
          "batch_size": s.batch_size, "learning_rate": s.learning_rate,
          "lr_schedule": s.lr_schedule, "seed": s.seed,
          "epochs": s.conventional_epochs or s.epochs}


# ------------------------------------------------------------------ methods
@dataclasses.dataclass(frozen=True)
class Method:
  name: str
  bayesian: bool
  penalties: str    # subset of "mvs"
  off: bool
  adversarial: bool = False  # PGD adversarial training (Adv-CNN, Adv-BNN)


def parse_method(name, dataset):
  """Parses the paper's shorthand ("M-V-S-Off", "BNN", "VGG16", "Adv-CNN", ...) for a dataset."""
  valid = BENCHMARKS[dataset].all_rows
  if name not in valid:
    raise ConfigError(f"unknown method {name!r} for {dataset}; valid: {', '.join(valid)}")
  parts = name.split("-")
  off = parts[-1] == "Off"
  letters = [p for p in parts if p in ("M", "V", "S")]
  return Method(name=name, bayesian=name not in (BENCHMARKS[dataset].conventional, "Adv-CNN"),
                penalties="".join(l.lower() for l in letters), off=off,
                adversarial=parts[0] == "Adv")


def parse_methods(names, dataset):
  """Comma-separated or list of method names -> list of Method (order kept)."""
  if isinstance(names, str):
    names = [n.strip() for n in names.split(",") if n.strip()]
  methods = [parse_method(n, dataset) for n in names]
  if not methods:
    raise ConfigError(f"no methods given; valid: {', '.join(BENCHMARKS[dataset].rows)}")
  return methods
