"""DINO in 2 CPU processes (gloo on loopback) equals 1 process on the concatenated batch.

Each process holds half of every crop's rows. The centre update all-reduces the teacher's batch mean, so both
processes must end with the centre a single process computes on the whole batch. Given the centre, the loss is
a mean over samples: the average of the processes' losses is the whole batch's loss, and their gradients,
averaged as DDP does, are the single-process gradients.
"""
import os
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from test_dist import _free_port
from self_supervised.losses import dino_loss, dino_center_update

WORLD, V, NL, B, K = 2, 4, 2, 6, 8   # 4 crops (2 large), a global batch of 6 split in 2 x 3
TPS, TPT, CMOM = 0.1, 0.05, 0.9

def _local(x, rank):
    "This process's rows of every crop of `x` (crops, B, K), stacked crop after crop as the model outputs them"
    n = x.shape[1] // WORLD
    return x[:, rank*n:(rank+1)*n].reshape(-1, x.shape[-1])

def _worker(rank, port, s, t, c, out_dir):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        ls = _local(s, rank).clone().requires_grad_()
        lt = _local(t, rank)
        loss = dino_loss(ls, lt, c, NL, TPS, TPT)
        loss.backward()
        center = dino_center_update(c, lt, CMOM)
        torch.save(dict(loss=loss.detach(), grad=ls.grad.view(V, -1, K) / WORLD, center=center), f'{out_dir}/{rank}.pt')
    finally: dist.destroy_process_group()

def _data():
    torch.manual_seed(0)
    return (torch.randn(V, B, K, dtype=torch.float64), torch.randn(NL, B, K, dtype=torch.float64) * 3,
            torch.randn(1, K, dtype=torch.float64))

def test_dino_two_processes_equal_one(tmp_path):
    s, t, c = _data()
    mp.spawn(_worker, args=(_free_port(), s, t, c, str(tmp_path)), nprocs=WORLD, join=True)
    res = [torch.load(tmp_path/f'{r}.pt') for r in range(WORLD)]
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
