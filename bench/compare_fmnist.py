"""Every algorithm of the registry on Fashion-MNIST with one CPU budget, in one Markdown table (`make bench`).

Each algorithm runs `ssl-pretrain` with the same encoder (small_resnet, width 16), data (`--n-train` images, batch
256, 28 px), schedule (Adam, one-cycle to 1e-2, `--epochs`) and threads, with its own recipe from
`self_supervised.registry.ALGOS`. Columns: kNN (k=200) and linear-probe accuracy of the frozen encoder on the 10,000 test
images, the pretraining time, and (from `bench/step_time.py`, each in a fresh process) the time and peak memory of one
training step relative to the bare encoder's forward+backward+Adam step on the same batch. The `--top` methods by kNN
are run again with more seeds and reported as mean +- standard deviation. `--readme` writes the table into
`nbs/index.ipynb` (between the `bench:table` markers) and regenerates README.md.

    python bench/compare_fmnist.py [--algos simclr,moco] [--epochs 2] [--n-train 12000] [--seeds 3] [--top 3] [--no-steps] [--readme]
"""
import argparse, json, statistics, sys
from pathlib import Path
from self_supervised.cli import ssl_pretrain
from self_supervised.registry import ALGOS
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'bench'))
from step_time import measure
from readme import write_readme

def pretrain(algo, a, seed) -> dict:
    out = Path(a.out)/f'{algo}_seed{seed}'
    ssl_pretrain(algo=algo, epochs=a.epochs, n_train=a.n_train, seed=seed, out=str(out), threads=a.threads)
    return json.loads((out/'results.json').read_text())

def _acc(vals):
    if len(vals) == 1: return f"{vals[0]:.4f}"
    return f"{statistics.mean(vals):.4f} ± {statistics.stdev(vals):.4f}"

def table(rows, bare, a) -> str:
    first = next((runs[0] for algo, runs in rows.items() if not ALGOS[algo].rgb), next(iter(rows.values()))[0])
    rnd = first['results']['random']
    steps = bare is not None
    lines = ["| encoder | kNN accuracy | linear-probe accuracy | pretraining time |" + (" step / bare step | peak memory / bare |" if steps else ""),
             "|---|---|---|---|" + ("---|---|" if steps else ""),
             f"| random (same architecture) | {rnd['knn']:.4f} | {rnd['linear']:.4f} | - |" + (" - | - |" if steps else "")]
    for algo, runs in sorted(rows.items(), key=lambda kv: -statistics.mean(r['results'][kv[0]]['knn'] for r in kv[1])):
        res = [r['results'][algo] for r in runs]
        lab = runs[0]['args'].get('labelled')
        r = ALGOS[algo]
        name = r.title + (" (captions from the labels)" if r.group == 'image-text' else '') + (f" ({lab:.0%} of the labels)" if lab is not None else '')
        if r.rgb:   # trained and evaluated on tinted images: its own random baseline
            r0 = runs[0]['results']['random']
            name += f" (tinted colour images; random encoder {r0['knn']:.4f} / {r0['linear']:.4f})"
        if len(runs) > 1: name += f" ({len(runs)} seeds)"
        t = statistics.mean(r['train_seconds'] for r in runs)
        line = f"| {name} | {_acc([r['knn'] for r in res])} | {_acc([r['linear'] for r in res])} | {t:.0f} s |"
        if steps: line += f" {runs[0]['step']['step'] / bare['step']:.2f} | {runs[0]['step']['mem_mb'] / bare['mem_mb']:.1f} |"
        lines.append(line)
    budget = (f"Budget: {a.n_train or 60000} training images, {a.epochs} epoch(s) of batch 256, seed 0"
              + (f"; the top {a.top} by kNN with {a.seeds} seeds (mean ± standard deviation)" if a.seeds > 1 and a.top else "")
              + (f"; bare encoder step {bare['step']*1e3:.0f} ms, peak memory +{bare['mem_mb']:.0f} MB" if steps else "")
              + f". Command: `python bench/compare_fmnist.py --epochs {a.epochs} --n-train {a.n_train} --seeds {a.seeds} --top {a.top}`.")
    return '\n'.join(lines) + '\n\n' + budget

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--algos', default=','.join(ALGOS)); ap.add_argument('--epochs', type=int, default=2)
    # 12,000 images keep the 26 algorithms (and the reruns of the top 3) within an hour on 2 cores; 20,000 took 79 min
    ap.add_argument('--n-train', type=int, default=12000, help="training images (60000: all of them)")
    ap.add_argument('--seeds', type=int, default=3, help="seeds for the top methods"); ap.add_argument('--top', type=int, default=3)
    ap.add_argument('--out', default='bench_out/compare'); ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--no-steps', action='store_true', help="skip the step time and memory columns")
    ap.add_argument('--readme', action='store_true', help="write the table into nbs/index.ipynb and README.md")
    a = ap.parse_args()
    algos = a.algos.split(',')
    unknown = [x for x in algos if x not in ALGOS]
    if unknown: sys.exit(f"Unknown --algos {unknown}: choose from {', '.join(ALGOS)}")
    bare = None if a.no_steps else measure('bare', threads=a.threads)
    rows = {}
    for algo in algos:
        r = pretrain(algo, a, 0)
        if bare: r['step'] = measure(algo, threads=a.threads)
        rows[algo] = [r]
    top = sorted(rows, key=lambda x: -rows[x][0]['results'][x]['knn'])[:a.top]
    for algo in top: rows[algo] += [pretrain(algo, a, s) for s in range(1, a.seeds)]
    md = table(rows, bare, a)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out)/'table.md').write_text(md + '\n')
    print('\n' + md)
    if a.readme: write_readme('table', md)

if __name__ == '__main__': main()
