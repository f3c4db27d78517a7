"""CLIP and CLIP-MoCo on captioned Fashion-MNIST: step time relative to the two bare encoder steps, then zero-shot
accuracy and recall after the same CPU budget.

The bare steps are the image side alone (small_resnet and its projection) and the text side alone (CLIP's text
transformer) on one batch: forward, a dummy loss, backward, Adam step; their sum is the least a two-tower method
pays. The ratios are of process CPU time (both threads), which other work on the machine disturbs less than
wall time. Each callback's step is measured inside `Learner.fit` from `before_batch` to `after_batch` (the view, the
captions, both towers, the momentum model and the queues, the loss and the step). Then each method trains
from the same initialisation until its training steps have used the same budget of process CPU seconds (Adam at a
constant learning rate, so that stopping anywhere is fair) and is evaluated on Fashion-MNIST test images: zero-shot
accuracy with the prompts 'a photo of a {class}', and image->text and text->image recall@1/5/10 against their
captions (identical captions count as matches). The untrained model is the baseline.

    python bench/clip_bench.py [--bs 256] [--budget 80] [--threads 2] [--n-test 1000] [--steps 12] [--lr 2e-3]
"""
import argparse, statistics, time
import torch

def _model(seed=0):
    from self_supervised.layers import create_encoder
    from self_supervised.multimodal.clip import create_clip_model
    from self_supervised.multimodal.data import FMNIST_CONTEXT
    torch.manual_seed(seed)
    return create_clip_model(create_encoder('small_resnet', n_in=1, width=8), embed_dim=64, context_length=FMNIST_CONTEXT,
                             width=64, heads=4, layers=2)

def _cb(name):
    from self_supervised.data import fmnist_stats
    from self_supervised.multimodal.clip import CLIP, get_clip_aug_pipelines
    from self_supervised.multimodal.clip_moco import CLIPMOCO
    augs = get_clip_aug_pipelines(28, stats=fmnist_stats)
    return CLIP(augs) if name == 'CLIP' else CLIPMOCO(augs, K=4096, m=0.99)

def _median(ts): return statistics.median(ts[2:] if len(ts) > 4 else ts)

def bare_steps(bs, steps):
    "Wall and CPU seconds of one step of the image side alone and of the text side alone"
    from self_supervised.data import fashion_mnist, fmnist_stats
    from self_supervised.augmentations import NormalizeBatch
    from self_supervised.multimodal.data import CLIPTokenizer, FMNIST_CONTEXT, fmnist_captions
    ds = fashion_mnist()
    x, y = ds.train_x[:bs], ds.train_y[:bs]
    xb, tb = NormalizeBatch(*fmnist_stats)(x.float() / 255), CLIPTokenizer(FMNIST_CONTEXT)(fmnist_captions(x, y))
    m = _model()
    res = {}
    for name, params, f in (('image', [*m.encoder.parameters(), *m.img_proj.parameters()], lambda: m.img_proj(m.encoder(xb))),
                            ('text', list(m.text.parameters()), lambda: m.text(tb))):
        opt, wall, cpu = torch.optim.Adam(params, 1e-3), [], []
        for _ in range(steps):
            t, c = time.perf_counter(), time.process_time()
            opt.zero_grad(); f().pow(2).mean().backward(); opt.step()
            wall.append(time.perf_counter() - t); cpu.append(time.process_time() - c)
        res[name] = (_median(wall), _median(cpu))
    return res

def method_step(name, bs, steps):
    "Wall and CPU seconds of one training step of the callback inside `fit`"
    from fastai.learner import Learner
    from fastai.callback.core import Callback
    from self_supervised.multimodal.data import fmnist_caption_dls
    class Clock(Callback):
        order = -100
        def __init__(self): self.wall, self.cpu, self.t0 = [], [], None
        def before_batch(self):
            if self.training: self.t0 = (time.perf_counter(), time.process_time())
    class Stop(Callback):
        order = 1000
        def __init__(self, clock): self.clock = clock
        def after_batch(self):
            if self.training and self.clock.t0 is not None:
                self.clock.wall.append(time.perf_counter() - self.clock.t0[0]); self.clock.cpu.append(time.process_time() - self.clock.t0[1])
    clock = Clock()
    learn = Learner(fmnist_caption_dls(bs=bs, n_train=bs * steps, n_valid=bs, device='cpu'), _model(), cbs=_cb(name))
    learn.add_cbs([clock, Stop(clock)])
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3)
    return _median(clock.wall), _median(clock.cpu)

def train_for(name, bs, budget, lr, n_test, n_train=16384):
    "Train `name` (Adam, constant `lr`) until its training steps have used `budget` CPU seconds, then evaluate it"
    from fastai.learner import Learner
    from fastai.callback.core import Callback, CancelFitException
    from self_supervised.multimodal.data import fmnist_caption_dls, fmnist_clip_eval
    class Budget(Callback):
        "Counts the CPU time of the training steps (from `before_batch` to `after_batch`) and stops training when it exceeds the budget"
        order = -100
        def __init__(self): self.used, self.t0 = 0., None
        def before_batch(self):
            if self.training: self.t0 = time.process_time()
        def after_batch(self):
            if not self.training: return
            self.used += time.process_time() - self.t0
            if self.used >= budget: raise CancelFitException
    model, clock = _model(), Budget()
    learn = Learner(fmnist_caption_dls(bs=bs, n_train=n_train, n_valid=bs, device='cpu'), model, cbs=[_cb(name), clock])
    t = time.perf_counter()
    with learn.no_bar(), learn.no_logging(): learn.fit(1000, lr)
    return dict(fmnist_clip_eval(model, n=n_test), steps=learn.train_iter, cpu=clock.used, wall=time.perf_counter() - t)

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--bs', type=int, default=256); ap.add_argument('--budget', type=float, default=80., help='CPU seconds of training per method')
    ap.add_argument('--threads', type=int, default=2); ap.add_argument('--n-test', type=int, default=1000)
    ap.add_argument('--steps', type=int, default=12, help='steps timed per case'); ap.add_argument('--lr', type=float, default=2e-3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from self_supervised.multimodal.data import fmnist_clip_eval
    t0 = time.perf_counter()
    bare = bare_steps(a.bs, a.steps)
    both = bare['image'][1] + bare['text'][1]   # CPU time: steadier than wall time on a shared machine
    steps = {n: method_step(n, a.bs, a.steps) for n in ('CLIP', 'CLIP-MoCo')}
    print(f"Step time, batch {a.bs}, 28 px, small_resnet width 8 + text transformer 64 wide x 2 layers, {a.threads} threads\n")
    print("| step | wall (ms) | CPU (ms) | CPU / (image + text bare steps) |")
    print("|---|---|---|---|")
    for n, (w, c) in [('image side alone', bare['image']), ('text side alone', bare['text'])] + list(steps.items()):
        print(f"| {n} | {w*1e3:.0f} | {c*1e3:.0f} | {c / both:.2f} |")
    res = {'untrained': dict(fmnist_clip_eval(_model(), n=a.n_test), steps=0, cpu=0., wall=0.)}
    for n in ('CLIP', 'CLIP-MoCo'): res[n] = train_for(n, a.bs, a.budget, a.lr, a.n_test)
    print(f"\nAfter {a.budget:.0f} CPU seconds of training steps each (Adam, constant lr {a.lr}, batches of {a.bs}), {a.n_test} Fashion-MNIST test images\n")
    print("| model | steps | train CPU (s) | wall (s) | zero-shot | i2t R@1 | i2t R@5 | i2t R@10 | t2i R@1 | t2i R@5 | t2i R@10 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for n, r in res.items():
        print(f"| {n} | {r['steps']} | {r['cpu']:.0f} | {r['wall']:.0f} | {r['zero_shot']:.3f} | "
              + " | ".join(f"{r[f'{d}@{k}']:.3f}" for d in ('i2t', 't2i') for k in (1, 5, 10)) + " |")
    print(f"\nchance: zero-shot 0.100; the whole run took {time.perf_counter() - t0:.0f} s")

if __name__ == '__main__': main()
