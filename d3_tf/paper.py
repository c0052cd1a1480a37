"""Published numbers of Bender et al. (2020), robust accuracy in %, for comparison."""

# Table 1, MNIST, L-inf eps = 0.3. The paper states only "all models obtain better than 99%
# standard accuracy" for clean inputs.
TABLE1 = {
    "CNN": {"fgsm": 36.8, "pgd": 2.6, "blackbox": 57.8},
    "BNN": {"fgsm": 55.2, "pgd": 0.9, "blackbox": 56.4},
    "BNN-Off": {"fgsm": 40.0, "pgd": 2.1, "blackbox": 93.6},
    "M": {"fgsm": 93.0, "pgd": 55.2, "blackbox": 60.1},
    "M-V": {"fgsm": 94.0, "pgd": 70.0, "blackbox": 61.8},
    "M-S": {"fgsm": 96.3, "pgd": 94.0, "blackbox": 54.3},
    "M-V-S": {"fgsm": 97.2, "pgd": 95.8, "blackbox": 59.8},
    "M-S-Off": {"fgsm": 97.6, "pgd": 95.8, "blackbox": 89.9},
    "M-V-S-Off": {"fgsm": 97.4, "pgd": 94.5, "blackbox": 90.6},
}
TABLE1_CLEAN = ">99"

# Table 2, CIFAR-10, L-inf eps = 0.03, PGD 40 steps of 0.001.
TABLE2 = {
    "VGG16": {"clean": 90.4, "fgsm": 14.4, "pgd": 5.9, "blackbox": 58.0},
    "BVGG16": {"clean": 89.1, "fgsm": 12.9, "pgd": 5.6, "blackbox": 24.5},
    "BVGG16-Off": {"clean": 85.8, "fgsm": 58.8, "pgd": 57.0, "blackbox": 84.3},
    "M": {"clean": 90.1, "fgsm": 14.2, "pgd": 6.1, "blackbox": 64.1},
    "M-V": {"clean": 87.1, "fgsm": 19.6, "pgd": 10.2, "blackbox": 55.5},
    "M-S": {"clean": 88.4, "fgsm": 50.2, "pgd": 47.7, "blackbox": 55.2},
    "M-V-S": {"clean": 88.7, "fgsm": 56.6, "pgd": 60.2, "blackbox": 55.1},
    "M-S-Off": {"clean": 86.3, "fgsm": 73.1, "pgd": 72.3, "blackbox": 84.8},
    "M-V-S-Off": {"clean": 85.7, "fgsm": 73.8, "pgd": 63.8, "blackbox": 83.4},
}

# Table 3, CIFAR-10, PGD accuracy at several L-inf budgets (0.0 = clean). Adv-CNN and Adv-BNN
# are quoted by the paper from Liu et al. (2019); reference only.
TABLE3_BUDGETS = (0.0, 0.015, 0.035, 0.055, 0.07)
TABLE3 = {
    "Adv-CNN": (80.3, 58.3, 31.1, 15.5, 10.3),
    "Adv-BNN": (79.7, 68.7, 45.4, 26.9, 18.6),
    "M-S": (88.4, 61.3, 47.8, 39.8, 34.3),
    "BVGG16-Off": (85.8, 58.2, 57.8, 57.3, 57.3),
    "M-S-Off": (86.3, 73.2, 73.1, 73.0, 73.0),
}
TABLE3_REFERENCE_ONLY = ("Adv-CNN", "Adv-BNN")


def table3_value(method, eps):
  """The paper's Table 3 value for ``method`` at budget ``eps``, or None."""
  for budget, value in zip(TABLE3_BUDGETS, TABLE3.get(method, ())):
    if abs(budget - eps) < 1e-9:
      return value
  return None
