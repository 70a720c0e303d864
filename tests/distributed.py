"""Run a function in W CPU processes joined by gloo, as DDP would on W devices."""

import os
import socket
import tempfile

import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, fn, args, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        import torch

        torch.save(fn(rank, world, *args), os.path.join(out_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


# Gloo's rendezvous on a loaded machine (other test workers spawning their own groups) can lose a connection before
# any work is done: "connectFullMesh failed ... Connection closed by peer" (seen once in CI, 2026-12-01). That is
# the harness's transport, not the code under test, so the group is set up again on a fresh port, twice at most.
_TRANSPORT_FAILURES = ("connectFullMesh failed", "Address already in use")


def run_distributed(fn, world: int = 2, args: tuple = (), attempts: int = 3) -> list:
    """fn(rank, world, *args) in `world` processes; returns each rank's return value (torch.save-able)."""
    import torch

    for attempt in range(attempts):
        with tempfile.TemporaryDirectory() as out_dir:
            try:
                mp.spawn(_worker, args=(world, _free_port(), fn, args, out_dir), nprocs=world, join=True)
            except mp.ProcessRaisedException as e:
                if attempt + 1 < attempts and any(text in str(e) for text in _TRANSPORT_FAILURES):
                    continue
                raise
            return [torch.load(os.path.join(out_dir, f"{r}.pt")) for r in range(world)]


def _shard_loss_and_grads(rank: int, world: int, loss_fn, inputs):
    import torch

    shards = [x.chunk(world)[rank].clone().requires_grad_() for x in inputs]
    loss = loss_fn(*shards)
    grads = torch.autograd.grad(loss, shards)
    return loss.detach(), grads


def assert_matches_one_process(loss_fn, inputs: tuple, world: int = 2) -> None:
    """A loss that talks across devices must, on W processes each holding 1/W of the batch, give
    what one process gives on the whole batch: DDP averages the ranks' losses and gradients, so
    mean(rank losses) == full loss and concat(rank grads) / W == full grads.

    loss_fn(*inputs) -> scalar, picklable (a module-level function or an nn.Module); inputs are
    float64 tensors split along dim 0. A new distributed loss joins with one call.
    """
    import torch

    full_inputs = [x.clone().requires_grad_() for x in inputs]
    full = loss_fn(*full_inputs)
    full_grads = torch.autograd.grad(full, full_inputs)
    results = run_distributed(_shard_loss_and_grads, world=world, args=(loss_fn, inputs))
    torch.testing.assert_close(torch.stack([loss for loss, _ in results]).mean(), full.detach())
    for i, full_grad in enumerate(full_grads):
        torch.testing.assert_close(torch.cat([grads[i] for _, grads in results]) / world, full_grad)
