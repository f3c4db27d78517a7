"""What the tests of the registries share: a tiny Learner per image algorithm, fastai's usual calls, the export round trip."""
import math, warnings
import torch
from fastai.learner import load_learner
from fastai.callback.schedule import fit_one_cycle, lr_find   # Learner methods
from fastai.torch_core import set_seed
from self_supervised.callback import SSLCallback
from self_supervised.registry import ALGOS, UNLABELLED, ssl_learner, algo_images
from self_supervised.data import ssl_dls
from self_supervised.layers import create_encoder

N, BS = 64, 16

def tiny_learner(algo, seed=0, init_seed=0, **kwargs):
    "The registry's recipe for `algo` on 64 random 28-px images, a width-4 small_resnet and batches of 16"
    spec = ALGOS[algo]
    if init_seed is not None: set_seed(init_seed)   # the model's initialisation: each test independent of the ones before
    g = torch.Generator().manual_seed(seed)
    x = algo_images(algo, (torch.rand(N + BS, 1, 28, 28, generator=g) * 255).to(torch.uint8))
    y = torch.randint(0, 3, (N + BS,), generator=g)
    if spec.labels: y[::2] = UNLABELLED   # half unlabelled
    dls = ssl_dls(x[:N], x[N:], y[:N], y[N:], bs=BS, device='cpu', with_idx=spec.with_idx)
    return ssl_learner(dls, algo, create_encoder('small_resnet', n_in=1, width=4), lr=1e-3, **kwargs)

def ssl_cb(learn): return next(cb for cb in learn.cbs if isinstance(cb, SSLCallback))

def fit_with_fastai_calls(learn, num_it:int):
    "`summary` names the model, then `lr_find` (`num_it` steps) and one epoch of `fit_one_cycle` run, quietly"
    assert type(learn.model).__name__ in learn.summary()
    with learn.no_bar(), learn.no_logging():
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')   # lr_find may stop early on tiny data
            learn.lr_find(num_it=num_it, show_plot=False)
        learn.fit_one_cycle(1, 1e-3)

def assert_validates(learn):
    "`validate` gives a finite loss and metrics (or nothing, for callbacks with no validation loss)"
    val = learn.validate()
    assert val is None or all(v is None or math.isfinite(v) for v in val)

def assert_export_roundtrip(learn, path):
    "`learn.export()` then `load_learner` gives back a Learner whose encoder computes the same features; returns it"
    learn.export('learner.pkl')
    back = load_learner(path/'learner.pkl', cpu=True)
    x = learn.dls.valid.one_batch()[0][:4]
    learn.model.eval(); back.model.eval()
    with torch.no_grad(): torch.testing.assert_close(learn.model.encoder(x), back.model.encoder(x))
    return back
