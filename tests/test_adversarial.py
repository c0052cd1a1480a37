"""PGD adversarial training (d3_tf.adversarial): the attack, the ε ramp, the training mode."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import d3_tf
from d3_tf import adversarial, data, experiment


def test_pgd_reaches_the_known_worst_case_of_a_linear_model():
  """logits = (Σx, −Σx), label 0: the loss falls with every pixel, so the worst case in the
  ε-ball is x − ε, clipped at 0 (steps of 2.5ε/steps travel far enough from any start)."""
  x = np.random.RandomState(0).rand(6, 4, 4, 1).astype(np.float32)
  fn = lambda z: tf.stack([tf.reduce_sum(z, [1, 2, 3]), -tf.reduce_sum(z, [1, 2, 3])], axis=1)
  for random_start in (False, True):
    x_adv = adversarial.pgd_linf(fn, x, np.zeros(6), 0.2, steps=5,
                                 random_start=random_start).numpy()
    np.testing.assert_allclose(x_adv, np.clip(x - 0.2, 0.0, 1.0), atol=1e-6)


def test_pgd_stays_in_the_ball_and_the_image_range():
  x = np.random.RandomState(1).rand(8, 6, 6, 1).astype(np.float32)
  w = tf.constant(np.random.RandomState(2).randn(36, 3).astype(np.float32))
  fn = lambda z: tf.reshape(z, [-1, 36]) @ w
  x_adv = adversarial.pgd_linf(fn, x, np.arange(8) % 3, 0.1, steps=3).numpy()
  assert np.abs(x_adv - x).max() <= 0.1 + 1e-6
  assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
  assert np.abs(x_adv - x).max() > 0.05  # it moved


def test_epsilon_ramp():
  ramp = adversarial.PGDTraining(0.3, steps=2, warmup_steps=10)
  got = [float(ramp.epsilon(tf.constant(s))) for s in (0, 4, 9, 50)]
  np.testing.assert_allclose(got, [0.03, 0.15, 0.3, 0.3], rtol=1e-6)
  assert float(adversarial.PGDTraining(0.3).epsilon(0)) == pytest.approx(0.3)
  with pytest.raises(ValueError):
    adversarial.PGDTraining(0.0)


def test_mixed_objective_weighs_the_clean_and_the_pgd_loss(mnist_small):
  """loss = w·L(clean) + (1 − w)·L(PGD); "ce" stays the PGD half's. At rate 0 the weights do
  not move, so L(clean) is the model's loss on the clean batch before the step."""
  x, y, _, _ = mnist_small
  x, y = x[:32], y[:32]
  for w in (0.0, 0.25, 0.5):
    model = d3_tf.build("mnist_cnn", bayesian=False, adversarial=adversarial.PGDTraining(
        0.3, steps=3, clean_weight=w))
    model.compile(optimizer=tf_keras.optimizers.SGD(0.0))
    clean = float(model.compute_terms(x, y, training=True)["loss"])
    hist = model.fit(data.make_dataset(x, y, 32), epochs=1, verbose=0).history
    pgd = hist["ce"][0]
    assert pgd > clean + 0.5  # the PGD half is the harder one
    assert hist["loss"][0] == pytest.approx(w * clean + (1 - w) * pgd, rel=1e-4)
  with pytest.raises(ValueError):
    adversarial.PGDTraining(0.3, clean_weight=1.0)


def test_adversarial_training_mode_trains_on_pgd_examples(mnist_small):
  x, y, _, _ = mnist_small
  model = d3_tf.build("mnist_cnn", bayesian=False, adversarial=adversarial.PGDTraining(
      0.3, steps=2, warmup_steps=4))
  model.compile(optimizer=tf_keras.optimizers.Adam(1e-3))
  hist = model.fit(data.make_dataset(x[:128], y[:128], 32), epochs=1, verbose=0).history
  # ε over the epoch's 4 steps: 0.075, 0.15, 0.225, 0.3 -> mean 0.1875
  assert hist["adv_eps"][0] == pytest.approx(0.1875, rel=1e-5)
  assert model.get_config()["adversarial"]["eps"] == 0.3


def test_adv_rows_parse_and_build(mnist_small, tmp_path):
  cnn, bnn = (experiment.parse_method(n, "mnist") for n in ("Adv-CNN", "Adv-BNN"))
  assert cnn.adversarial and not cnn.bayesian and bnn.adversarial and bnn.bayesian
  assert not bnn.penalties and not experiment.parse_method("BNN", "mnist").adversarial
  assert experiment.parse_method("Adv-BNN", "cifar10").bayesian
  x, y, xt, yt = mnist_small
  runner = experiment.Runner(experiment.PRESETS[("mnist", "smoke")], str(tmp_path),
                             (x, y), (xt, yt))
  model = runner.plan.build(bnn, n_train=256)
  assert model.adversarial.steps == runner.s.adv_iters and model.bayesian
  assert model.adversarial.warmup_steps == 8  # 1 epoch of 256 images at batch 32
  assert runner.plan.build(experiment.parse_method("BNN", "mnist"), 256).adversarial is None


def test_warm_started_adv_rows_ramp_only_when_asked(mnist_small, tmp_path):
  import dataclasses  # pylint: disable=g-import-not-at-top
  cnn, bnn = (experiment.parse_method(n, "mnist") for n in ("Adv-CNN", "Adv-BNN"))
  x, y, xt, yt = mnist_small
  smoke = experiment.PRESETS[("mnist", "smoke")]
  for ramp, steps in ((0.0, 0), (2.0, 16)):  # 2 epochs of 256 images at batch 32
    settings = dataclasses.replace(smoke, adv_warm_start_lr=1e-3, warm_start_lr=1e-3,
                                   adv_warm_start_warmup=ramp)
    runner = experiment.Runner(settings, str(tmp_path), (x[:256], y[:256]), (xt, yt))
    assert runner.plan.adversary(cnn, 256).warmup_steps == steps  # from the natural CNN
    assert runner.plan.adversary(bnn, 256).warmup_steps == 0  # from the robust Adv-CNN
    assert runner.plan.adversary(cnn, 256).clean_weight == 0.0
  mixed = dataclasses.replace(smoke, adv_clean_weight=0.5)
  runner = experiment.Runner(mixed, str(tmp_path), (x[:256], y[:256]), (xt, yt))
  plan = runner.plan
  assert plan.adversary(cnn, 256).clean_weight == plan.adversary(bnn, 256).clean_weight == 0.5


def test_robust_mix_shares_the_robust_presets_conventional_row(tmp_path):
  """robust_mix reuses (a copy of) the robust preset's trained VGG16: the two presets differ
  only in fields the conventional row's training does not read."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  robust, mix = (experiment.PRESETS[("cifar10", p)] for p in ("robust", "robust_mix"))
  differ = {f.name for f in dataclasses.fields(robust)
            if getattr(robust, f.name) != getattr(mix, f.name)}
  assert differ == {"adv_epochs", "adv_warm_start_warmup", "adv_clean_weight", "epoch_eval_n"}
  data_ = (np.zeros((8, 32, 32, 3), np.float32), np.zeros(8, np.int64))
  vgg = experiment.parse_method("VGG16", "cifar10")
  runners = [experiment.Runner(s, str(tmp_path), data_, data_) for s in (robust, mix)]
  assert len({(p.epochs(vgg), p.learning_rate(vgg), p.adversary(vgg, 8), p.warm_started(vgg))
              for p in (r.plan for r in runners)}) == 1
