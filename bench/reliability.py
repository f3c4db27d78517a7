"""The reliability figures of the README: what the test suite covers, and 200 bfloat16 training steps of every algorithm.

Counts the algorithms of the registry (each one runs the resume, interruption, bf16, fastai-calls and export tests of
`tests/test_algorithms.py`), the bad-input cases (pytest tests of `tests/test_errors.py` and `ExceptionExpected` checks
in the notebooks), the losses fuzzed by hypothesis and their examples; then trains every algorithm of the registry
for `--steps` steps under bfloat16 autocast on the CPU (`CPUMixedPrecision`, the recipe of the tests: 64 random 28-px
images, a width-4 small_resnet, batches of 16) and counts the steps whose loss or parameters are not finite.

    python bench/reliability.py [--steps 200] [--algos simclr,moco] [--readme]
"""
import argparse, json, re, sys, time
from pathlib import Path
import torch
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tests')); sys.path.insert(0, str(ROOT/'bench'))
from readme import write_readme

def coverage() -> dict:
    from self_supervised.registry import ALGOS
    from test_properties import LOSSES, MAX_EXAMPLES
    errors = len(re.findall(r'^def test_', (ROOT/'tests'/'test_errors.py').read_text(), re.M))
    in_nbs = sum(json.dumps(json.loads(p.read_text())['cells']).count('ExceptionExpected(') for p in (ROOT/'nbs').glob('*.ipynb'))
    return dict(algos=len(ALGOS), bad_input_tests=errors, bad_input_nb_checks=in_nbs, fuzzed_losses=len(LOSSES), examples=len(LOSSES) * MAX_EXAMPLES)

def bf16_steps(algo:str, steps:int) -> dict:
    "Train `algo` for `steps` steps under bfloat16 autocast; count the steps with a non-finite loss or non-finite parameters"
    from fastai.callback.core import Callback
    from self_supervised.training import CPUMixedPrecision
    from test_algorithms import tiny_learner
    class Watch(Callback):
        order = 1000
        def before_fit(self): self.bad, self.n = 0, 0
        def after_step(self):
            self.n += 1
            ok = torch.isfinite(self.learn.loss.detach()).all() and all(torch.isfinite(p).all() for p in self.learn.model.parameters())
            self.bad += int(not ok)
    learn = tiny_learner(algo)
    watch = Watch()
    learn.add_cbs([CPUMixedPrecision(), watch])
    n_epochs = -(-steps // len(learn.dls.train))
    t = time.time()
    with learn.no_bar(), learn.no_logging(): learn.fit(n_epochs, 1e-3)
    return dict(steps=watch.n, bad=watch.bad, seconds=time.time() - t)

def main():
    from self_supervised.registry import ALGOS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--steps', type=int, default=200); ap.add_argument('--algos', default=','.join(ALGOS))
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--readme', action='store_true', help='write the table into nbs/index.ipynb and README.md')
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    c = coverage()
    runs = {algo: bf16_steps(algo, a.steps) for algo in a.algos.split(',')}
    for algo, r in runs.items(): print(f"{algo}: {r['steps']} bf16 steps, {r['bad']} non-finite, {r['seconds']:.0f} s")
    steps, bad = sum(r['steps'] for r in runs.values()), sum(r['bad'] for r in runs.values())
    md = '\n'.join([
        "| check | figure |", "|---|---|",
        f"| algorithms in the registry (resume exactly, interrupted mid-epoch, bf16, fastai calls, export) | {c['algos']} |",
        f"| bad-input cases with a checked message | {c['bad_input_tests']} pytest tests + {c['bad_input_nb_checks']} notebook checks |",
        f"| losses fuzzed by hypothesis (finite, finite gradients, invariances) | {c['fuzzed_losses']} losses, {c['examples']} examples per run |",
        f"| bfloat16 autocast training steps on the CPU without NaN/Inf | {steps - bad} of {steps} ({len(runs)} algorithms x {a.steps}) |"])
    print('\n' + md)
    if a.readme: write_readme('reliability', md)

if __name__ == '__main__': main()
