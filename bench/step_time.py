"""Time and peak memory of one training step of every SSL callback, as ratios to the bare encoder step, in one run.

The bare step is the encoder alone on one batch (forward, backward, Adam step), the least any method must pay.
Each callback's step is measured inside `Learner.fit` from `before_batch` to `after_batch` (views, key encoders,
queues and the loss included), with the demo's settings (small_resnet, batch 256, 28 px, Fashion-MNIST).
Each case runs in a fresh process; its peak memory is the growth of the process's resident memory during training
above what it held when training started (the data, the libraries and the model are left out).

    python bench/step_time.py [--algos simclr,moco] [--bs 256] [--steps 12] [--threads 2] [--arch small_resnet]

With `--split`, each step is split into the encoder work the method needs and the rest: forward hooks on the
encoder (and on its momentum copies) record each pass of a step (its input's shape, with or without gradients);
right after each step, outside its clock, a bare copy of the encoder makes the same passes (forward + backward
with gradients, forward alone without) and one Adam step: that is the step's needed work, measured next to it so
that the machine's drift cancels. The rest (augmentation, heads, loss, queues and banks, bookkeeping) is the step
minus that, as a fraction of its step, the median over the steps; the augmentation pipelines are timed on their
own. The passes are also shown in units of the bare batch (items x pixels).

    python bench/step_time.py --split --algos simclr,dcl,moco,nnclr,byol,simsiam,barlow_twins,vicreg [--arch resnet18]
"""
import argparse, collections, copy, json, resource, statistics, subprocess, sys, time
from pathlib import Path

def _status_mb(key):
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith(key + ':'): return int(line.split()[1]) / 1024

def _peak_reset():
    "Start a new peak: on Linux reset the high-water mark (the max RSS of a forked process starts at its parent's)"
    try:
        Path('/proc/self/clear_refs').write_text('5')
        return _status_mb('VmRSS')
    except OSError: return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def _peak_mb():
    try: return _status_mb('VmHWM')
    except OSError: return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def step_clock() -> tuple:
    "Callbacks `(clock, stop)` timing each training step: `clock` starts first in `before_batch`, `stop` ends last in `after_batch`; seconds in `clock.times`"
    from fastai.callback.core import Callback
    class Clock(Callback):
        order = -100
        def __init__(self): self.times, self.t0 = [], None
        def before_batch(self):
            if self.training: self.t0 = time.perf_counter()
    class Stop(Callback):
        order = 1000
        def __init__(self, clock): self.clock = clock
        def after_batch(self):
            if self.training and self.clock.t0 is not None: self.clock.times.append(time.perf_counter() - self.clock.t0)
    clock = Clock()
    return clock, Stop(clock)

def run_case(case, bs, steps, threads, arch='small_resnet', split=False):
    "One case in this process: 'bare' or an algorithm of ALGOS; returns the median step time (s) and the peak memory growth (MB)"
    import torch
    from self_supervised.registry import ALGOS, ssl_learner, algo_images
    from self_supervised.data import fashion_mnist, ssl_dls
    from self_supervised.layers import create_encoder
    torch.set_num_threads(threads); torch.manual_seed(0)
    ds = fashion_mnist()
    x = ds.train_x[:bs * steps]
    enc = create_encoder(arch, n_in=1, **(dict(width=16) if arch == 'small_resnet' else {}))
    if case == 'bare':
        opt = torch.optim.Adam(enc.parameters(), 1e-3)
        xb, ts, rss0 = x[:bs].float() / 255, [], _peak_reset()
        parts = dict(fb=[], f=[], opt=[])
        for _ in range(steps):
            t = time.perf_counter(); opt.zero_grad(); enc(xb).pow(2).mean().backward(); t1 = time.perf_counter(); opt.step(); t2 = time.perf_counter()
            ts.append(t2 - t); parts['fb'].append(t1 - t); parts['opt'].append(t2 - t1)
            with torch.no_grad(): t = time.perf_counter(); enc(xb); parts['f'].append(time.perf_counter() - t)
        return dict(step=statistics.median(ts[2:]), mem_mb=_peak_mb() - rss0, **{k: statistics.median(v[2:]) for k, v in parts.items()})
    spec = ALGOS[case]
    dls = ssl_dls(algo_images(case, x), algo_images(case, ds.test_x[:bs]), ds.train_y[:len(x)], ds.test_y[:bs], bs=bs, device='cpu',
                  with_idx=spec.with_idx)
    learn = ssl_learner(dls, case, enc)
    clock, stop = step_clock()
    learn.add_cbs([clock, stop])
    if split: aug_t, need, units = _split_callbacks(learn, enc, stop, bs)
    rss0 = _peak_reset()
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3)
    res = dict(step=statistics.median(clock.times[2:]), mem_mb=_peak_mb() - rss0)
    if not split: return res
    n, k = len(clock.times), len(aug_t) // len(clock.times)   # steps, pipeline calls per step
    # the rest as a fraction of its own step, the median over steps
    frac = statistics.median((t - nd) / t for t, nd in zip(clock.times[2:], need[2:]))
    return res | dict(need=statistics.median(need[2:]), rest_frac=frac, grad_units=units[-1][0], nograd_units=units[-1][1],
                      aug=statistics.median(sum(aug_t[i*k:(i+1)*k]) for i in range(2, n)))

def _split_callbacks(learn, enc, stop, bs) -> tuple:
    "Time `learn`'s augmentation pipelines and pair each training step with its needed encoder work; the lists they fill: `(aug_t, need, units)`"
    import torch
    from fastai.callback.core import Callback
    from self_supervised.callback import SSLCallback
    # the augmentation's share of the rest: each pipeline's calls in training steps, timed
    ssl_cb, aug_t = next(c for c in learn.cbs if isinstance(c, SSLCallback)), []
    class Timed:
        def __init__(self, p): self.p = p
        def __getattr__(self, k): return getattr(self.p, k)
        def __call__(self, *args, **kw):
            t = time.perf_counter(); out = self.p(*args, **kw)
            if learn.training: aug_t.append(time.perf_counter() - t)
            return out
    ssl_cb.aug_pipelines = [Timed(p) for p in ssl_cb.aug_pipelines]
    # the encoder's passes: every module of the encoder's class and size (the encoder, its momentum copies), each call's input shape
    bare = copy.deepcopy(enc).train()   # before the hooks, which it would copy
    passes, n_par = [], sum(p.numel() for p in enc.parameters())
    def count(m, inp, out):
        if learn.training: passes.append((torch.is_grad_enabled(), tuple(inp[0].shape)))   # validation passes are not part of the step
    for m in learn.model.modules():
        if type(m) is type(enc) and sum(p.numel() for p in m.parameters()) == n_par: m.register_forward_hook(count)
    # right after each step (outside its clock) the bare copy makes the same passes, forward + backward with gradients,
    # forward alone without, and one Adam step: each step is paired with its needed work, so the machine's drift between the two cancels
    need, units, opt, inputs = [], [], torch.optim.Adam(bare.parameters(), 1e-3), {}
    class Replay(Callback):
        order = stop.order + 1
        def after_batch(self):
            if not self.training: return
            t = time.perf_counter()
            for grad, shape in passes:
                xb = inputs.setdefault(shape, torch.randn(shape))
                if grad: bare(xb).pow(2).mean().backward()
                else:
                    with torch.no_grad(): bare(xb)
            opt.step(); opt.zero_grad()
            need.append(time.perf_counter() - t)
            units.append([sum(s[0] * s[-1] * s[-2] for g, s in passes if g == grad) / (bs * 28 * 28) for grad in (True, False)])
            passes.clear()
    learn.add_cb(Replay())
    return aug_t, need, units

def measure(case, bs=256, steps=12, threads=2, arch='small_resnet', split=False) -> dict:
    "Run `run_case` in a fresh process (so that its max RSS is its own)"
    out = subprocess.run([sys.executable, __file__, '--case', case, '--bs', str(bs), '--steps', str(steps), '--threads', str(threads), '--arch', arch]
                         + ['--split'] * split,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--algos'); ap.add_argument('--bs', type=int, default=256); ap.add_argument('--steps', type=int, default=12)
    ap.add_argument('--threads', type=int, default=2); ap.add_argument('--case')
    ap.add_argument('--arch', default='small_resnet'); ap.add_argument('--split', action='store_true', help='split each step into needed encoder work and the rest')
    a = ap.parse_args()
    if a.case:   # child process
        print(json.dumps(run_case(a.case, a.bs, a.steps, a.threads, a.arch, a.split))); return
    from self_supervised.registry import ALGOS
    bare = measure('bare', a.bs, a.steps, a.threads, a.arch)
    print(f"bare encoder step ({a.arch}, bs={a.bs}, 28 px, {a.threads} threads): {bare['step']*1e3:.0f} ms (forward + backward {bare['fb']*1e3:.0f}, "
          f"forward without gradients {bare['f']*1e3:.0f}, Adam {bare['opt']*1e3:.0f}), peak +{bare['mem_mb']:.0f} MB")
    if a.split:
        print("| callback | step (ms) | encoder passes (with / without gradients, bare batches) | needed encoder work (ms) | the rest (ms): augmentation + heads, loss, bookkeeping | the rest / step | augmentation / step |")
        print("|---|---|---|---|---|---|---|")
        for algo in (a.algos.split(',') if a.algos else ALGOS):
            r = measure(algo, a.bs, a.steps, a.threads, a.arch, split=True)
            rest = r['step'] - r['need']
            print(f"| {algo} | {r['step']*1e3:.0f} | {r['grad_units']:.2f} / {r['nograd_units']:.2f} | {r['need']*1e3:.0f} | {rest*1e3:.0f}: "
                  f"{r['aug']*1e3:.0f} + {(rest - r['aug'])*1e3:.0f} | {r['rest_frac']:.0%} | {r['aug']/r['step']:.0%} |", flush=True)
        return
    print("| callback | step (ms) | step / bare encoder step | peak memory (MB) | peak memory / bare |")
    print("|---|---|---|---|---|")
    for algo in (a.algos.split(',') if a.algos else ALGOS):
        r = measure(algo, a.bs, a.steps, a.threads)
        print(f"| {algo} | {r['step']*1e3:.0f} | {r['step']/bare['step']:.2f} | {r['mem_mb']:.0f} | {r['mem_mb']/bare['mem_mb']:.1f} |", flush=True)

if __name__ == '__main__': main()
