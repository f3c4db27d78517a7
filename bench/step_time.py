"""Time of one training step of every SSL callback, as a ratio to the bare encoder step, in one run.

The bare step is the encoder alone on one batch (forward, backward, Adam step), the least any method must pay.
Each callback's step is measured inside `Learner.fit` from `before_batch` to `after_batch` (views, key encoders,
queues and the loss included), with the demo's settings (small_resnet, batch 256, 28 px, Fashion-MNIST).

    python bench/step_time.py [--bs 256] [--steps 12] [--threads 2]
"""
import argparse, statistics, time
import torch
from fastcore.all import AttrDict
from fastai.callback.core import Callback
from self_supervised.cli import ALGOS, ssl_learner
from self_supervised.data import fashion_mnist, ssl_dls
from self_supervised.layers import create_encoder

class StepStart(Callback):
    "Runs first in `before_batch`: starts the clock of a training step"
    order = -100
    def __init__(self): self.times, self.t0 = [], None
    def before_batch(self):
        if self.training: self.t0 = time.perf_counter()

class StepEnd(Callback):
    "Runs last in `after_batch`: stops the clock"
    order = 1000
    def __init__(self, start): self.start = start
    def after_batch(self):
        if self.training and self.start.t0 is not None: self.start.times.append(time.perf_counter() - self.start.t0)

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--bs', type=int, default=256); ap.add_argument('--steps', type=int, default=12)
    ap.add_argument('--threads', type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads); torch.manual_seed(0)
    ds = fashion_mnist()
    x = ds.train_x[:a.bs * a.steps]
    enc = create_encoder('small_resnet', n_in=1, width=16)
    opt = torch.optim.Adam(enc.parameters(), 1e-3)
    xb = x[:a.bs].float() / 255
    ts = []
    for _ in range(a.steps):
        t = time.perf_counter(); opt.zero_grad(); enc(xb).pow(2).mean().backward(); opt.step(); ts.append(time.perf_counter() - t)
    bare = statistics.median(ts[2:])
    print(f"bare encoder step (small_resnet, bs={a.bs}, 28 px, {a.threads} threads): {bare*1e3:.0f} ms")
    print("| callback | step (ms) | step / bare encoder step |")
    print("|---|---|---|")
    for algo, spec in ALGOS.items():
        args = AttrDict(size=28, min_scale=0.4, blur=False, bn=True, temp=spec['temp'], n_items=len(x))
        dls = ssl_dls(x, ds.test_x[:a.bs], bs=a.bs, device='cpu', with_idx=spec.get('with_idx', False))
        enc = create_encoder('small_resnet', n_in=1, width=16)
        timer = StepStart()
        learn = ssl_learner(algo, dls, enc, args)
        learn.add_cbs([timer, StepEnd(timer)])
        with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3)
        step = statistics.median(timer.times[2:])
        print(f"| {algo} | {step*1e3:.0f} | {step/bare:.2f} |")

if __name__ == '__main__': main()
