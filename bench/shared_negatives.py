"""Shared vs per-anchor negatives of the memory-bank methods (InstDisc, CMC, PIRL): step time and kNN accuracy, in one run.

Each method trains twice with its registry recipe, once per kind of negatives (`recipe=dict(negatives=...)`), from the
same encoder initialisation and seed: small_resnet (width 16), `--n-train` Fashion-MNIST training images (tinted with
a random colour each for CMC, which learns from colour), batch 256, 28 px, `--epochs` of the one-cycle schedule at the
recipe's learning rate, `--threads` threads. Columns: the median training step (from `before_batch` to `after_batch`:
views, the loss and the bank update included) as a ratio to the bare encoder step (the encoder alone on a batch of
256 grey images: forward, backward, Adam), one of which runs after every training step, outside its timed window, so
that both medians see the same load on a shared machine; the pretraining time (the bare steps left out); and the kNN accuracy (k=200) of the frozen encoder on `--n-test` test images against
the training images, next to that of the encoder at initialisation.

    python bench/shared_negatives.py [--algos instdisc,cmc,pirl] [--epochs 2] [--n-train 10000] [--n-test 2000] [--threads 2]
"""
import argparse, statistics, sys, time
from pathlib import Path
import torch
from fastai.callback.core import Callback
from fastai.torch_core import set_seed
from fastcore.all import ifnone
from self_supervised.data import fashion_mnist, ssl_dls, fmnist_stats
from self_supervised.layers import create_encoder
from self_supervised.registry import ssl_learner, algo_images, get_recipe
from self_supervised.evaluation import evaluate_encoder
sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_time import step_clock

class BareStep(Callback):
    "After each timed step (outside its window), one step of the encoder alone on a batch: forward, backward, Adam"
    order = 1001
    def __init__(self, x):
        with torch.random.fork_rng():   # leaves the training's random state alone
            torch.manual_seed(0)
            self.enc, self.xb, self.times = create_encoder('small_resnet', n_in=1, width=16), x.float() / 255, []
        self.opt = torch.optim.Adam(self.enc.parameters(), 1e-3)
    def after_batch(self):
        if not self.training: return
        t = time.perf_counter(); self.opt.zero_grad(); self.enc(self.xb).pow(2).mean().backward(); self.opt.step()
        self.times.append(time.perf_counter() - t)

def run(algo, negatives, data, a) -> dict:
    "Pretrain `algo` with `negatives` on `data`; the step times, the training time and the kNN accuracies before and after"
    tr_x, tr_y, te_x, te_y = data
    set_seed(a.seed)
    dls = ssl_dls(tr_x, te_x[:a.bs], tr_y, te_y[:a.bs], bs=a.bs, device='cpu', with_idx=True)
    enc = create_encoder('small_resnet', n_in=tr_x.shape[1], width=16)
    learn = ssl_learner(dls, algo, enc, recipe=dict(negatives=negatives))
    r = get_recipe(algo)
    stats = None if r.rgb else fmnist_stats
    knn = lambda e: evaluate_encoder(e, tr_x, tr_y, te_x, te_y, stats=stats, k=200, probe=False, progress=False)['knn']
    before = knn(learn.model.encoder) if negatives == 'per_anchor' else None   # the same initialisation for both
    (clock, stop), bare = step_clock(), BareStep(a.grey[:a.bs])   # bare steps interleaved with the timed ones: the same load on the machine
    learn.add_cbs([clock, stop, bare])
    t0 = time.time()
    with learn.no_bar(), learn.no_logging():
        (learn.fit_one_cycle if r.one_cycle else learn.fit)(a.epochs, ifnone(r.lr, 1e-2))
    train_s = time.time() - t0 - sum(bare.times)
    return dict(bare=statistics.median(bare.times[2:]), step=statistics.median(clock.times[2:]), train_s=train_s, before=before, knn=knn(learn.model.encoder),
                n_neg=learn.cbs.filter(lambda c: hasattr(c, 'n_neg'))[0].n_neg)

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--algos', default='instdisc,cmc,pirl'); ap.add_argument('--epochs', type=int, default=2)
    ap.add_argument('--n-train', type=int, default=10000); ap.add_argument('--n-test', type=int, default=2000)
    ap.add_argument('--bs', type=int, default=256); ap.add_argument('--threads', type=int, default=2); ap.add_argument('--seed', type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    ds = fashion_mnist()
    tr = torch.randperm(len(ds.train_x), generator=torch.Generator().manual_seed(a.seed))[:a.n_train]
    a.grey, t_all = ds.train_x[tr], time.time()
    rows = []
    for algo in a.algos.split(','):
        data = (algo_images(algo, ds.train_x[tr]), ds.train_y[tr], algo_images(algo, ds.test_x[:a.n_test]), ds.test_y[:a.n_test])
        res = {neg: run(algo, neg, data, a) for neg in ('per_anchor', 'shared')}
        for neg, r in res.items():
            rows.append(f"| {get_recipe(algo).title} | {neg} | {r['n_neg']} | {r['step'] / r['bare']:.2f} | {r['step'] * 1e3:.0f} / {r['bare'] * 1e3:.0f} | "
                        f"{r['train_s']:.0f} s | {r['knn']:.4f} | {res['per_anchor']['before']:.4f} |")
        print('\n'.join(rows[-2:]), flush=True)
    print(f"\n| method | negatives | n_neg | step / bare encoder step | step / bare (ms) | pretraining time | kNN accuracy | kNN at initialisation |")
    print("|---|---|---|---|---|---|---|---|")
    print('\n'.join(rows))
    print(f"\nBudget: {a.n_train} Fashion-MNIST training images (tinted for CMC), {a.epochs} epochs of batch {a.bs}, seed {a.seed}, "
          f"small_resnet width 16, {a.threads} threads; kNN (k=200) on {a.n_test} test images. Whole run: {time.time() - t_all:.0f} s. "
          f"Command: `python bench/shared_negatives.py --epochs {a.epochs} --n-train {a.n_train} --n-test {a.n_test} --threads {a.threads}`")

if __name__ == '__main__': main()
