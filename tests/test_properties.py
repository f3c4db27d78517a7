"""Property-based tests (hypothesis) over the loss functions: for random shapes and values in range, every loss
is finite with finite gradients, and invariant where the math says so (order of the batch, scale of the
embeddings for cosine-based losses). A new loss is covered by adding it to `LOSSES`."""
from functools import partial
import pytest, torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st, HealthCheck
from self_supervised import losses as L

def _supcon(z1, z2, labels): return L.supcon_loss(torch.cat([z1, z2]), labels.repeat(2), 0.2)
def _moco_queue(z1, z2, labels):
    queue = F.normalize(torch.randn(32, z1.shape[1], generator=torch.Generator().manual_seed(0), dtype=z1.dtype), dim=1)
    return L.moco_loss(z1, z2, queue, 0.2)
def _bank(z1, z2, labels):
    n, d = z1.shape
    neg = F.normalize(torch.randn(n, 8, d, generator=torch.Generator().manual_seed(0), dtype=z1.dtype), dim=2)
    return L.memory_bank_loss(z1, F.normalize(z2.detach(), dim=1), neg, 0.1)

# name: (loss(z1, z2, labels), invariant to a common permutation of the rows, invariant to scaling z1 and z2)
LOSSES = {
    'nt_xent': (lambda a, b, l: L.nt_xent_loss(a, b, 0.2), True, True),
    'dcl': (lambda a, b, l: L.dcl_loss(a, b, 0.2), True, True),
    'dclw': (lambda a, b, l: L.dcl_loss(a, b, 0.2, sigma=0.5), True, True),
    'moco_v3': (lambda a, b, l: L.moco_loss(a, b, None, 0.2), True, True),
    'moco_queue': (_moco_queue, True, True),
    'supcon': (_supcon, True, True),
    'memory_bank': (_bank, False, True),   # the sampled negatives are tied to rows
    'negative_cosine': (lambda a, b, l: L.negative_cosine_loss(a, b), True, True),
    # batch statistics: order-free, but the standardisation's eps (Barlow Twins) and the variance hinge (VICReg) see the scale
    'barlow_twins': (lambda a, b, l: L.barlow_twins_loss(a, b, 0.1), True, False),
    'vicreg': (lambda a, b, l: L.vicreg_loss(a, b), True, False),
}

MAX_EXAMPLES = 40   # per loss and run

@st.composite
def batches(draw):
    n, d = draw(st.integers(2, 12)), draw(st.integers(1, 16))
    seed = draw(st.integers(0, 2**16))
    scale = draw(st.floats(1e-3, 1e3))
    g = torch.Generator().manual_seed(seed)
    z1, z2 = torch.randn(n, d, generator=g, dtype=torch.float64) * scale, torch.randn(n, d, generator=g, dtype=torch.float64) * scale
    labels = torch.randint(-1, 3, (n,), generator=g)
    return z1, z2, labels, draw(st.floats(0.01, 100.)), torch.randperm(n, generator=g)

@pytest.mark.parametrize('name', list(LOSSES))
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(b=batches())
def test_loss_properties(name, b):
    f, perm_inv, scale_inv = LOSSES[name]
    z1, z2, labels, k, perm = b
    a, c = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    loss = f(a, c, labels)
    loss.backward()
    assert torch.isfinite(loss), f"{name}: loss {loss}"
    assert torch.isfinite(a.grad).all() and (c.grad is None or torch.isfinite(c.grad).all()), f"{name}: non-finite gradient"
    if perm_inv: torch.testing.assert_close(f(z1[perm], z2[perm], labels[perm]), loss.detach(), rtol=1e-9, atol=1e-9)
    if scale_inv: torch.testing.assert_close(f(z1 * k, z2 * k, labels), loss.detach(), rtol=1e-9, atol=1e-9)
