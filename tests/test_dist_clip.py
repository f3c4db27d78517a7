"""CLIP and CLIP-MoCo in 2 CPU processes (gloo) == 1 process on the concatenated batch.

Loss level: each process holds half of the pairs, gathers the embeddings (with gradients for CLIP's, without for
CLIP-MoCo's momentum keys), computes the loss of its own rows and backpropagates; the mean loss and the gradients
(w.r.t. the embeddings, concatenated, and the scale, averaged as DDP averages parameter gradients) equal those of
one process on all pairs. Training level: fastai's `distrib_ctx` (DDP, gloo) trains to the same weights, the same
`logit_scale`, and for CLIP-MoCo the same momentum model and queues, as one process on the reordered batches.
"""
from functools import partial
import pytest, torch
from torch import nn
from conftest import WORLD, fit_distributed, assert_trained_like_one

pytest.importorskip('open_clip')

def _clip(img, txt, img_k, txt_k, s):
    from self_supervised.losses import clip_loss
    return clip_loss(img, txt, s)

def _clip_moco(img, txt, img_k, txt_k, s):
    from self_supervised.losses import clip_moco_loss
    g = torch.Generator().manual_seed(3)   # the same queues in every process
    iq, tq = torch.randn(10, img.shape[1], generator=g, dtype=img.dtype), torch.randn(7, img.shape[1], generator=g, dtype=img.dtype)
    return clip_moco_loss(img, txt, img_k, txt_k, iq, tq, s)

def _clip_moco_noqueue(img, txt, img_k, txt_k, s):
    from self_supervised.losses import clip_moco_loss
    return clip_moco_loss(img, txt, img_k, txt_k, None, None, s)

LOSSES = {'clip': _clip, 'clip_moco': _clip_moco, 'clip_moco_noqueue': _clip_moco_noqueue}

def _loss_worker(rank, name, data):
    n = len(data[0]) // WORLD
    img, txt, ik, tk = (t[rank*n:(rank+1)*n].clone() for t in data)
    img.requires_grad_(); txt.requires_grad_()
    s = torch.tensor(9., dtype=torch.float64, requires_grad=True)
    loss = LOSSES[name](img, txt, ik, tk, s)
    loss.backward()
    return dict(loss=loss.detach(), gi=img.grad / WORLD, gt=txt.grad / WORLD, gs=s.grad / WORLD)

@pytest.mark.parametrize('name', list(LOSSES))
def test_loss_two_processes_equal_one(name, in_processes):
    torch.manual_seed(0)
    data = [torch.randn(12, 6, dtype=torch.float64) for _ in range(4)]   # queries img, txt; keys img_k, txt_k
    res = in_processes(_loss_worker, name, data)
    img, txt = data[0].clone().requires_grad_(), data[1].clone().requires_grad_()
    s = torch.tensor(9., dtype=torch.float64, requires_grad=True)
    loss = LOSSES[name](img, txt, data[2], data[3], s)
    loss.backward()
    torch.testing.assert_close(torch.stack([r['loss'] for r in res]).mean(), loss.detach(), atol=1e-8, rtol=0)
    torch.testing.assert_close(torch.cat([r['gi'] for r in res]), img.grad, atol=1e-8, rtol=0)
    torch.testing.assert_close(torch.cat([r['gt'] for r in res]), txt.grad, atol=1e-8, rtol=0)
    torch.testing.assert_close(sum(r['gs'] for r in res), s.grad, atol=1e-8, rtol=0)

def test_local_negatives_only_would_differ():
    "The check above can fail: a process that only saw its own captions as negatives would compute another loss"
    from self_supervised.losses import clip_loss
    torch.manual_seed(0)
    img, txt = torch.randn(12, 6, dtype=torch.float64), torch.randn(12, 6, dtype=torch.float64)
    halves = torch.stack([clip_loss(img[i*6:(i+1)*6], txt[i*6:(i+1)*6], 9.) for i in range(2)])
    assert abs(halves.mean() - clip_loss(img, txt, 9.)) > 1e-3


# --- fastai distrib_ctx (DDP, gloo): 2 processes train like 1 ----------------------------------------------------------
N, BS = 64, 8   # per process: 32 pairs, 4 batches of 8

def _pairs():
    from self_supervised.multimodal.data import CLIPTokenizer, FMNIST_CONTEXT, fmnist_captions
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(N, 1, 12, 12, generator=g) * 255).to(torch.uint8)
    return x, CLIPTokenizer(FMNIST_CONTEXT)(fmnist_captions(x, torch.randint(0, 10, (N,), generator=g)))

def _setup(algo, x, tokens, bs):
    from fasttransform import Pipeline
    from fastai.data.core import DataLoaders
    from self_supervised.callback import SSLLearner   # fastai's Learner, whose checkpoints only rank 0 writes
    from fastai.optimizer import SGD
    import fastai.callback.progress  # Learner.no_bar
    from self_supervised.augmentations import NormalizeBatch
    from self_supervised.multimodal.clip import CLIPModel, create_text_encoder, CLIP
    from self_supervised.multimodal.clip_moco import CLIPMOCO
    from self_supervised.multimodal.data import CaptionDL, FMNIST_CONTEXT
    torch.manual_seed(0)
    enc = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())   # no batch norm
    model = CLIPModel(enc, nn.Linear(16, 8), create_text_encoder(8, FMNIST_CONTEXT, width=16, heads=2, layers=1))
    view = [Pipeline([NormalizeBatch(0.5, 0.5)], split_idx=0)]
    cb = CLIP(view) if algo == 'clip' else CLIPMOCO(view, K=40, m=0.9)   # K wraps around the 16 keys of a step
    dls = DataLoaders(CaptionDL(x, tokens, bs=bs, drop_last=True), CaptionDL(x[:bs], tokens[:bs], bs=bs), device='cpu')
    return SSLLearner(dls, model, cbs=cb, opt_func=partial(SGD, mom=0.), lr=0.2)

@pytest.mark.parametrize('algo', ['clip', 'clip_moco'])
def test_distrib_ctx_two_processes_train_like_one(algo, in_processes):
    pytest.importorskip('accelerate')
    x, tokens = _pairs()
    res = in_processes(fit_distributed, _setup, (algo, x, tokens, BS), fastai=True)
    half, k = N // WORLD, N // WORLD // BS
    # fastai's DistributedDL gives each process a contiguous half: the global batch b is [batch b of half 0; batch b of half 1]
    order = torch.cat([torch.cat([torch.arange(r*half + b*BS, r*half + (b+1)*BS) for r in range(WORLD)]) for b in range(k)])
    single = _setup(algo, x[order], tokens[order], WORLD * BS)
    with single.no_bar(), single.no_logging(): single.fit(2)
    start = _setup(algo, x, tokens, BS).model.state_dict()
    assert_trained_like_one(res, single, 2 * k)   # CLIP-MoCo's momentum model and queues too: they are in the model
    moved = {n for n in start if (single.model.state_dict()[n] - start[n]).abs().max() > 1e-3}
    assert 'logit_scale' in moved and any(n.startswith('text.') for n in moved) and any(n.startswith('encoder.') for n in moved)
