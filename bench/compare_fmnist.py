"""Every algorithm of `ssl-pretrain` on Fashion-MNIST with the same CPU budget, in one Markdown table.

Each algorithm runs with the demo's defaults (small_resnet, 3 epochs of batch 256, Adam one-cycle to 1e-2, 2 threads)
and its own temperature (see `self_supervised.cli.ALGOS`). Prints kNN and linear-probe accuracy, the pretraining
time, and (from `bench/step_time.py`, each in a fresh process) the time and peak memory of one training step
relative to the bare encoder's forward+backward on the same batch.

    python bench/compare_fmnist.py [--algos simclr,dcl,moco] [--epochs 3] [--no-steps] [--out bench_out/compare]
"""
import argparse, json, sys
from pathlib import Path
from self_supervised.cli import ssl_pretrain, ALGOS
sys.path.insert(0, str(Path(__file__).parent))
from step_time import measure

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--algos', default=','.join(ALGOS)); ap.add_argument('--epochs', type=int, default=3)
    ap.add_argument('--out', default='bench_out/compare'); ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--no-steps', action='store_true', help="skip the step time and memory columns")
    a = ap.parse_args()
    rows = {}
    bare = None if a.no_steps else measure('bare', threads=a.threads)
    for algo in a.algos.split(','):
        out = Path(a.out)/algo
        ssl_pretrain(algo=algo, epochs=a.epochs, out=str(out), threads=a.threads)
        r = json.loads((out/'results.json').read_text())
        if bare: r['step'] = measure(algo, threads=a.threads)
        (out/'results.json').write_text(json.dumps(r, indent=2))
        rows[algo] = r
    rnd = next(iter(rows.values()))['results']['random']
    step_cols = '' if a.no_steps else ' step / bare encoder step | peak memory / bare |'
    print(f"\n| encoder | kNN accuracy | linear-probe accuracy | pretraining time |{step_cols}")
    print("|---|---|---|---|" + ('' if a.no_steps else '---|---|'))
    print(f"| random (same architecture) | {rnd['knn']:.4f} | {rnd['linear']:.4f} | - |" + ('' if a.no_steps else ' 1 | 1 |'))
    for algo, r in rows.items():
        res = r['results'][algo]
        lab = r['args'].get('labelled')
        name = algo + (f" ({lab:.0%} of the labels)" if lab is not None else '')
        steps = '' if a.no_steps else f" {r['step']['step'] / bare['step']:.2f} | {r['step']['mem_mb'] / bare['mem_mb']:.1f} |"
        print(f"| {name} | {res['knn']:.4f} | {res['linear']:.4f} | {r['train_seconds']:.0f} s |{steps}")
    if bare: print(f"\nbare encoder step: {bare['step']*1e3:.0f} ms, peak memory +{bare['mem_mb']:.0f} MB")

if __name__ == '__main__': main()
