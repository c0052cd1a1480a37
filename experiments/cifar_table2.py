"""Table 2 and Figure 3 of Bender et al. (2020): CIFAR-10 VGG16, L∞ ε = 0.03.

Rows VGG16, BVGG16, BVGG16-Off, M, M-V, M-S, M-V-S, M-S-Off, M-V-S-Off (λM=10, λS=20 as in
Sec. 5.4; λV=40 as on MNIST, since the paper reports V rows without giving λV); columns
Std. (clean), FGSM, PGD (40 steps of 0.001) and black-box, each beside the paper's number.

  python -m experiments.cifar_table2 --preset smoke   # tiny VGG, 128 images: plumbing only
  python -m experiments.cifar_table2 --preset cpu     # VGG16 at 1/4 width, warm-started rows: hours
  python -m experiments.cifar_table2 --preset robust_mix --noblackbox  # the Adv rows, audited
  python -m experiments.cifar_table2 --preset verdict --models_dir results/study/cifar/models
                                                      # at the CIFAR study's reading, audited
  python -m experiments.cifar_table2 --preset paper   # full VGG16, 50k images: GPU work
"""
from experiments import common

BINARY = "cifar_table2"
PRESETS_HELP = (
    "smoke: VGG16 at 1/16 width on 128 images, 1 epoch, K=2 (plumbing only). cpu: VGG16 at "
    "1/4 width on all 50k images, no augmentation; the VGG16 row and the black-box surrogate "
    "train 20 epochs (Adam 1e-3, cosine schedule); every Bayesian row STARTS FROM THE TRAINED "
    "VGG16 ROW (a deviation from the paper) and trains 1 epoch with its own loss (Adam 5e-4, "
    "cosine); penalties as means over the input dims; clean accuracy on the 10k test images, "
    "attacks on 500. robust: the cpu preset's protocol with the rows VGG16, Adv-CNN (3 epochs "
    "of PGD-7 training from the trained VGG16) and Adv-BNN (1 epoch from the Adv-CNN), audited. "
    "robust_mix: the same with the Adv rows on half clean, half PGD loss, the Adv-CNN 6 epochs "
    "with ε ramped up over the first. verdict: the cpu protocol at the CIFAR study's cell "
    "cifar/sum/-3/loss (the printed sums, ρ₀ = −3, λS 0.02, 2 epochs from the trained VGG16 of "
    "robust_mix, black-box from its VGG16 and Adv-CNN, the study's audit); run it with "
    "--models_dir results/study/cifar/models to reuse the study's M and M-S. paper: full VGG16, "
    "50k images, 100 epochs, full test set (GPU).")
common.define_table_flags(BINARY, PRESETS_HELP, "cifar10", "smoke")


def main(argv):
  del argv
  common.accuracy_table(BINARY, "cifar10")


if __name__ == "__main__":
  common.run(main)
