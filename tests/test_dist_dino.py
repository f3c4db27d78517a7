"""DINO in 2 CPU processes (gloo on loopback) equals 1 process on the concatenated batch.

Each process holds half of every crop's rows. The centre update all-reduces the teacher's batch mean, so both
processes must end with the centre a single process computes on the whole batch. Given the centre, the loss is
a mean over samples: the average of the processes' losses is the whole batch's loss, and their gradients,
averaged as DDP does, are the single-process gradients.
"""
import torch
from conftest import WORLD
from self_supervised.losses import dino_loss, dino_center_update

V, NL, B, K = 4, 2, 6, 8   # 4 crops (2 large), a global batch of 6 split in 2 x 3
TPS, TPT, CMOM = 0.1, 0.05, 0.9

def _local(x, rank):
    "This process's rows of every crop of `x` (crops, B, K), stacked crop after crop as the model outputs them"
    n = x.shape[1] // WORLD
    return x[:, rank*n:(rank+1)*n].reshape(-1, x.shape[-1])

def _worker(rank, s, t, c):
    ls = _local(s, rank).clone().requires_grad_()
    lt = _local(t, rank)
    loss = dino_loss(ls, lt, c, NL, TPS, TPT)
    loss.backward()
    center = dino_center_update(c, lt, CMOM)
    return dict(loss=loss.detach(), grad=ls.grad.view(V, -1, K) / WORLD, center=center)

def _data():
    torch.manual_seed(0)
    return (torch.randn(V, B, K, dtype=torch.float64), torch.randn(NL, B, K, dtype=torch.float64) * 3,
            torch.randn(1, K, dtype=torch.float64))

def test_dino_two_processes_equal_one(in_processes):
    s, t, c = _data()
    res = in_processes(_worker, s, t, c)
    full_s = s.reshape(-1, K).clone().requires_grad_()
    loss = dino_loss(full_s, t.reshape(-1, K), c, NL, TPS, TPT)
    loss.backward()
    center = dino_center_update(c, t.reshape(-1, K), CMOM)
    for r in res: torch.testing.assert_close(r['center'], center, atol=1e-6, rtol=0)   # every process: the global centre
    torch.testing.assert_close(torch.stack([r['loss'] for r in res]).mean(), loss.detach(), atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.cat([r['grad'] for r in res], dim=1).reshape(-1, K), full_s.grad, atol=1e-6, rtol=0)

def test_local_centre_would_be_wrong():
    "The check above can fail: a centre updated with one process's half only differs from the global one"
    s, t, c = _data()
    full = dino_center_update(c, t.reshape(-1, K), CMOM)
    assert all((dino_center_update(c, _local(t, r), CMOM) - full).abs().max() > 1e-3 for r in range(WORLD))
