"""Disk-backed data against the training step: is a run limited by loading images or by compute?

A folder of 64 px colour PNGs (tinted Fashion-MNIST images, or your own `--folder`) is read by fastai's
`DataLoader` workers (`image_folder_dls`: decode, resize, collate). In one run, on the same machine, it measures
images per second

- loaded:     the training loader alone, from disk to a float batch;
- augmented:  the method's batch augmentations (two views for SimCLR) of an in-memory batch;
- consumed:   the training step alone (forward, loss, backward, optimiser) on in-memory augmented views;
- end to end: `learn.fit` on the folder, everything together.

When `loaded` and `augmented` are well above `consumed`, compute limits the run and more workers would not help;
when `end to end` falls well below `consumed`, the data path does.

    python bench/folder_throughput.py [--n 2048] [--size 64] [--bs 128] [--workers 0 2] [--arch small_resnet] [--algo simclr]
"""
import argparse, math, tempfile, time, warnings
from pathlib import Path
import numpy as np
import torch
from PIL import Image
from fastai.callback.core import Callback, CancelEpochException
from self_supervised.data import fashion_mnist, image_folder_dls
from self_supervised.layers import create_encoder
from self_supervised.registry import ssl_learner
from self_supervised.callback import SSLCallback

def write_pngs(root:Path, n:int, size:int, seed:int=0) -> Path:
    "`n` Fashion-MNIST images, each tinted with a random colour and resized to `size`, as PNGs in 10 class folders"
    ds, g = fashion_mnist(), np.random.default_rng(seed)
    for i in range(n):
        img = Image.fromarray(ds.train_x[i, 0].numpy()).resize((size, size), Image.BILINEAR).convert('RGB')
        d = root/f'class_{int(ds.train_y[i])}'; d.mkdir(parents=True, exist_ok=True)
        Image.fromarray((np.asarray(img) * (0.3 + 0.7 * g.random(3))).astype(np.uint8)).save(d/f'{i}.png')
    return root

def rate(n_images:int, seconds:float) -> float: return n_images / seconds

def time_loader(dl, n_batches:int) -> float:
    "Images per second of the loader alone (the first batch, which starts the workers, is not counted)"
    it = iter(dl); next(it)
    t, n = time.perf_counter(), 0
    for _ in range(n_batches):
        xb = next(it)[0]; n += len(xb)
    return rate(n, time.perf_counter() - t)

class _Timer(Callback):
    "Stops after `n` training batches; times the batches after the first"
    order = 100
    def __init__(self, n): self.n = n
    def after_batch(self):
        if not self.training: return
        if self.iter == 0: self.t0, self.seen = time.perf_counter(), 0
        else: self.seen += len(ssl_cb(self.learn).orig_x)
        if self.iter + 1 >= self.n: self.elapsed = time.perf_counter() - self.t0; raise CancelEpochException

def ssl_cb(learn) -> SSLCallback: return next(c for c in learn.cbs if isinstance(c, SSLCallback))

def time_step(learn, cb, xb, views, n_steps:int) -> float:
    "Images per second of the training step alone on in-memory views: forward, the method's loss, backward, optimiser step"
    learn.model.train(); learn.create_opt(); learn.opt.set_hyper('lr', 1e-3)
    cb.orig_x, cb.orig_y = xb, None
    def step():
        bx, by = cb.make_batch(views)
        learn.loss_func(learn.model(*bx), *by).backward()
        learn.opt.step(); learn.opt.zero_grad()
    step(); t = time.perf_counter()
    for _ in range(n_steps): step()
    return rate(n_steps * len(xb), time.perf_counter() - t)

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--folder', default=None, help='your own image folder (default: write --n PNGs to a temporary folder)')
    ap.add_argument('--n', type=int, default=2048); ap.add_argument('--size', type=int, default=64)
    ap.add_argument('--bs', type=int, default=128); ap.add_argument('--workers', type=int, nargs='+', default=[0, 2])
    ap.add_argument('--arch', default='small_resnet'); ap.add_argument('--algo', default='simclr')
    ap.add_argument('--batches', type=int, default=8, help='timed batches per measure')
    ap.add_argument('--threads', type=int, default=None)
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    torch.manual_seed(0); warnings.simplefilter('ignore')
    tmp = tempfile.TemporaryDirectory()
    folder = Path(a.folder) if a.folder else write_pngs(Path(tmp.name)/'images', a.n, a.size)
    n_files = sum(1 for _ in folder.rglob('*.png')) if not a.folder else None
    print(f"folder={folder}{f' ({n_files} PNGs of {a.size} px)' if n_files else ''}  algo={a.algo} arch={a.arch} bs={a.bs} "
          f"size={a.size} torch threads={torch.get_num_threads()} device=cpu")
    rows = []
    for w in a.workers:
        dls = image_folder_dls(folder, size=a.size, bs=a.bs, valid_pct=0.05, num_workers=w)
        n_batches = min(a.batches, len(dls.train) - 1)
        loaded = time_loader(dls.train, n_batches)
        enc = create_encoder(a.arch, n_in=3, **({'width': 16} if a.arch == 'small_resnet' else {}))
        learn = ssl_learner(dls, a.algo, enc)
        cb = ssl_cb(learn)
        # augmentation and the step alone, on one in-memory batch
        xb = dls.train.one_batch()[0]
        def augment(): return [p(xb) for p in cb.aug_pipelines]
        augment(); t = time.perf_counter()
        for _ in range(3): views = augment()
        augmented = rate(3 * len(xb), time.perf_counter() - t)
        consumed = time_step(learn, cb, xb, views, n_batches)
        timer = _Timer(n_batches + 1)
        with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3, cbs=timer)
        end_to_end = rate(timer.seen, timer.elapsed)
        rows.append((w, loaded, augmented, consumed, end_to_end))
    print("\n| workers | loaded img/s | augmented img/s | consumed img/s (step alone) | end to end img/s | end to end / consumed |")
    print("|---|---|---|---|---|---|")
    for w, l, au, c, e in rows: print(f"| {w} | {l:.0f} | {au:.0f} | {c:.0f} | {e:.0f} | {e / c:.2f} |")
    for w, l, au, c, e in rows:
        limit = 'loading' if l < c else 'augmentation' if au < c else 'compute'
        print(f"workers={w}: the slowest stage is {limit} ({min(l, au, c):.0f} img/s)")

if __name__ == '__main__': main()
