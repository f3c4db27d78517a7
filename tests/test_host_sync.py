"""No host syncs in the training step: every registry algorithm runs steps under a `TorchDispatchMode` that records the
operations that make the host wait for the device on a GPU (`.item()`, `nonzero`, boolean indexing, `unique`...).
It runs on the CPU and protects the GPU path. The syncs that must stay are listed with the reason."""
import collections, sys, traceback
from pathlib import Path
import pytest, torch
from torch.utils._python_dispatch import TorchDispatchMode
from fastai.callback.core import Callback, CancelFitException
import kornia.augmentation as K
from self_supervised.registry import ALGOS, TS_ALGOS
from self_supervised.callback import SSLCallback
sys.path.insert(0, str(Path(__file__).parent))
from fastai_checks import tiny_learner
from test_timeseries_tasks import tiny_ts_learner

# operations whose output shape or value the host must read: on a GPU each waits for the device to catch up
SYNC_OPS = {'_local_scalar_dense', 'nonzero', 'nonzero_static', 'masked_select', 'unique', '_unique2', 'unique_dim',
            'unique_consecutive', 'equal', 'is_nonzero', 'repeat_interleave', 'masked_scatter'}

# (file, a piece of the line) -> why the sync stays
ALLOWED = {
    ('self_supervised/callback.py', 'if bool(ok): return True'):
        "StopOnNonFinite's one sync per step, by design: it stops before a non-finite step is applied, and reads every "
        "deferred data check (`SSLCallback.check_later`) at the same time (`SSLLearner(check_finite=False)` removes it)",
    ('kornia/augmentation/_2d/intensity/color_jiggle.py', '.any()'):
        "kornia draws its random parameters on the CPU (asserted below): `.any()` over them reads host memory and does not wait for the GPU",
    ('self_supervised/multimodal/data.py', ''):
        "Fashion-MNIST's synthetic captions are Python strings made on the host from the images' measured attributes "
        "(`FMNISTCaptioner`); a loader of (image, caption) pairs (`caption_dls`) makes none",
    ('self_supervised/timeseries/masked.py', 'bool(seen.all())'):
        "ContrastiveMasked and PairwiseMasked with missing keypoints: the clips whose hidden frames were all missing leave the "
        "contrastive loss, whose negatives are the other clips of the batch: a set of clips only the data tells (read once a step)",
    ('fastai/learner.py', 'backward', 'index_put'):
        "the backward of a boolean index taken in the forward pass, whose own site is listed here",
    ('self_supervised/multimodal/clip.py', 'mx'):
        "the text encoder checks its token ids (an all-padding caption, ids outside the vocabulary) as it reads them; left for now",
    ('self_supervised/losses/clustering.py', 'worst.item()'):
        "SwAV's Sinkhorn: whether the plain-domain version (12x faster) loses no precision on these scores, else the log-domain one runs",
}

def _site():
    "The innermost frame of kornia, or else of this library or fastai, that asked for the operation"
    st = traceback.extract_stack()[:-3]
    frames = [f for f in st if '/kornia/' in f.filename] or [f for f in st if '/self_supervised/' in f.filename or '/fastai/' in f.filename]
    if not frames: return ('?', '')
    f = frames[-1]
    name = f.filename.split('site-packages/')[-1]
    name = name[name.index('self_supervised/'):] if 'self_supervised/' in name and 'site-packages' not in f.filename else name
    return name, (f.line or '')

class _Record(TorchDispatchMode):
    def __init__(self): super().__init__(); self.hits = collections.Counter()
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split('.')[0]
        idx = args[1] if name.startswith('index') and len(args) > 1 and isinstance(args[1], (list, tuple)) else ()
        if name in SYNC_OPS or any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in idx):
            self.hits[(func.__name__,) + _site()] += 1
        return func(*args, **(kwargs or {}))

class _Start(Callback):
    "Record from the start of `before_batch` (before every other callback's) of training steps 1 and 2 (step 0 runs one-time checks)"
    order = -999
    def before_fit(self): self.hits, self.mode = collections.Counter(), None
    def before_batch(self):
        if self.training and self.iter >= 1: self.mode = _Record(); self.mode.__enter__()

class _Stop(Callback):
    "...to the end of `after_batch`, after every other callback's (the optimiser step, queues and EMAs included)"
    order = 999
    def after_batch(self):
        st = self.learn._start
        if st.mode is not None: st.mode.__exit__(None, None, None); st.hits.update(st.mode.hits); st.mode = None
        if self.iter >= 2: raise CancelFitException

def _syncs(learn):
    start = _Start()
    with learn.no_bar(), learn.no_logging(): learn.fit(1, cbs=[start, _Stop()])
    return start.hits

def _allowed(op, site, line) -> bool:
    "Whether the sync `op` at `site` (its source `line`) is one of `ALLOWED` (an entry may name the operation too)"
    return any(site.endswith(k[0]) and k[1] in line and op.startswith(k[2] if len(k) > 2 else '') for k in ALLOWED)

def _check(learn, algo):
    hits = _syncs(learn)
    bad = {k: n for k, n in hits.items() if not _allowed(*k)}
    assert not bad, f"{algo}: host syncs in the training step:\n" + '\n'.join(f"  {n} x {op} at {f}: {line}" for (op, f, line), n in bad.items())
    # the reason given for kornia's: its parameters are drawn on the CPU, whatever the device of the batch
    for cb in learn.cbs.filter(lambda c: isinstance(c, SSLCallback)):
        for p in cb.aug_pipelines:
            for t in p.fs:
                for a in (getattr(t, 'aug', None), getattr(t, 'gray', None)):
                    if isinstance(a, K.AugmentationBase2D): assert a.device.type == 'cpu', (algo, a)

@pytest.mark.parametrize('algo', list(ALGOS))
def test_no_host_sync_in_the_step(algo):
    _check(tiny_learner(algo), algo)

@pytest.mark.parametrize('algo', list(TS_ALGOS))
def test_no_host_sync_in_the_sequence_step(algo):
    _check(tiny_ts_learner(algo), algo)

def test_the_recorder_sees_syncs():
    "The recorder is not blind: an `.item()` and a boolean index in a callback of the step are reported"
    class _Sync(Callback):
        order = 11
        def before_batch(self): x = self.learn.xb[0]; x[x > 0].sum().item()
    learn = tiny_learner('simclr')
    learn.add_cb(_Sync())
    with pytest.raises(AssertionError, match=r'(?s)_local_scalar_dense.*index|index.*_local_scalar_dense'): _check(learn, 'simclr')
