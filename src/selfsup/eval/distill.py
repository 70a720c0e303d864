"""`selfsup distill`: a student learns a fine-tuned teacher's soft labels on unlabeled images,
SimCLR v2's third stage (Chen et al. 2020b, eq. 4); no labels are used.

Paper defaults: temperature 1; the pretraining schedule (LARS, lr 0.1*sqrt(batch), weight decay
1e-4, warm-up then cosine) for 400 epochs; random crop + horizontal flip only. The student is a
backbone plus a linear layer, smaller than the teacher or of the same size (self-distillation).
"""

import math
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from selfsup.data import open_labeled, open_unlabeled
from selfsup.errors import SelfsupError
from selfsup.eval.finetune import (
    CLASSIFIER_FILE,
    Classifier,
    CropFlip,
    FinetuneModule,
    build_encoder,
    classifier_meta,
    feature_dim,
    load_classifier,
    predict,
    train_loader,
)
from selfsup.eval.run import write_result
from selfsup.train.module import make_trainer
from selfsup.train.optim import create_optimizer


class DistillationLoss(nn.Module):
    """L = -mean_i sum_y p_T(y|x_i) log p_S(y|x_i), with p = softmax(logits / tau) (SimCLR v2 eq. 4).

    In: student logits (B, K), teacher logits (B, K). The teacher's side carries no gradient."""

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        self.temperature = temperature

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        p_T = F.softmax(teacher_logits.detach() / self.temperature, dim=1)  # (B, K) soft labels
        log_p_S = F.log_softmax(student_logits / self.temperature, dim=1)  # (B, K)
        return -(p_T * log_p_S).sum(dim=1).mean()


class FrozenTeacher(nn.Module):
    """A classifier kept in eval mode (BN uses its running statistics) with no gradients, whatever
    Lightning's train() calls do to the modules around it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> "FrozenTeacher":
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)


class DistillModule(FinetuneModule):
    """Trains the student on the teacher's soft labels of the same augmented images; labels in the
    batch are ignored. Checkpoints hold the student only."""

    def __init__(self, student: Classifier, teacher: Classifier, meta: dict[str, Any], temperature: float,
                 optimizer: str, lr: float, weight_decay: float, momentum: float, warmup_fraction: float,
                 views: CropFlip | None = None):
        super().__init__(student, meta, optimizer, lr, weight_decay, momentum, warmup_fraction, views)
        self.teacher = FrozenTeacher(teacher)
        self.criterion = DistillationLoss(temperature)

    def losses(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        s, t = self.model(images), self.teacher(images)  # (B, K) each; labels unused
        return {"loss": self.criterion(s, t), "agreement": (s.argmax(1) == t.argmax(1)).float().mean()}

    def predict_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images = batch[0]
        return torch.stack([self.model(images).argmax(1), self.teacher(images).argmax(1)], dim=1)  # (B, 2)

    def make_optimizer(self) -> torch.optim.Optimizer:
        s = self.settings
        return create_optimizer(self.model, s["optimizer"], s["lr"], s["weight_decay"], s["momentum"])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("teacher.")}


def distill(teacher: str, student_backbone: str, student_backbone_kwargs: dict | None = None,
            student_small_stem: bool = False, data: str | None = None, eval_data: str | None = None,
            temperature: float = 1.0, epochs: int | None = None, max_steps: int | None = None,
            batch_size: int = 256, lr: float | None = None, optimizer: str = "lars", weight_decay: float = 1e-4,
            momentum: float = 0.9, warmup_fraction: float = 0.05, crop_min_scale: float = 0.5, seed: int = 0,
            out: str | None = None, num_workers: int | None = None, precision: str = "32-true",
            accelerator: str = "auto", progress: bool = True) -> dict[str, Any]:
    """Train a `student_backbone` + linear student on `teacher`'s soft labels of `data`'s images
    (default: the teacher's labeled train split, labels ignored), then report its top-1 and its
    agreement with the teacher on the test split of `eval_data` (default: the teacher's data).
    Writes OUT/classifier.ckpt (the student) and OUT/result.json; returns the result."""
    start = time.time()
    if not Path(teacher).is_file():
        raise SelfsupError(f"teacher checkpoint '{teacher}' does not exist; pass the {CLASSIFIER_FILE} written by "
                           "`selfsup eval finetune`")
    teacher_model, meta = load_classifier(teacher)
    in_chans, image_size, classes = meta["in_chans"], meta["image_size"], meta["classes"]
    eval_data = eval_data or meta["data"]
    labeled_train, test_set = open_labeled(eval_data, test_fraction=meta["test_fraction"], seed=meta["seed"])
    if len(test_set.classes) != len(classes):
        raise SelfsupError(f"{eval_data} has {len(test_set.classes)} classes but the teacher {len(classes)}; "
                           "pass --eval-data with the teacher's classes")
    images = labeled_train if data is None else open_unlabeled(data)
    L.seed_everything(seed, verbose=False)
    spec = {"method": None, "method_config": {"backbone": student_backbone, "small_stem": student_small_stem,
                                              "backbone_kwargs": student_backbone_kwargs or {}},
            "data_meta": {"in_chans": in_chans, "image_size": image_size}, "description": f"student {student_backbone}"}
    encoder = build_encoder(spec)
    student = Classifier(encoder, feature_dim(encoder, test_set[0][0]), len(classes))
    views = CropFlip(image_size, in_chans, crop_min_scale)  # student and teacher see the same view
    batched = images.native_size is not None
    loader = train_loader(images, encoder, views, batched, batch_size, num_workers)
    lr = lr if lr is not None else 0.1 * math.sqrt(loader.batch_size)
    path = Path(out) if out else Path(teacher).resolve().parent / f"distill-{student_backbone.replace(':', '_')}"
    data_name = data or f"{meta['data']} (train split, labels unused)"
    student_meta = classifier_meta(student, spec, classes, eval_data, meta["test_fraction"], meta["seed"], trained_by={
        "command": "distill", "teacher": str(teacher), "temperature": temperature, "data": data_name,
        "lr": lr, "optimizer": optimizer, "batch_size": loader.batch_size})
    trainer = make_trainer(path, epochs if epochs or max_steps else 400, max_steps, precision, accelerator, progress)
    warnings.filterwarnings("ignore", ".*module\\(s\\) in eval mode.*")  # the frozen teacher, on purpose
    lit = DistillModule(student, teacher_model, student_meta, temperature, optimizer, lr, weight_decay, momentum,
                        warmup_fraction, views if batched else None)
    trainer.fit(lit, loader)
    trainer.save_checkpoint(path / CLASSIFIER_FILE, weights_only=True)
    predicted = predict(trainer, lit, test_set, num_workers=num_workers).cpu()  # (N, 2): student, teacher
    correct = predicted == test_set.labels[:, None]
    result = {
        "protocol": "distill", "top1": round(float(correct[:, 0].float().mean()), 4),
        "teacher_top1": round(float(correct[:, 1].float().mean()), 4),
        "agreement": round(float((predicted[:, 0] == predicted[:, 1]).float().mean()), 4),
        "student": student_backbone, "student_params_m": round(sum(p.numel() for p in student.parameters()) / 1e6, 2),
        "teacher": str(teacher), "teacher_params_m": round(sum(p.numel() for p in teacher_model.parameters()) / 1e6, 2),
        "temperature": temperature, "data": data_name, "eval_data": eval_data, "n_images": len(images),
        "n_test": len(test_set), "steps": trainer.global_step, "batch_size": loader.batch_size, "lr": lr,
        "seconds": round(time.time() - start, 1), "classifier": str(path / CLASSIFIER_FILE),
    }
    return write_result(result, path / "result.json")
