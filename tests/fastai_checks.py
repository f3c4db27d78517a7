"""Checks that the image and the sequence registries' tests share: fastai's usual calls, and the export round trip."""
import math, warnings
import torch
from fastai.learner import load_learner
from fastai.callback.schedule import fit_one_cycle, lr_find   # Learner methods

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
