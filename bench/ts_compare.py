"""Sequence SSL on real recordings: a probe on frozen clip embeddings (SSL encoder vs the same encoder at
initialisation) and fine-tuning with a few labels (from the SSL encoder vs from scratch).

The data are the UEA/UCR `.ts` files shipped in the aeon wheel (`pip install --no-deps aeon`; nothing is
downloaded). For every seed: a random TCN encoder; a copy pretrained with each task of `--tasks` on all
training clips without their labels; kNN (k=5) and logistic-regression probe accuracy on the test clips
for both, and a probe trained on `--frac` of the training labels only (stratified, at least one clip per
class); then both fine-tuned on those labels (a linear head trained alone, then with the encoder; no
augmentation) and tested. Prints one markdown table per data set, mean ± standard deviation over the
seeds, and the fine-tuning gain paired by seed (same initialisation, same labelled clips); `--readme` writes
the tables into nbs/index.ipynb and README.md.

    python bench/ts_compare.py [--readme]                        # JapaneseVowels_eq, ts_contrastive, 6 seeds (~2-3 min)
    python bench/ts_compare.py --tasks ts_contrastive,ts_masked_frames,ts_pairwise_circle --datasets JapaneseVowels_eq
"""
import argparse, copy, sys, time, warnings
from pathlib import Path
import numpy as np
import torch
from fastai.learner import Learner
from fastai.optimizer import Adam
from fastai.torch_core import set_seed
import fastai.callback.schedule   # fit_one_cycle
from self_supervised.evaluation import evaluate_encoder, extract_features, linear_probe
from self_supervised.layers import ssl_splitter
from self_supervised.timeseries.data import ts_dataset, ts_dls
from self_supervised.timeseries.encoders import create_ts_encoder, create_seq_model
from self_supervised.timeseries.multitask import masked_cross_entropy
from self_supervised.timeseries.registry import TS_ALGOS, ts_learner
sys.path.insert(0, str(Path(__file__).resolve().parent))
from readme import write_readme

def labelled_subset(y, frac, seed):
    "Indices of `frac` of the clips of each class (at least one), drawn with `seed`"
    g = torch.Generator().manual_seed(seed)
    idx = []
    for c in range(int(y.max()) + 1):
        cl = torch.nonzero(y == c).flatten()
        idx.append(cl[torch.randperm(len(cl), generator=g)][:max(1, round(frac * len(cl)))])
    return torch.cat(idx)

def finetune(enc, ds, idx, steps, lr, seed):
    "Test accuracy of `enc` with a linear head fine-tuned on the clips `idx` (full batches): `steps // 2` steps of the head alone, then as many of both"
    set_seed(seed)   # the same head initialisation and batch order for every encoder: the arms differ by the encoder only
    x, y = ds.train_x[idx], ds.train_y[idx]
    model = create_seq_model(enc, len(ds.classes), nlayers=1)
    dls = ts_dls(x, ds.test_x[:64], y, ds.test_y[:64], bs=min(64, len(x)), device='cpu')
    learn = Learner(dls, model, loss_func=masked_cross_entropy, opt_func=Adam, splitter=ssl_splitter)
    n = max(1, steps // 2 // len(dls.train))
    with learn.no_bar(), learn.no_logging():
        # linear probe then fine-tuning (LP-FT, Kumar et al., 2022): the best of the protocols we tried for both arms
        learn.freeze(); learn.fit_one_cycle(n, 10 * lr)
        learn.unfreeze(); learn.fit_one_cycle(n, lr)
    model.eval()
    with torch.no_grad(): return (model(ds.test_x).argmax(1) == ds.test_y).float().mean().item()

def few_label_probe(enc, ds, idx):
    "Logistic-regression accuracy of frozen clip embeddings trained on the labelled clips `idx` only"
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        tr, te = extract_features(enc, ds.train_x[idx]), extract_features(enc, ds.test_x)
        return linear_probe(tr, ds.train_y[idx], te, ds.test_y)

def probe(enc, ds):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        r = evaluate_encoder(enc, ds.train_x, ds.train_y, ds.test_x, ds.test_y, k=5)
    return r['knn'], r['linear']

def run(name, args):
    ds = ts_dataset(name)
    n, f, t = ds.train_x.shape
    bs = min(args.bs, n // 4)
    res = {k: [] for k in ['random'] + args.tasks}
    t0 = time.time()
    for seed in range(args.seeds):
        set_seed(seed)
        enc0 = create_ts_encoder(args.arch, n_in=f, width=args.width)
        idx = labelled_subset(ds.train_y, args.frac, seed)
        res['random'].append((*probe(enc0, ds), few_label_probe(enc0, ds, idx), finetune(copy.deepcopy(enc0), ds, idx, args.ft_steps, args.ft_lr, seed)))
        for task in args.tasks:
            set_seed(seed)
            enc = copy.deepcopy(enc0)
            y = torch.full((n,), -1) if task != 'ts_multitask' else torch.where(torch.isin(torch.arange(n), idx), ds.train_y, -1)
            dls = ts_dls(ds.train_x, ds.test_x, y, ds.test_y, bs=bs, device='cpu')
            learn = ts_learner(dls, task, arch=enc)
            with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(args.epochs, args.lr)
            res[task].append((*probe(enc, ds), few_label_probe(enc, ds, idx), finetune(copy.deepcopy(enc), ds, idx, args.ft_steps, args.ft_lr, seed)))
        print(f"  {name} seed {seed} done ({time.time() - t0:.0f}s)", flush=True)
    n_lab = len(labelled_subset(ds.train_y, args.frac, 0))
    lines = [f"| {name} | kNN (k=5), frozen | linear probe, frozen | probe, {args.frac:.0%} of the labels | fine-tuned, {args.frac:.0%} of the labels |",
             "|---|---|---|---|---|"]
    for k, v in res.items():
        a = np.array(v)
        label = 'random encoder / from scratch' if k == 'random' else f'`{k}`'
        lines.append(f"| {label} | " + " | ".join(f"{a[:, j].mean():.3f} ± {a[:, j].std():.3f}" for j in range(4)) + " |")
    notes = []
    for k in args.tasks:   # paired by seed: same initialisation, same labelled clips
        d = np.array(res[k])[:, 3] - np.array(res['random'])[:, 3]
        notes.append(f"`{k}` fine-tuned minus from scratch, paired by seed: {d.mean():+.3f} ± {d.std():.3f} "
                     f"(ahead in {(d > 0).sum()} of {len(d)} seeds)")
    md = '\n'.join(lines) + '\n\n' + '; '.join(notes) + (
        f". {n} training / {len(ds.test_x)} test clips of {f} features x {t} frames, {len(ds.classes)} classes; {args.arch} width {args.width}; "
        f"{args.epochs} epochs of SSL in batches of {bs}; {n_lab} labelled clips, {args.ft_steps} fine-tuning steps; mean ± sd over "
        f"{args.seeds} seeds. Command: `python bench/ts_compare.py --datasets {name} --tasks {','.join(args.tasks)} --seeds {args.seeds} "
        f"--epochs {args.epochs} --frac {args.frac} --ft-steps {args.ft_steps}` ({time.time() - t0:.0f} s).")
    print('\n' + md + '\n', flush=True)
    res['md'] = md
    return res

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--datasets', default='JapaneseVowels_eq', help='comma-separated; BasicMotions is solved by a random encoder (kNN 1.0)')
    p.add_argument('--tasks', default='ts_contrastive', help=f"comma-separated names of TS_ALGOS: {', '.join(TS_ALGOS)}")
    p.add_argument('--seeds', type=int, default=6)
    p.add_argument('--epochs', type=int, default=100, help='SSL epochs')
    p.add_argument('--lr', type=float, default=3e-3, help='SSL learning rate (one cycle)')
    p.add_argument('--bs', type=int, default=32, help='SSL batch size (at most a quarter of the training clips)')
    p.add_argument('--frac', type=float, default=0.1, help='fraction of the training labels for fine-tuning')
    p.add_argument('--ft-steps', type=int, default=200)
    p.add_argument('--ft-lr', type=float, default=1e-3, help='fine-tuning learning rate (the linear probe before it: 10 times more)')
    p.add_argument('--arch', default='tcn')
    p.add_argument('--width', type=int, default=32)
    # one thread by default: these convolutions are small, and two threads on two busy cores are slower than one
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--readme', action='store_true', help='write the tables into nbs/index.ipynb and README.md')
    args = p.parse_args()
    args.tasks = [t for t in args.tasks.split(',') if t]
    bad = [t for t in args.tasks if t not in TS_ALGOS]
    if bad: raise SystemExit(f"Unknown --tasks {bad}: choose from {', '.join(TS_ALGOS)}")
    torch.set_num_threads(args.threads)
    mds = [run(name, args)['md'] for name in args.datasets.split(',')]
    if args.readme: write_readme('ts', '\n\n'.join(mds))
