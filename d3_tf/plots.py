"""Figures 1-3 with matplotlib, styled as the paper (Sec. 5.3.1, 6).

Penalised models in colour, unpenalised in grey; offline-adversarial ("-Off")
variants share their base colour and carry "+" markers; the adversarially trained reference
rows (Adv-CNN, Adv-BNN: not in the paper) in colours of their own with square markers.
"""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.ticker  # noqa: E402  pylint: disable=g-import-not-at-top
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=g-import-not-at-top

_COLOURS = {"M": "tab:blue", "M-V": "tab:orange", "M-S": "tab:green", "M-V-S": "tab:red"}
_GREYS = {"CNN": "0.15", "VGG16": "0.15", "BNN": "0.55", "BVGG16": "0.55"}
_REFERENCES = {"Adv-CNN": "tab:purple", "Adv-BNN": "tab:brown"}


def style(name):
  """(colour, marker) of a row: colour by penalties, grey without, '+' for Off."""
  if name in _REFERENCES:
    return _REFERENCES[name], "s"
  off = name.endswith("-Off")
  base = name[:-4] if off else name
  colour = _COLOURS.get(base, _GREYS.get(base, "0.4"))
  return colour, ("+" if off else "o")


def _save(fig, path):
  """Writes the PNG atomically (a temporary file renamed into place)."""
  fig.tight_layout()
  tmp = f"{path}.tmp.png"
  fig.savefig(tmp, dpi=120)
  plt.close(fig)
  os.replace(tmp, path)
  return path


def figure1(results, path, eps, paper=None, paper_epoch=100, paper_title="Table 1"):
  """Per-epoch FGSM (a) and PGD (b) accuracy during training; None if no epoch logs.

  ``paper`` ({row: {"fgsm": %, "pgd": %}}, the paper's table ``paper_title``) adds the
  paper's final value of each plotted row as a hollow star at ``paper_epoch``: Figure 1's
  curves end at Table 1's values.
  """
  rows = {n: r["epochs"] for n, r in results["rows"].items() if r.get("epochs")}
  if not rows:
    return None
  # "M-S" (a table's row) or "M-S <configuration>" (a study's): colour by row, line by
  # configuration, so that one row of two configurations stays two lines apart.
  configs = list(dict.fromkeys(name.partition(" ")[2] for name in rows))
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for ax, key, label in ((axes[0], "fgsm", "FGSM"), (axes[1], "pgd", "PGD")):
    for name, epochs in rows.items():
      xs = sorted(int(e) for e in epochs)
      row, _, config = name.partition(" ")
      colour, marker = style(row)
      ax.plot(xs, [epochs[str(e)][key] for e in xs], color=colour, marker=marker, label=name,
              linestyle=("-", "--", ":", "-.")[configs.index(config) % 4],
              markersize=3 if len(xs) > 20 else 6)
    for row in dict.fromkeys(name.partition(" ")[0] for name in rows):
      if row in (paper or {}):
        ax.plot([paper_epoch], [paper[row][key]], marker="*", markersize=14, linestyle="none",
                markerfacecolor="none", color=style(row)[0],
                label=f"{row}: the paper ({paper_title}, epoch {paper_epoch})")
    all_epochs = sorted({int(e) for epochs in rows.values() for e in epochs})
    if len(all_epochs) <= 20 and not paper:
      ax.set_xticks(all_epochs)
    else:
      ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel="accuracy (%)", ylim=(-2, 102),
           title=f"({'ab'[key == 'pgd']}) {label} L∞ ε = {eps}")
    ax.grid(alpha=0.3)
  axes[1].legend(fontsize=8, loc="best")
  return _save(fig, path)


def figure_budgets(results, path, title):
  """PGD accuracy versus budget, (a) L∞ and (b) L2; None if no sweeps."""
  norms = [n for n in ("inf", "l2") if any(r.get(f"sweep_{n}") for r in results["rows"].values())]
  if not norms:
    return None
  fig, axes = plt.subplots(1, len(norms), figsize=(5 * len(norms), 4), squeeze=False)
  for ax, norm in zip(axes[0], norms):
    for name, row in results["rows"].items():
      sweep = row.get(f"sweep_{norm}")
      if not sweep:
        continue
      points = sorted([(0.0, row["clean"])] + [(p["eps"], p["accuracy"]) for p in sweep])
      colour, marker = style(name)
      ax.plot(*zip(*points), color=colour, marker=marker, label=name)
    ax.set(xlabel=f"{'L∞' if norm == 'inf' else 'L2'} budget ε", ylabel="accuracy (%)",
           ylim=(-2, 102), title=f"({'ab'[norm == 'l2']}) {title}, PGD {'L∞' if norm == 'inf' else 'L2'}")
    ax.grid(alpha=0.3)
  axes[0][-1].legend(fontsize=8, loc="best")
  return _save(fig, path)


def figure_diversity(points, path, num_draws=10, title=None):
  """PGD (filled) and audited (open) accuracy against ΩM of the K test-time directions; a
  dotted line at ΩM = 1/K, the expectation for K independent isotropic directions. ``title``
  (the dataset) heads the plot's title."""
  if not points:
    return None
  fig, ax = plt.subplots(figsize=(6, 4))
  shown = set()
  for label, omega_m, pgd, audited in points:
    row = label.split()[-1]
    colour, _ = style(row)
    ax.scatter(omega_m, pgd, color=colour, marker="o", label=None if row in shown else row)
    shown.add(row)
    if audited is not None:
      ax.scatter(omega_m, audited, facecolors="none", edgecolors=colour, marker="o")
      ax.plot([omega_m, omega_m], [audited, pgd], color=colour, lw=0.5)
  ax.axvline(1.0 / num_draws, color="0.7", lw=0.8, ls=":")
  ax.legend(loc="upper right", fontsize=8)
  ax.set_xlabel(f"ΩM of K = {num_draws} test-time draws (1 = identical directions, "
                f"{1.0 / num_draws:g} = independent)")
  ax.set_ylabel("accuracy under attack (%)")
  ax.set_title((f"{title}: d" if title else "D")
               + "oes diversity buy robustness?\nPGD-40 (filled) vs audited (open)", fontsize=10)
  ax.set_ylim(-2, 100)
  return _save(fig, path)
