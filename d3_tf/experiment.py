"""Table runs: train each row (resumable), evaluate it, record everything.

A *method* is a row of Tables 1-3 in the paper's shorthand (Sec. 5.1): "CNN" /
"VGG16" conventional, "BNN" / "BVGG16" Bayesian with the plain ELBO, letters
M, V, S for the penalties of Eq. (14), (17), (18), and "-Off" for offline
adversarial training (Sec. 4.6).

Trained models live in ``models_dir/<dataset>-<arch>-<settings hash>/<row>/``:
one checkpoint per epoch while training (Keras BackupAndRestore, so a killed
run continues from its last epoch), final weights when done, per-epoch attack
accuracies (Figure 1), TensorBoard and CSV logs. Binaries with the same
training settings share trained rows (Table 3 reuses Table 2's models).
"""

import dataclasses
import hashlib
import json
import os
import sys
import time
import zlib

import numpy as np
import tensorflow as tf
import tf_keras

from d3_tf import advsets, attacks, data, distribute, training

CONVENTIONAL = {"mnist": "CNN", "cifar10": "VGG16"}
BAYES_PLAIN = {"mnist": "BNN", "cifar10": "BVGG16"}
TABLE_ROWS = {
    "mnist": ("CNN", "BNN", "BNN-Off", "M", "M-V", "M-S", "M-V-S", "M-S-Off", "M-V-S-Off"),
    "cifar10": ("VGG16", "BVGG16", "BVGG16-Off", "M", "M-V", "M-S", "M-V-S", "M-S-Off",
                "M-V-S-Off"),
}
# Fields that change what a trained model is: part of the model folder's hash.
TRAINING_FIELDS = ("dataset", "arch", "width", "n_train", "epochs", "batch_size", "num_draws",
                   "learning_rate", "lambda_m", "lambda_v", "lambda_s", "variance_variant",
                   "y_mode", "penalty_reduction", "draws_mode", "estimator", "kl_weight", "seed",
                   "eps", "pgd_step", "offline_iters", "offline_n", "surrogate_epochs",
                   "surrogate_adv_iters")
# Training fields added later: they enter the hash only when set away from their default,
# so models trained before they existed keep their folders (and finished tables stay done).
LATER_TRAINING_FIELDS = ("posterior_init", "norm_floor")


class ConfigError(ValueError):
  """Bad user input (method names, budgets, settings): reported as one line."""


@dataclasses.dataclass
class Settings:
  """Every setting of a table run; presets fill them, flags override them."""
  dataset: str = "mnist"
  arch: str = "mnist_cnn"
  width: float = 1.0            # channel multiplier (VGG16 only; 1.0 = the real VGG16)
  n_train: int = 0              # training images (0 = all)
  n_eval: int = 0               # test images attacked (0 = all)
  epochs: int = 1
  batch_size: int = 64
  num_draws: int = 10           # K
  learning_rate: float = 1e-3   # Adam
  lambda_m: float = 20.0
  lambda_v: float = 40.0
  lambda_s: float = 40.0
  variance_variant: str = "v3"
  y_mode: str = "loss"
  penalty_reduction: str = "sum"  # "sum": Eq. 14-18 as printed; "mean": each Ω / D
  draws_mode: str = "loop"      # "loop": K head calls (reference); "vectorized": batched draws
  estimator: str = "flipout"     # or "reparameterization", "reparam_conv" (models.py)
  kl_weight: float = 1.0
  eps: float = 0.3              # L-inf budget of FGSM / PGD / black-box
  pgd_step: float = 0.01
  pgd_iters: int = 40
  offline_iters: int = 40       # PGD steps of the offline ("-Off") training examples
  offline_n: int = 0            # training images attacked for "-Off" (0 = all)
  surrogate_epochs: int = 1     # black-box surrogates: natural and adversarial training
  surrogate_adv_iters: int = 40 # PGD steps inside the adversarial surrogate's training
  epoch_eval_n: int = 0         # test images attacked after every epoch (Figure 1; 0 = off)
  epoch_eval_pgd_iters: int = 40
  sweep_linf: tuple = ()        # PGD-40 budgets for Figures 2-3 (L-inf)
  sweep_l2: tuple = ()          # and L2
  sweep_n: int = 0              # test images of the sweeps (0 = the n_eval images)
  seed: int = 0
  posterior_init: float = -5.0  # initial softplus⁻¹σ of the Bayesian kernels (mean)
  norm_floor: float = 1e-24     # floor on ||∇y||² in Eq. 9 (1e-12: tf.math.l2_normalize's)

  @classmethod
  def from_dict(cls, d):
    """Settings from results.json (lists back to tuples)."""
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

  def training_hash(self):
    fields = {k: getattr(self, k) for k in TRAINING_FIELDS}
    defaults = {f.name: f.default for f in dataclasses.fields(self)}
    fields.update({k: getattr(self, k) for k in LATER_TRAINING_FIELDS
                   if getattr(self, k) != defaults[k]})
    blob = json.dumps(fields, sort_keys=True)
    return hashlib.md5(blob.encode()).hexdigest()[:10]


@dataclasses.dataclass(frozen=True)
class Method:
  name: str
  bayesian: bool
  penalties: str    # subset of "mvs"
  off: bool


def parse_method(name, dataset):
  """Parses the paper's shorthand ("M-V-S-Off", "BNN", "VGG16", ...) for a dataset."""
  valid = TABLE_ROWS[dataset]
  if name not in valid:
    raise ConfigError(f"unknown method {name!r} for {dataset}; valid: {', '.join(valid)}")
  parts = name.split("-")
  off = parts[-1] == "Off"
  letters = [p for p in parts if p in ("M", "V", "S")]
  return Method(name=name, bayesian=name != CONVENTIONAL[dataset],
                penalties="".join(l.lower() for l in letters), off=off)


def parse_methods(names, dataset):
  """Comma-separated or list of method names -> list of Method (order kept)."""
  if isinstance(names, str):
    names = [n.strip() for n in names.split(",") if n.strip()]
  methods = [parse_method(n, dataset) for n in names]
  if not methods:
    raise ConfigError(f"no methods given; valid: {', '.join(TABLE_ROWS[dataset])}")
  return methods


def atomic_write(path, text):
  """Writes ``text`` to ``path`` atomically (rename); only the chief writes."""
  if not distribute.is_chief():
    return
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def read_json(path, default=None):
  if not os.path.exists(path):
    return default
  with open(path) as f:
    return json.load(f)


class TrainClock(tf_keras.callbacks.Callback):
  """Training seconds of a row summed over resumed runs: ``path`` rewritten after each epoch.

  A run that starts at epoch 0 starts the count afresh; a run resumed at epoch e > 0 adds
  to the seconds recorded for epochs 1..e.
  """

  clock = staticmethod(time.monotonic)

  def __init__(self, path, n):
    super().__init__()
    self.path, self.n = path, n
    self.before = self.t0 = None

  def on_epoch_begin(self, epoch, logs=None):
    if self.t0 is None:  # the first epoch of this run
      self.before = read_json(self.path, {}).get("seconds", 0.0) if epoch > 0 else 0.0
      self.t0 = self.clock()

  def on_epoch_end(self, epoch, logs=None):
    atomic_write(self.path, json.dumps({"seconds": self.before + self.clock() - self.t0,
                                        "epochs": epoch + 1, "n": self.n}))


class EpochAttackLog(tf_keras.callbacks.Callback):
  """After each epoch: clean, FGSM and PGD accuracy on a fixed test slice (Figure 1)."""

  def __init__(self, x, y, eps, pgd_step, pgd_iters, path):
    super().__init__()
    self.x, self.y, self.path = x, y, path
    self.eps, self.pgd_step, self.pgd_iters = eps, pgd_step, pgd_iters

  def on_train_begin(self, logs=None):
    self.estimator = attacks.classifier(self.model)

  def on_epoch_end(self, epoch, logs=None):
    entry = attacks.white_box(self.estimator, self.x, self.y, self.eps, self.pgd_step,
                              self.pgd_iters)
    history = read_json(self.path, {})
    history[str(epoch + 1)] = entry
    atomic_write(self.path, json.dumps(history, indent=1, sort_keys=True))
    if logs is not None:
      logs.update({f"attack_{k}": v for k, v in entry.items()})


class Runner:
  """Trains and evaluates the rows of one table under one Settings."""

  def __init__(self, settings, models_dir, train, test, log=print, strategy=None):
    self.s = settings
    self.log = log
    self.strategy = strategy or tf.distribute.get_strategy()
    (self.x, self.y), (xt, yt) = train, test
    n_eval = settings.n_eval or len(xt)
    self.xe, self.ye = xt[:n_eval], yt[:n_eval]
    self.root = os.path.join(models_dir, f"{settings.dataset}-{settings.arch}-"
                                         f"{settings.training_hash()}")
    os.makedirs(self.root, exist_ok=True)
    atomic_write(os.path.join(self.root, "settings.json"),
                 json.dumps(dataclasses.asdict(settings), indent=1, sort_keys=True))
    self._models = {}

  # ---------------------------------------------------------------- models
  def build(self, method, n_train):
    s = self.s
    lam = {p: getattr(s, f"lambda_{p}") if p in method.penalties else 0.0 for p in "mvs"}
    arch_kwargs = {"posterior_init": s.posterior_init}
    if s.arch == "vgg16":
      arch_kwargs["width"] = s.width
    tf_keras.utils.set_random_seed(s.seed + zlib.crc32(method.name.encode()) % 10000)
    with self.strategy.scope():
      model = training.build(
          s.arch, bayesian=method.bayesian, seed=s.seed, estimator=s.estimator,
          arch_kwargs=arch_kwargs, num_draws=s.num_draws, lambda_m=lam["m"], lambda_v=lam["v"],
          lambda_s=lam["s"], variance_variant=s.variance_variant, y_mode=s.y_mode,
          n_train=n_train, kl_weight=s.kl_weight, penalty_reduction=s.penalty_reduction,
          draws_mode=s.draws_mode, norm_floor=s.norm_floor)
      model.compile(optimizer=tf_keras.optimizers.Adam(s.learning_rate))
    return model

  def row_dir(self, name):
    return os.path.join(self.root, name)

  def is_trained(self, name):
    return os.path.exists(os.path.join(self.row_dir(name), "final", "weights.index"))

  def _final(self, name):
    return os.path.join(self.row_dir(name), "final", "weights")

  def _load(self, model, name):
    model.load_weights(self._final(name)).expect_partial()
    self.log(f"  {name}: trained model found, loaded")
    return model

  def _save(self, model, name):
    final = self._final(name)
    model.save_weights(os.path.join(distribute.writable(os.path.dirname(final)), "weights"))

  def _fit(self, model, name, x, y, epochs, callbacks=()):
    """Keras fit with per-epoch backup (resume), CSV and TensorBoard logs; final weights."""
    folder = self.row_dir(name)
    os.makedirs(folder, exist_ok=True)
    logs = distribute.writable(folder)  # other workers log to a scratch folder
    model.fit(
        data.make_dataset(x, y, self.s.batch_size, seed=self.s.seed), epochs=epochs,
        verbose=1 if sys.stdout.isatty() else 2,  # a progress bar on a terminal, else a line
        callbacks=[tf_keras.callbacks.BackupAndRestore(os.path.join(folder, "backup")),
                   TrainClock(os.path.join(folder, "train_time.json"), len(x)),
                   tf_keras.callbacks.CSVLogger(os.path.join(logs, "log.csv"), append=True),
                   tf_keras.callbacks.TensorBoard(os.path.join(logs, "tensorboard")),
                   *callbacks])
    self._save(model, name)
    return model

  def train(self, method):
    """The trained model of a row (trained now, or loaded when already trained)."""
    if method.name not in self._models:
      self._models[method.name] = self._load_or_train(method)
    return self._models[method.name]

  def _load_or_train(self, method):
    if self.is_trained(method.name):  # loading a row needs no offline set
      return self._load(self.build(method, len(self.x)), method.name)
    x, y = self.x, self.y
    if method.off:
      xa, ya = self.offline_set()
      x, y = advsets.append(x, y, xa, ya)
    model = self.build(method, n_train=len(x))
    callbacks = []
    if self.s.epoch_eval_n:
      n = self.s.epoch_eval_n
      callbacks.append(EpochAttackLog(self.xe[:n], self.ye[:n], self.s.eps, self.s.pgd_step,
                                      self.s.epoch_eval_pgd_iters,
                                      os.path.join(self.row_dir(method.name), "epochs.json")))
    self.log(f"row {method.name}: training on {len(x)} images for {self.s.epochs} epochs "
             f"(K={model.num_draws}, penalties={method.penalties or 'none'})")
    return self._fit(model, method.name, x, y, self.s.epochs, callbacks)

  def conventional(self):
    return self.train(parse_method(CONVENTIONAL[self.s.dataset], self.s.dataset))

  # ------------------------------------------------------- adversarial sets
  def offline_set(self):
    """PGD examples of the conventional net on the training set ("-Off" rows)."""
    s = self.s
    n = s.offline_n or len(self.x)
    source = self.conventional()
    xa, ya, _ = advsets.generate_or_load(
        os.path.join(self.root, "sets", "offline_train.npz"), source, self.x[:n], self.y[:n],
        s.eps, s.pgd_step, s.offline_iters, seed=s.seed, source_name=CONVENTIONAL[s.dataset])
    return xa, ya

  def surrogates(self):
    """Conventional surrogates for the black-box column: {name: model}."""
    s = self.s
    out = {}
    if s.dataset == "mnist":
      specs = [("madry_natural", "madry_mnist", False), ("madry_adversarial", "madry_mnist", True)]
    else:
      specs = [("vgg16_natural", "vgg16", False)]
    for name, arch, adversarial in specs:
      tf_keras.utils.set_random_seed(s.seed + 1000 + len(out))
      with self.strategy.scope():
        model = training.build(arch, bayesian=False, seed=s.seed + 1000 + len(out),
                               arch_kwargs={"width": s.width} if arch == "vgg16" else None)
        model.compile(optimizer=tf_keras.optimizers.Adam(s.learning_rate))
      if self.is_trained(name):
        model = self._load(model, name)
      elif adversarial:
        model = self._adversarial_fit(model, name)
      else:
        self.log(f"surrogate {name}: training")
        model = self._fit(model, name, self.x, self.y, s.surrogate_epochs)
      out[name] = model
    return out

  def _adversarial_fit(self, model, name):
    """Madry-style PGD adversarial training through ART (random start, as Madry et al.)."""
    s = self.s
    from art.defences.trainer import AdversarialTrainerMadryPGD  # pylint: disable=g-import-not-at-top
    self.log(f"surrogate {name}: PGD-{s.surrogate_adv_iters} adversarial training (ART)")
    est = attacks.classifier(model, optimizer=tf_keras.optimizers.Adam(s.learning_rate))
    step = 2.5 * s.eps / s.surrogate_adv_iters
    trainer = AdversarialTrainerMadryPGD(est, nb_epochs=s.surrogate_epochs,
                                         batch_size=s.batch_size, eps=s.eps, eps_step=step,
                                         max_iter=s.surrogate_adv_iters, num_random_init=1)
    np.random.seed(s.seed)
    trainer.fit(self.x, attacks.one_hot(self.y))
    self._save(model, name)
    return model

  def blackbox_sets(self):
    """{surrogate: (x_adv, y, meta)}: PGD against each surrogate on the eval slice."""
    s = self.s
    return {name: advsets.generate_or_load(
        os.path.join(self.root, "sets", f"blackbox_{name}_{len(self.xe)}.npz"), model,
        self.xe, self.ye, s.eps, s.pgd_step, s.pgd_iters, seed=s.seed, source_name=name)
            for name, model in self.surrogates().items()}

  # ------------------------------------------------------------- evaluation
  def evaluate(self, method, blackbox=None):
    """Clean / FGSM / PGD / black-box accuracy (%) of a trained row on the eval slice."""
    s = self.s
    model = self.train(method)
    est = attacks.classifier(model)
    self.log(f"row {method.name}: attacking {len(self.xe)} test images "
             f"(eps={s.eps}, PGD {s.pgd_iters} x {s.pgd_step}, K={model.num_draws})")
    row = dict(attacks.white_box(est, self.xe, self.ye, s.eps, s.pgd_step, s.pgd_iters),
               n_eval=len(self.xe))
    if blackbox:
      per = {name: attacks.accuracy_on(est, xa, ya) for name, (xa, ya, _) in blackbox.items()}
      row["blackbox_per_surrogate"] = per
      row["blackbox"] = min(per.values())
    n_sweep = s.sweep_n or len(self.xe)
    for norm, budgets in (("inf", s.sweep_linf), ("l2", s.sweep_l2)):
      if budgets:
        row[f"sweep_{norm}"] = attacks.budget_sweep(est, self.xe[:n_sweep], self.ye[:n_sweep],
                                                    budgets, norm, s.pgd_iters)
    epochs = read_json(os.path.join(self.row_dir(method.name), "epochs.json"))
    if epochs:
      row["epochs"] = epochs
    timing = read_json(os.path.join(self.row_dir(method.name), "train_time.json"))
    if timing:
      row["train_seconds"] = timing["seconds"]
    return row


# ------------------------------------------------------------------ presets
_MNIST = dict(dataset="mnist", arch="mnist_cnn", lambda_m=20.0, lambda_v=40.0, lambda_s=40.0,
              eps=0.3, pgd_step=0.01)
# draws_mode stays "loop" (the reference, with tfp's Flipout) for both models: on 2 CPU cores
# benchmarks/train_step.py measures the vectorized draws at about 1.1x on the MNIST CNN and
# slightly slower on VGG16 (both are bound by the same convolution FLOPs; docs/performance.md).
_CIFAR = dict(dataset="cifar10", arch="vgg16", lambda_m=10.0, lambda_v=40.0, lambda_s=20.0,
              eps=0.03, pgd_step=0.001)
PRESETS = {
    # seconds to a couple of minutes: plumbing check on the embedded MNIST slice.
    ("mnist", "smoke"): Settings(**{**_MNIST, "pgd_step": 0.05}, n_train=256, n_eval=32,
                                 epochs=1, batch_size=32, num_draws=2, pgd_iters=10,
                                 offline_iters=10,
                                 surrogate_adv_iters=3, epoch_eval_n=16, epoch_eval_pgd_iters=5,
                                 sweep_linf=(0.1, 0.3), sweep_l2=(2.0,)),
    # a few hours on 2 CPU cores: 10k training images, 5 epochs, 1,000 attacked test images,
    # Figure 1 on 200 test images per epoch, Figure 2 sweeps (PGD-40) on 200; adversarial
    # surrogate trained with PGD-10. Penalties as means over input dims: with the printed
    # sums the penalised rows stay near chance at this budget (docs/reproduction.md).
    ("mnist", "cpu"): Settings(**_MNIST, penalty_reduction="mean", n_train=10000, n_eval=1000, epochs=5, batch_size=64,
                               num_draws=10, offline_n=10000, surrogate_epochs=3,
                               surrogate_adv_iters=10, epoch_eval_n=200, epoch_eval_pgd_iters=40,
                               sweep_linf=(0.1, 0.2, 0.4), sweep_l2=(1.5, 3.0), sweep_n=200),
    # the paper: all 60k images, 100 epochs, the full test set. GPU work.
    ("mnist", "paper"): Settings(**_MNIST, epochs=100, batch_size=64, num_draws=10,
                                 surrogate_epochs=100, surrogate_adv_iters=40,
                                 epoch_eval_n=1000,
                                 sweep_linf=(0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4),
                                 sweep_l2=(0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0)),
    # a tiny VGG (1/16 of the channels) on 128 images: plumbing only.
    ("cifar10", "smoke"): Settings(**{**_CIFAR, "pgd_step": 0.008}, width=1 / 16, n_train=128,
                                   n_eval=16, epochs=1, batch_size=32, num_draws=2, pgd_iters=5,
                                   offline_iters=5, offline_n=128, surrogate_adv_iters=3,
                                   sweep_linf=(0.015, 0.035), sweep_l2=(0.5,)),
    # HONESTLY REDUCED (and penalties as means over input dims, as for MNIST): VGG16 with 1/4 of the channels, 5k images, 3 epochs, 200 attacked
    # images. A full-width VGG16 D3 step costs 12-36 s per batch of 32 on 2 CPU cores.
    ("cifar10", "cpu"): Settings(**_CIFAR, penalty_reduction="mean", width=0.25, n_train=5000, n_eval=200, epochs=3,
                                 batch_size=32, num_draws=10, offline_n=5000,
                                 surrogate_epochs=3, sweep_linf=(0.015, 0.035, 0.055, 0.07),
                                 sweep_l2=(0.25, 0.5, 1.0), sweep_n=100),
    ("cifar10", "paper"): Settings(**_CIFAR, epochs=100, batch_size=64, num_draws=10,
                                   surrogate_epochs=100,
                                   sweep_linf=(0.015, 0.035, 0.055, 0.07),
                                   sweep_l2=(0.25, 0.5, 0.75, 1.0, 1.5)),
}

# Seconds per batch-64 training step on 2 CPU cores (K=10, all penalties, draws_mode=loop),
# from benchmarks.train_step: MNIST measured at batch 64; CIFAR-10 twice the 5.9 s VGG16 step
# measured at batch 32 (the cores are saturated, so time grows with the batch). For estimates.
STEP_SECONDS_CPU = {"mnist": 0.69, "cifar10": 11.9}


def estimate_hours(settings, num_rows, n_train_full):
  """Rough CPU cost of training ``num_rows`` D3 rows (the dominant term), in hours."""
  n = settings.n_train or n_train_full
  steps = num_rows * settings.epochs * -(-n // settings.batch_size)
  width_factor = settings.width ** 2 if settings.arch == "vgg16" else 1.0
  batch_factor = settings.batch_size / 64
  return steps * STEP_SECONDS_CPU[settings.dataset] * width_factor * batch_factor / 3600.0
