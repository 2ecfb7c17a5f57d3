"""Mutation round 59 (docs/testing.md "An eleventh mutation round"): the image energies (convnet, unet,
multiscale, plainconv), the initializer networks, the mixture base and the model registry. Each test checks a module against a hand-written equivalent of the
architecture its docstring describes (functional ops on the module's own weights), or against a number the
docstring, the paper or the config states."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ebmlab.energies.build import build_energy
from ebmlab.energies.convnet import ResBlock, ResNetEnergy, SelfAttention, SubPixelDown
from ebmlab.energies.initializer import UNetInitializer, _ResBlock, build_initializer
from ebmlab.energies.mixture_base import GaussianMixtureBase
from ebmlab.energies.plainconv import PlainConvEnergy
from ebmlab.energies.unet import DDPMResBlock, UNetEncoderEnergy
from ebmlab.training.config import ModelConfig


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _jitter(net: nn.Module, seed=0, scale=0.3) -> nn.Module:
    """Move every parameter off its initial value (norm affines included) so that no layer is an identity."""
    g = _gen(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return net


def _gn(norm: nn.Module, x):
    if isinstance(norm, nn.Identity):
        return x
    return F.group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps)


def _conv(conv: nn.Conv2d, x, k: int):
    """A k x k convolution, stride 1, 'same' padding (the docstrings' 3x3 and 1x1 convs)."""
    assert tuple(conv.weight.shape[-2:]) == (k, k)
    return F.conv2d(x, conv.weight, conv.bias, padding=k // 2)


def _lin(layer: nn.Linear, x):
    return x @ layer.weight.T + layer.bias


def _sinusoid(t, dim):
    """DDPM / transformer embedding: [sin(t w_i), cos(t w_i)], w_i = 10000^(-i / (dim / 2))."""
    half = dim // 2
    w = torch.tensor([10000.0 ** (-i / half) for i in range(half)])
    a = t.float()[:, None] * w[None]
    return torch.cat([a.sin(), a.cos()], 1)


# ----- convnet: the paper 003 Table 5a block, the attention, the whole ResNet ------------------------------------
def _ref_resblock(b: ResBlock, x, emb, act):
    """h = norm(conv(act(norm(x)))); h += Dense(act(emb)); h = conv(act(h)); out = skip(x) + h."""
    h = _gn(b.norm2, _conv(b.conv1, act(_gn(b.norm1, x)), 3))
    if emb is not None:
        h = h + _lin(b.emb[1], act(emb))[:, :, None, None]
    h = _conv(b.conv2, act(h), 3)
    skip = x if isinstance(b.skip, nn.Identity) else _conv(b.skip, x, 1)
    return skip + h


def _ref_attention(a: SelfAttention, x):
    """x + out(y), y_i = sum_j softmax_j(q_i . k_j / sqrt(C)) v_j over the H W positions, q k v from norm(x)."""
    b, c, h, w = x.shape
    qkv = _conv(a.qkv, _gn(a.norm, x), 1).reshape(b, 3, c, h * w)
    q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
    att = torch.softmax(torch.einsum("bci,bcj->bij", q, k) / math.sqrt(c), dim=2)
    y = torch.einsum("bij,bcj->bci", att, v).reshape(b, c, h, w)
    return x + _conv(a.out, y, 1)


@pytest.mark.parametrize("c_in,c_out,embed", [(4, 8, 0), (8, 8, 5)])
def test_resblock_is_the_paper003_block_written_out(c_in, c_out, embed):
    torch.manual_seed(0)
    block = _jitter(ResBlock(c_in, c_out, "group", "swish", embed_dim=embed), seed=1)
    x = torch.randn(2, c_in, 5, 6, generator=_gen(2))
    emb = torch.randn(2, embed, generator=_gen(3)) if embed else None
    assert torch.allclose(block(x, emb), _ref_resblock(block, x, emb, F.silu), atol=1e-5)


@pytest.mark.parametrize("c,norm", [(4, "layer"), (8, "group")])
def test_self_attention_is_softmax_of_scaled_dot_products_written_out(c, norm):
    torch.manual_seed(0)
    attn = _jitter(SelfAttention(c, norm), seed=1, scale=0.5)
    x = torch.randn(2, c, 3, 5, generator=_gen(2)) * 2
    assert torch.allclose(attn(x), _ref_attention(attn, x), atol=1e-5)


def test_subpixel_down_halves_each_side_rounding_up_on_non_square_images():
    """(B, C, H, W) -> (B, C, ceil(H/2), ceil(W/2)): each odd side zero-padded by one at its end first."""
    torch.manual_seed(0)
    down = SubPixelDown(2)
    for h, w in ((3, 4), (4, 5), (5, 2)):
        x = torch.randn(1, 2, h, w, generator=_gen(h * 10 + w))
        want = _conv(down.proj, F.pixel_unshuffle(F.pad(x, (0, w % 2, 0, h % 2)), 2), 1)
        assert torch.allclose(down(x), want, atol=1e-6), (h, w)
        assert down(x).shape == (1, 2, math.ceil(h / 2), math.ceil(w / 2))


def _ref_resnet(net: ResNetEnergy, x, t, act, last_act):
    """The convnet.py docstring: 3x3 conv -> per level: blocks, then 2x2 average pooling (ceil mode, not after the
    last level, none once 1x1) -> self-attention -> activation -> global mean -> Dense."""
    emb = None
    if net.t_mlp is not None:  # sinusoid -> Dense -> act -> Dense
        emb = _lin(net.t_mlp[2], act(_lin(net.t_mlp[0], _sinusoid(t, net.embed_dim))))
    h = _conv(net.inp, x, 3)
    for i, level in enumerate(net.levels):
        for block in level:
            h = _ref_resblock(block, h, emb, act)
        if i < len(net.levels) - 1 and min(h.shape[-2:]) > 1:
            h = F.avg_pool2d(h, 2, ceil_mode=True)
    if net.attn is not None:
        h = _ref_attention(net.attn, h)
    return _lin(net.out, last_act(h).mean((2, 3))).squeeze(1)


@pytest.mark.parametrize("side", [5, 8])
def test_resnet_energy_is_its_docstring_architecture_written_out(side):
    """Odd sides (5 -> 3 -> 2) take the ceil-mode pooling the docstring names; time conditioning included."""
    torch.manual_seed(0)
    net = _jitter(ResNetEnergy(2, [4, 8, 8], depth=1, norm="group", activation="swish", attention=True,
                               time_cond=True, embed_dim=6, last_activation="relu"), seed=1, scale=0.2)
    x = torch.randn(3, 2, side, side, generator=_gen(2))
    t = torch.tensor([0.5, 3.0, 7.0])
    assert torch.allclose(net(x, t=t), _ref_resnet(net, x, t, F.silu, F.relu), atol=1e-4)


def test_every_resnet_parameter_reaches_the_energy():
    """Sub-pixel pooling without down_last: one down-sampling per gap between levels, no module left unused
    (an unused parameter breaks DistributedDataParallel and bloats checkpoints)."""
    torch.manual_seed(0)
    for kw in ({"pool": "subpixel"}, {"pool": "subpixel", "down_last": True}, {"attention": True}):
        net = ResNetEnergy(1, [4, 8], time_cond=True, embed_dim=4, **kw)
        net(torch.randn(2, 1, 8, 8), t=torch.tensor([1.0, 2.0])).sum().backward()
        unused = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
        assert not unused, (kw, unused)
    assert len(ResNetEnergy(1, [4, 8, 8], pool="subpixel").down) == 2


def test_resnet_config_defaults_and_options_reach_the_net():
    # model.norm unset: group (the convnet docstring, paper 001 B.1); 8 channels -> 2 groups of 4
    net = build_energy(ModelConfig(name="resnet", channels=[8, 8], depth=1), (1, 8, 8))
    assert net.levels[0][0].norm1.num_groups == 2
    # model.pool: subpixel (paper 002 Sec. 5)
    sub = build_energy(ModelConfig(name="resnet", channels=[4, 4], depth=1, pool="subpixel"), (1, 8, 8))
    assert sub.down is not None and isinstance(sub.down[0], SubPixelDown)
    # model.channels unset: width at up to 3 resolutions, whatever the image size
    for side in (8, 32, 64):
        assert len(build_energy(ModelConfig(name="resnet", width=4, depth=1), (1, side, side)).levels) == 3


def test_the_time_mlp_is_dense_act_dense():
    """Paper 003 Table 5c: sinusoid -> Dense -> act -> Dense. The embedding of t is what reaches each block."""
    torch.manual_seed(0)
    net = _jitter(ResNetEnergy(1, [4], time_cond=True, embed_dim=6, activation="tanh"), seed=1)
    t = torch.tensor([0.0, 2.0, 9.0])
    want = _lin(net.t_mlp[2], torch.tanh(_lin(net.t_mlp[0], _sinusoid(t, 6))))
    assert torch.allclose(net.embed(torch.zeros(3, 1, 4, 4), t), want, atol=1e-5)


# ----- unet: DDPM's encoder ------------------------------------------------------------------------------------------
def _ref_ddpm_block(b: DDPMResBlock, x, emb, act):
    """DDPM order: h = conv(act(norm(x))); h += Dense(act(temb)); h = conv(act(norm(h))); skip(x) + h."""
    h = _conv(b.conv1, act(_gn(b.norm1, x)), 3)
    if emb is not None:
        h = h + _lin(b.emb[1], act(emb))[:, :, None, None]
    h = _conv(b.conv2, act(_gn(b.norm2, h)), 3)
    skip = x if isinstance(b.skip, nn.Identity) else _conv(b.skip, x, 1)
    return skip + h


def _ref_unet(net: UNetEncoderEnergy, x, t, act, last_act):
    """unet.py docstring: t -> sinusoid(channels[0]) -> Dense -> act -> Dense; 3x3 conv; per level: blocks then
    sub-pixel pooling (pixel_unshuffle(2), 1x1 conv; not after the last level); 2 middle blocks; norm -> act ->
    global mean -> Dense."""
    c0 = net.inp.out_channels
    emb = _lin(net.t_mlp[2], act(_lin(net.t_mlp[0], _sinusoid(t, c0))))
    h = _conv(net.inp, x, 3)
    for i, level in enumerate(net.levels):
        for block in level:
            h = _ref_ddpm_block(block, h, emb, act)
        if i < len(net.levels) - 1:
            h = _conv(net.down[i].proj, F.pixel_unshuffle(h, 2), 1)
    assert len(net.mid) == 2
    for block in net.mid:
        h = _ref_ddpm_block(block, h, emb, act)
    return _lin(net.out, last_act(F.group_norm(h, 1, net.norm_out.weight, net.norm_out.bias)).mean((2, 3))).squeeze(1)


def test_unet_energy_is_its_docstring_architecture_written_out():
    torch.manual_seed(0)
    net = _jitter(UNetEncoderEnergy(2, [4, 8], depth=2, norm="layer", activation="sigmoid", embed_dim=6,
                                    last_activation="tanh"), seed=1, scale=0.2)
    x = torch.randn(3, 2, 8, 8, generator=_gen(2))
    t = torch.tensor([1.0, 4.0, 20.0])
    assert torch.allclose(net(x, t=t), _ref_unet(net, x, t, torch.sigmoid, torch.tanh), atol=1e-5)


def test_unet_config_passes_the_last_activation_and_defaults_to_layer_norm():
    cfg = ModelConfig(name="unet", channels=[8, 8], depth=1, activation="sigmoid", last_activation="relu",
                      pool="subpixel", time_embed_dim=8)
    net = build_energy(cfg, (1, 8, 8), time_cond=True)
    assert isinstance(net.act, nn.ReLU) and isinstance(net.levels[0][0].act1, nn.Sigmoid)
    # model.norm unset: paper 002's "Layer Normalization" = GroupNorm(1, C) (build_unet: default layer)
    assert net.levels[0][0].norm1.num_groups == 1 and net.norm_out.num_groups == 1


# ----- multiscale: App. B.1's per-scale nets -----------------------------------------------------------------------
def test_multiscale_scales_drop_their_first_block_counts_and_keep_norm_group():
    """blocks[i:] at scale i (the first down-sampled resolution(s) removed), and model.norm unset = group."""
    cfg = ModelConfig(name="multiscale", channels=[8, 8, 8], blocks=[1, 2, 3], depth=1)
    net = build_energy(cfg, (1, 8, 8))
    assert [[len(level) for level in n.levels] for n in net.nets] == [[1, 2, 3], [2, 3], [3]]
    assert all(n.levels[0][0].norm1.num_groups == 2 for n in net.nets)  # group: 8 channels -> 2 groups


def test_multiscale_attention_at_the_end_stays_at_the_end_of_every_scale():
    """attention_at = len(channels) is the lowest resolution (after the last level) of the full net; the same
    place in the image is the end of each coarser net too, also where a short list keeps its last level."""
    for channels in ([4, 4, 4], [4, 4]):
        cfg = ModelConfig(name="multiscale", channels=channels, depth=1, attention=True,
                          attention_at=len(channels))
        net = build_energy(cfg, (1, 8, 8))
        assert len(net.nets) == 3
        assert [n.attention_at for n in net.nets] == [None, None, None], channels


# ----- plainconv: Nijkamp et al.'s ConvNet ---------------------------------------------------------------------------
def _ref_plainconv(net: PlainConvEnergy, x, attention_at):
    """3x3 s1 conv, act, three 4x4 s2 p1 convs each + act, a valid conv to one channel, mean over what is left;
    one self-attention without a norm before conv ``attention_at`` (4: after the last)."""
    act = lambda v: F.leaky_relu(v, 0.2)  # noqa: E731 -- Nijkamp et al.'s slope
    h = x
    for i, conv in enumerate(net.convs):
        if net.attn is not None and attention_at == i:
            h = _ref_attention(net.attn, h)
        k, s, p = (3, 1, 1) if i == 0 else (4, 2, 1)
        assert tuple(conv.weight.shape[-2:]) == (k, k)
        h = act(F.conv2d(h, conv.weight, conv.bias, stride=s, padding=p))
    if net.attn is not None and attention_at == 4:
        h = _ref_attention(net.attn, h)
    return F.conv2d(h, net.final.weight, net.final.bias).mean((1, 2, 3))


@pytest.mark.parametrize("attention_at", [0, 2, 4])
def test_plainconv_is_nijkamps_convnet_written_out(attention_at):
    torch.manual_seed(0)
    net = _jitter(PlainConvEnergy(1, [2, 4, 4, 8], 16, attention=True, attention_at=attention_at), seed=1, scale=0.1)
    assert not any(isinstance(m, nn.GroupNorm) for m in net.modules())  # "No normalisation layers"
    for shape in ((2, 1, 16, 16), (2, 1, 16, 32)):  # a wider image: the remaining positions are averaged
        x = torch.randn(*shape, generator=_gen(2))
        assert torch.allclose(net(x), _ref_plainconv(net, x, attention_at), atol=1e-5), shape


def test_plainconv_config_defaults():
    """model.channels unset: n_f, 2 n_f, 4 n_f, 8 n_f with n_f = model.width; attention: true with attention_at
    unset is the docstring's default 2 (before conv 2, i.e. after the first stride-2 conv: 16x16 for 32x32)."""
    net = build_energy(ModelConfig(name="plainconv", width=3, activation="leaky_relu", attention=True), (1, 32, 32))
    assert [c.out_channels for c in net.convs] == [3, 6, 12, 24]
    seen = []
    net.attn.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape[1:])))
    net(torch.randn(1, 1, 32, 32))
    assert seen == [(6, 16, 16)]  # the output of conv 1 (2 n_f channels), before conv 2


# ----- initializer: paper 003's g_phi --------------------------------------------------------------------------------
def test_initializer_block_is_gn_silu_conv_then_gn_scaled_and_shifted_by_the_condition_silu_conv_plus_skip():
    torch.manual_seed(0)
    block = _jitter(_ResBlock(4, 8, 5), seed=1)
    x, c = torch.randn(2, 4, 6, 6, generator=_gen(2)), torch.randn(2, 5, generator=_gen(3))
    ss = _lin(block.cond, c)[:, :, None, None]  # (2, 16, 1, 1): the first 8 the scale, the last 8 the shift
    z = _gn(block.norm2, _conv(block.conv1, F.silu(_gn(block.norm1, x)), 3)) * (1 + ss[:, :8]) + ss[:, 8:]
    z = _conv(block.conv2, F.silu(z), 3)
    assert torch.allclose(block(x, c), _conv(block.skip, x, 1) + z, atol=1e-5)


def test_untrained_unet_initializer_returns_its_input_and_a_trained_one_reads_the_condition():
    torch.manual_seed(0)
    g = UNetInitializer(2, 3, channels=(16, 16))  # 8 groups of 2: the condition's shift is not all normalised away
    x = torch.randn(2, 2, 8, 8, generator=_gen(1))
    c1, c2 = torch.randn(2, 3, generator=_gen(2)), torch.randn(2, 3, generator=_gen(3))
    assert torch.equal(g(x, c1), x)  # zero-initialised output conv: g = x_{t+1}
    _jitter(g, seed=4)
    assert not torch.allclose(g(x, c1), g(x, c2), atol=1e-4)


def test_unet_initializer_pools_by_2x2_averages_and_upsamples_by_nearest():
    torch.manual_seed(0)
    g = _jitter(UNetInitializer(1, 3, channels=(4, 4)), seed=1)
    seen = {}

    def keep(name, which):
        def hook(m, i, o):
            seen.setdefault(name, o if which == "out" else i[0])  # returns None: the output is left alone
        return hook
    g.down[0][1].register_forward_hook(keep("level0", "out"))
    g.down[1][0].register_forward_hook(keep("into1", "in"))
    g.up[0][1].register_forward_hook(keep("up0", "out"))
    g.up[1][0].register_forward_hook(keep("up1_in", "in"))
    g(torch.randn(2, 1, 8, 8, generator=_gen(2)), torch.randn(2, 3, generator=_gen(3)))
    l0 = seen["level0"]
    assert torch.allclose(seen["into1"], l0.view(2, 4, 4, 2, 4, 2).mean((3, 5)), atol=1e-6)
    up = seen["up0"].repeat_interleave(2, 2).repeat_interleave(2, 3)
    assert torch.allclose(seen["up1_in"], torch.cat([up, l0], 1), atol=1e-6)


def test_unet_initializer_takes_sides_divisible_by_2_to_the_levels_minus_one():
    g = build_initializer((1, 12, 12), 3, channels=(4, 4, 4))  # 3 levels: sides divisible by 4
    x = torch.randn(1, 1, 12, 12)
    assert g(x, torch.zeros(1, 3)).shape == x.shape
    with pytest.raises(ValueError, match="divisible by 4"):
        g(torch.randn(1, 1, 10, 10), torch.zeros(1, 3))


# ----- mixture base --------------------------------------------------------------------------------------------------
def test_the_standard_normal_base_is_the_unit_gaussians_negative_log_density():
    d = 3
    base = GaussianMixtureBase(d).standard_normal()
    x = torch.randn(5, d, generator=_gen(1))
    want = 0.5 * x.pow(2).sum(1) + 0.5 * d * math.log(2 * math.pi)
    assert torch.allclose(base(x), want, atol=1e-5)


def test_the_closed_form_gradient_is_scaled_by_the_upstream_gradient():
    """d(sum_i w_i B(x_i))/dx_i = w_i Sigma^-1 x_i for N(0, I): dB/dx = x."""
    base = GaussianMixtureBase(2).standard_normal()
    x = torch.randn(4, 2, generator=_gen(1)).requires_grad_()
    w = torch.tensor([1.0, -2.0, 0.5, 3.0])
    (g,) = torch.autograd.grad((w * base(x)).sum(), x)
    assert torch.allclose(g, w[:, None] * x.detach(), atol=1e-5)


# ----- build: the registry -------------------------------------------------------------------------------------------
def test_mlp_builder_passes_the_fourier_scale_and_refuses_class_conditioning():
    from ebmlab.errors import ConfigError
    torch.manual_seed(0)
    net = build_energy(ModelConfig(name="mlp", width=8, depth=1, fourier=256, fourier_scale=50.0), (2,))
    assert 40.0 < float(net.freqs.std()) < 60.0  # frequencies ~ N(0, fourier_scale^2)
    with pytest.raises(ConfigError, match="class"):
        build_energy(ModelConfig(name="mlp", width=8, depth=1), (2,), num_classes=3)


def test_a_vector_head_drops_the_scalar_base_measure():
    """base_std / base gmm apply to the scalar energy only (out_dim 1); paper 000's T-vector head has none."""
    for extra in ({"base_std": 1.0}, {"base": "gmm"}):
        net = build_energy(ModelConfig(name="mlp", width=8, depth=1, **extra), (2,), out_dim=3)
        assert net(torch.randn(4, 2)).shape == (4, 3) and net.base is None and net.base_coef is None


def test_the_joint_energy_honours_zero_increments_false():
    from ebmlab.energies.build import build_joint_energy
    cfg = ModelConfig(name="mlp", width=8, depth=1)
    assert build_joint_energy(cfg, (2,), T=4, sigma_n=1.0).increments.weight.abs().sum() == 0
    torch.manual_seed(0)
    assert build_joint_energy(cfg, (2,), T=4, sigma_n=1.0, zero_increments=False).increments.weight.abs().sum() > 0


class _Takes(nn.Module):
    def __init__(self, width=1, cond_dim=0):
        super().__init__()
        self.width, self.cond_dim = width, cond_dim


def test_custom_energy_gets_the_methods_extra_over_its_kwargs():
    """build.py docstring: the method's ``extra`` replaces an argument of the same name in ``kwargs``."""
    cfg = ModelConfig(name="custom", target=f"{__name__}:_Takes", kwargs={"width": 5, "cond_dim": 0})
    net = build_energy(cfg, (2,), cond_dim=7)
    assert (net.width, net.cond_dim) == (5, 7)


def test_build_initializer_without_channels_takes_the_configs_default():
    """build_initializer(channels=None) = method.init_channels' default [32, 64, 64] (objectives/recovery.py)."""
    from ebmlab.objectives.recovery import RecoveryConfig
    default = RecoveryConfig().init_channels
    g = build_initializer((1, 8, 8), 3)
    assert [blocks[0].conv1.out_channels for blocks in g.down] == list(default)


def test_the_cwd_hint_is_only_for_the_target_module_itself_missing(tmp_path, monkeypatch):
    """cwd_hint: the current-directory advice when *the target's own* top module is not found; a module that
    is found but fails on a missing dependency of its own gets no such advice."""
    import sys

    from ebmlab.energies.build import cwd_hint
    (tmp_path / "mymod.py").write_text("")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".") and p != str(tmp_path)])
    assert "current directory" in cwd_hint(ModuleNotFoundError("x", name="mymod"), "mymod")
    assert cwd_hint(ModuleNotFoundError("x", name="somedep"), "mymod") == ""


# WAS A BUG: UNetInitializer ignored its condition (logSNR / class) when a GroupNorm group is one channel (init_channels 8)
def test_unet_initializer_reads_the_condition_with_eight_channel_levels():
    """g_phi(x_{t+1}, lambda_t [, c]) (initializer.py docstring, paper 003 Eq. 6): the condition was added after
    conv1 and then went through norm2 = GroupNorm(gcd(C, 8), C); with C in {1, 2, 4, 8} every group is one
    channel, which removes a per-channel shift exactly (the convnet.py docstring's own warning), so every level
    was blind to cond and g the same for every noise level (method.init_channels accepts e.g. [8, 8]). Now the
    condition scales and shifts norm2's output (Nichol & Dhariwal's scale-shift norm)."""
    torch.manual_seed(0)
    g = _jitter(UNetInitializer(1, 3, channels=(8, 8)), seed=1)
    x = torch.randn(2, 1, 8, 8, generator=_gen(2))
    c1, c2 = torch.randn(2, 3, generator=_gen(3)), torch.randn(2, 3, generator=_gen(4))
    assert not torch.allclose(g(x, c1), g(x, c2), atol=1e-4)
