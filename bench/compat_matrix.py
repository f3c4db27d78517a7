"""The compatibility matrix: which fastai and PyTorch tools work with which algorithm, from the test suite's own outcomes.

Runs the tests that put each tool next to the SSL callbacks (tests/test_algorithms.py, tests/test_fastai_compat.py and
the multi-process tests), reads pytest's JUnit report and prints one row per algorithm of the registry and one column
per tool: `pass`, `FAIL`, `refused` (a clear error when training starts, tested), or `.` where the tool is not
checked on this algorithm.

    python bench/compat_matrix.py              # every tool (about 5 minutes on 2 idle cores)
    python bench/compat_matrix.py --docs       # and write the table into nbs/82_fastai_tools.ipynb
    python bench/compat_matrix.py --inductor   # torch.compile with inductor's C++ code generation (minutes per model on a CPU)
"""
import argparse, os, re, subprocess, sys, tempfile, time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT/'tests'), str(ROOT/'bench')]

# column -> (test file, test function); the distrib_ctx columns come from several tests
COLUMNS = {
    'resume exactly (save/load)': ('test_algorithms.py', 'test_resumes_exactly'),
    'SaveModelCallback(every_epoch) + Ctrl-C': ('test_algorithms.py', 'test_interrupted_mid_epoch_resumes_from_last_checkpoint'),
    'summary, lr_find, fit_one_cycle, fit_flat_cos, get_preds': ('test_algorithms.py', 'test_fastai_calls'),
    'export / load_learner': ('test_algorithms.py', 'test_export_and_load_learner'),
    'SaveModelCallback(best), EarlyStopping, ReduceLROnPlateau, CSVLogger, TensorBoard, Collapse/KNN monitors':
        ('test_fastai_compat.py', 'test_everyday_callbacks'),
    'GradientAccumulation': ('test_fastai_compat.py', 'test_gradient_accumulation'),
    'torch.compile': ('test_fastai_compat.py', 'test_torch_compile'),
    'to_channelslast': ('test_fastai_compat.py', 'test_channels_last'),
    'to_bf16 (fastai)': ('test_fastai_compat.py', 'test_fastai_mixed_precision'),
    'CPU bf16 autocast': ('test_algorithms.py', 'test_bf16_autocast_stays_finite'),
}
DIST = 'distrib_ctx, 2 gloo processes'

def run(args) -> Path:
    report = Path(tempfile.mkdtemp())/'report.xml'
    env = dict(os.environ)
    if args.inductor:
        env['SSL_COMPILE_BACKEND'] = 'inductor'
        tests = ['tests/test_fastai_compat.py', '-k', 'torch_compile']
    else: tests = ['tests/test_algorithms.py', 'tests/test_fastai_compat.py', 'tests/test_dist_fastai.py', 'tests/test_dist_clip.py']
    cmd = [sys.executable, '-m', 'pytest', '-q', '-p', 'no:warnings', '-n', str(args.workers), f'--junitxml={report}', *tests]
    t0 = time.time()
    subprocess.run(cmd, cwd=ROOT, env=env)
    print(f"\n{' '.join(cmd[2:])}: {time.time() - t0:.0f} s")
    return report

def outcomes(report:Path) -> dict:
    "(file, function, parameter) -> 'pass' or 'FAIL'"
    res = {}
    for tc in ET.parse(report).getroot().iter('testcase'):
        m = re.match(r'(\w+)(?:\[(.*)\])?$', tc.get('name'))
        file = tc.get('classname').split('.')[-1] + '.py'
        bad = any(c.tag in ('failure', 'error') for c in tc)
        skipped = any(c.tag == 'skipped' for c in tc)
        if not skipped: res[(file, m.group(1), m.group(2))] = 'FAIL' if bad else 'pass'
    return res

def matrix(res:dict) -> str:
    from self_supervised.registry import ALGOS
    from test_fastai_compat import DIST as COMPAT_DIST, DIST_REFUSED
    cols = list(COLUMNS) + [DIST]
    def cell(algo, col):
        if col == DIST:
            got = [res.get((f, fn, algo)) for f, fn in [('test_dist_fastai.py', 'test_distrib_ctx_two_processes_train_like_one'),
                                                        ('test_dist_clip.py', 'test_distrib_ctx_two_processes_train_like_one')]]
            compat = res.get(('test_fastai_compat.py', 'test_distrib_ctx_two_processes', None))
            if algo in COMPAT_DIST: got.append(compat)
            if algo in DIST_REFUSED and compat: return 'refused' if compat == 'pass' else 'FAIL'   # a clear error, tested
            got = [g for g in got if g]
            return ('FAIL' if 'FAIL' in got else 'pass') if got else '.'
        return res.get((*COLUMNS[col], algo), '.')
    rows = ['| algorithm | ' + ' | '.join(cols) + ' |', '|---|' + '---|' * len(cols)]
    rows += [f'| {a} | ' + ' | '.join(cell(a, c) for c in cols) + ' |' for a in ALGOS]
    return '\n'.join(rows)

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--inductor', action='store_true', help='torch.compile with inductor (only the torch.compile column)')
    p.add_argument('--workers', type=int, default=2)
    p.add_argument('--report', help='read this JUnit report instead of running the tests')
    p.add_argument('--docs', action='store_true', help='write the table into nbs/82_fastai_tools.ipynb')
    args = p.parse_args()
    res = outcomes(Path(args.report) if args.report else run(args))
    table = matrix(res)
    print(table)
    if args.docs and not args.inductor:
        from readme import write_readme
        write_readme('compat', table, ROOT/'nbs'/'82_fastai_tools.ipynb', readme=False)
    fails = sorted(k for k, v in res.items() if v == 'FAIL')
    print(f"\n{sum(v == 'pass' for v in res.values())} tests passed, {len(fails)} failed" + (': ' + ', '.join(map(str, fails)) if fails else ''))
