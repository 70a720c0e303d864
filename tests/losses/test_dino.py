import math

import torch

from selfsup.losses.dino import DINOLoss
from tests.distributed import run_distributed


def naive_dino(student, teacher, center, tau_s, tau_t):
    """Eq. 1 with loops: for every teacher global crop i and every student crop v != i,
    -(1/B) sum_b sum_k P_t[b, k] log P_s[b, k] with P_t = softmax((t_i[b] - c) / tau_t) (a constant) and
    P_s = softmax(s_v[b] / tau_s); the mean over those pairs."""
    B, K = student[0].shape
    terms = []
    for i, t_i in enumerate(teacher):
        for v, s_v in enumerate(student):
            if v == i:
                continue
            total = 0.0
            for b in range(B):
                t_exp = [math.exp((t_i[b, k].item() - center[k]) / tau_t) for k in range(K)]
                p_t = [e / sum(t_exp) for e in t_exp]
                normaliser = sum(torch.exp(s_v[b, k] / tau_s) for k in range(K))
                total = total - sum(p_t[k] * torch.log(torch.exp(s_v[b, k] / tau_s) / normaliser) for k in range(K))
            terms.append(total / B)
    return sum(terms) / len(terms)


def _logits(n: int, B: int = 5, K: int = 6, seed: int = 0) -> list[torch.Tensor]:
    """Scores of unit vectors against unit prototypes: in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(B, K, generator=g, dtype=torch.float64) * 2 - 1 for _ in range(n)]


def test_loss_matches_the_naive_loop_values_and_gradients():
    for n_local, tau_s, tau_t in ((3, 0.1, 0.04), (0, 0.2, 0.07)):
        student = [s.requires_grad_() for s in _logits(2 + n_local, seed=1)]
        teacher = [t.requires_grad_() for t in _logits(2, seed=2)]
        criterion = DINOLoss(6, tau_s).eval()
        criterion.center.copy_(torch.linspace(-0.3, 0.4, 6))
        ours = criterion(student, teacher, tau_t)
        reference = naive_dino(student, teacher, criterion.center[0].tolist(), tau_s, tau_t)
        torch.testing.assert_close(ours, reference)
        for g, r in zip(torch.autograd.grad(ours, student), torch.autograd.grad(reference, student), strict=True):
            torch.testing.assert_close(g, r)
        # the teacher is a target: nothing flows back into it
        assert all(g is None for g in torch.autograd.grad(ours, teacher, allow_unused=True))


def test_centre_moves_toward_the_teacher_mean_in_training_mode_only():
    teacher, student = _logits(2, seed=3), _logits(4, seed=4)
    criterion = DINOLoss(6, center_momentum=0.9)
    criterion.center.fill_(0.5)
    loss = criterion(student, teacher, 0.04)
    reference = naive_dino(student, teacher, [0.5] * 6, 0.1, 0.04)  # the loss used the centre before the update
    torch.testing.assert_close(loss, reference)
    expected = 0.9 * 0.5 + 0.1 * torch.cat(teacher).mean(dim=0, keepdim=True)  # c <- m c + (1 - m) mean, both crops
    torch.testing.assert_close(criterion.center, expected.float())
    criterion.eval()(student, teacher, 0.04)
    torch.testing.assert_close(criterion.center, expected.float())


def test_sharpening_and_centring_shape_the_teacher_distribution():
    (t,) = _logits(1, B=8, K=6, seed=5)
    criterion = DINOLoss(6)

    def entropy(p):
        return -(p * p.log()).sum(dim=1).mean()

    # a lower τ_t sharpens: lower entropy; τ_t -> large tends to uniform (entropy log K)
    assert entropy(criterion.teacher_probabilities(t, 0.04)) < entropy(criterion.teacher_probabilities(t, 0.07))
    assert abs(entropy(criterion.teacher_probabilities(t, 1e4)) - math.log(6)) < 1e-6
    # P_t = softmax((t - c) / τ_t): a centre equal to a per-prototype shift cancels it
    shift = torch.tensor([[3.0, -1.0, 0.5, 0.0, 2.0, -2.0]], dtype=torch.float64)
    criterion.center.copy_(shift)
    torch.testing.assert_close(criterion.teacher_probabilities(t + shift, 0.04),
                               torch.softmax(t / 0.04, dim=1), check_dtype=False)


def test_centring_undoes_a_collapse_onto_one_prototype():
    # every sample's teacher output prefers prototype 0 by a wide margin: sharpened alone, P_t is one-hot for all
    # (entropy ~0, the collapse sharpening invites); the centre learns that shared preference and removes it
    t = [torch.rand(16, 6, generator=torch.Generator().manual_seed(6), dtype=torch.float64) * 0.2
         + torch.tensor([2.0, 0, 0, 0, 0, 0], dtype=torch.float64) for _ in range(2)]
    criterion = DINOLoss(6, center_momentum=0.9)
    student = _logits(2, B=16, seed=7)

    def teacher_entropy():
        p = criterion.teacher_probabilities(torch.cat(t), 0.04)
        return float(-(p * p.clamp_min(1e-12).log()).sum(dim=1).mean())

    assert teacher_entropy() < 1e-6
    for _ in range(60):
        criterion(student, t, 0.04)
    assert teacher_entropy() > 0.5
    torch.testing.assert_close(criterion.center, (1 - 0.9**60) * torch.cat(t).mean(dim=0, keepdim=True).float())


def _shard_loss_grads_and_centre(rank: int, world: int, student, teacher, center):
    student = [s.chunk(world)[rank].clone().requires_grad_() for s in student]
    teacher = [t.chunk(world)[rank] for t in teacher]
    criterion = DINOLoss(6)
    criterion.center.copy_(center)
    loss = criterion(student, teacher, 0.05)
    return loss.detach(), torch.autograd.grad(loss, student), criterion.center


def test_two_processes_match_one_process_and_share_the_all_reduced_centre():
    student, teacher = _logits(4, B=8, seed=8), _logits(2, B=8, seed=9)
    center = torch.linspace(-0.2, 0.2, 6).view(1, 6)
    full_student = [s.clone().requires_grad_() for s in student]
    criterion = DINOLoss(6)
    criterion.center.copy_(center)
    full = criterion(full_student, teacher, 0.05)
    full_grads = torch.autograd.grad(full, full_student)
    results = run_distributed(_shard_loss_grads_and_centre, world=2, args=(student, teacher, center))
    # DDP averages the ranks' losses and gradients
    torch.testing.assert_close(torch.stack([loss for loss, _, _ in results]).mean(), full.detach())
    for i, full_grad in enumerate(full_grads):
        torch.testing.assert_close(torch.cat([grads[i] for _, grads, _ in results]) / 2, full_grad)
    for _, _, rank_center in results:  # each rank's centre moved by the mean over both ranks' teacher outputs
        torch.testing.assert_close(rank_center, criterion.center)
    rank_0_alone = center + 0.1 * (torch.cat([t[:4] for t in teacher]).mean(0).float() - center)
    assert not torch.allclose(results[0][2], rank_0_alone)
