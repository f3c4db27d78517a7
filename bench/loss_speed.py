"""Speed and peak memory of the losses at 2N = 8192 embeddings of D = 128 on the CPU.

Each loss runs forward and backward; its time and extra peak memory (max RSS of a fresh process, minus the same
process's RSS before the loss) are printed next to a baseline measured the same way. For the contrastive losses
(`--family contrastive`) the baseline is the bare core every such loss needs, one (2N x 2N) similarity matrix and a
cross-entropy over it; for Barlow Twins (`--family barlow`, also at `--d 2048`, the paper's projector) it is
lightly's `BarlowTwinsLoss`, written out below as lightly computes it. Ratios are loss / baseline.

    python bench/loss_speed.py [--family contrastive|barlow] [--n 4096] [--d 128] [--reps 5] [--threads 2]
"""
import argparse, json, resource, statistics, subprocess, sys, time

CASES = dict(contrastive=['baseline', 'nt_xent_loss', 'dcl_loss', 'dclw_loss', 'moco_loss (queue K=2N)', 'moco_loss (in-batch)', 'supcon_loss'],
             barlow=['baseline', 'barlow_twins_loss'])

def lightly_barlow_twins(z_a, z_b, lambda_param=5e-3):
    "lightly's `BarlowTwinsLoss.forward` (one process): standardised views, cross-correlation, diagonal to 1, the rest to 0"
    import torch
    n, d = z_a.shape
    z_a_norm, z_b_norm = (z_a - z_a.mean(0)) / z_a.std(0), (z_b - z_b.mean(0)) / z_b.std(0)
    c = z_a_norm.T @ z_b_norm / n
    off = c.flatten()[:-1].view(d - 1, d + 1)[:, 1:].flatten()
    return torch.diagonal(c).add(-1).pow(2).sum() + lambda_param * off.pow(2).sum()

def run_case(family, case, n, d, reps, threads):
    import torch, torch.nn.functional as F
    from self_supervised.losses import nt_xent_loss, dcl_loss, moco_loss, supcon_loss, barlow_twins_loss
    torch.set_num_threads(threads); torch.manual_seed(0)
    z1, z2 = torch.randn(n, d, requires_grad=True), torch.randn(n, d, requires_grad=True)
    queue, labels = F.normalize(torch.randn(2 * n, d), dim=1), torch.randint(0, 10, (n,)).repeat(2)
    def baseline(a, b):
        z = torch.cat([a, b]); return F.cross_entropy(z @ z.T, torch.arange(2 * n).roll(n))
    fns = {'baseline': baseline, 'nt_xent_loss': lambda a, b: nt_xent_loss(a, b, 0.5), 'dcl_loss': lambda a, b: dcl_loss(a, b, 0.1),
           'dclw_loss': lambda a, b: dcl_loss(a, b, 0.1, sigma=0.5),
           'moco_loss (queue K=2N)': lambda a, b: moco_loss(a, b, queue, 0.2), 'moco_loss (in-batch)': lambda a, b: moco_loss(a, b, None, 0.2),
           'supcon_loss': lambda a, b: supcon_loss(torch.cat([a, b]), labels, 0.1)}
    if family == 'barlow': fns = {'baseline': lightly_barlow_twins, 'barlow_twins_loss': barlow_twins_loss}
    f = fns[case]
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ts = []
    for _ in range(reps + 1):
        t = time.perf_counter(); f(z1, z2).backward(); ts.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0
    return dict(time=statistics.median(ts[1:]), mem_mb=peak / 1024)

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=4096); ap.add_argument('--d', type=int, default=128)
    ap.add_argument('--reps', type=int, default=5); ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--family', default='contrastive', choices=list(CASES)); ap.add_argument('--case')
    a = ap.parse_args()
    if a.case:   # child process: one loss, so max RSS is its own
        print(json.dumps(run_case(a.family, a.case, a.n, a.d, a.reps, a.threads))); return
    res = {}
    for case in CASES[a.family]:
        out = subprocess.run([sys.executable, __file__, '--family', a.family, '--case', case, '--n', str(a.n), '--d', str(a.d), '--reps', str(a.reps),
                              '--threads', str(a.threads)], capture_output=True, text=True, check=True).stdout
        res[case] = json.loads(out.strip().splitlines()[-1])
    b = res['baseline']
    if a.family == 'barlow': print("baseline: lightly's BarlowTwinsLoss")
    print(f"2N = {2*a.n} embeddings, D = {a.d}, CPU threads = {a.threads}, forward + backward, median of {a.reps}")
    print("| loss | time (ms) | time / baseline | extra peak memory (MB) | memory / baseline |")
    print("|---|---|---|---|---|")
    for case, r in res.items():
        print(f"| {case} | {r['time']*1e3:.0f} | {r['time']/b['time']:.2f} | {r['mem_mb']:.0f} | {r['mem_mb']/max(b['mem_mb'], 1e-9):.2f} |")

if __name__ == '__main__': main()
