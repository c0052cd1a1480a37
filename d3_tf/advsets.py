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
                     random_start=False, seed=0, source_name="", batch_size=128, chunk=16):
  """PGD examples against ``source_model``, cached at ``path``.

  The cache is reused when its metadata matches the attack settings and the
  source model's current weights; otherwise the set is regenerated, ``chunk``
  attack batches at a time. Each finished chunk is saved beside the cache
  (``<path>.partial.npz``), so a run killed part way resumes at the next chunk;
  the batches, and so the examples, are the same as in one pass. (With
  ``random_start`` the random starts come from one seeded stream, which a
  resumed run cannot rejoin: such a set starts over.)

  Returns:
    (x_adv, y, meta).
  """
  meta = {"attack": "pgd", "norm": str(norm), "eps": float(eps), "eps_step": float(eps_step),
          "max_iter": int(max_iter), "random_start": bool(random_start), "seed": int(seed),
          "source": source_name, "source_fingerprint": weights_fingerprint(source_model),
          "n": int(len(x))}
  cached = _made_with(path, meta, y)
  if cached:
    return cached
  partial = f"{path}.partial.npz"
  advs, hits = _resume(partial, meta, y) if not random_start else ([], [0, 0])
  estimator = attacks.classifier(source_model)
  attack = attacks.pgd(estimator, eps, eps_step, max_iter, norm, random_start, batch_size, seed)
  step = chunk * batch_size
  for start in range(sum(len(a) for a in advs), len(x), step):
    res = attacks.robust_accuracy(
        estimator, x[start:start + step], y[start:start + step], attack, batch_size,
        return_adv=True, desc=f"adversarial set {os.path.basename(path)} "
        f"[{start:,}-{min(start + step, len(x)):,} of {len(x):,}]")
    advs.append(res["x_adv"].astype(np.float32))
    hits = [hits[0] + round(res["clean"] * res["n"] / 100),
            hits[1] + round(res["adversarial"] * res["n"] / 100)]
    if distribute.is_chief() and start + step < len(x):
      done = np.concatenate(advs)
      save(partial, done, y[:len(done)], dict(meta, clean_hits=hits[0], adversarial_hits=hits[1]))
  x_adv = np.concatenate(advs)
  meta["source_clean_accuracy"] = 100.0 * hits[0] / len(x)
  meta["source_adversarial_accuracy"] = 100.0 * hits[1] / len(x)
  if distribute.is_chief():
    save(path, x_adv, y, meta)
    if os.path.exists(partial):
      os.remove(partial)
  return x_adv, y.astype(np.int64), meta


def _made_with(path, meta, y):
  """(x_adv, y, meta) saved at ``path`` when made with ``meta``'s settings on the first labels
  of ``y`` (all of them for a finished set, whose meta has n = len(y)); else None."""
  if os.path.exists(path):
    x_saved, y_saved, saved = load(path)
    if all(saved.get(k) == v for k, v in meta.items()) and np.array_equal(
        y_saved, y[:len(y_saved)]):
      return x_saved, y_saved, saved
  return None


def _resume(partial, meta, y):
  """([x_adv done], [clean hits, adversarial hits]) of a killed run's chunks at ``partial``
  when they were made with ``meta`` on the first labels of ``y``; else nothing done."""
  done = _made_with(partial, meta, y)
  if done:
    return [done[0]], [done[2]["clean_hits"], done[2]["adversarial_hits"]]
  return [], [0, 0]


def append(x, y, x_adv, y_adv):
  """The "-Off" training set: clean and offline adversarial examples together."""
  return np.concatenate([x, x_adv]), np.concatenate([y, y_adv])
