"""`ssl-pretrain --preset fast`: kNN accuracy on Fashion-MNIST against training time, next to the default run.

Target (issue 19): kNN >= 0.85 (k=200 over the 60,000 training images, the 10,000 test images: the README table's
protocol) within 10 minutes of pretraining on 2 CPU cores. Both runs evaluate after every epoch (`--curve`; the
evaluations are not counted in the training time), print one table per run, and draw both curves in one PNG.

    python bench/fast_preset.py [--threads 2] [--no-baseline] [--png bench/fast_preset.png] [--readme]
"""
import argparse, json, shutil, sys, time
from pathlib import Path
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT/'bench'))

def run(name, out, threads, **kwargs):
    from self_supervised.cli import ssl_pretrain
    t = time.time()
    ssl_pretrain(out=str(out), force=True, curve=True, threads=threads, probe=False, **kwargs)
    res = json.loads((out/'results.json').read_text())
    return dict(name=name, curve=res['curve'], args=res['args'], train_s=res['train_seconds'], wall_s=time.time() - t)

def plot(runs, path, target):
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in runs:
        ax.plot([p['seconds'] / 60 for p in r['curve']], [p['knn'] for p in r['curve']], 'o-', label=r['name'])
    ax.axhline(target, color='grey', ls='--', lw=1, label=f'target {target}')
    ax.axvline(10, color='grey', ls=':', lw=1)
    ax.set_xlabel('training time on 2 CPU cores (minutes; evaluations not counted)'); ax.set_ylabel('kNN accuracy (k=200), 10,000 test images')
    ax.set_title('Fashion-MNIST: what each minute of pretraining buys'); ax.grid(alpha=.3); ax.legend(loc='lower right')
    fig.tight_layout(); fig.savefig(path, dpi=110); plt.close(fig)

def table(r):
    a = r['args']
    rows = [f"| {p['epoch']} | {p['seconds'] / 60:.1f} | {p['knn']:.4f} |" for p in r['curve']]
    head = (f"**{r['name']}** ({a['algo']}, {a['arch']} width {a['width'] or 16}, {a['size']} px, batch {a['bs']}, lr {a['lr']}, "
            f"crops {a['min_scale']}-1, {a['epochs']} epochs, {a['precision']}{', channels last' if a['channels_last'] else ''})")
    return '\n'.join([head, '', '| epoch | training minutes | kNN accuracy |', '|---|---|---|', *rows])

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--no-baseline', action='store_true', help='only the preset (the default run takes about 5 more minutes)')
    p.add_argument('--png', default=str(ROOT/'bench'/'fast_preset.png'))
    p.add_argument('--out', default=str(ROOT/'bench_out'))
    p.add_argument('--readme', action='store_true', help='write the tables into nbs/index.ipynb and README.md')
    args = p.parse_args()
    out, target = Path(args.out), 0.85
    runs = [run('--preset fast', out/'fast_preset', args.threads, preset='fast')]
    if not args.no_baseline: runs.append(run('defaults (make demo)', out/'fast_preset_defaults', args.threads))
    plot(runs, args.png, target)
    fast = runs[0]
    end = fast['curve'][-1]
    verdict = (f"The preset reaches kNN {end['knn']:.4f} in {end['seconds'] / 60:.1f} minutes of training: the target (>= {target} "
               f"within 10 minutes) is {'met' if end['knn'] >= target and end['seconds'] <= 600 else 'NOT met'}.")
    md = '\n\n'.join([*map(table, runs), verdict + f" Curves: `{Path(args.png).relative_to(ROOT) if Path(args.png).is_relative_to(ROOT) else args.png}`. "
                      f"Command: `python bench/fast_preset.py --threads {args.threads}` ({sum(r['wall_s'] for r in runs) / 60:.0f} minutes with the evaluations)."])
    print('\n' + md + '\n')
    if args.readme:
        from readme import write_readme
        write_readme('fast', md)
