"""Multi-process losses: 2 CPU processes (gloo on loopback) give the loss and the gradients of 1 process on the whole batch.

Each process holds half of the batch, computes the loss of its own anchors against the embeddings gathered from
both processes, and backpropagates. DDP would average the parameter gradients over processes; here the
gradients w.r.t. the embeddings are averaged the same way, so they must equal the single-process gradients.
"""
import os, socket
from functools import partial
import pytest, torch
import torch.distributed as dist
import torch.multiprocessing as mp
from self_supervised.losses import nt_xent_loss, dcl_loss, moco_loss, supcon_loss

def _supcon(z1, z2):
    "SupCon over both views, with a class label computed from the data (so each process labels its own slice)"
    return supcon_loss(torch.cat([z1, z2]), (z1[:, 0] > 0).long().repeat(2), temp=0.3)

LOSSES = {'nt_xent': partial(nt_xent_loss, temp=0.5), 'dcl': partial(dcl_loss, temp=0.2),
          'dclw': partial(dcl_loss, temp=0.2, sigma=0.5), 'moco_v3': partial(moco_loss, queue=None, temp=0.2),
          'supcon': _supcon}
WORLD = 2

def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def _worker(rank, port, name, z1, z2, out_dir):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        n = len(z1) // WORLD
        a = z1[rank*n:(rank+1)*n].clone().requires_grad_()
        b = z2[rank*n:(rank+1)*n].clone().requires_grad_()
        loss = LOSSES[name](a, b)
        loss.backward()
        torch.save(dict(loss=loss.detach(), ga=a.grad / WORLD, gb=b.grad / WORLD), f'{out_dir}/{rank}.pt')
    finally: dist.destroy_process_group()

@pytest.mark.parametrize('name', list(LOSSES))
def test_two_processes_equal_one(name, tmp_path):
    torch.manual_seed(0)
    z1, z2 = torch.randn(12, 16, dtype=torch.float64), torch.randn(12, 16, dtype=torch.float64)
    mp.spawn(_worker, args=(_free_port(), name, z1, z2, str(tmp_path)), nprocs=WORLD, join=True)
    res = [torch.load(tmp_path/f'{r}.pt') for r in range(WORLD)]
    a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    loss = LOSSES[name](a, b)
    loss.backward()
    torch.testing.assert_close(torch.stack([r['loss'] for r in res]).mean(), loss.detach(), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.cat([r['ga'] for r in res]), a.grad, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.cat([r['gb'] for r in res]), b.grad, atol=1e-5, rtol=0)

def test_gather_without_backward_sum_would_be_wrong(tmp_path):
    "The check above can fail: without gathering, each process only sees its own negatives and the loss differs"
    torch.manual_seed(0)
    z1, z2 = torch.randn(12, 16, dtype=torch.float64), torch.randn(12, 16, dtype=torch.float64)
    halves = [nt_xent_loss(z1[i*6:(i+1)*6], z2[i*6:(i+1)*6], 0.5) for i in range(2)]
    assert abs(torch.stack(halves).mean() - nt_xent_loss(z1, z2, 0.5)) > 1e-3
