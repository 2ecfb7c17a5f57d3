"""Known answers for the energies' smaller parts: the sinusoidal time embedding by hand, the joint time head's
re-weighted marginal, the image nets' condition embedding, the Gaussian-mixture base's weights, the initializers'
start and the multi-scale sum's pooling (mutation check, sixth round, docs/testing.md)."""
import math
from types import SimpleNamespace

import numpy as np
import torch

from ebmlab.energies.convnet import ResNetEnergy
from ebmlab.energies.embedding import sinusoidal_embedding
from ebmlab.energies.initializer import MLPInitializer
from ebmlab.energies.mixture_base import GaussianMixtureBase
from ebmlab.energies.mlp import MLPEnergy
from ebmlab.energies.multiscale import MultiScaleEnergy
from ebmlab.energies.time import FeatureTrunk, JointTimeEnergy


def test_sinusoidal_embedding_by_hand():
    """dim 8, max_period 10^4: frequencies 10^4^(-i/4) = 1, 0.1, 0.01, 0.001; sines first, then cosines."""
    t = torch.tensor([0.0, 3.0, 250.0])
    freqs = torch.tensor([1.0, 0.1, 0.01, 0.001], dtype=torch.float64)
    angles = t.double()[:, None] * freqs
    want = torch.cat([angles.sin(), angles.cos()], 1).float()
    assert torch.allclose(sinusoidal_embedding(t, 8), want, atol=1e-5)
    # another period: 100^(-i/2) for dim 4 -> 1, 0.1
    got = sinusoidal_embedding(torch.tensor([7]), 4, max_period=100.0)
    assert torch.allclose(got, torch.tensor([[math.sin(7), math.sin(0.7), math.cos(7), math.cos(0.7)]]), atol=1e-6)


def _head(T=5, sigma=0.7):
    torch.manual_seed(0)
    head = JointTimeEnergy(FeatureTrunk(MLPEnergy(2, 16, 1)), 16, T, sigma)
    with torch.no_grad():  # non-zero increments: the levels differ
        head.increments.weight.normal_(0, 0.5), head.increments.bias.normal_(0, 0.5)
    return head


def test_log_weights_reweight_the_joint_towards_the_heavier_levels():
    """Alg. 4: -log sum_t p(z, t) exp(w_t). A weight of 0 on one level and -1e4 elsewhere reads that level's joint
    energy -f_t; weights log 2 and log 1 on two levels give -log(2 p(z, a) + p(z, b))."""
    head = _head()
    z = torch.randn(6, 2, generator=torch.Generator().manual_seed(1))
    f = head.log_joint(z)
    for t in range(head.T):
        w = torch.full((head.T,), -1e4)
        w[t] = 0.0
        assert torch.allclose(head(z, log_weights=w), -f[:, t], atol=1e-4), t
    w = torch.full((head.T,), -1e4)
    w[1], w[3] = math.log(2.0), 0.0
    want = -torch.log(2 * f[:, 1].double().exp() + f[:, 3].double().exp())
    assert torch.allclose(head(z, log_weights=w).double(), want, atol=1e-4)


def test_a_time_and_class_conditioned_net_reads_both_conditions():
    """condition_embedding adds the time embedding and the class embedding: each condition changes the energy with
    the other held fixed, and label -1 is the null class (label 0 is not)."""
    torch.manual_seed(0)
    net = ResNetEnergy(1, [8], time_cond=True, num_classes=3, embed_dim=8)
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    y0, y1 = torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)
    assert not torch.allclose(net(x, t=1.0, y=y0), net(x, t=4.0, y=y0), atol=1e-4)
    assert not torch.allclose(net(x, t=None, y=y1), net(x, t=9.0, y=y1), atol=1e-4)
    assert not torch.allclose(net(x, t=2.0, y=y0), net(x, t=2.0, y=y1), atol=1e-4)
    assert torch.equal(net(x, t=2.0, y=-y1), net(x, t=2.0))
    assert not torch.allclose(net(x, t=2.0, y=y0), net(x, t=2.0), atol=1e-4)


def _two_gaussians(weights=(0.9, 0.1)):
    """pi = weights, mu = (-4, 0) and (4, 0), Sigma = I and diag(0.25, 4) (precision Cholesky diag(2, 0.5))."""
    gmm = SimpleNamespace(means_=np.array([[-4.0, 0.0], [4.0, 0.0]]), weights_=np.array(weights),
                          precisions_cholesky_=np.array([[1.0, 1.0], [2.0, 0.5]]), covariance_type="diag")
    return GaussianMixtureBase(2).double().fit_from_sklearn(gmm)


def test_mixture_base_energy_is_the_hand_written_mixture_density():
    base = _two_gaussians()
    x = torch.tensor([[-4.0, 0.0], [4.0, 1.0], [0.5, -2.0]], dtype=torch.float64)

    def normal(x, mu, sd):  # product of independent 1-d normal densities
        return torch.exp(-0.5 * ((x - mu) / sd).pow(2)).prod(1) / (2 * math.pi * sd.prod())
    d64 = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    q = 0.9 * normal(x, d64(-4.0, 0.0), d64(1.0, 1.0)) + 0.1 * normal(x, d64(4.0, 0.0), d64(0.5, 2.0))
    assert torch.allclose(base(x), -q.log(), rtol=1e-10)


def test_mixture_base_draws_pick_the_components_by_their_weights():
    """20,000 draws: the share of the right-hand component (x_0 > 0; the components are 8 standard deviations apart)
    is 0.1 within 5 binomial SE (0.0021 each); its spread is diag(0.25, 4)."""
    base = _two_gaussians()
    x = base.sample(20000, torch.Generator().manual_seed(0))
    right = x[:, 0] > 0
    share, se = float(right.double().mean()), math.sqrt(0.1 * 0.9 / 20000)
    assert abs(share - 0.1) < 5 * se, share
    var = x[right].var(0)  # about 2,000 draws: SE of a variance 2 var^2 / n -> sqrt(2/2000) = 3 % relative
    assert torch.allclose(var, torch.tensor([0.25, 4.0], dtype=torch.float64), rtol=0.15), var


def test_mixture_base_draws_of_a_full_covariance_have_it_exactly():
    """One component with precision Cholesky factor U = [[1, 2], [0, 1]] (upper, as sklearn's): Sigma^-1 = U U^T =
    [[5, 2], [2, 1]], Sigma = [[1, -2], [-2, 5]] (U^-1 U^-T would be [[5, -2], [-2, 1]]). 20,000 draws: each
    covariance entry within 5 SE, SE^2 = (S_ii S_jj + S_ij^2) / n; the energy is the hand-written density."""
    u = np.array([[[1.0, 2.0], [0.0, 1.0]]])
    gmm = SimpleNamespace(means_=np.array([[1.0, -1.0]]), weights_=np.array([1.0]), precisions_cholesky_=u,
                          covariance_type="full")
    base = GaussianMixtureBase(2).double().fit_from_sklearn(gmm)
    sigma = torch.tensor([[1.0, -2.0], [-2.0, 5.0]], dtype=torch.float64)
    n = 20000
    x = base.sample(n, torch.Generator().manual_seed(1))
    se = ((sigma.diagonal()[:, None] * sigma.diagonal()[None, :] + sigma ** 2) / n).sqrt()
    assert ((torch.cov(x.T) - sigma).abs() < 5 * se).all(), torch.cov(x.T)
    assert (x.mean(0) - torch.tensor([1.0, -1.0], dtype=torch.float64)).abs().max() < 5 * math.sqrt(5 / n)
    p = torch.tensor([[0.0, 0.5], [2.0, 1.0]], dtype=torch.float64)
    r = p - torch.tensor([1.0, -1.0], dtype=torch.float64)
    quad = (r @ torch.linalg.inv(sigma) * r).sum(1)
    assert torch.allclose(base(p), 0.5 * quad + math.log(2 * math.pi) + 0.5 * float(torch.logdet(sigma)), rtol=1e-10)


def test_the_untrained_mlp_initializer_returns_its_input():
    """Zero-initialised head (weights and bias): g(x; c) = x_{t+1} for any conditioning (the DRL start)."""
    torch.manual_seed(0)
    g = MLPInitializer(3, 5, width=16, depth=1)
    gen = torch.Generator().manual_seed(3)
    x, cond = torch.randn(6, 3, generator=gen), torch.randn(6, 5, generator=gen) * 10
    assert torch.equal(g(x, cond), x)


class _Mean(torch.nn.Module):
    """E(x) = sum of a fixed weight image times x, plus a class-dependent offset: reads the pooled image exactly."""

    def __init__(self, side, seed):
        super().__init__()
        self.w = torch.randn(1, 1, side, side, generator=torch.Generator().manual_seed(seed))
        self.offset = torch.tensor([0.0, 10.0 * (seed + 1)])

    def forward(self, x, y=None):
        e = (x * self.w).flatten(1).sum(1)
        return e if y is None else e + self.offset[y]


def test_multiscale_energy_is_the_sum_over_block_averaged_images_with_the_condition_at_every_scale():
    """Pooling by hand (mean of each f x f block) and a class offset at each scale (10, 20, 30)."""
    nets = [_Mean(8, 0), _Mean(4, 1), _Mean(2, 2)]
    ms = MultiScaleEnergy(nets, [1, 2, 4])
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(4))

    def pool(x, f):
        b, c, h, w = x.shape
        return x.view(b, c, h // f, f, w // f, f).mean((3, 5))
    plain = sum(n(pool(x, f)) for n, f in zip(nets, [1, 2, 4]))
    assert torch.allclose(ms(x), plain, atol=1e-5)
    y = torch.tensor([1, 0, 1])
    assert torch.allclose(ms(x, y=y), plain + 60.0 * y, atol=1e-4)
