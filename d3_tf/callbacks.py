"""The Keras callbacks of a training row: resume, training clock, per-epoch attacks, kept epochs.

A row's folder (``d3_tf.experiment.Runner``) holds a backup of the training state (weights,
optimizer, epoch and step), written at the end of every epoch and every ``every_seconds``
within one, so that a killed run loses at most that much work; ``train_time.json`` (training
seconds summed over the resumed runs, written with each backup); ``epochs.json`` (Figure 1's
per-epoch accuracies), ``log.csv`` (every epoch's training logs) and ``epoch_<e>/`` (the
weights kept after chosen epochs).
"""

import csv
import io
import json
import os
import time

import tf_keras

from d3_tf import attacks, distribute, progress
from d3_tf.store import atomic_write, read_json

# How often a backup is written within an epoch (seconds): a CIFAR-10 epoch of a penalised row
# takes about an hour on one CPU core.
BACKUP_SECONDS = 600


class Backup(tf_keras.callbacks.BackupAndRestore):
  """Keras ``BackupAndRestore`` after every epoch and every ``every_seconds`` within one; the
  row's training seconds in ``clock_path``, summed over resumed runs. ``report`` (a print-like
  function, or None) gets one line at each backup within an epoch: the step reached, this run's
  pace and when the epoch and the run should end (a log file's only sign of life between
  epochs that take an hour).

  A run killed mid-epoch restarts at the step after its last backup, with the weights, the
  optimizer and the step counter of that moment. Keras starts the resumed epoch's data afresh:
  its remaining steps draw the first batches of a new shuffle, so within that one epoch some
  examples come twice and others not at all (the objective and the step count are unchanged).
  Backups written at epoch ends only (before batch-level backups existed) resume at the next
  epoch as they did.
  """

  clock = staticmethod(time.monotonic)

  def __init__(self, backup_dir, clock_path, n, every_seconds=BACKUP_SECONDS, report=None):
    # An integer save_freq turns on Keras' step-level resume; the saves themselves are timed
    # here (the count is never reached).
    super().__init__(backup_dir, save_freq=2 ** 62)
    self.clock_path, self.n, self.every, self.report = clock_path, n, every_seconds, report
    self.before = self.t0 = self.last = None
    self.epochs_done = self.restored = self.steps_run = 0

  def on_train_begin(self, logs=None):
    super().on_train_begin(logs)
    state = self._training_state
    epoch, batch = int(state._ckpt_saved_epoch.numpy()), int(state._ckpt_saved_batch.numpy())
    steps = self.params.get("steps")
    if epoch >= 0 and batch < 0 and steps:  # an epoch-end backup of the older format
      state._ckpt_saved_batch.assign(steps - 1)
    self.restored = epoch >= 0

  def on_epoch_begin(self, epoch, logs=None):
    super().on_epoch_begin(epoch, logs)
    if self.t0 is None:  # the first epoch of this run: a resumed or continued run adds
      resumed = self.restored or epoch > 0
      self.before = read_json(self.clock_path, {}).get("seconds", 0.0) if resumed else 0.0
      self.t0 = self.last = self.clock()
      self.epochs_done = epoch  # Keras resumes within an unfinished epoch, else at the next

  def on_train_batch_end(self, batch, logs=None):
    super().on_train_batch_end(batch, logs)
    self.steps_run += 1
    if self.clock() - self.last >= self.every:
      self._save()
      if self.report:
        self.report(progress.pace(self._current_epoch, self.params.get("epochs"), batch + 1,
                                  self.params.get("steps"), self.steps_run,
                                  self.last - self.t0))

  def on_epoch_end(self, epoch, logs=None):
    super().on_epoch_end(epoch, logs)
    self.epochs_done = epoch + 1
    self._save()

  def _save(self):
    # The epoch and step Keras marked when they began: a resume starts at the next step
    # (the next epoch after an epoch's last step).
    self._backup(epoch=self._current_epoch)
    self.last = self.clock()
    atomic_write(self.clock_path, json.dumps({"seconds": self.before + self.last - self.t0,
                                              "epochs": self.epochs_done, "n": self.n}))


class EpochAttackLog(tf_keras.callbacks.Callback):
  """After each epoch: clean, FGSM and PGD accuracy on a fixed test slice (Figure 1)."""

  def __init__(self, x, y, eps, pgd_step, pgd_iters, path, draws_mode=None):
    super().__init__()
    self.x, self.y, self.path = x, y, path
    self.eps, self.pgd_step, self.pgd_iters = eps, pgd_step, pgd_iters
    self.draws_mode = draws_mode

  def on_train_begin(self, logs=None):
    self.estimator = attacks.classifier(self.model, draws_mode=self.draws_mode)

  def on_epoch_end(self, epoch, logs=None):
    entry = attacks.white_box(self.estimator, self.x, self.y, self.eps, self.pgd_step,
                              self.pgd_iters)
    history = read_json(self.path, {})
    history[str(epoch + 1)] = entry
    atomic_write(self.path, json.dumps(history, indent=1, sort_keys=True))
    if logs is not None:
      logs.update({f"attack_{k}": v for k, v in entry.items()})


class KeepEpochs(tf_keras.callbacks.Callback):
  """Keeps the weights after the given epochs (1-based) in ``<folder>/epoch_<e>/weights``."""

  def __init__(self, epochs, folder):
    super().__init__()
    self.epochs, self.folder = set(epochs), folder

  def on_epoch_end(self, epoch, logs=None):
    if epoch + 1 in self.epochs:
      path = os.path.join(self.folder, f"epoch_{epoch + 1}")
      self.model.save_weights(os.path.join(distribute.writable(path), "weights"))


class EpochCsv(tf_keras.callbacks.Callback):
  """Each epoch's logs as a row of the CSV file ``path`` (first column ``epoch``, 0-based).

  The file is rewritten whole at every epoch, atomically, with the union of every row's keys as
  its header (a row lacks a key: empty cell), and a repeated epoch (a run resumed after it was
  logged) replaces its row. Keras' ``CSVLogger(append=True)`` instead appends rows under the
  file's old header, which misaligns every column once a continued run logs other keys.
  """

  def __init__(self, path):
    super().__init__()
    self.path = path

  def on_epoch_end(self, epoch, logs=None):
    rows = []
    if os.path.exists(self.path):
      with open(self.path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["epoch"] != str(epoch)]
    rows.append({"epoch": str(epoch), **{k: str(float(v)) for k, v in sorted((logs or {}).items())}})
    rows.sort(key=lambda r: int(r["epoch"]))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(dict.fromkeys(k for r in rows for k in r)),
                            restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(self.path, text.getvalue())
