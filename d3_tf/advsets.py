"""Saved adversarial sets: black-box transfer sets and offline training data.

- Black-box column (Sec. 5.3-5.4): the paper transferred examples from the
  MadryLab challenge repositories, which cannot be downloaded offline. We
  instead attack locally trained conventional surrogates once (PGD), save the
  examples, and evaluate every model on the same saved set.
- "-Off" rows (Sec. 4.6): PGD-40 examples computed once from a trained
  conventional network of the matching architecture on the training set,
  appended statically to the training set.

Sets are ``.npz`` files (never pickles) holding ``x``, ``y`` and a JSON
``meta`` string (attack, ε, steps, source model, its weight fingerprint, seed).
They are regenerated only when missing or when the source model's weights
changed.
"""

import hashlib
import json
import os

import numpy as np

from d3_tf import attacks, distribute


def weights_fingerprint(model):
  """md5 over all weights of a Keras model: identifies the source of a set."""
  h = hashlib.md5()
  for w in model.weights:
    h.update(w.name.encode())
    h.update(np.ascontiguousarray(w.numpy()).tobytes())
  return h.hexdigest()


def save(path, x, y, meta):
  """Atomically writes an adversarial set with its metadata."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp.npz"
  np.savez_compressed(tmp, x=x.astype(np.float32), y=y.astype(np.int64),
                      meta=np.array(json.dumps(meta, sort_keys=True)))
  os.replace(tmp, path)


def load(path):
  """Returns (x, y, meta) of a saved set (no pickle)."""
  with np.load(path, allow_pickle=False) as f:
    return f["x"], f["y"], json.loads(str(f["meta"]))


def generate_or_load(path, source_model, x, y, eps, eps_step, max_iter=40, norm="inf",
                     random_start=False, seed=0, source_name="", batch_size=128):
  """PGD examples against ``source_model``, cached at ``path``.

  The cache is reused when its metadata matches the attack settings and the
  source model's current weights; otherwise the set is regenerated.

  Returns:
    (x_adv, y, meta).
  """
  meta = {"attack": "pgd", "norm": str(norm), "eps": float(eps), "eps_step": float(eps_step),
          "max_iter": int(max_iter), "random_start": bool(random_start), "seed": int(seed),
          "source": source_name, "source_fingerprint": weights_fingerprint(source_model),
          "n": int(len(x))}
  if os.path.exists(path):
    x_adv, y_saved, saved = load(path)
    if all(saved.get(k) == v for k, v in meta.items()) and np.array_equal(y_saved, y):
      return x_adv, y_saved, saved
  estimator = attacks.classifier(source_model)
  attack = attacks.pgd(estimator, eps, eps_step, max_iter, norm, random_start, batch_size, seed)
  res = attacks.robust_accuracy(estimator, x, y, attack, batch_size, return_adv=True,
                                desc=f"adversarial set {os.path.basename(path)}")
  meta["source_clean_accuracy"] = res["clean"]
  meta["source_adversarial_accuracy"] = res["adversarial"]
  if distribute.is_chief():
    save(path, res["x_adv"], y, meta)
  return res["x_adv"].astype(np.float32), y.astype(np.int64), meta


def append(x, y, x_adv, y_adv):
  """The "-Off" training set: clean and offline adversarial examples together."""
  return np.concatenate([x, x_adv]), np.concatenate([y, y_adv])
