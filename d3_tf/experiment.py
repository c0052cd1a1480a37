"""Table runs: train each row (resumable), evaluate it, record everything.

A *method* is a row of Tables 1-3 in the paper's shorthand (Sec. 5.1): "CNN" /
"VGG16" conventional, "BNN" / "BVGG16" Bayesian with the plain ELBO, letters
M, V, S for the penalties of Eq. (14), (17), (18), and "-Off" for offline
adversarial training (Sec. 4.6). How each row trains is its plan (``d3_tf.plan``); where the
trained rows live, and how a run resumes or continues, is the row store (``d3_tf.rows``).
"""

import os

import numpy as np
import tf_keras

from d3_tf import advsets, attacks, progress, training
from d3_tf.callbacks import EpochAttackLog, KeepEpochs
from d3_tf.plan import Plan
from d3_tf.rows import RowStore, trained_row
from d3_tf.store import atomic_write, read_json  # noqa: F401  (re-exported)
# The settings of a table run live in the TensorFlow-free d3_tf.settings (binaries validate
# them before TensorFlow starts); re-exported here.
from d3_tf.benchmark import BENCHMARKS
from d3_tf.presets import PRESETS, Sources, estimate_hours  # noqa: F401
from d3_tf.settings import (ConfigError, Method, Settings,  # noqa: F401
                            parse_method, parse_methods)


class Runner:
  """Trains and evaluates the rows of one table under one Settings: ``plan`` decides how each
  row trains (``d3_tf.plan``), ``store`` keeps the rows (``d3_tf.rows``), ``sources`` names
  rows taken from another folder (``presets.Sources``: the conventional row, surrogates)."""

  def __init__(self, settings, models_dir, train, test, log=print, strategy=None, sources=None):
    self.s, self.sources, self.models_dir = settings, sources or Sources(), models_dir
    self.bench = BENCHMARKS[settings.dataset]
    self.log = log
    self.plan = Plan(settings, strategy)
    self.store = RowStore(settings, models_dir, self.bench.conventional, log)
    (self.x, self.y), (xt, yt) = train, test
    n_eval = settings.n_eval or len(xt)
    self.xe, self.ye = xt[:n_eval], yt[:n_eval]
    self.xc, self.yc = (xt[:settings.n_clean], yt[:settings.n_clean]) if settings.n_clean \
        else (self.xe, self.ye)
    self._models = {}

  def train(self, method):
    """The trained model of a row (trained now, or loaded when already trained)."""
    if method.name not in self._models:
      self._models[method.name] = self._load_or_train(method)
    return self._models[method.name]

  def at_epoch(self, method, epoch):
    """Makes row ``method`` of this runner (its evaluation, audits and measurements) the
    weights it kept after ``epoch``; False when that epoch was not kept (yet)."""
    weights = self.store.kept(method.name, epoch)
    if weights:
      self._models[method.name] = self.store.load(self.plan.build(method, len(self.x)),
                                                  method.name, weights)
    return weights is not None

  def _load_or_train(self, method):
    if self.store.is_trained(method.name):  # loading a row needs no offline set
      return self.store.load(self.plan.build(method, len(self.x)), method.name)
    x, y = self.x, self.y
    if method.off:
      xa, ya = self.offline_set()
      x, y = advsets.append(x, y, xa, ya)
    model = self.plan.build(method, n_train=len(x))
    initial_epoch = 0
    if self.s.continued_from:
      initial_epoch = self.store.continue_row(model, method.name)
    elif self.plan.warm_started(method):  # a resumed run then restores its own last epoch
      from_adv = method.adversarial and method.bayesian  # the Adv-BNN from the Adv-CNN
      training.warm_start(model, self.conventional(from_adv))
      self.log(f"row {method.name}: starts from the trained "
               f"{'Adv-CNN' if from_adv else self.bench.conventional} row")
    epochs = self.plan.epochs(method)
    callbacks = []
    if self.s.epoch_eval_n:
      n = self.s.epoch_eval_n
      callbacks.append(EpochAttackLog(self.xe[:n], self.ye[:n], self.s.eps, self.s.pgd_step,
                                      self.s.epoch_eval_pgd_iters,
                                      os.path.join(self.store.row_dir(method.name), "epochs.json"),
                                      self.s.eval_draws()))
    if self.s.keep_epochs:
      callbacks.append(KeepEpochs(self.s.keep_epochs, self.store.row_dir(method.name)))
    adv = model.adversarial
    self.log(f"row {method.name}: training on {len(x)} images for "
             f"{progress.count(epochs, 'epoch')} "
             f"(K={model.num_draws}, penalties={method.penalties or 'none'}"
             + (f", PGD-{adv.steps} adversarial training at ε={adv.eps}, ramped over "
                f"{adv.warmup_steps} steps" if adv else "") + ")")
    return self.store.fit(model, method.name, x, y, epochs, callbacks, initial_epoch)

  def classifier(self, model):
    """The ART classifier that attacks and evaluates ``model`` (settings' eval draws)."""
    return attacks.classifier(model, draws_mode=self.s.eval_draws())

  def conventional(self, adversarial_training=False):
    """The trained conventional row (the Adv-CNN with ``adversarial_training``)."""
    name = "Adv-CNN" if adversarial_training else self.bench.conventional
    if self.sources.conventional_from and not adversarial_training:
      self.store.adopt_conventional(self.sources.conventional_from)
    return self.train(parse_method(name, self.s.dataset))

  # ------------------------------------------------------- adversarial sets
  def offline_set(self):
    """PGD examples of the conventional net on the training set ("-Off" rows)."""
    s = self.s
    n = s.offline_n or len(self.x)
    source = self.conventional()
    xa, ya, _ = advsets.generate_or_load(
        os.path.join(self.store.root, "sets", "offline_train.npz"), source, self.x[:n], self.y[:n],
        s.eps, s.pgd_step, s.offline_iters, seed=s.seed, source_name=self.bench.conventional)
    return xa, ya

  def surrogates(self):
    """Conventional surrogates for the black-box column: {name: model}."""
    s = self.s
    out = {}
    for name, arch, adv in ((g.name, g.arch, g.adversarial) for g in self.bench.surrogates):
      model, epochs = self.plan.surrogate(len(out), arch, adv, len(self.x))
      warmup = model.adversarial is not None
      if self.store.is_trained(name):
        model = self.store.load(model, name)
      elif adv and not warmup:
        self.log(f"surrogate {name}: PGD-{s.surrogate_adv_iters} adversarial training (ART)")
        art_adversarial_fit(model, s, self.x, self.y)
        self.store.save(model, name)
      else:
        self.log(f"surrogate {name}: training for {progress.count(epochs, 'epoch')}"
                 + (f" on PGD-{s.adv_iters} examples (ε ramped up)" if warmup else ""))
        model = self.store.fit(model, name, self.x, self.y, epochs)
      out[name] = model
    return out

  def blackbox_sets(self):
    """{surrogate: (x_adv, y, meta)}: PGD against each surrogate on the eval slice. The
    surrogates are trained here, or are ``sources.surrogates`` (sets then kept in
    <models_dir>/surrogate_sets: one copy for every folder that uses them)."""
    s, n = self.s, len(self.xe)
    if self.sources.surrogates:
      models = trained_rows(self.sources.surrogates_from, self.sources.surrogates)
      path = lambda name: os.path.join(self.models_dir, "surrogate_sets",
                                       f"blackbox_{s.dataset}_{name}_{n}.npz")
    else:
      models = self.surrogates()
      path = lambda name: os.path.join(self.store.root, "sets", f"blackbox_{name}_{n}.npz")
    return {name: advsets.generate_or_load(path(name), model, self.xe, self.ye, s.eps,
                                           s.pgd_step, s.pgd_iters, seed=s.seed,
                                           source_name=name)
            for name, model in models.items()}

  # ------------------------------------------------------------- evaluation
  def evaluate(self, method, blackbox=None):
    """Clean / FGSM / PGD / black-box accuracy (%) of a trained row on the eval slice."""
    s = self.s
    model = self.train(method)
    est = self.classifier(model)
    self.log(f"row {method.name}: attacking {len(self.xe)} test images "
             f"(eps={s.eps}, PGD {s.pgd_iters} x {s.pgd_step}, K={model.num_draws})")
    row = dict(attacks.white_box(est, self.xe, self.ye, s.eps, s.pgd_step, s.pgd_iters),
               n_eval=len(self.xe))
    if s.n_clean:  # the clean column on its own (larger) slice
      row.update(clean=attacks.accuracy_on(est, self.xc, self.yc), n_clean=len(self.xc))
    if blackbox:
      per = {name: attacks.accuracy_on(est, xa, ya) for name, (xa, ya, _) in blackbox.items()}
      row["blackbox_per_surrogate"] = per
      row["blackbox"] = min(per.values())
    n_sweep = s.sweep_n or len(self.xe)
    for norm, budgets in (("inf", s.sweep_linf), ("l2", s.sweep_l2)):
      if budgets:
        row[f"sweep_{norm}"] = attacks.budget_sweep(est, self.xe[:n_sweep], self.ye[:n_sweep],
                                                    budgets, norm, s.pgd_iters)
    epochs = read_json(os.path.join(self.store.row_dir(method.name), "epochs.json"))
    if epochs:
      row["epochs"] = epochs
    timing = read_json(os.path.join(self.store.row_dir(method.name), "train_time.json"))
    if timing:
      row["train_seconds"] = timing["seconds"]
    return row


def trained_rows(folder, rows):
  """{row: model}: the trained deterministic ``rows`` of the model folder ``folder``: table
  rows or its dataset's surrogates (``Benchmark.surrogates``, in their own architecture)."""
  from d3_tf import saved  # pylint: disable=g-import-not-at-top
  out = {}
  for row in rows:
    s = trained_row(folder, row)
    surrogate = {g.name: g for g in BENCHMARKS[s.dataset].surrogates}.get(row)
    if not surrogate and parse_method(row, s.dataset).bayesian:
      raise ConfigError(f"surrogate {row}: a deterministic row is needed")
    out[row] = saved.load(os.path.join(folder, row, "final", "weights"),
                          surrogate.arch if surrogate else s.arch, width=s.width)
  return out


def art_adversarial_fit(model, s, x, y):
  """Madry-style PGD adversarial training through ART (random start, as Madry et al.), with
  the surrogate settings of ``s``."""
  from art.defences.trainer import AdversarialTrainerMadryPGD  # pylint: disable=g-import-not-at-top
  est = attacks.classifier(model, optimizer=tf_keras.optimizers.Adam(s.learning_rate))
  step = 2.5 * s.eps / s.surrogate_adv_iters
  trainer = AdversarialTrainerMadryPGD(est, nb_epochs=s.surrogate_epochs,
                                       batch_size=s.batch_size, eps=s.eps, eps_step=step,
                                       max_iter=s.surrogate_adv_iters, num_random_init=1)
  np.random.seed(s.seed)
  trainer.fit(x, attacks.one_hot(y))
  return model
