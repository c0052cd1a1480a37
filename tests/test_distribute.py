"""tf.distribute: 2 logical CPU devices match one device; 2 localhost workers finish an epoch."""
import json
import os
import socket
import subprocess
import sys

import pytest

from d3_tf import distribute
from tests.test_experiments import ROOT, run_binary


def _env():
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  env.pop("TF_CONFIG", None)
  return env


def test_mirrored_two_devices_equal_one_device():
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "scripts",
                                                      "mirrored_equivalence.py")],
                        capture_output=True, text=True, timeout=600, env=_env())
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))[7:])
  assert result["replicas"] == 2
  assert abs(result["loss_1"] - result["loss_2"]) <= 1e-4 * abs(result["loss_1"])
  assert result["max_weight_diff"] <= 1e-4


def _free_ports(n):
  socks = [socket.socket() for _ in range(n)]
  for s in socks:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in socks]
  for s in socks:
    s.close()
  return ports


def test_two_workers_on_localhost_finish_a_smoke_epoch(tmp_path):
  ports = _free_ports(2)
  cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
  args = [sys.executable, "-m", "experiments.mnist_table1", "--preset", "smoke", "--methods",
          "BNN", "--noblackbox", "--epoch_eval_n", "0", "--sweep_linf=", "--sweep_l2=",
          "--distribute", "multi_worker", "--output_dir", "out", "--models_dir", "models"]
  procs = []
  for index in range(2):
    env = _env()
    env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
    procs.append(subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True))
  outputs = []
  try:
    for p in procs:
      outputs.append(p.communicate(timeout=600))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, (_, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-3000:]
  row = json.load(open(tmp_path / "out" / "results.json"))["rows"]["BNN"]
  assert row["n_eval"] == 32  # an accuracy on 32 images: a whole number of them
  assert abs(row["clean"] * 32 / 100 - round(row["clean"] * 32 / 100)) < 1e-6
  [log] = (tmp_path / "models").glob("*/BNN/log.csv")  # one epoch, written once
  assert len(log.read_text().splitlines()) == 2
  assert "| BNN |" in outputs[0][0] and "| BNN |" not in outputs[1][0]  # only the chief reports


def test_multi_worker_needs_tf_config(tmp_path):
  env_backup = os.environ.pop("TF_CONFIG", None)
  try:
    with pytest.raises(ValueError, match="TF_CONFIG"):
      distribute.make_strategy("multi_worker")
  finally:
    if env_backup is not None:
      os.environ["TF_CONFIG"] = env_backup
  proc = run_binary("mnist_table1", "--distribute", "multi_worker", cwd=tmp_path, timeout=300)
  assert proc.returncode == 1 and "needs the TF_CONFIG" in proc.stderr


def test_chief_detection(monkeypatch):
  monkeypatch.delenv("TF_CONFIG", raising=False)
  assert distribute.is_chief()
  worker = lambda i: json.dumps({"cluster": {"worker": ["a:1", "b:2"]},
                                 "task": {"type": "worker", "index": i}})
  monkeypatch.setenv("TF_CONFIG", worker(0))
  assert distribute.is_chief()
  monkeypatch.setenv("TF_CONFIG", worker(1))
  assert not distribute.is_chief()
