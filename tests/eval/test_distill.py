import math

import pytest
import torch

from selfsup.checkpoints import read_checkpoint
from selfsup.errors import SelfsupError
from selfsup.eval.distill import DistillationLoss, DistillModule, FrozenTeacher, distill
from selfsup.eval.finetune import Classifier, finetune, load_classifier, pretrained_encoder
from selfsup.train.run import train

TINY = {"channels": [8, 16, 32, 64], "stem_width": 8}
STUDENT = {"channels": [8, 8, 16, 32], "stem_width": 8}


def naive_distillation(student, teacher, tau):
    """-1/B sum_i sum_y p_T(y|x_i) log p_S(y|x_i), one scalar at a time."""
    total = 0.0
    for s, t in zip(student, teacher):
        z_t = sum(math.exp(v / tau) for v in t.tolist())
        log_z_s = torch.logsumexp(s / tau, dim=0)
        total = total - sum(math.exp(t[y].item() / tau) / z_t * (s[y] / tau - log_z_s) for y in range(len(s)))
    return total / len(student)


@pytest.mark.parametrize("tau", [1.0, 2.0, 0.5])
def test_loss_matches_a_naive_computation_values_and_gradients(tau):
    torch.manual_seed(0)
    student = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    loss = DistillationLoss(tau)(student, teacher)
    expected = naive_distillation(student, teacher.detach(), tau)
    torch.testing.assert_close(loss, expected)
    (grad,) = torch.autograd.grad(loss, student, retain_graph=True)
    (expected_grad,) = torch.autograd.grad(naive_distillation(student, teacher.detach(), tau), student)
    torch.testing.assert_close(grad, expected_grad)
    # d/ds = (softmax(s/tau) - softmax(t/tau)) / (tau B), the closed form
    closed = (torch.softmax(student / tau, 1) - torch.softmax(teacher / tau, 1)) / (tau * 5)
    torch.testing.assert_close(grad, closed.detach())
    loss.backward()
    assert teacher.grad is None  # soft labels are targets, not trained


def test_loss_is_smallest_when_the_student_matches_the_teacher():
    torch.manual_seed(0)
    teacher = torch.randn(8, 6, dtype=torch.float64)
    criterion = DistillationLoss(1.0)
    entropy = -(torch.softmax(teacher, 1) * torch.log_softmax(teacher, 1)).sum(1).mean()
    torch.testing.assert_close(criterion(teacher.clone(), teacher), entropy)  # cross-entropy = entropy
    for _ in range(5):
        assert criterion(teacher + torch.randn_like(teacher), teacher) > entropy


def tiny_classifier(seed):
    torch.manual_seed(seed)
    encoder, _ = pretrained_encoder("random", channels=1, native_size=8, backbone="resnet10t", small_stem=True,
                                    backbone_kwargs=TINY)
    return Classifier(encoder, 64, 10)


def test_training_ignores_labels_and_the_teacher_stays_frozen():
    module = DistillModule(tiny_classifier(0), tiny_classifier(1), {}, 1.0, "sgd", 0.1, 0.0, 0.9, 0.0)
    module.train()
    assert not module.teacher.training and not module.teacher.model.encoder.training
    assert not any(p.requires_grad for p in module.teacher.parameters())
    images = torch.randn(6, 1, 8, 8)
    module.model.eval()  # the same BN statistics for both calls
    a = module.losses(images, torch.tensor([0, 1, 2, 3, 4, 5]))
    b = module.losses(images, torch.full((6,), -1))
    torch.testing.assert_close(a, b)
    expected = DistillationLoss(1.0)(module.model(images), module.teacher(images))
    torch.testing.assert_close(a["loss"], expected)
    a["loss"].backward()
    assert all(p.grad is None for p in module.teacher.parameters())
    assert all(p.grad is not None for p in module.model.parameters())


def test_frozen_teacher_ignores_train():
    teacher = FrozenTeacher(tiny_classifier(0))
    teacher.train()
    assert not teacher.training and not any(m.training for m in teacher.modules())


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A simclrv2 encoder (2 pretraining steps) fine-tuned on all digits labels."""
    folder = tmp_path_factory.mktemp("teacher")
    run = train("simclrv2", dict(data="digits", max_steps=2, batch_size=32, backbone="resnet10t", small_stem=True,
                                 backbone_kwargs=TINY, proj_hidden_dim=24, proj_dim=16, num_workers=0),
                out=str(folder / "run"), progress=False)
    result = finetune(str(run / "checkpoints" / "last.ckpt"), data="digits", label_fraction=1.0, max_steps=150,
                      batch_size=32, optimizer="adamw", lr=0.003, out=str(folder / "ft"), progress=False)
    return result


def test_distilled_student_beats_chance_and_agrees_with_the_teacher(teacher, tmp_path):
    result = distill(teacher["classifier"], "resnet10t", STUDENT, student_small_stem=True, max_steps=150,
                     batch_size=32, optimizer="adamw", lr=0.003, weight_decay=1e-4, out=str(tmp_path / "student"),
                     progress=False)
    print(f"teacher {teacher['top1']:.3f}; student {result['top1']:.3f}, agreement {result['agreement']:.3f}")
    assert result["teacher_top1"] == teacher["top1"]
    assert result["top1"] > 0.3 and result["agreement"] > 0.5
    assert result["student_params_m"] < result["teacher_params_m"]
    saved = read_checkpoint(result["classifier"])
    assert not any(k.startswith("teacher.") for k in saved["state_dict"])
    student, meta = load_classifier(result["classifier"])
    assert meta["trained_by"]["command"] == "distill" and meta["encoder"]["method_config"]["backbone"] == "resnet10t"
    assert student.fc.out_features == 10 and student.encoder.image_size == 8


def test_missing_or_wrong_teacher_is_a_clear_error(teacher, tmp_path):
    with pytest.raises(SelfsupError, match="teacher checkpoint '/no/such.ckpt' does not exist"):
        distill("/no/such.ckpt", "resnet10t")
    pretraining = str(tmp_path / "x.ckpt")
    saved = read_checkpoint(teacher["classifier"])
    torch.save({**saved, "selfsup": {**saved["selfsup"], "kind": None}}, pretraining)
    with pytest.raises(SelfsupError, match="not a fine-tuned classifier"):
        distill(pretraining, "resnet10t")
