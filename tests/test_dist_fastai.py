"""SimCLR trained with fastai's own distributed engine (`learn.distrib_ctx()`, accelerate, DDP) in 2 CPU processes
(gloo) ends with the same weights as 1 process trained on the concatenated batches.

fastai's `DistributedDL` gives each process a contiguous half of the (unshuffled) dataset, in batches of `bs`; the
global batch of step k is then [batch k of the first half; batch k of the second half], which the single-process
reference rebuilds by reordering the images.
"""
import os
import pytest, torch
import torch.multiprocessing as mp
from test_dist import _free_port, _simclr_setup, WORLD

pytest.importorskip('accelerate')
N, BS = 64, 8   # per process: 32 images, 4 batches of 8

def _worker(rank, port, x, out_dir):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(WORLD), ACCELERATE_USE_CPU='true')
    torch.set_num_threads(1)
    import fastai.distributed   # Learner.distrib_ctx
    import self_supervised.dist  # CPU (gloo) broadcast for fastai's DistributedDL
    learn = _simclr_setup(x, BS)
    with learn.distrib_ctx(sync_bn=False, cpu=True):
        assert torch.distributed.get_world_size() == WORLD and torch.distributed.get_backend() == 'gloo'
        with learn.no_logging(): learn.fit(2)
        n_steps = learn.train_iter
    torch.save(dict(sd=learn.model.state_dict(), steps=n_steps), f'{out_dir}/{rank}.pt')
    torch.distributed.destroy_process_group()

def test_simclr_distrib_ctx_two_processes_train_like_one(tmp_path):
    torch.manual_seed(1)
    x = (torch.rand(N, 1, 12, 12) * 255).to(torch.uint8)
    mp.spawn(_worker, args=(_free_port(), x, str(tmp_path)), nprocs=WORLD, join=True)
    half, k = N // WORLD, N // WORLD // BS
    order = torch.cat([torch.cat([x[r*half + b*BS: r*half + (b+1)*BS] for r in range(WORLD)]) for b in range(k)])
    single = _simclr_setup(order, WORLD * BS)
    with single.no_bar(), single.no_logging(): single.fit(2)
    start = _simclr_setup(x, BS).model.state_dict()
    for r in range(WORLD):
        res = torch.load(tmp_path/f'{r}.pt')
        assert res['steps'] == 2 * k
        for name, v in single.model.state_dict().items():
            torch.testing.assert_close(res['sd'][name], v, atol=1e-5, rtol=1e-4)
    assert any((single.model.state_dict()[n] - start[n]).abs().max() > 1e-3 for n in start)   # training moved the weights
