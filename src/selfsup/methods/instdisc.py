"""InstDisc / NPID: Wu, Xiong, Yu, Lin, "Unsupervised Feature Learning via Non-Parametric Instance
Discrimination", CVPR 2018."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.errors import SelfsupError
from selfsup.losses.nce import NCELoss, estimate_Z
from selfsup.methods.base import ImageMethod, ImageMethodConfig
from selfsup.methods.registry import register
from selfsup.nn.knn import knn_predict
from selfsup.nn.memory_bank import MemoryBank
from selfsup.views import SimCLRViews


@dataclass
class InstDiscConfig(ImageMethodConfig):
    """Paper defaults: SGD lr 0.03 x B/256, momentum 0.9, wd 5e-4, no warm-up; 128-d features,
    τ 0.07 (0.1 on CIFAR), K 4096 noise samples (at most n − 1), bank momentum 0.5.

    Views: one crop per image, random resized crop (scale 0.2-1, as the authors' release),
    colour jitter, grayscale, flip.
    """

    optimizer: str = "sgd"
    lr: float = 0.03
    weight_decay: float = 5e-4
    momentum: float = 0.9
    warmup_fraction: float = 0.0
    feature_dim: int = 128
    temperature: float = 0.07
    nce_k: int = 4096
    ema_bank: float = 0.5
    crop_min_scale: float = 0.2
    jitter_strength: float = 0.5  # brightness/contrast/saturation 0.4, hue 0.1


@register
class InstDisc(ImageMethod):
    """One view -> backbone -> linear -> unit feature f; NCE of f against its own memory-bank row
    and K uniformly drawn rows; the bank row then moves towards f.

    The paper's own evaluation, weighted kNN over the bank (k 200): `bank_knn_predict` below.
    """

    name = "instdisc"
    paper = "Wu et al., Unsupervised Feature Learning via Non-Parametric Instance Discrimination, CVPR 2018"
    deviations = ("the K noise rows are drawn once per step and shared by the batch (paper: per image; same "
                  "expected loss, B times less memory); cosine lr decay instead of steps at 120/160 of 200 "
                  "epochs; colour jitter with p 0.8 and blur p 0.5 from 64 px (SimCLR's recipe); no proximal term")
    config_class = InstDiscConfig

    def __init__(self, config: InstDiscConfig, in_chans: int = 3):
        super().__init__(config, in_chans)
        self.head = nn.Linear(self.backbone.num_features, config.feature_dim)
        self.memory = MemoryBank(0, config.feature_dim)  # sized by prepare()
        self.register_buffer("Z", torch.zeros(()))  # partition estimate; 0 until the first batch sets it
        self.criterion = NCELoss(config.temperature)
        self.K = config.nce_k
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None

    def default_views(self, image_size: int, channels: int) -> SimCLRViews:
        return SimCLRViews(image_size, channels, self.config.crop_min_scale, self.config.jitter_strength, n_views=1)

    def prepare(self, num_samples: int, steps_per_epoch: int) -> None:
        if num_samples < 2:
            raise SelfsupError("instdisc needs at least 2 images: each is contrasted with the others")
        self.memory = MemoryBank(num_samples, self.config.feature_dim).to(self.head.weight.device)
        self.K = min(self.config.nce_k, num_samples - 1)
        self.Z.zero_()  # a new bank needs a new estimate (a resume then loads the saved one)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) -> (B, feature_dim) unit features f, the bank's space."""
        return F.normalize(self.head(self.backbone(images)).float(), dim=1)

    def training_step(self, views: list[torch.Tensor], indices: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if indices is None or len(self.memory) == 0:
            raise SelfsupError("instdisc needs the images' indices and a bank: call prepare(num_samples, ...)")
        (x,) = views  # (B, C, S, S)
        f = self.features(x)  # (B, D)
        n = len(self.memory)
        noise = torch.randint(0, n, (self.K,), device=f.device)  # uniform P_n = 1/n
        with torch.autocast(f.device.type, enabled=False):  # similarities / 0.07 need float32
            positive = (f * self.memory(indices)).sum(dim=1)  # (B,) v_iᵀf
            negatives = f @ self.memory(noise).T  # (B, K)
        if self.Z == 0:  # estimated once, from the first batch, then fixed (and checkpointed)
            self.Z.copy_(estimate_Z(negatives, self.config.temperature, n))
        self._pending = (indices, f.detach())
        return {"loss": self.criterion(positive, negatives, self.Z, n)}

    def after_step(self, step: int, max_steps: int) -> None:
        if self._pending is not None:  # v_i ← normalize(0.5·v_i + 0.5·f_i) for this step's images
            self.memory.update(*self._pending, momentum=self.config.ema_bank)
            self._pending = None


def bank_knn_predict(bank: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor, k: int = 200,
                     temperature: float = 0.07) -> torch.Tensor:
    """The paper's evaluation: labels (M,) of test features (M, D) (`InstDisc.features`, the bank's space)
    by a vote of their k most similar bank rows (n, D), each weighted exp(s/τ); train_labels (n,) in
    data-set order, since row i of the bank is image i's feature from training."""
    return knn_predict(bank, train_labels.to(bank.device), test_features.to(bank.device), k=k, temperature=temperature)
