"""Sequence SSL on real recordings: a probe on frozen clip embeddings (SSL encoder vs the same encoder at
initialisation) and fine-tuning with a few labels (from the SSL encoder vs from scratch), over every
classification data set the aeon wheel ships.

The data are the UEA/UCR `.ts` files shipped in the aeon wheel (`pip install --no-deps aeon`; nothing is
downloaded): by default every one whose header says `@classLabel true` (`classification_sets()`: the
equal-length `_eq` version where the wheel has one, the others as they are; the rest of that folder is
forecasting, regression or anomaly data). For every seed: a random TCN encoder; a copy pretrained with each
task of `--tasks` on all training clips without their labels, with `ts_learner`'s defaults for the data's
kind (`ts_data_kind`: univariate, sensors or pose); kNN (k=5) and logistic-regression probe accuracy on the
test clips for both; then both fine-tuned on `--frac` of the training labels (stratified, at least one clip
per class; a linear head trained alone, then with the encoder; no augmentation) and tested. Prints one
markdown table, mean ± standard deviation over the seeds and the gains paired by seed (same initialisation,
same labelled clips), each row marked by whether the target holds (SSL linear probe >= random);
`--readme` writes it into nbs/index.ipynb and README.md.

    python bench/ts_compare.py [--readme]                 # every aeon classification set, ts_contrastive, 4 seeds (~15 min, 1 thread)
    python bench/ts_compare.py --datasets GunPoint,ArrowHead --seeds 4
    python bench/ts_compare.py --tasks ts_contrastive,ts_masked_frames --datasets JapaneseVowels_eq
"""
import argparse, copy, json, math, sys, time, warnings
from pathlib import Path
import numpy as np
import torch
from fastai.learner import Learner
from fastai.optimizer import Adam
from fastai.torch_core import set_seed
import fastai.callback.schedule   # fit_one_cycle
from self_supervised.evaluation import evaluate_encoder
from self_supervised.layers import ssl_splitter
from self_supervised.timeseries.data import ts_dataset, ts_dls, ts_datasets_available, find_ts_data
from self_supervised.timeseries.augment import ts_data_kind
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

def probe(enc, ds):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        r = evaluate_encoder(enc, ds.train_x, ds.train_y, ds.test_x, ds.test_y, k=5)
    return r['knn'], r['linear']

def classification_sets() -> list:
    "The aeon wheel's classification data sets (header `@classLabel true`), each under its equal-length `_eq` name where there is one"
    names = ts_datasets_available()
    cls = [n for n in names if read_ts_header(find_ts_data(n)/f'{n}_TRAIN.ts').get('classlabel', 'false').lower().startswith('true')]
    return [n for n in cls if f'{n}_eq' not in cls]

def read_ts_header(fn) -> dict:
    "The `@key value` lines of a `.ts` file before `@data` (the data are not read)"
    h = {}
    with open(fn) as f:
        for line in f:
            line = line.strip()
            if not line.startswith('@'): continue
            k, _, v = line[1:].partition(' ')
            if k.lower() == 'data': break
            h[k.lower()] = v.strip()
    return h

def pm(a): return f"{a.mean():.3f} ± {a.std():.3f}"

def run(name, args):
    try: ds = ts_dataset(name)
    except ValueError as e:
        if 'different lengths' not in str(e): raise
        ds = ts_dataset(name, pad='edge')   # unequal lengths and no `_eq` version: each series' last frame repeated
    n, f, t = ds.train_x.shape
    bs = min(args.bs, n // 4)
    epochs = max(1, math.ceil(args.ssl_steps / (n // bs)))   # a budget of steps: the long clips (ACSF1) get as many as the short ones
    res = {k: [] for k in ['random'] + args.tasks}
    t0 = time.time()
    for seed in range(args.seeds):
        set_seed(seed)
        enc0 = create_ts_encoder(args.arch, n_in=f, width=args.width)
        idx = labelled_subset(ds.train_y, args.frac, seed)
        res['random'].append((*probe(enc0, ds), finetune(copy.deepcopy(enc0), ds, idx, args.ft_steps, args.ft_lr, seed)))
        for task in args.tasks:
            set_seed(seed)
            enc = copy.deepcopy(enc0)
            y = torch.full((n,), -1) if task != 'ts_multitask' else torch.where(torch.isin(torch.arange(n), idx), ds.train_y, -1)
            dls = ts_dls(ds.train_x, ds.test_x, y, ds.test_y, bs=bs, device='cpu')
            learn = ts_learner(dls, task, arch=enc, recipe=args.recipe)   # the defaults of the data's kind unless `--recipe` changes them
            with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(epochs, args.lr)
            res[task].append((*probe(enc, ds), finetune(copy.deepcopy(enc), ds, idx, args.ft_steps, args.ft_lr, seed)))
    r = np.array(res['random'])
    rows = []
    for task in args.tasks:
        s = np.array(res[task]); dl, df = s[:, 1] - r[:, 1], s[:, 2] - r[:, 2]
        ok = '✓' if dl.mean() >= 0 else '✗'
        rows.append(dict(task=task, dl=dl.mean(), df=df.mean(), ok=ok, md=
            f"| {name} | {ts_data_kind(f)} | {n}/{len(ds.test_x)} × {f} × {t}, {len(ds.classes)} | {pm(r[:, 0])} | {pm(s[:, 0])} | {pm(r[:, 1])} | {pm(s[:, 1])} | "
            f"{dl.mean():+.3f} ± {dl.std():.3f} {ok} | {pm(r[:, 2])} | {pm(s[:, 2])} | {df.mean():+.3f} ± {df.std():.3f} ({(df > 0).sum()}/{len(df)}) |"
            + (f" `{task}` |" if len(args.tasks) > 1 else '')))
    print(f"  {name}: {time.time() - t0:.0f}s  " + '; '.join(f"{x['task']} dlin {x['dl']:+.3f} dft {x['df']:+.3f}" for x in rows), flush=True)
    return rows

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--datasets', default=None, help='comma-separated (default: every classification set of the aeon wheel, `classification_sets()`)')
    p.add_argument('--tasks', default='ts_contrastive', help=f"comma-separated names of TS_ALGOS: {', '.join(TS_ALGOS)}")
    p.add_argument('--seeds', type=int, default=4)
    p.add_argument('--ssl-steps', type=int, default=300, help='SSL steps (as many epochs as that takes)')
    p.add_argument('--lr', type=float, default=3e-3, help='SSL learning rate (one cycle)')
    p.add_argument('--bs', type=int, default=8, help='SSL batch size (at most a quarter of the training clips)')
    p.add_argument('--frac', type=float, default=0.1, help='fraction of the training labels for fine-tuning')
    p.add_argument('--ft-steps', type=int, default=200)
    p.add_argument('--ft-lr', type=float, default=1e-3, help='fine-tuning learning rate (the linear probe before it: 10 times more)')
    p.add_argument('--recipe', type=json.loads, default=None,
                   help='settings that replace the defaults, as JSON, e.g. \'{"temp": 0.5, "augs": {"crop": null}}\'')
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
    names = args.datasets.split(',') if args.datasets else classification_sets()
    t0 = time.time()
    rows = [row for name in names for row in run(name, args)]
    cmd = ('python bench/ts_compare.py' + (f' --datasets {args.datasets}' if args.datasets else '') + f" --tasks {','.join(args.tasks)} --seeds {args.seeds} "
           f"--ssl-steps {args.ssl_steps} --lr {args.lr:g} --bs {args.bs} --frac {args.frac} --ft-steps {args.ft_steps}"
           + (f" --recipe '{json.dumps(args.recipe)}'" if args.recipe else ''))
    head = ("| data set | kind | train/test × features × frames, classes | kNN random | kNN SSL | linear random | linear SSL | linear gain (SSL ≥ random?) "
            f"| fine-tuned from scratch, {args.frac:.0%} labels | fine-tuned from SSL | fine-tuning gain (seeds ahead) |" + (' task |' if len(args.tasks) > 1 else ''))
    md = '\n'.join([head, '|' + '---|' * (head.count('|') - 1)] + [r['md'] for r in rows])
    held = sum(r['ok'] == '✓' for r in rows)
    md += (f"\n\nLinear probe of the SSL encoder at least the random one's: {held} of {len(rows)} rows. Mean fine-tuning gain over the rows: "
           f"{np.mean([r['df'] for r in rows]):+.3f}. Gains are paired by seed (the same initialisation and labelled clips); mean ± sd over "
           f"{args.seeds} seeds; {args.arch} width {args.width}; {args.ssl_steps} SSL steps in batches of {args.bs} (a quarter of the training clips "
           f"if fewer), the defaults of `ts_learner` for the data's kind; {args.ft_steps} fine-tuning steps. Command: `{cmd}` "
           f"({time.time() - t0:.0f} s on one thread).")
    print('\n' + md + '\n', flush=True)
    if args.readme: write_readme('ts', md)
