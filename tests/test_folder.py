"""Pretraining on users' own data: a folder of image files (tinted, resized Fashion-MNIST images in class subfolders,
two files that are not readable images), a fastai `DataBlock` without labels, a plain torch `Dataset`, every method of
the registry through the API, and the command line on the folder."""
import math, warnings
from pathlib import Path
import numpy as np
import pytest, torch
from PIL import Image
from fastai.data.block import DataBlock
from fastai.data.core import DataLoaders
from fastai.data.transforms import get_image_files, RandomSplitter
from fastai.vision.data import ImageBlock
from fastai.vision.augment import Resize
from self_supervised.data import fashion_mnist, image_folder_dls
from self_supervised.registry import ALGOS, ssl_learner
from self_supervised.layers import create_encoder
from self_supervised.vision.simclr import SimCLR, create_simclr_model, get_simclr_aug_pipelines

CLASSES = (0, 1, 7)   # T-shirt, trouser, sneaker

def write_folder(root:Path, n=300, size=40, seed=0) -> Path:
    "`n` Fashion-MNIST images of 3 classes, tinted with a random colour each and resized, as png/jpg in class subfolders (some nested), and two broken files"
    ds, g = fashion_mnist(), np.random.default_rng(seed)
    idx = [i for i in range(len(ds.train_y)) if int(ds.train_y[i]) in CLASSES][:n]
    for k, i in enumerate(idx):
        img = Image.fromarray(ds.train_x[i, 0].numpy()).resize((size, size)).convert('RGB')
        img = Image.fromarray((np.asarray(img) * (0.3 + 0.7 * g.random(3))).astype(np.uint8))
        d = root/f'class_{int(ds.train_y[i])}'/('more' if k % 7 == 0 else '')
        d.mkdir(parents=True, exist_ok=True)
        img.save(d/f'{k}.{"jpg" if k % 3 == 0 else "png"}')
    (root/f'class_{CLASSES[0]}'/'not_an_image.png').write_bytes(b'\x00' * 100)
    png = next((root/f'class_{CLASSES[1]}').glob('*.png')).read_bytes()
    (root/f'class_{CLASSES[1]}'/'truncated.png').write_bytes(png[:len(png) // 2])
    return root

@pytest.fixture(scope='module')
def folder(tmp_path_factory): return write_folder(tmp_path_factory.mktemp('data')/'images')

@pytest.fixture(scope='module')
def folder_dls(folder):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        dls = image_folder_dls(folder, size=32, bs=16, num_workers=0)
    assert any('2 of the 302 image files are not readable' in str(o.message) and 'truncated.png' in str(o.message) for o in w)
    return dls

def _fit(learn, n_batches=2):
    "A short run: `n_batches` training batches of one epoch"
    from fastai.callback.core import Callback, CancelEpochException
    class Stop(Callback):
        def after_batch(self):
            if self.training and self.iter + 1 >= n_batches: raise CancelEpochException
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3, cbs=Stop())
    assert learn.train_iter == n_batches and all(math.isfinite(float(l)) for l in learn.recorder.losses)

@pytest.mark.parametrize('algo', list(ALGOS))
def test_every_method_trains_on_an_image_folder(algo, folder_dls):
    "Read from disk by fastai's DataBlock, colour, labelled by subfolder: the recipe's loaders (item indices added where needed)"
    learn = ssl_learner(folder_dls, algo, create_encoder('small_resnet', n_in=3, width=4))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        _fit(learn)
    # every image of the folder is labelled: SupCon has no unlabelled class to look for, and says nothing
    assert not [str(o.message) for o in w if 'unsup_class_id' in str(o.message)]
    if ALGOS[algo].labels: assert [c.unsup_class_id for c in learn.cbs if hasattr(c, 'unsup_class_id')] == [None]

def test_unlabelled_datablock_and_torch_dataset(folder):
    "The loaders users build themselves: an unlabelled DataBlock (no loss to infer) and `DataLoaders.from_dsets` over a torch Dataset of bytes"
    dblock = DataBlock(blocks=ImageBlock, get_items=get_image_files, splitter=RandomSplitter(0.1, seed=0), item_tfms=Resize(32))
    dls = dblock.dataloaders(folder/f'class_{CLASSES[2]}', bs=16, num_workers=0)   # a folder without broken files
    files = get_image_files(folder/f'class_{CLASSES[2]}')
    for algo in ('simclr', 'instdisc'):   # instdisc: item indices from a loader that has no labels
        _fit(ssl_learner(dls, algo, create_encoder('small_resnet', n_in=3, width=4)))
    # our folder loaders without labels: a plain fastai `Learner` and the SSL callback, no `loss_func`
    from fastai.learner import Learner
    udls = image_folder_dls(folder/f'class_{CLASSES[2]}', size=32, bs=16, num_workers=0)
    _fit(Learner(udls, create_simclr_model(create_encoder('small_resnet', n_in=3, width=4), 16, 8), cbs=SimCLR(get_simclr_aug_pipelines(32, stats=udls.stats))))
    class Bytes(torch.utils.data.Dataset):
        "What a plain PyTorch user writes: uint8 (C, H, W) tensors, no labels"
        def __init__(self, files): self.files = files
        def __len__(self): return len(self.files)
        def __getitem__(self, i): return torch.from_numpy(np.asarray(Image.open(self.files[i]).convert('RGB').resize((32, 32)))).permute(2, 0, 1)
    tdls = DataLoaders.from_dsets(Bytes(files[:64]), Bytes(files[64:80]), bs=16, num_workers=0)
    _fit(ssl_learner(tdls, 'moco', create_encoder('small_resnet', n_in=3, width=4)))
    _fit(ssl_learner(tdls, SimCLR(get_simclr_aug_pipelines(32, stats=None)), model=create_simclr_model(create_encoder('small_resnet', n_in=3, width=4), 16, 8)))

def test_too_small_for_a_batch_is_an_error(folder):
    "fewer training items than a batch: an error that names both numbers, not a run of zero steps"
    dblock = DataBlock(blocks=ImageBlock, splitter=RandomSplitter(0.5, seed=0), item_tfms=Resize(32))
    dls = dblock.dataloaders([f for f in get_image_files(folder) if f.suffix == '.jpg'][:20], bs=16, num_workers=0)
    msg = 'holds 10 items, fewer than one batch of bs=16.*use bs=10 or fewer'
    with pytest.raises(ValueError, match=msg): ssl_learner(dls, 'simclr', create_encoder('small_resnet', n_in=3, width=4))
    # a Learner built by hand (an unlabelled DataBlock has no loss for fastai's `Learner` to infer): the callback checks when training starts
    from self_supervised.callback import SSLLearner
    learn = SSLLearner(dls, create_simclr_model(create_encoder('small_resnet', n_in=3, width=4), 16, 8), cbs=SimCLR(get_simclr_aug_pipelines(32, stats=None)))
    with pytest.raises(ValueError, match=msg): learn.fit(1)
