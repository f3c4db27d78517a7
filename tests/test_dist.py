"""Multi-process losses: 2 CPU processes (gloo on loopback) give the loss and the gradients of 1 process on the whole batch.

Each process holds half of the batch, computes the loss of its own anchors against the embeddings gathered from
both processes, and backpropagates. DDP would average the parameter gradients over processes; here the
gradients w.r.t. the embeddings are averaged the same way, so they must equal the single-process gradients.
"""
from functools import partial
import pytest, torch
from conftest import WORLD
from self_supervised.losses import nt_xent_loss, dcl_loss, moco_loss, supcon_loss, barlow_twins_loss, vicreg_loss

def _supcon(z1, z2):
    "SupCon over both views, with a class label computed from the data (so each process labels its own slice)"
    return supcon_loss(torch.cat([z1, z2]), (z1[:, 0] > 0).long().repeat(2), temp=0.3)

LOSSES = {'nt_xent': partial(nt_xent_loss, temp=0.5), 'dcl': partial(dcl_loss, temp=0.2),
          'dclw': partial(dcl_loss, temp=0.2, sigma=0.5), 'moco_v3': partial(moco_loss, queue=None, temp=0.2),
          'supcon': _supcon,
          # batch-statistics losses: every process computes the loss of the global batch (its gather has gradients)
          'barlow_twins': partial(barlow_twins_loss, lambd=0.1), 'vicreg': partial(vicreg_loss, cov_w=2.)}
def _worker(rank, name, z1, z2):
    n = len(z1) // WORLD
    a = z1[rank*n:(rank+1)*n].clone().requires_grad_()
    b = z2[rank*n:(rank+1)*n].clone().requires_grad_()
    loss = LOSSES[name](a, b)
    loss.backward()
    return dict(loss=loss.detach(), ga=a.grad / WORLD, gb=b.grad / WORLD)

@pytest.mark.parametrize('name', list(LOSSES))
def test_two_processes_equal_one(name, in_processes):
    torch.manual_seed(0)
    z1, z2 = torch.randn(12, 16, dtype=torch.float64), torch.randn(12, 16, dtype=torch.float64)
    res = in_processes(_worker, name, z1, z2)
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


# --- SimCLR trained end to end with 2 processes (torch DDP, gloo) == 1 process on the whole batch -------------

def _simclr_setup(x, bs):
    "Learner with deterministic views (identity and a horizontal flip), no batch norm, plain SGD, no shuffling"
    import kornia.augmentation as K
    from torch import nn
    from fasttransform import Pipeline
    from fastai.data.core import DataLoaders
    from fastai.learner import Learner
    from fastai.optimizer import SGD
    import fastai.callback.progress  # Learner.no_bar
    from self_supervised.augmentations import BatchAug, NormalizeBatch
    from self_supervised.data import TensorDL
    from self_supervised.vision.simclr import SimCLR, create_simclr_model
    torch.manual_seed(0)
    enc = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
    model = create_simclr_model(enc, 16, 8)
    augs = [Pipeline([NormalizeBatch(0.5, 0.5)], split_idx=0),
            Pipeline([BatchAug(K.RandomHorizontalFlip(p=1.)), NormalizeBatch(0.5, 0.5)], split_idx=0)]
    dls = DataLoaders(TensorDL(x, bs=bs, drop_last=True), TensorDL(x[:bs], bs=bs), device='cpu')
    return Learner(dls, model, cbs=SimCLR(augs, temp=0.5), opt_func=partial(SGD, mom=0.), lr=0.5)

def _simclr_worker(rank, x):
    from torch.nn.parallel import DistributedDataParallel as DDP
    n = 8   # local batch: rows [16b + 8r, 16b + 8r + 8) of each global batch b of 16
    mine = torch.cat([x[b*16 + rank*n: b*16 + (rank+1)*n] for b in range(len(x) // 16)])
    learn = _simclr_setup(mine, n)
    learn.model = DDP(learn.model)
    with learn.no_bar(), learn.no_logging(): learn.fit(2)
    return learn.model.module.state_dict()

def test_simclr_two_processes_train_like_one(in_processes):
    torch.manual_seed(1)
    x = (torch.rand(64, 1, 12, 12) * 255).to(torch.uint8)
    res = in_processes(_simclr_worker, x)
    single = _simclr_setup(x, 16)
    with single.no_bar(), single.no_logging(): single.fit(2)
    start = _simclr_setup(x, 16).model.state_dict()
    for sd in res:
        for k, v in single.model.state_dict().items():
            torch.testing.assert_close(sd[k], v, atol=1e-5, rtol=1e-4)
    assert any((single.model.state_dict()[k] - start[k]).abs().max() > 1e-3 for k in start)   # training moved the weights
