"""Files of a run: atomic writes (by the chief only) and JSON reads. No TensorFlow."""

import os
import json

from d3_tf import distribute


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
