"""Training with fastai's own distributed engine (`learn.distrib_ctx()`, accelerate, DDP) in 2 CPU processes (gloo)
ends with the same weights and callback state as 1 process trained on the concatenated batches, for SimCLR, MoCo,
BYOL, Barlow Twins, SwAV and DINO; and only rank 0 writes checkpoints.

fastai's `DistributedDL` gives each process a contiguous half of the (unshuffled) dataset, in batches of `bs`; the
global batch of step k is then [batch k of the first half; batch k of the second half], which the single-process
reference rebuilds by reordering the images. The views are deterministic (identity, flip, resizes), the models have
no batch norm, and the optimiser is plain SGD, so only the distributed machinery can make the runs differ.
"""
from functools import partial
import pytest, torch
from torch import nn
from conftest import WORLD, fit_distributed, assert_trained_like_one

pytest.importorskip('accelerate')
N, BS = 64, 8   # per process: 32 images, 4 batches of 8

def _setup(algo, x, bs):
    import kornia.augmentation as K
    from fasttransform import Pipeline
    from fastai.data.core import DataLoaders
    from self_supervised.callback import SSLLearner   # fastai's Learner, whose checkpoints only rank 0 writes
    from fastai.optimizer import SGD
    import fastai.callback.progress  # Learner.no_bar
    from self_supervised.augmentations import BatchAug, NormalizeBatch
    from self_supervised.data import TensorDL
    torch.manual_seed(0)
    enc = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
    norm = lambda *tfms: Pipeline([*tfms, NormalizeBatch(0.5, 0.5)], split_idx=0)
    two = [norm(), norm(BatchAug(K.RandomHorizontalFlip(p=1.)))]
    crops = two + [norm(BatchAug(K.Resize(8))), norm(BatchAug(K.RandomHorizontalFlip(p=1.)), BatchAug(K.Resize(8)))]
    if algo == 'simclr':
        from self_supervised.vision.simclr import SimCLR, create_simclr_model
        model, cb = create_simclr_model(enc, 16, 8), SimCLR(two, temp=0.5)
    elif algo == 'moco':
        from self_supervised.vision.moco import MOCO, create_moco_model
        model, cb = create_moco_model(enc, 16, 8), MOCO(two, K=40, m=0.9, temp=0.2)   # K wraps around the 16 keys of a step
    elif algo == 'swav':
        from self_supervised.vision.swav import SWAV, create_swav_model
        model = create_swav_model(enc, 16, 8, n_protos=6, bn=False)
        cb = SWAV(crops, num_crops=(2, 2), crop_sizes=(12, 8), K=32, queue_start_pct=0., freeze_protos_pct=0.2)
    elif algo == 'byol':
        from self_supervised.vision.byol import BYOL, create_byol_model
        model, cb = create_byol_model(enc, 16, 8, bn=False), BYOL(two, m=0.9)   # the EMA target follows the averaged updates
    elif algo == 'barlow_twins':
        from self_supervised.vision.barlow_twins import BarlowTwins, create_barlow_twins_model
        model, cb = create_barlow_twins_model(enc, 16, 8, bn=False), BarlowTwins(two, lmb=0.05)   # global-batch cross-correlation
    elif algo == 'dino':
        from self_supervised.vision.dino import DINO, create_dino_model
        model = create_dino_model(enc, out_dim=12, hidden_dim=16, bottleneck_dim=8)
        cb = DINO(crops, m=0.9, tpt_warmup_pct=0.5, freeze_last_layer=1)
    dls = DataLoaders(TensorDL(x, bs=bs, drop_last=True), TensorDL(x[:bs], bs=bs), device='cpu')
    # Barlow Twins' loss sums D squared correlations: a smaller step keeps float32 rounding from being amplified
    return SSLLearner(dls, model, cbs=cb, opt_func=partial(SGD, mom=0.), lr=0.01 if algo == 'barlow_twins' else 0.5)

@pytest.mark.parametrize('algo', ['simclr', 'moco', 'byol', 'barlow_twins', 'swav', 'dino'])
def test_distrib_ctx_two_processes_train_like_one(algo, tmp_path, in_processes):
    torch.manual_seed(1)
    x = (torch.rand(N, 1, 12, 12) * 255).to(torch.uint8)
    res = in_processes(fit_distributed, _setup, (algo, x, BS), tmp_path, fastai=True)
    half, k = N // WORLD, N // WORLD // BS
    order = torch.cat([torch.cat([x[r*half + b*BS: r*half + (b+1)*BS] for r in range(WORLD)]) for b in range(k)])
    single = _setup(algo, order, WORLD * BS)
    with single.no_bar(), single.no_logging(): single.fit(2)
    start = _setup(algo, x, BS).model.state_dict()
    assert_trained_like_one(res, single, 2 * k)   # the callbacks' state too: it is in the model
    assert any((single.model.state_dict()[n] - start[n]).abs().max() > 1e-3 for n in start)   # training moved the weights
    assert (tmp_path/'rank0'/'models'/'ckpt.pth').exists() and not (tmp_path/'rank1'/'models').exists()   # only rank 0 writes
