"""The verdict over every study run: does any reading give the paper's white-box robustness?

Reads the results.json of every study grid (``experiments.study``) and, optionally, table runs
(``mnist_table1``, ``cifar_table2``), averages a configuration's seeds (mean ± standard
deviation), and, dataset by dataset, for each white-box claim of the paper's table (Table 1 on
MNIST, Table 2 on CIFAR-10: ``Benchmark.paper_table``) finds the best PGD accuracy reached with
at least ``clean_min`` % clean accuracy, beside what the audit leaves of it. No TensorFlow here.
"""

import re
import statistics


CLAIMS = ("M", "M-V", "M-S", "M-V-S", "M-S-Off")  # the rows whose PGD accuracy the paper claims
METRICS = ("clean", "fgsm", "pgd", "blackbox", "audited")
_SEED = re.compile(r"/seed=(\d+)$")


def _mean_std(values):
  values = [v for v in values if v is not None]
  if not values:
    return None
  return {"mean": statistics.mean(values),
          "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}


def entries(source, results):
  """[(source, configuration without seed, seed, row, row dict)] of a study or table run."""
  out = []
  if "configs" in results:  # a study grid
    for name, entry in results["configs"].items():
      match = _SEED.search(name)
      seed = int(match.group(1)) if match else entry["overrides"].get("seed", 0)
      base = _SEED.sub("", name)
      out += [(source, base, seed, row, r) for row, r in entry["rows"].items()]
  else:  # a table run: one configuration, its preset
    seed = results["settings"]["seed"]
    out += [(source, f"preset {results['preset']}", seed, row, r)
            for row, r in results["rows"].items()]
  return out


def aggregate(all_entries):
  """{(source, configuration, row): {metric: mean/std/n, "omega_m": …, "seeds": [...]}}."""
  groups = {}
  for source, config, seed, row, r in all_entries:
    groups.setdefault((source, config, row), []).append((seed, r))
  out = {}
  for key, runs in groups.items():
    agg = {m: _mean_std([r.get(m) for _, r in runs]) for m in METRICS}
    agg["omega_m"] = _mean_std([r.get("diversity", {}).get("omega_m") for _, r in runs])
    agg["seeds"] = sorted(seed for seed, _ in runs)
    out[key] = agg
  return out


def best_per_claim(agg, clean_min=97.0):
  """{row: (source, configuration, aggregate) with the best mean PGD at mean clean ≥ clean_min}."""
  best = {}
  for (source, config, row), a in agg.items():
    if row not in CLAIMS or not a["pgd"] or not a["clean"] or a["clean"]["mean"] < clean_min:
      continue
    if row not in best or a["pgd"]["mean"] > best[row][2]["pgd"]["mean"]:
      best[row] = (source, config, a)
  return best


def cost(all_entries):
  """{"cells", "train_seconds", "eval_seconds"}: how many trained (configuration, row, seed)
  cells the entries hold and the seconds their rows record (table rows record only training)."""
  return {"cells": len(all_entries),
          "train_seconds": sum(r.get("train_seconds") or 0.0 for *_, r in all_entries),
          "eval_seconds": sum(r.get("eval_seconds") or 0.0 for *_, r in all_entries)}


def fmt(stat, digits=1):
  """'12.3' for one run, '12.3 ± 1.2 (3)' over seeds, '—' when missing."""
  if not stat:
    return "—"
  text = f"{stat['mean']:.{digits}f}"
  return text + (f" ± {stat['std']:.{digits}f} ({stat['n']})" if stat["n"] > 1 else "")


def _claims(agg, clean_min, bench):
  """The claims table at one clean-accuracy floor."""
  best = best_per_claim(agg, clean_min)
  lines = ["| row | paper PGD | best PGD (clean ≥ %g%%) | its clean | its audited | ΩM | "
           "configuration |" % clean_min, "|---" * 7 + "|"]
  for row in CLAIMS:
    claimed = bench.paper_table[row]["pgd"]
    if row not in best:
      lines.append(f"| {row} | {claimed} | no run reached {clean_min:g}% clean | — | — | — | — |")
      continue
    source, config, a = best[row]
    lines.append(f"| {row} | {claimed} | {fmt(a['pgd'])} | {fmt(a['clean'])} | "
                 f"{fmt(a['audited'])} | {fmt(a['omega_m'], 3)} | {source}: {config} |")
  return lines


def section(agg, bench, clean_min=None, clean_near=None, spent=None):
  """One dataset's part of the summary: the claims of its paper table at two clean-accuracy
  floors (``bench.claim_floors`` unless given), every configuration and, given ``spent`` (from
  ``cost``), what its cells cost."""
  floor, near = bench.claim_floors
  clean_min = floor if clean_min is None else clean_min
  clean_near = near if clean_near is None else clean_near
  lines = [f"## {bench.table_heading()}", "",
           f"For each row whose PGD accuracy {bench.table_title} reports: the best PGD-40 accuracy "
           f"(ε = {bench.eps:g}) that any configuration reached with at least {clean_min:g}% "
           "clean accuracy, what the audit leaves of it (per-example worst case of EOT-PGD, "
           "APGD-CE/DLR with EOT and posterior-mean transfer), and the configuration. Mean ± "
           "standard deviation (number of seeds) where a configuration ran with several seeds. "
           "Accuracy in %.", ""]
  lines += _claims(agg, clean_min, bench)
  if clean_near < clean_min:
    lines += ["", f"The same with the floor lowered to {clean_near:g}% clean (configurations "
              "that trade clean accuracy for the paper's pattern):", ""]
    lines += _claims(agg, clean_near, bench)
  lines += ["", f"### Every {bench.title} configuration", "",
            "| source | configuration | row | seeds | clean | FGSM | PGD | black-box | audited | "
            "ΩM |", "|---" * 10 + "|"]
  for (source, config, row), a in sorted(agg.items()):
    lines.append(f"| {source} | {config} | {row} | {','.join(map(str, a['seeds']))} | "
                 + " | ".join(fmt(a[m]) for m in METRICS) + f" | {fmt(a['omega_m'], 3)} |")
  if spent:
    lines += ["", f"{spent['cells']} trained (configuration, row, seed) cells; their rows record "
              f"{spent['train_seconds'] / 3600:.1f} h of training and "
              f"{spent['eval_seconds'] / 3600:.1f} h of evaluation, audit and measurements "
              "(table rows record training only), each on one core. Surrogates, black-box sets "
              "and runs lost before a checkpoint are not counted."]
  return lines


def markdown(sections):
  """The summary: a title, then each dataset's ``section`` lines."""
  lines = ["# Verdict: the paper's white-box claims against every configuration run"]
  for part in sections:
    lines += [""] + part
  return "\n".join(lines) + "\n"


def diversity_points(agg):
  """[(label, ΩM, PGD, audited)] means of every Bayesian row measured (for the figure)."""
  return [(f"{source}:{config} {row}", a["omega_m"]["mean"], a["pgd"]["mean"],
           a["audited"]["mean"] if a["audited"] else None)
          for (source, config, row), a in sorted(agg.items()) if a["omega_m"] and a["pgd"]]
