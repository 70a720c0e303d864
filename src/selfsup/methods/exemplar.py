"""Exemplar-CNN: Dosovitskiy, Springenberg, Riedmiller, Brox, "Discriminative Unsupervised Feature
Learning with Convolutional Neural Networks", NIPS 2014."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.errors import SelfsupError
from selfsup.methods.base import ImageMethod, ImageMethodConfig
from selfsup.methods.registry import register
from selfsup.views.exemplar import ExemplarViews


@dataclass
class ExemplarConfig(ImageMethodConfig):
    """Every training image is its own surrogate class; N = the number of training images, so the
    run option `limit_samples` chooses how many classes (the paper: ~8000 best, from STL-10 patches).

    n_views: transformed copies of each class drawn per step; the paper's ~100 samples per class
    (where it saturates) correspond to epochs x n_views. feature_dim: the classifier N x D is
    factorised through a D-wide linear bottleneck (the paper's network ends in a 128-unit fully
    connected layer before the softmax): on 60k images that is 7.7M parameters instead of 31M on a
    ResNet-18's 512 features; 0 puts the classifier straight on the backbone features.
    Optimiser: SGD with momentum 0.9 as the paper; lr and weight decay are ours (the paper trains its
    own small network with dropout and lowers the lr on plateaus).
    """

    optimizer: str = "sgd"
    lr: float = 0.02
    weight_decay: float = 5e-4
    momentum: float = 0.9
    warmup_fraction: float = 0.0
    n_views: int = 2
    feature_dim: int = 128


@register
class Exemplar(ImageMethod):
    """n_views transformed copies of each image -> backbone -> bottleneck -> linear over N classes ->
    softmax cross-entropy; an image's class is its index in the data set."""

    name = "exemplar"
    paper = "Dosovitskiy et al., Discriminative Unsupervised Feature Learning with CNNs (Exemplar-CNN), NIPS 2014"
    deviations = ("whole images as seed patches (paper: 32x32 patches from STL-10 at gradient-rich spots); "
                  "contrast as a blend with the grey mean, no S/V power; classes = all training images "
                  "(choose fewer with limit_samples); ResNet backbone without dropout; SGD lr/wd not the paper's")
    config_class = ExemplarConfig

    def __init__(self, config: ExemplarConfig, in_chans: int = 3):
        super().__init__(config, in_chans)
        width = config.feature_dim or self.backbone.num_features
        self.bottleneck = nn.Linear(self.backbone.num_features, width) if config.feature_dim else nn.Identity()
        self.classifier: nn.Linear | None = None  # (N classes) sized by prepare()

    def default_views(self, image_size: int, channels: int) -> ExemplarViews:
        return ExemplarViews(image_size, channels, n_views=self.config.n_views)

    def prepare(self, num_samples: int, steps_per_epoch: int) -> None:
        width = self.config.feature_dim or self.backbone.num_features
        device = next(self.backbone.parameters()).device
        self.classifier = nn.Linear(width, num_samples).to(device)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) -> (B, N) scores of the N surrogate classes."""
        return self.classifier(self.bottleneck(self.backbone(images)))

    def training_step(self, views: list[torch.Tensor], indices: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if indices is None or self.classifier is None:
            raise SelfsupError("exemplar needs the images' indices and its classes: call prepare(num_samples, ...)")
        logits = self.logits(torch.cat(views))  # (V*B, N): all copies in one pass
        classes = indices.repeat(len(views))  # (V*B,) the class of image i is i
        loss = F.cross_entropy(logits, classes)
        return {"loss": loss, "accuracy": (logits.argmax(dim=1) == classes).float().mean()}
