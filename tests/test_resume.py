"""A row's training survives being killed (at an epoch's end or within one) and can be continued
to more epochs from another folder's trained row, with no step lost or repeated."""
import dataclasses
import json
import os

import pytest
import tf_keras

from d3_tf import callbacks, experiment, progress
from d3_tf.settings import ConfigError


class Crash(tf_keras.callbacks.Callback):
  """Raises at the end of epoch ``epoch`` (0-based), as a kill while its records are written."""

  def __init__(self, epoch):
    super().__init__()
    self.epoch = epoch

  def on_epoch_end(self, epoch, logs=None):
    if epoch == self.epoch:
      raise KeyboardInterrupt("simulated kill while the epoch's records are written")


class StepCrash(tf_keras.callbacks.Callback):
  """Raises at the end of step ``batch`` of epoch ``epoch``."""

  def __init__(self, epoch, batch):
    super().__init__()
    self.epoch, self.batch, self.current = epoch, batch, None

  def on_epoch_begin(self, epoch, logs=None):
    self.current = epoch

  def on_train_batch_end(self, batch, logs=None):
    if (self.current, batch) == (self.epoch, self.batch):
      raise KeyboardInterrupt("simulated kill within an epoch")


class Seen(tf_keras.callbacks.Callback):
  """The epochs begun and the steps run."""

  def __init__(self):
    super().__init__()
    self.epochs, self.steps = [], 0

  def on_epoch_begin(self, epoch, logs=None):
    self.epochs.append(epoch)

  def on_train_batch_end(self, batch, logs=None):
    self.steps += 1


def _runner(tmp_path, data, n, **overrides):
  x, y, xt, yt = data
  settings = experiment.Settings(n_train=n, n_eval=8, batch_size=64, num_draws=2,
                                 **dict({"epochs": 3}, **overrides))
  return experiment.Runner(settings, str(tmp_path), (x[:n], y[:n]), (xt, yt), log=print)


def test_killed_at_an_epoch_end_continues_from_the_last_epoch(tmp_path, mnist_small,
                                                              monkeypatch):
  x, y, xt, yt = mnist_small
  ticks = iter(range(1000))  # a clock that advances by 1 s per reading
  monkeypatch.setattr(callbacks.Backup, "clock", staticmethod(lambda: next(ticks)))
  runner = _runner(tmp_path, mnist_small, 128)
  method = experiment.parse_method("M", "mnist")
  history = runner.store.row_dir("M") + "/epochs.json"

  def attack_log():
    return callbacks.EpochAttackLog(xt[:4], yt[:4], 0.3, 0.01, 2, history)

  model = runner.plan.build(method, 128)
  with pytest.raises(KeyboardInterrupt):
    runner.store.fit(model, "M", x[:128], y[:128], 3,
                [attack_log(), Crash(1)])
  assert set(json.load(open(history))) == {"1", "2"}
  log = runner.store.row_dir("M") + "/log.csv"
  # header + epoch 0: epoch 1 was killed before its backup, so neither it nor its logs count
  assert len(open(log).read().strip().splitlines()) == 1 + 1
  timing = runner.store.row_dir("M") + "/train_time.json"
  # readings: the epoch's start (0), its 2 steps' ends, its end (3)
  assert json.load(open(timing)) == {"seconds": 3, "epochs": 1, "n": 128}

  seen = Seen()
  model = runner.plan.build(method, 128)
  runner.store.fit(model, "M", x[:128], y[:128], 3,
              [attack_log(), seen])
  assert seen.epochs == [1, 2]  # resumed from the backup of epoch 0, epoch 1 repeated
  assert int(model.optimizer.iterations) == 3 * 2
  epochs = [int(l.split(",")[0]) for l in open(log).read().strip().splitlines()[1:]]
  assert epochs == [0, 1, 2]  # each epoch logged once
  assert set(json.load(open(history))) == {"1", "2", "3"}  # no epoch of Figure 1 lost
  assert json.load(open(timing)) == {"seconds": 3 + 6, "epochs": 3, "n": 128}
  assert os.path.exists(runner.store.row_dir("M") + "/final/weights.index")


def test_killed_within_an_epoch_resumes_at_the_step_after_its_last_backup(tmp_path,
                                                                          mnist_small):
  x, y, _, _ = mnist_small
  runner = _runner(tmp_path, mnist_small, 256, epochs=2)
  runner.store.backup_seconds = 0  # a backup after every step
  method = experiment.parse_method("BNN", "mnist")
  model = runner.plan.build(method, 256)
  with pytest.raises(KeyboardInterrupt):  # killed after step 1 of epoch 1, before its backup
    runner.store.fit(model, "BNN", x[:256], y[:256], 2,
                [StepCrash(1, 1)])
  assert int(model.optimizer.iterations) == 4 + 2
  assert json.load(open(runner.store.row_dir("BNN") + "/train_time.json"))["epochs"] == 1
  seen = Seen()
  model = runner.plan.build(method, 256)
  runner.store.fit(model, "BNN", x[:256], y[:256], 2, [seen])
  assert seen.epochs == [1] and seen.steps == 3  # steps 1-3 of epoch 1: none lost
  assert int(model.optimizer.iterations) == 2 * 4  # none repeated
  assert json.load(open(runner.store.row_dir("BNN") + "/train_time.json"))["epochs"] == 2


def test_a_backup_within_an_epoch_reports_the_step_and_the_pace(tmp_path, mnist_small):
  x, y, _, _ = mnist_small
  runner = _runner(tmp_path, mnist_small, 256, epochs=2)
  runner.store.backup_seconds = 0  # a backup, and so a line, after every step
  lines = []
  runner.store.log = lines.append
  runner.store.fit(runner.plan.build(experiment.parse_method("BNN", "mnist"), 256), "BNN",
                   x[:256], y[:256], 2)
  steps = [l.split(",")[0].strip() for l in lines if " step " in l]
  assert steps == [f"epoch {e}/2: step {s}/4" for e in (1, 2) for s in (1, 2, 3, 4)]
  assert all("steps/s" in l for l in lines if " step " in l)


def test_the_pace_line_counts_what_is_left_at_this_runs_rate():
  # 400 steps in 640 s: 0.625 steps/s; 538 steps left in the epoch (861 s), 63 more epochs
  line = progress.pace(36, 100, 400, 938, 400, 640.0)
  assert line == ("  epoch 37/100: step 400/938, 0.62 steps/s; epoch ends in about 14 min, "
                  f"the run in about {(63 * 938 + 538) / 0.625 / 3600:.1f} h")
  assert progress.pace(99, 100, 938, 938, 10, 5.0).endswith("epoch ends in about 0 s")
  assert progress.pace(0, None, 3, None, 0, 0.0) == "  epoch 1/?: step 3/?"


def test_an_epoch_end_backup_of_the_older_format_resumes_at_the_next_epoch(tmp_path,
                                                                           mnist_small):
  x, y, _, _ = mnist_small
  runner = _runner(tmp_path, mnist_small, 128, epochs=2)
  method = experiment.parse_method("BNN", "mnist")
  model = runner.plan.build(method, 128)
  old = tf_keras.callbacks.BackupAndRestore(runner.store.row_dir("BNN") + "/backup")
  with pytest.raises(KeyboardInterrupt):  # killed after epoch 0's backup (no step recorded)
    model.fit(x[:128], y[:128], batch_size=64, epochs=2, verbose=0, callbacks=[Crash(1), old])
  seen = Seen()
  model = runner.plan.build(method, 128)
  runner.store.fit(model, "BNN", x[:128], y[:128], 2, [seen])
  assert seen.epochs == [1] and int(model.optimizer.iterations) == 2 * 2


def test_a_row_continues_another_folders_row_to_more_epochs(tmp_path, mnist_small):
  x, y, _, _ = mnist_small
  short = _runner(tmp_path / "short", mnist_small, 128, epochs=1)
  method = experiment.parse_method("BNN", "mnist")
  trained = short.train(method)
  longer = _runner(tmp_path / "long", mnist_small, 128, epochs=2, continued_from=short.store.root,
                   keep_epochs=(1,))
  assert longer.store.root != short.store.root  # a continued row is not one trained from the start
  model = longer.plan.build(method, 128)
  assert longer.store.continue_row(model, "BNN") == 1
  for mine, theirs in zip(model.weights, trained.weights):
    assert (mine.numpy() == theirs.numpy()).all()
  assert int(model.optimizer.iterations) == 2  # Adam's state came along
  model = longer.train(method)
  assert int(model.optimizer.iterations) == 2 * 2
  row = longer.store.row_dir("BNN")
  epochs = [int(l.split(",")[0]) for l in open(row + "/log.csv").read().strip().splitlines()[1:]]
  assert epochs == [0, 1]  # the first epoch's log carried over
  assert json.load(open(row + "/train_time.json"))["epochs"] == 2
  assert os.path.exists(row + "/epoch_1/weights.index")  # the kept epoch it started from

  other = _runner(tmp_path / "other", mnist_small, 128, epochs=2, continued_from=short.store.root,
                  learning_rate=1e-4)
  with pytest.raises(ConfigError, match="cannot be continued"):
    other.store.continue_row(other.plan.build(method, 128), "BNN")
  again = dataclasses.replace(longer.s, epochs=1)
  with pytest.raises(ConfigError, match="cannot be continued"):  # nothing left to train
    experiment.Runner(again, str(tmp_path / "again"), (x[:128], y[:128]),
                      (x[:8], y[:8])).store.continue_row(model, "BNN")


def test_the_epoch_log_keeps_one_header_when_a_continued_run_logs_more_keys(tmp_path):
  path = str(tmp_path / "log.csv")
  first = callbacks.EpochCsv(path)
  first.on_epoch_end(0, {"loss": 2.5, "accuracy": 0.5})
  first.on_epoch_end(1, {"loss": 1.5, "accuracy": 0.75})
  later = callbacks.EpochCsv(path)  # a continued run whose epochs also log attack accuracies
  later.on_epoch_end(2, {"loss": 1.0, "accuracy": 0.875, "attack_pgd": 12.5})
  later.on_epoch_end(1, {"loss": 1.25, "accuracy": 0.8, "attack_pgd": 10.0})  # epoch 1 repeated
  assert open(path).read().splitlines() == [
      "epoch,accuracy,loss,attack_pgd",
      "0,0.5,2.5,", "1,0.8,1.25,10.0", "2,0.875,1.0,12.5"]
