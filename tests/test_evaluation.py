"Evaluation on tensors, loaders and datasets (an image folder read by fastai, torch datasets), linear probes and fine-tuning with fastai (images and series), 2-D maps, augmentation grids and curves rendered headless"
import copy, sys, types
import matplotlib
matplotlib.use('Agg')   # headless, as on CI
import matplotlib.pyplot as plt
import matplotlib.image
import numpy as np
import pytest, torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset, DataLoader as TorchDL, TensorDataset
from fastai.callback.core import Callback
from fastai.torch_core import TensorCategory, TensorMultiCategory
from self_supervised.data import fashion_mnist, ssl_dls, fmnist_stats
from self_supervised.layers import create_encoder, encoder_nf
import self_supervised.evaluation as evaluation
from self_supervised.evaluation import (linear_probe, linear_probe_from_ssl, fine_tune_from_ssl, classifier_learner,
                                        evaluate_encoder, knn_accuracy, extract_features, features_and_labels, eval_pipeline)
from self_supervised.monitor import KNNMonitor
from self_supervised.callback import SSLCallback
from self_supervised.visual import embed_2d, plot_embedding, plot_encoder_embedding, plot_views, plot_recorder

@pytest.fixture(scope='module')
def fmnist(): return fashion_mnist()

@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close('all')

def fmnist_dls(ds, n_train=1024, n_valid=256, bs=64, **kwargs):
    return ssl_dls(ds.train_x[:n_train], ds.test_x[:n_valid], ds.train_y[:n_train], ds.test_y[:n_valid], bs=bs, device='cpu', **kwargs)

def clusters(n=300, d=16, n_classes=3, seed=0, scale=4.):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % n_classes
    return torch.randn(n_classes, d, generator=g)[y] * scale + torch.randn(n, d, generator=g), y

def series(n, n_frames=64, seed=0):
    "Three classes of two-channel series: the first channel oscillates 2, 4 or 8 times per clip, at a random phase, in noise"
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    t = torch.linspace(0, 1, n_frames)
    x = torch.randn(n, 2, n_frames, generator=g) * 0.5
    x[:, 0] += torch.sin(2 * torch.pi * torch.tensor([2., 4., 8.])[y][:, None] * t + torch.rand(n, 1, generator=g) * 6.3)
    return x, y

def conv1d_encoder(n_in=2, width=8):
    return nn.Sequential(nn.Conv1d(n_in, width, 5, padding=2), nn.BatchNorm1d(width), nn.ReLU(),
                         nn.Conv1d(width, width, 5, padding=2), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten())

class Snapshots(Callback):
    "At the start of every fit: a copy of the model's state; at every training step: each group's lr and requires_grad of `param`"
    def __init__(self, param): self.param, self.fits = param, []
    def before_fit(self): self.fits.append(dict(state=copy.deepcopy(self.learn.model.state_dict()), lrs=[], grad=[]))
    def after_batch(self):
        if self.training:
            self.fits[-1]['lrs'].append([h['lr'] for h in self.opt.hypers])
            self.fits[-1]['grad'].append(self.param.requires_grad)

def same_state(a, b): return all(torch.equal(a[k], b[k]) for k in a)

# --- the fastai linear probe

def test_probe_leaves_the_encoder_unchanged_and_trains_the_head(fmnist):
    torch.manual_seed(0)
    enc = create_encoder('small_resnet', n_in=1, width=4)
    # a trained encoder holds gradients (zeroed, not None) that fastai's optimiser would still step and weight-decay
    nn.functional.cross_entropy(nn.Sequential(enc, nn.Linear(encoder_nf(enc), 10))(torch.rand(4, 1, 28, 28)), torch.arange(4)).backward()
    before = copy.deepcopy(enc.state_dict())   # weights and batch-norm running statistics
    snap = Snapshots(next(enc.parameters()))
    acc, learn = linear_probe_from_ssl(enc, fmnist_dls(fmnist, n_train=512), epochs=3, stats=fmnist_stats, cbs=snap)
    assert same_state(before, enc.state_dict())
    head0 = {k[len('head.'):]: v for k, v in snap.fits[0]['state'].items() if k.startswith('head.')}
    assert not torch.equal(head0['1.weight'], learn.model.head[1].weight)   # the head trained
    assert not torch.equal(head0['0.running_var'], learn.model.head[0].running_var)
    assert learn.model.encoder is enc
    assert acc > 0.25, acc   # 10 classes: chance is 0.1

def test_fastai_probe_agrees_with_the_scikit_learn_probe_on_pixels(fmnist):
    "The identity as encoder: both probes are a logistic regression on the same pixels"
    dls = fmnist_dls(fmnist, n_train=512, n_valid=256)
    torch.manual_seed(0)
    acc, _ = linear_probe_from_ssl(nn.Flatten(), dls, epochs=10, stats=fmnist_stats)
    x = lambda t: ((t.float() / 255 - fmnist_stats[0][0]) / fmnist_stats[1][0]).flatten(1)
    sk = linear_probe(x(fmnist.train_x[:512]), fmnist.train_y[:512], x(fmnist.test_x[:256]), fmnist.test_y[:256])
    assert acc > 0.6 and abs(acc - sk) < 0.08, (acc, sk)

def test_evaluate_encoder_keeps_the_scikit_learn_probe(fmnist):
    enc = create_encoder('small_resnet', n_in=1, width=4)
    res = evaluate_encoder(enc, fmnist.train_x[:300], fmnist.train_y[:300], fmnist.test_x[:100], fmnist.test_y[:100], stats=fmnist_stats, k=20)
    assert set(res) == {'knn', 'linear'} and all(0.1 < v <= 1 for v in res.values())

# --- evaluation on users' data: loaders, datasets, fastai label types

def image_folder(path, ds, n=60, size=32):
    "`n` Fashion-MNIST training images, tinted to RGB and resized to `size`, as PNGs in one folder per class under `path`"
    for i in range(n):
        a = ds.train_x[i, 0].numpy()
        img = Image.fromarray(np.stack([a, a * 0.8, a * 0.5], -1).astype(np.uint8)).resize((size, size), Image.BILINEAR)
        folder = path/ds.classes[int(ds.train_y[i])].replace('/', '-')
        folder.mkdir(parents=True, exist_ok=True)
        img.save(folder/f'{i}.png')
    return path

@pytest.fixture
def folder_dls(fmnist, tmp_path):
    "fastai `DataLoaders` of a folder of 60 PNGs (45 training, 15 validation), with fastai's augmentations, batches of 8"
    from fastai.vision.data import ImageDataLoaders
    from fastai.vision.augment import aug_transforms
    return ImageDataLoaders.from_folder(image_folder(tmp_path/'images', fmnist), valid_pct=0.25, seed=0, bs=8, num_workers=0,
                                        batch_tfms=aug_transforms())

def rgb_encoder(seed=0):
    torch.manual_seed(seed)
    return create_encoder('small_resnet', n_in=3, width=4)

class Bars:
    "Stands in for fastprogress's `progress_bar` in `self_supervised.evaluation`: counts the bars, iterates as it would"
    def __init__(self): self.n = 0
    def __call__(self, gen, **kwargs): self.n += 1; return gen

def test_image_folder_from_folder_and_datablock(folder_dls, fmnist, tmp_path):
    from fastai.data.block import DataBlock, CategoryBlock
    from fastai.data.transforms import get_image_files, parent_label, RandomSplitter
    from fastai.vision.data import ImageBlock
    from fastai.vision.augment import RandomResizedCrop, Flip
    from fastai.vision.core import imagenet_stats
    enc = rgb_encoder()
    res = evaluate_encoder(enc, folder_dls, stats=imagenet_stats, k=10)
    assert res == evaluate_encoder(enc, folder_dls.train, folder_dls.valid, stats=imagenet_stats, k=10)
    assert set(res) == {'knn', 'linear'} and all(0 <= v <= 1 for v in res.values())
    # the shuffled, augmented training loader: every image once, without augmentation, in the order of its dataset
    f, y = features_and_labels(enc, folder_dls.train)
    f_ds, y_ds = features_and_labels(enc, folder_dls.train_ds)   # fastai's Datasets: PIL images, `TensorCategory` labels
    assert len(f) == len(folder_dls.train_ds) == 45 and type(y) is torch.Tensor and y.dtype == torch.int64
    torch.testing.assert_close(f, f_ds, atol=1e-5, rtol=1e-4)
    assert torch.equal(y, y_ds) and torch.equal(y, torch.tensor([int(o[1]) for o in folder_dls.train_ds]))
    # a DataBlock with random item and batch transforms: the validation ones (a centre crop) every pass
    block = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files, get_y=parent_label,
                      splitter=RandomSplitter(0.25, seed=0), item_tfms=RandomResizedCrop(24, min_scale=0.3), batch_tfms=Flip(p=1.))
    dls = block.dataloaders(tmp_path/'images', bs=8, num_workers=0)
    f1, y1 = features_and_labels(enc, dls.train, eval_pipeline(32, imagenet_stats))
    f2, y2 = features_and_labels(enc, dls.train, eval_pipeline(32, imagenet_stats))
    assert f1.shape == (45, encoder_nf(enc)) and torch.equal(f1, f2) and torch.equal(y1, y2)
    assert evaluate_encoder(enc, dls, size=32, stats=imagenet_stats, k=10, probe=False)['knn'] >= 0
    # fastai's TfmdLists of the files, without labels: PIL images of the training items
    from fastai.data.core import TfmdLists
    from fastai.vision.core import PILImage
    tl = TfmdLists(folder_dls.train_ds.items, PILImage.create)
    torch.testing.assert_close(extract_features(enc, tl), f_ds, atol=1e-5, rtol=1e-4)
    assert features_and_labels(enc, tl)[1] is None
    # a loader that normalises already: `stats` would normalise twice
    from fastai.data.transforms import Normalize
    norm = block.new(batch_tfms=Normalize.from_stats(*imagenet_stats)).dataloaders(tmp_path/'images', bs=8, num_workers=0)
    with pytest.warns(UserWarning, match='normalises its batches .*pass stats=None'): extract_features(enc, norm.valid, eval_pipeline(stats=imagenet_stats))

def test_knn_monitor_on_an_image_folder_in_a_short_ssl_fit(folder_dls, monkeypatch):
    from fastai.vision.core import imagenet_stats
    from self_supervised.callback import SSLLearner
    from self_supervised.registry import ssl_learner
    bars = Bars()
    monkeypatch.setattr(evaluation, 'progress_bar', bars)
    learn = ssl_learner(folder_dls, 'simclr', rgb_encoder())
    assert isinstance(learn, SSLLearner)
    knn, knn2 = KNNMonitor.from_dls(folder_dls, k=10, stats=imagenet_stats), KNNMonitor(folder_dls.train, folder_dls.valid, k=10, stats=imagenet_stats)
    learn.add_cbs([knn, knn2])
    with learn.no_bar(), learn.no_logging(): learn.fit(2, 1e-3)
    assert [h['epoch'] for h in knn.history] == [0, 1] and knn.history == knn2.history
    assert bars.n == 0   # 6 batches a pass, but no bar of its own inside fastai's fit
    ev = evaluate_encoder(learn.model.encoder, folder_dls, stats=imagenet_stats, k=10, probe=False, progress=False)
    assert bars.n == 0
    assert abs(knn.history[-1]['knn_acc'] - ev['knn']) < 1e-6
    assert abs(knn.accuracy() - ev['knn']) < 1e-6
    assert bars.n == 1   # by hand: a bar over the bank (6 batches), none over the 2 batches of queries
    knn.accuracy(progress=False)
    quiet = KNNMonitor.from_dls(folder_dls, k=10, progress=False, stats=imagenet_stats)
    learn.add_cb(quiet)
    assert abs(quiet.accuracy() - ev['knn']) < 1e-6
    assert bars.n == 1

def test_progress_bars_only_over_large_sets_and_silenced(monkeypatch):
    bars = Bars()
    monkeypatch.setattr(evaluation, 'progress_bar', bars)
    enc = nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    x, y = torch.rand(40, 1, 8, 8), torch.arange(40) % 2
    extract_features(enc, x, bs=10); assert bars.n == 0   # 4 batches: quick
    extract_features(enc, x, bs=8); assert bars.n == 1
    extract_features(enc, x, bs=8, progress=False); assert bars.n == 1
    evaluate_encoder(enc, x, y, x, y, bs=8, k=5, probe=False, progress=False); assert bars.n == 1
    evaluate_encoder(enc, x, y, x, y, bs=8, k=5, probe=False); assert bars.n == 3
    knn_accuracy(torch.randn(50, 4), torch.arange(50) % 2, torch.randn(5 * 1024, 4), torch.zeros(5 * 1024), k=5)
    assert bars.n == 4   # the kNN over 5 chunks of queries

class PILImages(Dataset):
    "A torchvision-style dataset: grey PIL images with int labels"
    def __init__(self, x, y): self.x, self.y = x, y
    def __len__(self): return len(self.x)
    def __getitem__(self, i): return Image.fromarray(self.x[i, 0].numpy()), int(self.y[i])

def test_plain_torch_datasets_and_loaders(fmnist):
    x, y, tx, ty = fmnist.train_x[:200], fmnist.train_y[:200], fmnist.test_x[:50], fmnist.test_y[:50]
    enc = create_encoder('small_resnet', n_in=1, width=4)
    ref = evaluate_encoder(enc, x, y, tx, ty, stats=fmnist_stats, k=10)
    assert evaluate_encoder(enc, PILImages(x, y), PILImages(tx, ty), stats=fmnist_stats, k=10) == ref
    assert evaluate_encoder(enc, TensorDataset(x, y), TorchDL(TensorDataset(tx, ty), batch_size=7), stats=fmnist_stats, k=10) == ref
    assert evaluate_encoder(enc, (x.numpy(), y.numpy()), (tx, ty.tolist()), stats=fmnist_stats, k=10) == ref   # arrays and lists
    f = extract_features(enc, PILImages(x, y), eval_pipeline(stats=fmnist_stats), bs=64)
    torch.testing.assert_close(f, extract_features(enc, x, eval_pipeline(stats=fmnist_stats)), atol=1e-5, rtol=1e-4)

def test_fastai_label_types(fmnist):
    "`TensorCategory` labels failed with 'Multiple dispatch failed for torch.Tensor.__getitem__'"
    x, y, tx, ty = fmnist.train_x[:200], fmnist.train_y[:200], fmnist.test_x[:50], fmnist.test_y[:50]
    enc = create_encoder('small_resnet', n_in=1, width=4)
    ref = evaluate_encoder(enc, x, y, tx, ty, stats=fmnist_stats, k=10)
    assert evaluate_encoder(enc, x, TensorCategory(y), tx, TensorCategory(ty), stats=fmnist_stats, k=10) == ref
    f, tf = extract_features(enc, x), extract_features(enc, tx)
    assert knn_accuracy(f, TensorCategory(y), tf, TensorCategory(ty), k=10) == knn_accuracy(f, y, tf, ty, k=10)
    assert linear_probe(f, TensorCategory(y), tf, TensorCategory(ty)) == linear_probe(f, y, tf, ty)
    dls = ssl_dls(x, tx, TensorCategory(y), TensorCategory(ty), bs=32, device='cpu')
    assert evaluate_encoder(enc, dls, stats=fmnist_stats, k=10) == ref
    with pytest.raises(ValueError, match=r'multi-label \(`TensorMultiCategory`\).*single-label `CategoryBlock`'):
        evaluate_encoder(enc, x, TensorMultiCategory(torch.nn.functional.one_hot(y, 10)), tx, ty)

def test_shuffled_loader_gives_aligned_features_and_labels(fmnist):
    x, y, tx, ty = fmnist.train_x[:300], fmnist.train_y[:300], fmnist.test_x[:100], fmnist.test_y[:100]
    enc = create_encoder('small_resnet', n_in=1, width=4)
    tfm = eval_pipeline(stats=fmnist_stats)
    ref = extract_features(enc, x, tfm)
    shuffled = ssl_dls(x, tx, y, ty, bs=64, device='cpu').train   # shuffles and drops the last partial batch
    torch_shuffled = TorchDL(TensorDataset(x, y), batch_size=64, shuffle=True, drop_last=True)
    for dl in (shuffled, torch_shuffled):
        f, l = features_and_labels(enc, dl, tfm)
        torch.testing.assert_close(f, ref, atol=1e-5, rtol=1e-4)   # row for row, all 300
        assert torch.equal(l, y)
    class Batches:   # an iterable of shuffled batches, which cannot be put in order: aligned all the same
        def __iter__(self):
            p = torch.randperm(len(x))
            for i in range(0, len(x), 64): yield x[p[i:i+64]], y[p[i:i+64]]
    f, l = features_and_labels(enc, Batches(), tfm)
    tf = extract_features(enc, tx, tfm)
    assert knn_accuracy(f, l, tf, ty, k=10) == knn_accuracy(ref, y, tf, ty, k=10)
    assert evaluate_encoder(enc, shuffled, (tx, ty), stats=fmnist_stats, k=10) == evaluate_encoder(enc, x, y, tx, ty, stats=fmnist_stats, k=10)

def test_unlabelled_evaluation_sets():
    enc = nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    x, y = (torch.rand(32, 1, 12, 12) * 255).byte(), torch.arange(32) % 2
    unlabelled = ssl_dls(x, x[:8], bs=8, device='cpu')   # -1 everywhere
    with pytest.raises(ValueError, match=r'The test set is unlabelled: all its 8 labels are negative.*ssl_dls\(train_x, valid_x, train_y, valid_y\)'):
        evaluate_encoder(enc, x, y, unlabelled.valid, None)
    with pytest.raises(ValueError, match='The training set is unlabelled: all its 32 labels are negative'):
        evaluate_encoder(enc, unlabelled)
    with pytest.raises(ValueError, match='The training set is unlabelled'):   # found after the pass when only the data knows
        evaluate_encoder(enc, TensorDataset(x, torch.full((32,), -1)), (x, y))
    with pytest.raises(ValueError, match='The training set has no labels'): evaluate_encoder(enc, TensorDataset(x), (x, y))
    with pytest.raises(ValueError, match='KNNMonitor bank is unlabelled'): KNNMonitor.from_dls(unlabelled)
    with pytest.raises(ValueError, match='KNNMonitor queries has no labels'): KNNMonitor(x, y, x, None)
    with pytest.raises(ValueError, match='No test set'): evaluate_encoder(enc, x, y)
    # partly labelled, as in a semi-supervised run: the unlabelled samples are left out
    part = y.clone(); part[::4] = -1
    keep = part >= 0
    assert evaluate_encoder(enc, x, part, x, y, k=5) == evaluate_encoder(enc, x[keep], y[keep], x, y, k=5)

# --- fine-tuning

def test_fine_tuning_trains_the_encoder_at_a_lower_learning_rate(fmnist):
    torch.manual_seed(0)
    enc = create_encoder('small_resnet', n_in=1, width=4)
    conv = enc[0][0].weight
    snap = Snapshots(conv)
    acc, learn = fine_tune_from_ssl(enc, fmnist_dls(fmnist, n_train=256, n_valid=64), epochs=2, freeze_epochs=1, base_lr=1e-2,
                                    lr_mult=4, stats=fmnist_stats, cbs=snap)
    frozen, unfrozen = snap.fits
    assert not any(frozen['grad']) and all(unfrozen['grad'])
    # the frozen epoch leaves the convolutions as they were (fastai's `train_bn` lets batch-norm weights move)
    convs = [k for k in frozen['state'] if k.startswith('encoder.') and k.endswith('.0.weight')]
    assert convs and all(torch.equal(frozen['state'][k], unfrozen['state'][k]) for k in convs)
    lrs = torch.tensor(unfrozen['lrs'])
    torch.testing.assert_close(lrs[:, 0] * 4, lrs[:, 1])                   # encoder group 4x slower, at every step
    assert 0.9 * 5e-3 < lrs[:, 1].max() <= 5e-3                            # the head peaks at base_lr / 2 after the frozen epoch
    assert not all(torch.equal(unfrozen['state'][k], learn.model.state_dict()[k]) for k in convs)   # then the encoder moved
    assert learn.model.encoder is enc

def test_fine_tuned_accuracy_beats_chance_on_fashion_mnist(fmnist):
    torch.manual_seed(0)
    enc = create_encoder('small_resnet', n_in=1, width=4)
    acc, learn = fine_tune_from_ssl(enc, fmnist_dls(fmnist), epochs=2, base_lr=2e-2, stats=fmnist_stats)
    assert acc > 0.35, acc   # chance 0.1; about 0.55 measured
    # the accuracy returned is the model's on the validation set
    x = (fmnist.test_x[:256].float() / 255 - fmnist_stats[0][0]) / fmnist_stats[1][0]
    learn.model.eval()
    with torch.no_grad(): pred = learn.model(x).argmax(1)
    assert abs((pred == fmnist.test_y[:256]).float().mean().item() - acc) < 1e-6

# --- time series (batch, features, frames)

def test_probe_and_fine_tuning_on_time_series():
    (xs, ys), (xv, yv) = series(240), series(90, seed=1)
    dls = ssl_dls(xs, xv, ys, yv, bs=32, device='cpu')
    torch.manual_seed(0)
    enc = conv1d_encoder()
    before = copy.deepcopy(enc.state_dict())
    probe_acc, learn = linear_probe_from_ssl(enc, dls, epochs=5)
    assert same_state(before, enc.state_dict())
    assert learn.model(xv[:5]).shape == (5, 3)
    ft_acc, learn = fine_tune_from_ssl(enc, dls, epochs=5, base_lr=2e-2)
    assert not same_state(before, enc.state_dict())
    assert ft_acc > 0.8 and ft_acc >= probe_acc - 0.05, (probe_acc, ft_acc)   # chance 1/3

# --- bad input

def test_knn_with_k_larger_than_the_bank():
    f, y = clusters(30)
    with pytest.raises(ValueError, match=r'`k=50` must be between 1 and the size of the feature bank \(20\)'):
        knn_accuracy(f[:20], y[:20], f[20:], y[20:], k=50)

def test_probe_without_labels():
    imgs = (torch.rand(32, 1, 12, 12) * 255).byte()
    enc = nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(ValueError, match=r'training DataLoader has no labels.*ssl_dls\(train_x, valid_x, train_y, valid_y\)'):
        linear_probe_from_ssl(enc, ssl_dls(imgs, bs=8, device='cpu'))
    with pytest.raises(ValueError, match='validation DataLoader has no labels'):
        fine_tune_from_ssl(enc, ssl_dls(imgs, imgs[:8], torch.arange(32) % 2, None, bs=8, device='cpu'))
    with pytest.raises(ValueError, match='needs `train_labels` and `test_labels`'):
        linear_probe(torch.randn(10, 4), None, torch.randn(5, 4), None)

def test_number_of_classes_that_does_not_match_the_labels():
    f, y = clusters(60, n_classes=5)
    dls = ssl_dls(f[:40, None], f[40:, None], y[:40], y[40:], bs=8, device='cpu')
    with pytest.raises(ValueError, match=r'`n_classes=3` does not match the labels, which go up to 4: pass n_classes >= 5'):
        linear_probe_from_ssl(nn.Flatten(), dls, n_classes=3)
    learn = classifier_learner(nn.Flatten(), dls, n_classes=10)   # more classes than this subset holds is fine
    assert learn.model.head[-1].out_features == 10

def test_fine_tuning_an_encoder_with_nothing_to_train():
    f, y = clusters(40)
    dls = ssl_dls(f[:32, None], f[32:, None], y[:32], y[32:], bs=8, device='cpu')
    with pytest.raises(ValueError, match='has no parameters: there is nothing to fine-tune.*linear_probe_from_ssl'):
        fine_tune_from_ssl(nn.Flatten(), dls)
    frozen = conv1d_encoder(1).requires_grad_(False)
    with pytest.raises(ValueError, match=r'no trainable parameters \(all 6 have requires_grad=False\).*requires_grad_\(True\)'):
        fine_tune_from_ssl(frozen, dls)
    with pytest.raises(ValueError, match='at least one epoch'): fine_tune_from_ssl(conv1d_encoder(1), dls, epochs=0)

def test_encoder_without_pooling():
    f, y = clusters(40)
    dls = ssl_dls(f[:32, None], f[32:, None], y[:32], y[32:], bs=8, device='cpu')
    with pytest.raises(ValueError, match=r'one feature vector per sample, \(batch, features\), got \(8, 4, 16\)'):
        linear_probe_from_ssl(nn.Conv1d(1, 4, 1), dls)

# --- 2-D maps

def test_tsne_gives_one_2d_point_per_sample_and_keeps_clusters_apart():
    f, y = clusters(150, d=32)
    pts = embed_2d(f, 'tsne', seed=1)
    assert pts.shape == (150, 2) and torch.isfinite(pts).all()
    assert torch.equal(pts, embed_2d(f, 'tsne', seed=1))
    nn1 = torch.cdist(pts, pts).fill_diagonal_(float('inf')).argmin(1)
    assert (y[nn1] == y).float().mean() > 0.98
    assert embed_2d(torch.randn(6, 3)).shape == (6, 2)   # perplexity lowered below the sample count

def test_pca_map_is_the_two_principal_directions():
    f, _ = clusters(100, d=8)
    p = embed_2d(f, 'pca')
    x = f - f.mean(0)
    s = torch.linalg.svdvals(x)
    torch.testing.assert_close(p.norm(dim=0), s[:2], rtol=1e-4, atol=1e-4)

def test_umap_is_used_when_installed(monkeypatch):
    f, _ = clusters(40)
    calls = {}
    class UMAP:
        def __init__(self, **kw): calls.update(kw)
        def fit_transform(self, x): return x[:, :2] * 2
    monkeypatch.setitem(sys.modules, 'umap', types.SimpleNamespace(UMAP=UMAP))
    pts = embed_2d(f, 'umap', seed=3)
    assert calls == dict(n_components=2, n_neighbors=15, random_state=3)
    torch.testing.assert_close(pts, f[:, :2] * 2)
    embed_2d(f[:10], 'umap')
    assert calls['n_neighbors'] == 9   # below the number of samples

def test_umap_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, 'umap', None)   # import fails as if umap-learn were not installed
    with pytest.raises(ImportError, match=r"`method='umap'` needs umap-learn.*pip install umap-learn"):
        embed_2d(torch.randn(20, 4), 'umap')

# --- PNGs, headless

def check_png(path, min_kb=5):
    assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and path.stat().st_size > min_kb * 1024
    img = matplotlib.image.imread(path)
    assert img[..., :3].std() > 0.05   # not a blank canvas
    return img

def test_embedding_png_of_an_encoder(fmnist, tmp_path):
    torch.manual_seed(0)
    enc = create_encoder('small_resnet', n_in=1, width=4)
    fig = plot_encoder_embedding(enc, fmnist.test_x[:300], fmnist.test_y[:300], fmnist.classes, stats=fmnist_stats, n_max=200,
                                 path=tmp_path/'tsne.png')
    ax = fig.axes[0]
    assert sum(len(c.get_offsets()) for c in ax.collections) == 200
    assert {t.get_text() for t in ax.get_legend().get_texts()} <= set(fmnist.classes)
    check_png(tmp_path/'tsne.png')
    with pytest.raises(ValueError, match='200 samples but 10 labels'): plot_embedding(torch.randn(200, 4), torch.arange(10), method='pca')

def test_augmentation_grid_of_every_registered_algorithm(fmnist, tmp_path):
    from self_supervised.registry import ALGOS, ssl_learner
    for algo in ALGOS:
        d = fmnist_dls(fmnist, n_train=64, n_valid=16, bs=16, with_idx=ALGOS[algo].with_idx)
        learn = ssl_learner(d, algo, create_encoder('small_resnet', n_in=1, width=4))
        cb = next(c for c in learn.cbs if isinstance(c, SSLCallback))
        fig = plot_views(cb, n=2, path=tmp_path/f'{algo}.png')
        assert len(fig.axes) == 2 * (1 + len(cb.aug_pipelines)), algo
        check_png(tmp_path/f'{algo}.png', min_kb=2)
        plt.close(fig)

def test_compact_grid_and_delegation_to_show(fmnist, tmp_path):
    from self_supervised.vision.simclr import SimCLR, get_simclr_aug_pipelines
    cb = SimCLR(get_simclr_aug_pipelines(28, stats=fmnist_stats, blur=False))
    fig = plot_views(cb, n=3, x=fmnist.train_x[:8], compact=True, path=tmp_path/'grid.png')
    assert fig.axes[0].images[0].get_array().shape[:2] == (3 * 32, 3 * 32)
    check_png(tmp_path/'grid.png')
    class SeriesCallback:   # any callback with views and its own `show` (the series callbacks plot curves)
        aug_pipelines = [lambda x: x]
        def show(self, n, x=None):
            self.args = (n, x.shape)
            return plt.figure()
    s = SeriesCallback()
    plot_views(s, n=4, x=torch.randn(3, 2, 50))
    assert s.args == (3, (3, 2, 50))   # n clipped to the batch
    with pytest.raises(ValueError, match='not in a Learner.*pass `x=`'): plot_views(cb)
    with pytest.raises(ValueError, match=r'`compact=True` draws images'): plot_views(s, x=torch.randn(3, 2, 50), compact=True)

def test_loss_and_metric_curves_png(tmp_path):
    f, y = clusters(200, d=8)
    dls = ssl_dls(f[:160, None], f[160:, None], y[:160], y[160:], bs=16, device='cpu')
    acc, learn = linear_probe_from_ssl(nn.Flatten(), dls, epochs=3)
    fig = plot_recorder(learn, path=tmp_path/'curves.png')
    loss_ax, met_ax = fig.axes
    assert len(loss_ax.lines[0].get_ydata()) == len(learn.recorder.losses) == 3 * len(dls.train)
    assert list(met_ax.lines[0].get_ydata()) == [r[-1] for r in learn.recorder.values]   # accuracy per epoch
    check_png(tmp_path/'curves.png')
    fig2 = learn.recorder.plot_metrics()   # the same plot, from the Recorder
    assert len(fig2.axes) == 2
    with pytest.raises(TypeError, match='needs a fastai Recorder or Learner'): plot_recorder(nn.Linear(2, 2))
