"""The reliability figures of the README: bad inputs and faults tried, what the test suite covers, and 200 bfloat16
training steps of every algorithm.

Runs the bad-input suites (the table of `tests/test_errors.py`, the command line's argument and data errors) and
counts the cases tried and those that gave the expected exception with a message naming the argument; runs the fault
suites (interrupted, resumed, diverging runs, read-only or occupied run folders, truncated, foreign and bit-flipped
files, state that does not fit its callback) and counts the faults survived and the runs lost (a failing case).
Counts the algorithms of the registry (each one runs the resume, interruption, bf16, fastai-calls and export tests of
`tests/test_algorithms.py`), the `ExceptionExpected` checks in the notebooks, the losses fuzzed by hypothesis and their
examples; then trains every algorithm of the registry for `--steps` steps under bfloat16 autocast on the CPU
(`CPUMixedPrecision`, the recipe of the tests: 64 random 28-px images, a width-4 small_resnet, batches of 16) and
counts the steps whose loss or parameters are not finite.

    python bench/reliability.py [--steps 200] [--algos simclr,moco] [--no-suites] [--readme]
"""
import argparse, json, re, sys, time
from pathlib import Path
import torch
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tests')); sys.path.insert(0, str(ROOT/'bench'))
from readme import write_readme

BAD_INPUTS = ['tests/test_errors.py', 'tests/test_folder.py::test_cli_errors_on_folders',
              'tests/test_cli.py::test_cli_checks_arguments_before_reading_data', 'tests/test_cli.py::test_cli_missing_data',
              'tests/test_cli.py::test_cli_unknown_algo', 'tests/test_cli.py::test_cli_unknown_arch']
FAULTS = ['tests/test_runs.py', 'tests/test_cli.py::test_cli_resume_ends_like_an_uninterrupted_run', 'tests/test_cli.py::test_cli_run_folders',
          'tests/test_cli.py::test_cli_out_not_writable_fails_before_training', 'tests/test_cli.py::test_cli_non_finite_stops_and_exports_nothing']

def run_suite(ids:list) -> dict:
    "Run the pytest node ids `ids`: the cases collected, passed and failed"
    import pytest
    class Count:
        def __init__(self): self.passed, self.failed = 0, 0
        def pytest_runtest_logreport(self, report):
            if report.failed: self.failed += 1   # in the test, or in its setup
            elif report.when == 'call' and report.passed: self.passed += 1
    n = Count()
    pytest.main(['-q', '-p', 'no:cacheprovider', '-W', 'ignore', *[str(ROOT/i) for i in ids]], plugins=[n])
    return dict(tried=n.passed + n.failed, passed=n.passed, failed=n.failed)

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
    ap.add_argument('--no-suites', action='store_true', help='skip the bad-input and fault suites (their rows are left out)')
    ap.add_argument('--readme', action='store_true', help='write the table into nbs/index.ipynb and README.md')
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    c = coverage()
    suites = {} if a.no_suites else dict(bad=run_suite(BAD_INPUTS), faults=run_suite(FAULTS))
    runs = {algo: bf16_steps(algo, a.steps) for algo in a.algos.split(',')}
    for algo, r in runs.items(): print(f"{algo}: {r['steps']} bf16 steps, {r['bad']} non-finite, {r['seconds']:.0f} s")
    steps, bad = sum(r['steps'] for r in runs.values()), sum(r['bad'] for r in runs.values())
    rows = [] if not suites else [
        f"| bad inputs tried / given a clear error (the expected exception, a message naming the argument or file) | {suites['bad']['tried']} / {suites['bad']['passed']} |",
        f"| faults tried / survived (interrupts, resume, divergence, occupied or read-only run folders, broken files, mismatched state) | {suites['faults']['tried']} / {suites['faults']['passed']} |",
        f"| runs lost | {suites['faults']['failed']} |"]
    md = '\n'.join([
        "| check | figure |", "|---|---|", *rows,
        f"| algorithms in the registry (resume exactly, interrupted mid-epoch, bf16, fastai calls, export) | {c['algos']} |",
        f"| error checks in the notebooks (`ExceptionExpected`) | {c['bad_input_nb_checks']} |",
        f"| losses fuzzed by hypothesis (finite, finite gradients, invariances) | {c['fuzzed_losses']} losses, {c['examples']} examples per run |",
        f"| bfloat16 autocast training steps on the CPU without NaN/Inf | {steps - bad} of {steps} ({len(runs)} algorithms x {a.steps}) |"])
    print('\n' + md)
    if a.readme: write_readme('reliability', md)

if __name__ == '__main__': main()
