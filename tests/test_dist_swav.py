"""SwAV in 2 CPU processes (gloo on loopback) equals 1 process on the concatenated batch.

`sinkhorn_knopp` normalises over the samples of every process (all_reduce), so each process must get exactly the
rows of the single-process codes. The swapped prediction loss is a mean over samples once the codes are known,
but the codes depend on the whole batch, so the loss and its gradients (averaged over processes, as DDP does) are
compared too, with the codes computed in each process.
"""
import pytest, torch
from conftest import WORLD
from self_supervised.losses import sinkhorn_knopp, swav_loss

EPS, ITERS, TEMP, IDS = 0.05, 3, 0.1, (0, 1)

def _swav(scores):
    "The SwAV step on crops `scores` (V, b, K): codes of the assignment crops, then the swapped prediction loss"
    codes = torch.stack([sinkhorn_knopp(scores[i].detach(), EPS, ITERS) for i in IDS])
    return swav_loss(scores, codes, TEMP, IDS), codes

def _worker(rank, scores, sizes):
    lo = sum(sizes[:rank])
    mine = scores[:, lo:lo + sizes[rank]].clone().requires_grad_()
    codes = sinkhorn_knopp(mine[0].detach(), EPS, ITERS)
    long = sinkhorn_knopp(mine[0].detach(), 0.2, 200)
    loss, _ = _swav(mine)
    loss.backward()
    return dict(codes=codes, long=long, loss=loss.detach(), grad=mine.grad)

@pytest.mark.parametrize('sizes', [(6, 6), (5, 7)])
def test_swav_two_processes_equal_one(sizes, in_processes):
    "Equal halves, and unequal ones (a queue split over processes can leave one more row on one of them)"
    torch.manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(4, sum(sizes), 8, dtype=torch.float64), dim=-1)
    protos = torch.nn.functional.normalize(torch.randn(10, 8, dtype=torch.float64), dim=-1)
    scores = z @ protos.T   # (V=4 crops, B=12, K=10) cosine scores
    res = in_processes(_worker, scores, sizes)

    full = scores.clone().requires_grad_()
    loss, codes = _swav(full)
    loss.backward()
    torch.testing.assert_close(torch.cat([r['codes'] for r in res]), codes[0], atol=1e-5, rtol=0)
    long = torch.cat([r['long'] for r in res])
    torch.testing.assert_close(long, sinkhorn_knopp(scores[0], 0.2, 200), atol=1e-5, rtol=0)
    # the prototype sums run over both processes: together the halves give each prototype B/K
    torch.testing.assert_close(long.sum(0), torch.full((10,), sum(sizes) / 10, dtype=torch.float64), atol=1e-5, rtol=0)
    # per-process losses are means over their own rows: weight them by rows to get the mean over the batch
    w = torch.tensor(sizes, dtype=torch.float64) / sum(sizes)
    torch.testing.assert_close((torch.stack([r['loss'] for r in res]) * w).sum(), loss.detach(), atol=1e-5, rtol=0)
    # and so are the gradients (with equal shards the weights are 1/WORLD: DDP's average)
    torch.testing.assert_close(torch.cat([r['grad'] * wr for r, wr in zip(res, w)], dim=1), full.grad, atol=1e-5, rtol=0)

def test_local_codes_would_be_wrong():
    "The check above can fail: Sinkhorn on each half alone balances the prototypes within each half only"
    torch.manual_seed(0)
    s = torch.randn(12, 10, dtype=torch.float64)
    halves = torch.cat([sinkhorn_knopp(s[:6], EPS, ITERS), sinkhorn_knopp(s[6:], EPS, ITERS)])
    assert (halves - sinkhorn_knopp(s, EPS, ITERS)).abs().max() > 1e-3


# --- the callback's codes with a queue: each process adds its share of the (replicated) queue -----------------

def _swav_cb(queue):
    "A SWAV callback with a full queue, attached to a stand-in learner that only has the model"
    from types import SimpleNamespace
    from torch import nn
    from self_supervised.augmentations import get_multi_aug_pipelines
    from self_supervised.vision.swav import SWAV, normalize_prototypes
    torch.manual_seed(1)
    protos = nn.Linear(queue.shape[-1], 10, bias=False).double()
    normalize_prototypes(protos)
    cb = SWAV(get_multi_aug_pipelines(2, 8), crop_assgn_ids=(0,), K=queue.shape[1], eps=EPS, n_sinkhorn_iter=ITERS)
    model = nn.Module(); model.prototypes = protos   # the queue lives in the model
    cb.learn = SimpleNamespace(model=model, cbs=[])
    cb.queue, cb.queue_n = queue, queue.shape[1]
    return cb, protos

def _queue_worker(rank, queue, z):
    cb, protos = _swav_cb(queue)
    n = len(z) // WORLD
    return cb.get_codes(protos(z[rank*n:(rank+1)*n]))

def test_queue_codes_two_processes_equal_one(in_processes):
    torch.manual_seed(0)
    queue = torch.nn.functional.normalize(torch.randn(1, 9, 8, dtype=torch.float64), dim=-1)   # 9 rows: shares of 5 and 4
    z = torch.nn.functional.normalize(torch.randn(12, 8, dtype=torch.float64), dim=-1)
    res = in_processes(_queue_worker, queue, z)
    cb, protos = _swav_cb(queue)
    with torch.no_grad(): codes = cb.get_codes(protos(z))
    torch.testing.assert_close(torch.cat(res), codes, atol=1e-5, rtol=0)
    # and the queue matters: the codes without it differ
    assert (codes - sinkhorn_knopp(protos(z).detach(), EPS, ITERS)).abs().max() > 1e-3
