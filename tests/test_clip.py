"""CLIP and CLIP-MoCo beyond the registry's checklist (`tests/test_algorithms.py` runs that for their `ALGOS` entries):
refusals of bad configurations, and the tokenizer working offline. The Learner is built by `ssl_learner` as the
registry tests build theirs: 64 random 28-px images with Fashion-MNIST class labels, a width-4 small_resnet, batches
of 16; the captions are made from the images and labels by `FMNISTCaptioner`.
"""
import pytest, torch
from fastai.torch_core import set_seed

pytest.importorskip('open_clip')
from dataclasses import replace
from self_supervised import registry
from self_supervised.data import ssl_dls
from self_supervised.layers import create_encoder
from self_supervised.multimodal.clip import CLIP
from self_supervised.multimodal.clip_moco import CLIPMOCO
from self_supervised.multimodal.data import FMNISTCaptioner, CLIPTokenizer, _bpe

N, BS = 64, 16

def tiny_learner(algo, seed=0):
    set_seed(0)
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(N + BS, 1, 28, 28, generator=g) * 255).to(torch.uint8)
    y = torch.randint(0, 10, (N + BS,), generator=g)
    dls = ssl_dls(x[:N], x[N:], y[:N], y[N:], bs=BS, device='cpu')
    return registry.ssl_learner(dls, algo, create_encoder('small_resnet', n_in=1, width=4), lr=1e-3)

def test_queue_smaller_than_batch_is_refused(monkeypatch):
    monkeypatch.setitem(registry._RECIPES, 'clip_moco', replace(registry.ALGOS['clip_moco'], callback=lambda augs, a: CLIPMOCO(augs, K=BS - 1, captions=FMNISTCaptioner())))
    learn = tiny_learner('clip_moco')
    with pytest.raises(ValueError, match=f'K >= {BS}'): learn.fit(1)

def test_image_only_loader_without_captions_is_refused(monkeypatch):
    monkeypatch.setitem(registry._RECIPES, 'clip', replace(registry.ALGOS['clip'], callback=lambda augs, a: CLIP(augs)))
    with pytest.raises(ValueError, match='holds no captions'): tiny_learner('clip').fit(1)

def test_tokenizer_works_offline():
    "The BPE vocabulary is a file inside the installed `open_clip` package: no download, and the ids are CLIP's"
    import open_clip, os
    from open_clip.tokenizer import default_bpe
    assert os.path.dirname(default_bpe()) == os.path.dirname(open_clip.__file__) and os.path.exists(default_bpe())
    tok = CLIPTokenizer(8)
    assert tok('a photo of a cat')[0].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407, 0]   # OpenAI CLIP's ids
    assert _bpe() is _bpe()
