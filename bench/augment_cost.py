"""Cost of per-sample batch augmentation relative to one forward+backward of the demo encoder.

Target (issue 2): augmenting a batch of 256 images to 32x32 costs at most 20% of one forward+backward pass of
the demo encoder on the same batch. Both are timed in the same run, on the same device, and reported as a ratio.

    python bench/augment_cost.py [--bs 256] [--size 32] [--arch small_resnet] [--device cpu] [--reps 20]
"""
import argparse, statistics, time
import torch
from self_supervised.augmentations import get_batch_augs
from self_supervised.data import fmnist_stats
from self_supervised.layers import create_encoder

def timeit(f, reps, sync):
    f(); f()   # warm-up
    ts = []
    for _ in range(reps):
        sync(); t = time.perf_counter(); f(); sync(); ts.append(time.perf_counter() - t)
    return statistics.median(ts)

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--bs', type=int, default=256); ap.add_argument('--size', type=int, default=32)
    ap.add_argument('--arch', default="small_resnet"); ap.add_argument('--device', default='cpu')
    ap.add_argument('--reps', type=int, default=20); ap.add_argument('--threads', type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads); torch.manual_seed(0)
    dev = torch.device(a.device)
    sync = (lambda: torch.cuda.synchronize()) if dev.type == 'cuda' else (lambda: None)
    x = torch.rand(a.bs, 1, 28, 28, device=dev)                  # a Fashion-MNIST batch
    pipe = get_batch_augs(a.size, stats=fmnist_stats)             # every augmentation on, per-sample parameters
    enc = create_encoder(a.arch, n_in=1).to(dev)
    xv = pipe(x)
    def step():
        enc.zero_grad(set_to_none=True)
        enc(xv).float().pow(2).mean().backward()
    t_aug, t_step = timeit(lambda: pipe(x), a.reps, sync), timeit(step, a.reps, sync)
    print(f"device={dev.type} threads={a.threads} bs={a.bs} size={a.size} arch={a.arch}")
    print(f"augmentation pipeline : {t_aug*1e3:8.1f} ms / batch")
    print(f"encoder fwd+bwd       : {t_step*1e3:8.1f} ms / batch")
    print(f"ratio aug / fwd+bwd   : {t_aug/t_step:8.3f}   (target <= 0.20)")

if __name__ == '__main__': main()
