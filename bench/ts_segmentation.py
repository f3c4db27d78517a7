"""Action segmentation with few labels: does an SSL task as an auxiliary loss help? (dlc2action's way of using them)

Data: `synthetic_behaviour` clips (5 keypoints, 4 behaviours, segments of varying length blended at the boundaries,
keypoint noise, 7% of the keypoints missing, 5% of the segments unannotated); `--n-train` training clips, of which
only `--keep` (default 10%, whole clips: `hide_labels(by='clip')`) keep their per-frame labels, and `--n-test`
fully annotated test clips. For every seed, one run per arm: the per-frame cross-entropy on the labelled frames
alone ('supervised'), and the same plus one of the registry's sequence tasks on every clip (weight `--weight`,
`segmentation_learner`). The arms of a seed are paired: the same labelled clips, the same initial encoder and head,
the same batch order. Reported on the test clips: frame accuracy, macro F1, edit score and F1@0.5 (Lea et al.), as
mean ± sd over seeds, and the difference to 'supervised' paired by seed (mean ± sd, and the seeds where it is > 0).

    python bench/ts_segmentation.py                     # every task, 3 seeds, 2 processes: 39 runs, 3.5 min on 2 cores
    python bench/ts_segmentation.py --seeds 5           # the table of nbs/69b_ts_segmentation.ipynb (11 min on 2 cores shared with other jobs)
    python bench/ts_segmentation.py --tasks ts_masked_joints,ts_tcc --weight 1
"""
import argparse, math, os, sys, time
from concurrent.futures import ProcessPoolExecutor
import numpy as np

METRICS = ('frame_acc', 'f1_macro', 'edit', 'f1@0.5')

def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--tasks', default=None, help="comma-separated sequence recipes (default: every one that is a single task)")
    p.add_argument('--seeds', type=int, default=3)
    p.add_argument('--keep', type=float, default=0.1, help='fraction of the training labels kept')
    p.add_argument('--by', default='clip', choices=('clip', 'frame'), help='hide whole clips or single frames')
    p.add_argument('--weight', type=float, default=0.2, help="each task's weight (dlc2action's tests: 0.2)")
    p.add_argument('--epochs', type=int, default=30)
    p.add_argument('--lr', type=float, default=3e-3)
    p.add_argument('--width', type=int, default=32)
    p.add_argument('--n-train', type=int, default=256)
    p.add_argument('--n-test', type=int, default=128)
    p.add_argument('--frames', type=int, default=64)
    p.add_argument('--bs', type=int, default=32)
    p.add_argument('--workers', type=int, default=2, help='processes (one torch thread each)')
    return p.parse_args(argv)

_DATA = {}
def _data(a):
    from self_supervised.timeseries.segmentation import synthetic_behaviour
    key = (a.n_train, a.n_test, a.frames)
    if key not in _DATA:
        _DATA[key] = synthetic_behaviour(n=a.n_train, n_frames=a.frames, seed=0), synthetic_behaviour(n=a.n_test, n_frames=a.frames, seed=1)
    return _DATA[key]

def run(job):
    "Test metrics of one arm (None: supervised only) for one seed"
    a, seed, task = job
    import torch
    torch.set_num_threads(1)
    from fastai.torch_core import set_seed
    import fastai.callback.schedule   # fit_one_cycle
    from self_supervised.timeseries.data import ts_dls, blank_missing
    from self_supervised.timeseries.segmentation import (hide_labels, segmentation_learner, frame_accuracy, frame_f1, edit_score,
                                                          segmental_f1)
    tr, te = _data(a)
    y = hide_labels(tr.y, a.keep, a.by, seed=seed)
    dls = lambda: ts_dls(tr.x, te.x[:a.bs], y, te.y[:a.bs], bs=a.bs, device='cpu')
    t0 = time.time()
    set_seed(seed)   # the same encoder and head in every arm: they are built before the task's model
    learn = segmentation_learner(dls(), len(tr.classes), [] if task is None else [task], weights=a.weight, width=a.width,
                                 keypoints=tr.keypoints, pairs=tr.pairs, metrics=[])
    set_seed(seed); learn.dls = dls()   # the same batch order in every arm
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(a.epochs, a.lr)
    model = learn.model.eval()
    with torch.no_grad(): out = model(blank_missing(te.x)[0])
    res = dict(frame_acc=frame_accuracy(out, te.y), f1_macro=frame_f1(out, te.y), edit=edit_score(out, te.y), **{'f1@0.5': segmental_f1(out, te.y, 0.5)})
    return seed, task, {k: float(v) for k, v in res.items()}, time.time() - t0

def ms(v): return f"{np.mean(v):.3f} ± {np.std(v, ddof=1):.3f}" if len(v) > 1 else f"{np.mean(v):.3f}"
def dms(v): return f"{np.mean(v):+.3f} ± {np.std(v, ddof=1):.3f} ({sum(x > 0 for x in v)}/{len(v)})" if len(v) > 1 else f"{np.mean(v):+.3f}"

def table(res, tasks, seeds) -> str:
    "Markdown: per arm, mean ± sd of each metric, and the difference to 'supervised' paired by seed"
    head = ['arm', *METRICS, *[f'Δ {m}' for m in METRICS]]
    rows = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for t in [None] + tasks:
        cells = [ms([res[s, t][m] for s in seeds]) for m in METRICS]
        diffs = ['' if t is None else dms([res[s, t][m] - res[s, None][m] for s in seeds]) for m in METRICS]
        rows.append('| ' + ' | '.join(['supervised' if t is None else f'+ `{t}`', *cells, *diffs]) + ' |')
    return '\n'.join(rows)

def main(argv=None):
    a = get_args(argv)
    from self_supervised.timeseries.registry import TS_ALGOS
    from self_supervised.timeseries.segmentation import auxiliary_tasks
    from self_supervised.timeseries.data import ts_dls
    from self_supervised.timeseries.encoders import create_ts_encoder
    tr, te = _data(a)
    if a.tasks: tasks = a.tasks.split(',')
    else:   # every recipe that is one task
        tasks = list(auxiliary_tasks(ts_dls(tr.x[:a.bs], None, tr.y[:a.bs], bs=a.bs, device='cpu'), None, create_ts_encoder(n_in=tr.x.shape[1], width=8),
                                     tr.keypoints, tr.pairs)[1])
    for t in tasks:
        if t not in TS_ALGOS: sys.exit(f"Unknown task {t!r}: choose among {', '.join(TS_ALGOS)}")
    seeds = list(range(a.seeds))
    jobs = [(a, s, t) for s in seeds for t in [None] + tasks]
    print(f"{len(jobs)} runs: {a.n_train} training clips of {a.frames} frames, {a.keep:.0%} of the labels kept (by {a.by}), "
          f"{a.epochs} epochs, weight {a.weight}, seeds {seeds}", flush=True)
    t0, res = time.time(), {}
    with ProcessPoolExecutor(a.workers) as ex:
        for seed, task, r, dt in ex.map(run, jobs):
            res[seed, task] = r
            print(f"  seed {seed} {task or 'supervised':26s} " + ' '.join(f"{k} {v:.3f}" for k, v in r.items()) + f"  ({dt:.0f}s)", flush=True)
    print(f"\n{time.time() - t0:.0f} s\n")
    print(table(res, tasks, seeds))

if __name__ == '__main__': main()
