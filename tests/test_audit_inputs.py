"""run_audit refuses every bad input before any attack, with one line naming the argument."""
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import d3_tf  # noqa: F401  (Keras 2 first)
from d3_tf import audit, audit_inputs, data
from d3_tf.settings import ConfigError


def _logits_model(classes=10, activation=None):
  tf_keras.utils.set_random_seed(0)
  return tf_keras.Sequential([tf_keras.layers.InputLayer((28, 28, 1)),
                              tf_keras.layers.Flatten(),
                              tf_keras.layers.Dense(classes, activation=activation)])


@pytest.fixture(scope="module")
def images():
  _, (x, y) = data.load_mnist(source="embedded", n_test=8)
  return x, y


@pytest.fixture(scope="module")
def models():
  nan = tf_keras.Sequential([tf_keras.layers.InputLayer((28, 28, 1)),
                             tf_keras.layers.Flatten(),
                             tf_keras.layers.Lambda(lambda h: h[:, :10] * np.nan)])
  return {"logits": _logits_model(), "probabilities": _logits_model(activation="softmax"),
          "one output": _logits_model(1), "five classes": _logits_model(5), "nan": nan}


@pytest.fixture
def no_attack(monkeypatch, tmp_path):
  """Any attack (or the sanity checks' attacks) fails the test; the cwd is an empty folder."""
  def attacked(*args, **kwargs):
    raise AssertionError("an attack ran before the inputs were refused")
  for name in ("Cascade", "eot_pgd", "apgd", "autoattack", "square", "sanity_numbers",
               "expected_accuracy"):
    monkeypatch.setattr(audit, name, attacked)
  monkeypatch.chdir(tmp_path)
  yield
  assert os.listdir(tmp_path) == []  # nothing written


# (what is wrong, how to make the call's arguments from (x, y), words the message must hold)
BAD = [
    ("images in [0, 255]", lambda x, y: dict(x=x * 255.0), "divide by 255"),
    ("uint8 images", lambda x, y: dict(x=(x * 255).astype(np.uint8)), "uint8"),
    ("label -1", lambda x, y: dict(y=np.where(np.arange(len(y)) == 0, -1, y)), "labels in [-1"),
    ("label 10", lambda x, y: dict(y=np.where(np.arange(len(y)) == 0, 10, y)), "10 classes"),
    ("NaN pixels", lambda x, y: dict(x=np.where(np.arange(x.size).reshape(x.shape) == 5,
                                                np.nan, x)), "NaN"),
    ("eps = 5", lambda x, y: dict(eps=5.0), "eps: 5.0 is invalid"),
    ("eps = 0", lambda x, y: dict(eps=0.0), "eps: 0.0 is invalid"),
    ("eps < 0 (L2)", lambda x, y: dict(eps=-1.0, norm="l2"), "eps: -1.0 is invalid"),
    ("norm l3", lambda x, y: dict(norm="l3"), "norm"),
    ("protocol", lambda x, y: dict(protocol="strong"), "protocol"),
    ("passes = 0", lambda x, y: dict(passes=0), "passes: 0 is invalid"),
    ("steps = 0", lambda x, y: dict(steps=0), "steps: 0"),
    ("batch_size = 0", lambda x, y: dict(batch_size=0), "batch_size: 0"),
    ("sanity_n = 0", lambda x, y: dict(sanity_n=0), "sanity_n: 0"),
    ("restarts = 0", lambda x, y: dict(restarts=0), "restarts: 0"),
    ("eot = ()", lambda x, y: dict(eot=()), "eot"),
    ("n = 0", lambda x, y: dict(x=x[:0], y=y[:0]), "no images"),
    ("NCHW images", lambda x, y: dict(x=x.transpose(0, 3, 1, 2)), "NCHW"),
    ("channel-less images", lambda x, y: dict(x=x[..., 0]), "channel axis"),
    ("labels of the wrong length", lambda x, y: dict(y=y[:-1]), "labels for"),
    ("float labels", lambda x, y: dict(y=y.astype(np.float32)), "integer class indices"),
    ("one-hot labels", lambda x, y: dict(y=np.eye(10)[y]), "one-hot"),
    ("string images", lambda x, y: dict(x=[["a"]]), "numeric"),
    ("model returns probabilities", lambda x, y: dict(model="probabilities"), "probabilities"),
    ("model with 1 output", lambda x, y: dict(model="one output"), "at least 2 classes"),
    ("5-class model, 10-class labels", lambda x, y: dict(model="five classes"), "5 classes"),
    ("model returns NaN", lambda x, y: dict(model="nan"), "NaN or inf logits"),
]

SETTINGS = audit_inputs.AuditSettings(eot=(1,), steps=2, restarts=1, apgd_eot=1,
                                      square_queries=0, sanity_n=4, passes=2, batch_size=8)


@pytest.mark.parametrize("case,change,words", BAD, ids=[b[0] for b in BAD])
def test_bad_input_refused_before_any_attack(images, models, no_attack, case, change, words):
  x, y = images
  call = dict(model="logits", x=x, y=y, eps=0.1, steps=2, square_queries=0, sanity_n=4)
  call.update(change(x, y))
  call["model"] = models[call["model"]]
  with pytest.raises(ValueError) as info:
    audit.run_audit(log=lambda s: None, **call)
  assert isinstance(info.value, ConfigError), case
  message = str(info.value)
  assert words in message and "\n" not in message and len(message) < 300, message


def test_lists_and_tensors_are_accepted(images, models):
  x, y = images
  for xs, ys in ((x.tolist(), y.tolist()), (tf.constant(x), tf.constant(y))):
    xc, yc, _, target = audit.checked_inputs(models["logits"], xs, ys, 0.1, SETTINGS, None,
                                             None, None)
    np.testing.assert_array_equal(xc, x)
    np.testing.assert_array_equal(yc, y)
    assert xc.dtype == np.float32 and yc.dtype == np.int64 and target.num_classes == 10


def test_a_callable_gets_its_shapes_from_the_images_and_its_outputs(images):
  x, y = images
  model = _logits_model(7)
  _, _, _, target = audit.checked_inputs(lambda t: model(t), x, y % 7, 0.1, SETTINGS, None,
                                         None, None)
  assert target.input_shape == (28, 28, 1) and target.num_classes == 7


def test_settings_record_cuts_to_n_and_names_unknown_settings(images, models):
  x, y = images
  xc, yc, checked, _ = audit.checked_inputs(models["logits"], x, y, 0.1,
                                            audit.AuditSettings(n=3, eot=4), None, None, None)
  np.testing.assert_array_equal(xc, x[:3])
  np.testing.assert_array_equal(yc, y[:3])
  assert checked.eot == (4,)
  with pytest.raises(ConfigError, match="^eots: is not a setting of the audit"):
    audit.run_audit(models["logits"], x, y, 0.1, eots=(1,))
  with pytest.raises(ConfigError, match="^n: 0 is invalid"):
    audit.run_audit(models["logits"], x, y, 0.1, audit.AUDITS["smoke"], n=0)


def test_budget_rules_by_norm():
  audit_inputs.check_budget(1.0, "inf")
  audit_inputs.check_budget(3.0, "l2")  # an L2 budget may exceed 1
  for eps, norm in ((1.5, "inf"), (0.0, "l2"), (float("inf"), "l2"), (True, "inf")):
    with pytest.raises(ConfigError, match="eps"):
      audit_inputs.check_budget(eps, norm)


def test_rand_on_a_deterministic_model_uses_one_sample(images, models):
  x, y = images
  lines = []
  report = audit.run_audit(models["logits"], x[:4], y[:4], 0.1, steps=2, sanity_n=4, passes=2,
                           protocol="rand", log=lines.append, verbose=False)
  assert list(report["attacks"]) == ["apgd_ce:R=1", "apgd_dlr:R=1"]
  assert report["settings"]["rand_eot"] == 1
  assert any("deterministic" in line and "EOT 1" in line for line in lines)
