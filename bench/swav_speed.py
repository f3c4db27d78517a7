"""SwAV's Sinkhorn and training step on the CPU: the plain-domain Sinkhorn against the log-domain one and the older library's.

Issue #19's settings: timm resnet18, two 32 px crops, batch 256, a full queue of 4096 projections (so Sinkhorn runs on
(256 + 4096) x 3000 scores), 3000 prototypes, eps 0.05, 3 iterations. Everything runs in this one process, and the
cases are measured in turns (round robin), so that the ratios compare times taken under the same load. Each time is
given as wall-clock time and as this process's CPU time (all its threads): on a machine shared with other jobs the
wall clock counts the waits for a core, the CPU time mostly the work.

1. Sinkhorn alone on cosine scores: `_sinkhorn_log` (the log domain, what `sinkhorn_knopp` ran before), the plain
   domain as the callback calls it (`n_last=256`: the batch's codes only) and in full, and the older fastai
   `self_supervised` library's `sinkhorn_knopp` (plain domain, no guard against overflow, written out below from its
   description), with each one's largest difference from the float64 log-domain codes.
2. The training step, from `before_batch` to `after_batch` inside `Learner.fit` (augmentations, forward, codes, loss,
   backward, optimiser step): `SWAV` as it is, `SWAV` with the log-domain Sinkhorn (before this change), and the older
   library's callback (`OldSWAV` below: one queue of crop 0's projections, used for both crops' codes; its Sinkhorn).
   All three train the same model (same initialisation) on the same images, with the same pipelines and optimiser.

    python bench/swav_speed.py [--steps 3] [--rounds 4] [--reps 5] [--threads 2]
"""
import argparse, statistics, time
import torch, torch.nn.functional as F
from fastai.learner import Learner
from fastai.callback.core import Callback
from self_supervised.callback import SSLCallback
from self_supervised.data import fashion_mnist, ssl_dls
from self_supervised.layers import create_encoder
from self_supervised.losses.clustering import _sinkhorn_log, _sinkhorn_knopp
from self_supervised.vision import swav as swav_mod
from self_supervised.vision.swav import SWAV, create_swav_model, get_swav_aug_pipelines, normalize_prototypes

BS, QUEUE, PROTOS, EPS, ITERS, TEMP = 256, 4096, 3000, 0.05, 3, 0.1
OLD = "older library's SwAV"

# --- the older fastai self_supervised library's SwAV (v1.0.x `vision/swav.py`), from its description ---------------
@torch.no_grad()
def old_sinkhorn_knopp(Q, nmb_iters):
    "Q (K, B) = exp(scores/eps).T: normalise to total 1, rows to 1/K and columns to 1/B `nmb_iters` times; columns to 1"
    Q /= Q.sum()
    r, c = Q.new_ones(Q.shape[0]) / Q.shape[0], Q.new_ones(Q.shape[1]) / Q.shape[1]
    curr_sum = Q.sum(1)
    for _ in range(nmb_iters):
        Q *= (r / curr_sum).unsqueeze(1)
        Q *= (c / Q.sum(0)).unsqueeze(0)
        curr_sum = Q.sum(1)
    return (Q / Q.sum(0, keepdim=True)).t().float()

class OldSWAV(SSLCallback):
    "The older library's step: codes of each assignment crop with crop 0's queue after the batch, its loss, prototypes normalised after the batch"
    def __init__(self, aug_pipelines, crop_assgn_ids=(0, 1), K=QUEUE, temp=TEMP, eps=EPS, n_sinkh_iter=ITERS):
        super().__init__(aug_pipelines)
        self.crop_assgn_ids, self.K, self.temp, self.eps, self.n_sinkh_iter = crop_assgn_ids, K, temp, eps, n_sinkh_iter
    def before_fit(self):
        super().before_fit()
        if getattr(self, 'queue', None) is None:
            self.queue = F.normalize(torch.randn(self.K, self.learn.model.prototypes.in_features), dim=1)
    def make_batch(self, views): return tuple(views), (views[0].new_zeros(len(views[0])),)
    def lf(self, pred, *yb):
        z, scores = pred
        V, bs = len(self.aug_pipelines), len(z) // len(self.aug_pipelines)
        W = self.learn.model.prototypes.weight
        with torch.no_grad():
            qs = []
            for i in self.crop_assgn_ids:
                s = torch.cat([scores[i*bs:(i+1)*bs].detach(), self.queue @ W.detach().T])   # the queue in use (past queue_start_pct)
                qs.append(old_sinkhorn_knopp(torch.exp(s / self.eps).t(), self.n_sinkh_iter)[:bs])
            if self.training: self.queue = torch.cat([z[:bs].detach(), self.queue[:-bs]])   # crop 0's projections
        log_ps = torch.stack([F.log_softmax(scores[v*bs:(v+1)*bs] / self.temp, dim=1) for v in range(V)])
        t = (torch.stack(qs)[:, None] * log_ps[None]).sum(-1).mean(-1)   # (assignment crops, crops)
        loss = 0.
        for i in range(len(self.crop_assgn_ids)): loss -= (t[i].sum() - t[i][i]) / (V - 1) / len(self.crop_assgn_ids)
        return loss
    def after_batch(self): normalize_prototypes(self.learn.model.prototypes)

# --- 1. Sinkhorn alone -------------------------------------------------------------------------------------------
def bench_sinkhorn(reps):
    torch.manual_seed(0)
    z = F.normalize(torch.randn(BS + QUEUE, 128), dim=1)
    s = z @ F.normalize(torch.randn(PROTOS, 128), dim=1).T   # (4352, 3000) cosine scores
    ref = _sinkhorn_log(s.double(), EPS, ITERS)[-BS:]
    cases = {'log domain (before)': lambda: _sinkhorn_log(s, EPS, ITERS)[-BS:],
             'plain, batch codes only (the callback)': lambda: _sinkhorn_knopp(s, EPS, ITERS, n_last=BS),
             'plain, all codes': lambda: _sinkhorn_knopp(s, EPS, ITERS)[-BS:],
             "older library's": lambda: old_sinkhorn_knopp(torch.exp(s / EPS).t(), ITERS)[-BS:]}
    ts = {k: [] for k in cases}
    for _ in range(reps):
        for k, f in cases.items():
            t = _now(); f(); ts[k].append(tuple(b - a for a, b in zip(t, _now())))
    err = {k: (f().double() - ref).abs().max().item() for k, f in cases.items()}
    wall, cpu = ({k: statistics.median(x[i] for x in v) for k, v in ts.items()} for i in (0, 1))
    bw, bc = wall['log domain (before)'], cpu['log domain (before)']
    print(f"Sinkhorn on ({BS} + {QUEUE}) x {PROTOS} cosine scores, eps {EPS}, {ITERS} iterations, median of {reps}")
    print("| Sinkhorn | wall (ms) | CPU (ms) | log domain / this, wall | CPU | max abs difference from float64 |")
    print("|---|---|---|---|---|---|")
    for k in cases: print(f"| {k} | {wall[k]*1e3:.0f} | {cpu[k]*1e3:.0f} | {bw/wall[k]:.1f} | {bc/cpu[k]:.1f} | {err[k]:.1e} |")

# --- 2. the training step ----------------------------------------------------------------------------------------
def _now(): return time.perf_counter(), time.process_time()

class Clock(Callback):
    "Step times, wall clock and this process's CPU time (all threads), from `before_batch` (first) to `after_batch` (last)"
    order = -100
    def __init__(self): self.times, self.t0 = [], None
    def before_batch(self): self.t0 = _now() if self.training else None
class Stop(Callback):
    order = 1000
    def __init__(self, clock): self.clock = clock
    def after_batch(self):
        if self.clock.t0 is not None: self.clock.times.append(tuple(b - a for a, b in zip(self.clock.t0, _now())))

def _sinkhorn_log_kernel(scores, eps, n_iters, n_last=None):
    "The callback's kernel as it was: log domain, then the batch's rows"
    return _sinkhorn_log(scores, eps, n_iters)[len(scores) - (n_last or len(scores)):]

def bench_step(steps, rounds):
    ds = fashion_mnist()
    x = ds.train_x[:BS * steps].expand(-1, 3, -1, -1).contiguous()   # 3-channel images, cropped to 32 px
    augs = get_swav_aug_pipelines(num_crops=(2,), crop_sizes=(32,), min_scales=(0.25,), max_scales=(1.,), blur=False)
    def learner(cb):
        torch.manual_seed(0)
        dls = ssl_dls(x, x[:BS], bs=BS, device='cpu')
        model = create_swav_model(create_encoder('resnet18', n_in=3), hidden_size=256, projection_size=128, n_protos=PROTOS)
        clock = Clock()
        learn = Learner(dls, model, cbs=[cb, clock, Stop(clock)], lr=1e-3)
        learn.clock = clock
        return learn
    new = learner(SWAV(augs, K=QUEUE, queue_start_pct=0., freeze_protos_pct=0., eps=EPS, temp=TEMP))
    before = learner(SWAV(augs, K=QUEUE, queue_start_pct=0., freeze_protos_pct=0., eps=EPS, temp=TEMP))
    old = learner(OldSWAV(augs))
    for l in (new, before):   # a full queue: the codes take the queue from the first step
        l.swav.queue = F.normalize(torch.randn(2, QUEUE, 128), dim=-1); l.swav.queue_n = QUEUE
    cases = {'SWAV (plain Sinkhorn)': new, 'SWAV, log-domain Sinkhorn (before)': before, OLD: old}
    times = {k: [] for k in cases}
    for _ in range(rounds):
        for k, l in cases.items():
            swav_mod._sinkhorn_knopp = _sinkhorn_log_kernel if l is before else _sinkhorn_knopp
            l.clock.times = []
            with l.no_bar(), l.no_logging(): l.fit(1)
            times[k] += l.clock.times[1:]   # the first step of each fit warms up
            if l is not old: assert l.swav.queue_in_use
    swav_mod._sinkhorn_knopp = _sinkhorn_knopp
    wall, cpu = ({k: statistics.median(x[i] for x in v) for k, v in times.items()} for i in (0, 1))
    print(f"\nSwAV step, timm resnet18, 2 crops of 32 px, batch {BS}, queue {QUEUE} (in use), {PROTOS} prototypes, "
          f"median of {len(times[OLD])} steps in {rounds} rounds")
    print("| step | wall (s) | CPU (s) | / older library's step, wall | CPU |")
    print("|---|---|---|---|---|")
    for k in cases: print(f"| {k} | {wall[k]:.2f} | {cpu[k]:.2f} | {wall[k]/wall[OLD]:.2f} | {cpu[k]/cpu[OLD]:.2f} |")
    new, before = 'SWAV (plain Sinkhorn)', 'SWAV, log-domain Sinkhorn (before)'
    print(f"SWAV step, plain / log-domain Sinkhorn: wall {wall[new]/wall[before]:.2f}, CPU {cpu[new]/cpu[before]:.2f}")

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3, help='steps per round and case (the first is not timed)')
    ap.add_argument('--rounds', type=int, default=4); ap.add_argument('--reps', type=int, default=5)
    ap.add_argument('--threads', type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    t = time.perf_counter()
    bench_sinkhorn(a.reps)
    bench_step(a.steps, a.rounds)
    print(f"\n{a.threads} CPU threads; whole bench {time.perf_counter() - t:.0f} s")

if __name__ == '__main__': main()
