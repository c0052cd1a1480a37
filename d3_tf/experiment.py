"""Table runs: train each row (resumable), evaluate it, record everything.

A *method* is a row of Tables 1-3 in the paper's shorthand (Sec. 5.1): "CNN" /
"VGG16" conventional, "BNN" / "BVGG16" Bayesian with the plain ELBO, letters
M, V, S for the penalties of Eq. (14), (17), (18), and "-Off" for offline
adversarial training (Sec. 4.6).

Trained models live in ``models_dir/<dataset>-<arch>-<settings hash>/<row>/``:
a backup of the training state while training (``d3_tf.callbacks.Backup``: after every epoch
and every ten minutes, so a killed run continues where its last backup left it), final weights
when done, per-epoch attack
accuracies (Figure 1), TensorBoard and CSV logs. Binaries with the same
training settings share trained rows (Table 3 reuses Table 2's models).
"""

import dataclasses
import json
import os
import shutil
import zlib

import numpy as np
import tensorflow as tf
import tf_keras

from d3_tf import adversarial, advsets, attacks, data, distribute, progress, training
from d3_tf.callbacks import BACKUP_SECONDS, Backup, EpochAttackLog, KeepEpochs
from d3_tf.store import atomic_write, read_json  # noqa: F401  (re-exported)
# The settings of a table run live in the TensorFlow-free d3_tf.settings (binaries validate
# them before TensorFlow starts); re-exported here.
from d3_tf.benchmark import BENCHMARKS
from d3_tf.presets import PRESETS, estimate_hours  # noqa: F401
from d3_tf.settings import (ConfigError, Method, Settings,  # noqa: F401
                            conventional_training, parse_method,
                            parse_methods)

class Runner:
  """Trains and evaluates the rows of one table under one Settings."""

  backup_seconds = BACKUP_SECONDS  # a backup within an epoch at most this often

  def __init__(self, settings, models_dir, train, test, log=print, strategy=None):
    self.s = settings
    self.bench = BENCHMARKS[settings.dataset]
    self.log = log
    self.strategy = strategy or tf.distribute.get_strategy()
    (self.x, self.y), (xt, yt) = train, test
    n_eval = settings.n_eval or len(xt)
    self.xe, self.ye = xt[:n_eval], yt[:n_eval]
    self.xc, self.yc = (xt[:settings.n_clean], yt[:settings.n_clean]) if settings.n_clean \
        else (self.xe, self.ye)
    self.root = os.path.join(models_dir, f"{settings.dataset}-{settings.arch}-"
                                         f"{settings.training_hash()}")
    os.makedirs(self.root, exist_ok=True)
    atomic_write(os.path.join(self.root, "settings.json"),
                 json.dumps(dataclasses.asdict(settings), indent=1, sort_keys=True))
    self._models = {}

  # ---------------------------------------------------------------- models
  def optimizer(self, learning_rate, epochs, n):
    """Adam at ``learning_rate``; with ``lr_schedule=cosine`` decaying to 0 over the row."""
    if self.s.lr_schedule == "cosine":
      steps = epochs * -(-n // self.s.batch_size)
      learning_rate = tf_keras.optimizers.schedules.CosineDecay(learning_rate, steps)
    return tf_keras.optimizers.Adam(learning_rate)

  def epochs(self, method):
    """Training epochs of a row: ``conventional_epochs`` for the conventional row if set
    (``adv_epochs`` for the Adv-CNN if set)."""
    if method.adversarial and not method.bayesian and self.s.adv_epochs:
      return self.s.adv_epochs
    if not method.bayesian and self.s.conventional_epochs:
      return self.s.conventional_epochs
    return self.s.epochs

  def warm_started(self, method):
    """Whether a row starts from a trained row: Bayesian rows from the conventional one (the
    Adv-BNN from the Adv-CNN) with ``warm_start_lr``; the Adv-CNN from the conventional row
    with ``adv_warm_start_lr``."""
    if method.bayesian:
      return bool(self.s.warm_start_lr)
    return method.adversarial and bool(self.s.adv_warm_start_lr)

  def learning_rate(self, method):
    if not self.warm_started(method):
      return self.s.learning_rate
    return self.s.warm_start_lr if method.bayesian else self.s.adv_warm_start_lr

  def adversary(self, method, n_train, epochs=None):
    """The PGD training of an Adv row (None for the others): ε ramped up over
    ``adv_warmup_epochs`` for a row trained from scratch, over ``adv_warm_start_warmup``
    for an Adv-CNN started from the (natural) conventional row, and not at all for the
    Adv-BNN started from the (robust) Adv-CNN."""
    if not method.adversarial:
      return None
    if not self.warm_started(method):
      warmup = self.warmup_steps(n_train)
    elif method.bayesian:
      warmup = 0
    else:
      warmup = self.warmup_steps(n_train, self.s.adv_warm_start_warmup)
    return adversarial.PGDTraining(self.s.eps, self.s.adv_iters, warmup,
                                   clean_weight=self.s.adv_clean_weight)

  def warmup_steps(self, n_train, epochs=None):
    """Optimizer steps of ``epochs`` (default ``adv_warmup_epochs``) on ``n_train`` images."""
    epochs = self.s.adv_warmup_epochs if epochs is None else epochs
    return int(round(epochs * -(-n_train // self.s.batch_size)))

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
          draws_mode=s.draws_mode, norm_floor=s.norm_floor,
          penalty_examples=s.penalty_examples, adversarial=self.adversary(method, n_train))
      model.compile(optimizer=self.optimizer(self.learning_rate(method), self.epochs(method),
                                             n_train))
    return model

  def row_dir(self, name):
    return os.path.join(self.root, name)

  def is_trained(self, name):
    return os.path.exists(os.path.join(self.row_dir(name), "final", "weights.index"))

  def adopt_conventional(self, root):
    """Copies the trained conventional row of the model folder ``root`` here, unless this
    folder has its own: the configurations of a warm-started grid differ only in Bayesian
    fields, so they share one trained conventional row instead of training it once each.
    Refused (ConfigError) unless that row's training read the same settings
    (``settings.conventional_training``). Returns whether it copied."""
    name = self.bench.conventional
    if self.is_trained(name):
      return False
    theirs = read_json(os.path.join(root, "settings.json"))
    if theirs is None or not os.path.exists(os.path.join(root, name, "final", "weights.index")):
      raise ConfigError(f"no trained {name} row in {root}")
    mine, other = conventional_training(self.s), conventional_training(Settings.from_dict({
        k: v for k, v in theirs.items() if k in Settings.__dataclass_fields__}))
    if mine != other:
      diff = ", ".join(f"{k} {other[k]} (here {mine[k]})" for k in mine if mine[k] != other[k])
      raise ConfigError(f"the {name} row in {root} was trained with other settings: {diff}")
    shutil.copytree(os.path.join(root, name), self.row_dir(name), dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("backup", "tensorboard"))
    self.log(f"  {name}: the trained row of {root} (same training settings), copied")
    return True

  def _final(self, name):
    return os.path.join(self.row_dir(name), "final", "weights")

  def _load(self, model, name):
    model.load_weights(self._final(name)).expect_partial()
    self.log(f"  {name}: trained model found, loaded")
    return model

  def _save(self, model, name):
    final = self._final(name)
    model.save_weights(os.path.join(distribute.writable(os.path.dirname(final)), "weights"))

  def _fit(self, model, name, x, y, epochs, callbacks=(), initial_epoch=0):
    """Keras fit with backups (resume), CSV and TensorBoard logs; final weights.

    ``callbacks`` (the per-epoch attack log) run before the backup marks an epoch done: a run
    killed while they write repeats that epoch instead of losing its record. A backup in the
    row's folder overrides ``initial_epoch``.
    """
    folder = self.row_dir(name)
    os.makedirs(folder, exist_ok=True)
    logs = distribute.writable(folder)  # other workers log to a scratch folder
    model.fit(
        data.make_dataset(x, y, self.s.batch_size, seed=self.s.seed), epochs=epochs,
        initial_epoch=initial_epoch, verbose=progress.keras_verbose(),
        callbacks=[*callbacks,
                   Backup(os.path.join(folder, "backup"),
                          os.path.join(folder, "train_time.json"), len(x), self.backup_seconds),
                   tf_keras.callbacks.CSVLogger(os.path.join(logs, "log.csv"), append=True),
                   tf_keras.callbacks.TensorBoard(os.path.join(logs, "tensorboard"))])
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
    initial_epoch = 0
    if self.s.continued_from:
      initial_epoch = self.continue_row(model, method.name)
    elif self.warm_started(method):  # a resumed run then restores its own last epoch
      from_adv = method.adversarial and method.bayesian  # the Adv-BNN from the Adv-CNN
      training.warm_start(model, self.conventional(from_adv))
      self.log(f"row {method.name}: starts from the trained "
               f"{'Adv-CNN' if from_adv else self.bench.conventional} row")
    epochs = self.epochs(method)
    callbacks = []
    if self.s.epoch_eval_n:
      n = self.s.epoch_eval_n
      callbacks.append(EpochAttackLog(self.xe[:n], self.ye[:n], self.s.eps, self.s.pgd_step,
                                      self.s.epoch_eval_pgd_iters,
                                      os.path.join(self.row_dir(method.name), "epochs.json"),
                                      self.s.eval_draws()))
    if self.s.keep_epochs:
      callbacks.append(KeepEpochs(self.s.keep_epochs, self.row_dir(method.name)))
    adv = model.adversarial
    self.log(f"row {method.name}: training on {len(x)} images for "
             f"{progress.count(epochs, 'epoch')} "
             f"(K={model.num_draws}, penalties={method.penalties or 'none'}"
             + (f", PGD-{adv.steps} adversarial training at ε={adv.eps}, ramped over "
                f"{adv.warmup_steps} steps" if adv else "") + ")")
    return self._fit(model, method.name, x, y, epochs, callbacks, initial_epoch)

  def continue_row(self, model, name):
    """Starts row ``name`` where the same row of the model folder ``continued_from`` ended:
    its weights and optimizer state (Adam's moments and step count), its per-epoch logs and
    training seconds. Returns the epochs it trained (the epoch this run starts at; a backup
    of this row's own, from an interrupted run, overrides both).

    Refused (ConfigError) unless that folder trained with these settings but fewer epochs:
    with a constant learning rate, continuing is the same objective as training from the start.
    """
    source = self.s.continued_from
    row, theirs = os.path.join(source, name), read_json(os.path.join(source, "settings.json"))
    timing = read_json(os.path.join(row, "train_time.json"))
    if theirs is None or timing is None or not os.path.exists(
        os.path.join(row, "final", "weights.index")):
      raise ConfigError(f"no trained {name} row in {source}")
    theirs = Settings.from_dict({k: v for k, v in theirs.items()
                                 if k in Settings.__dataclass_fields__})
    done = timing["epochs"]
    same = dataclasses.replace(self.s, continued_from="", epochs=theirs.epochs)
    if same.training_hash() != theirs.training_hash() or self.s.lr_schedule != "constant" \
        or done >= self.s.epochs:
      raise ConfigError(f"{source} did not train {name} with these settings in fewer epochs "
                        f"and a constant learning rate: it cannot be continued")
    mine = self.row_dir(name)
    os.makedirs(mine, exist_ok=True)
    if os.path.exists(os.path.join(mine, "backup")):
      return done
    model.optimizer.build(model.trainable_variables)  # its slots exist to take the state
    model.load_weights(os.path.join(row, "final", "weights")).assert_existing_objects_matched()
    for f in ("log.csv", "epochs.json", "train_time.json"):
      if os.path.exists(os.path.join(row, f)):
        shutil.copy(os.path.join(row, f), os.path.join(mine, f))
    if done in self.s.keep_epochs:
      shutil.copytree(os.path.join(row, "final"), os.path.join(mine, f"epoch_{done}"),
                      dirs_exist_ok=True)
    self.log(f"row {name}: continues the {done}-epoch row of {source}")
    return done

  def classifier(self, model):
    """The ART classifier that attacks and evaluates ``model`` (settings' eval draws)."""
    return attacks.classifier(model, draws_mode=self.s.eval_draws())

  def conventional(self, adversarial_training=False):
    """The trained conventional row (the Adv-CNN with ``adversarial_training``)."""
    name = "Adv-CNN" if adversarial_training else self.bench.conventional
    return self.train(parse_method(name, self.s.dataset))

  # ------------------------------------------------------- adversarial sets
  def offline_set(self):
    """PGD examples of the conventional net on the training set ("-Off" rows)."""
    s = self.s
    n = s.offline_n or len(self.x)
    source = self.conventional()
    xa, ya, _ = advsets.generate_or_load(
        os.path.join(self.root, "sets", "offline_train.npz"), source, self.x[:n], self.y[:n],
        s.eps, s.pgd_step, s.offline_iters, seed=s.seed, source_name=self.bench.conventional)
    return xa, ya

  def surrogates(self):
    """Conventional surrogates for the black-box column: {name: model}."""
    s = self.s
    out = {}
    for name, arch, adv in ((g.name, g.arch, g.adversarial) for g in self.bench.surrogates):
      warmup = adv and s.surrogate_adv_mode == "warmup"  # d3_tf.adversarial, ε ramped up
      epochs = s.surrogate_adv_epochs or s.surrogate_epochs if warmup else s.surrogate_epochs
      tf_keras.utils.set_random_seed(s.seed + 1000 + len(out))
      with self.strategy.scope():
        adversary = adversarial.PGDTraining(s.eps, s.adv_iters, self.warmup_steps(
            len(self.x))) if warmup else None
        model = training.build(arch, bayesian=False, seed=s.seed + 1000 + len(out),
                               arch_kwargs={"width": s.width} if arch == "vgg16" else None,
                               adversarial=adversary)
        model.compile(optimizer=self.optimizer(s.learning_rate, epochs, len(self.x)))
      if self.is_trained(name):
        model = self._load(model, name)
      elif adv and not warmup:
        model = self._adversarial_fit(model, name)
      else:
        self.log(f"surrogate {name}: training for {progress.count(epochs, 'epoch')}"
                 + (f" on PGD-{s.adv_iters} examples (ε ramped up)" if warmup else ""))
        model = self._fit(model, name, self.x, self.y, epochs)
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
    epochs = read_json(os.path.join(self.row_dir(method.name), "epochs.json"))
    if epochs:
      row["epochs"] = epochs
    timing = read_json(os.path.join(self.row_dir(method.name), "train_time.json"))
    if timing:
      row["train_seconds"] = timing["seconds"]
    return row
