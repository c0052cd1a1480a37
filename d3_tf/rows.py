"""Where a settings' rows live, and how they are trained, resumed, continued and loaded.

``models_dir/<dataset>-<arch>-<settings hash>/`` holds ``settings.json`` and one folder per row:
a backup of the training state while it trains (``d3_tf.callbacks.Backup``: after every epoch
and every ten minutes, so a killed run continues where its last backup left it), the final
weights when done (``final/weights``), the weights kept after chosen epochs (``epoch_<e>/``),
the per-epoch attack accuracies (Figure 1), the training seconds, TensorBoard and CSV logs.
Binaries with the same training settings share trained rows (Table 3 reuses Table 2's).
"""

import dataclasses
import json
import os
import shutil

import tf_keras

from d3_tf import data, distribute, progress
from d3_tf.callbacks import BACKUP_SECONDS, Backup, EpochCsv
from d3_tf.settings import ConfigError, Settings, conventional_training, models_folder
from d3_tf.store import atomic_write, read_json


class RowStore:
  """The model folder of one Settings (``s``); ``conventional``: its conventional row's name."""

  backup_seconds = BACKUP_SECONDS  # a backup within an epoch at most this often

  def __init__(self, settings, models_dir, conventional, log=print):
    self.s, self.conventional, self.log = settings, conventional, log
    self.root = models_folder(settings, models_dir)
    os.makedirs(self.root, exist_ok=True)
    atomic_write(os.path.join(self.root, "settings.json"),
                 json.dumps(dataclasses.asdict(settings), indent=1, sort_keys=True))

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
    name = self.conventional
    if self.is_trained(name):
      return False
    mine, other = conventional_training(self.s), conventional_training(trained_row(root, name))
    if mine != other:
      diff = ", ".join(f"{k} {other[k]} (here {mine[k]})" for k in mine if mine[k] != other[k])
      raise ConfigError(f"the {name} row in {root} was trained with other settings: {diff}")
    shutil.copytree(os.path.join(root, name), self.row_dir(name), dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("backup", "tensorboard"))
    self.log(f"  {name}: the trained row of {root} (same training settings), copied")
    return True

  def final(self, name):
    return os.path.join(self.row_dir(name), "final", "weights")

  def kept(self, name, epoch):
    """The weights of row ``name`` kept after ``epoch`` (``callbacks.KeepEpochs``), None when
    that epoch was not kept (yet)."""
    path = os.path.join(self.row_dir(name), f"epoch_{epoch}", "weights")
    return path if os.path.exists(path + ".index") else None

  def load(self, model, name, weights=None):
    """``model`` with the final weights of row ``name`` (or the prefix ``weights``)."""
    model.load_weights(weights or self.final(name)).expect_partial()
    self.log(f"  {name}: {'kept weights' if weights else 'trained model'} found, loaded")
    return model

  def save(self, model, name):
    final = self.final(name)
    model.save_weights(os.path.join(distribute.writable(os.path.dirname(final)), "weights"))

  def fit(self, model, name, x, y, epochs, callbacks=(), initial_epoch=0):
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
                          os.path.join(folder, "train_time.json"), len(x), self.backup_seconds,
                          report=None if progress.interactive() else self.log),
                   EpochCsv(os.path.join(logs, "log.csv")),
                   tf_keras.callbacks.TensorBoard(os.path.join(logs, "tensorboard"))])
    self.save(model, name)
    return model

  def continue_row(self, model, name):
    """Starts row ``name`` where the same row of the model folder ``continued_from`` ended:
    its weights and optimizer state (Adam's moments and step count), its per-epoch logs and
    training seconds. Returns the epochs it trained (the epoch this run starts at; a backup
    of this row's own, from an interrupted run, overrides both).

    Refused (ConfigError) unless that folder trained with these settings but fewer epochs:
    with a constant learning rate, continuing is the same objective as training from the start.
    """
    source = self.s.continued_from
    theirs, row = trained_row(source, name), os.path.join(source, name)
    timing = read_json(os.path.join(row, "train_time.json"))
    if timing is None:
      raise ConfigError(f"no trained {name} row in {source}")
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


def trained_row(root, name):
  """The Settings the model folder ``root`` trained under, once its row ``name`` has final
  weights; else ConfigError."""
  theirs = read_json(os.path.join(root, "settings.json"))
  if theirs is None or not os.path.exists(os.path.join(root, name, "final", "weights.index")):
    raise ConfigError(f"no trained {name} row in {root}")
  return Settings.from_dict({k: v for k, v in theirs.items() if k in Settings.__dataclass_fields__})
