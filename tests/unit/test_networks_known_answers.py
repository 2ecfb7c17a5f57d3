"""Known answers for the energy networks and the image path: hand-set MLP, ResNet, UNet and plain ConvNet weights
whose energies are written down, what ``build_energy`` passes from a config, the Frechet distance and Inception
Score against closed forms, where the Inception features are read, the digits metric's splits, and image files of
known pixels read back (mutation check, tenth round, docs/testing.md)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import linalg
from torch import nn

from ebmlab.data.dataset import build_dataset
from ebmlab.data.images import centre_crop, set_channels, to_unit_range
from ebmlab.energies.build import build_energy
from ebmlab.energies.convnet import ResBlock, ResNetEnergy, SelfAttention, make_norm
from ebmlab.energies.mlp import MLPEnergy
from ebmlab.energies.plainconv import PlainConvEnergy
from ebmlab.energies.unet import DDPMResBlock, UNetEncoderEnergy
from ebmlab.metrics import digits as D
from ebmlab.metrics.fid import frechet_distance, frechet_distance_from_stats, inception_score
from ebmlab.metrics.inception import InceptionV3
from ebmlab.training.config import DataConfig, ModelConfig


def _zeroed(net: nn.Module) -> nn.Module:
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
    return net


# ----- MLP ---------------------------------------------------------------------------------------------
def _hand_mlp(activation: str, depth: int = 1, in_dim: int = 2, cond_dim: int = 0) -> MLPEnergy:
    """Zero blocks, input layer = identity, output layer = ones: E(x) = sum_i act(h_i) with h = [x, cond]."""
    width = in_dim + cond_dim
    net = _zeroed(MLPEnergy(in_dim, width, depth, activation, cond_dim=cond_dim))
    with torch.no_grad():
        net.inp.weight.copy_(torch.eye(width))
        net.out.weight.fill_(1.0)
    return net


HAND_ACTIVATIONS = {  # the activations at x = 1 and x = -2, written out
    "relu": lambda v: max(v, 0.0),
    "leaky_relu": lambda v: v if v > 0 else 0.2 * v,            # Nijkamp et al.'s slope 0.2
    "silu": lambda v: v / (1 + math.exp(-v)),
    "swish": lambda v: v / (1 + math.exp(-v)),                  # swish is SiLU
    "softplus": lambda v: math.log1p(math.exp(v)),
    "elu": lambda v: v if v > 0 else math.exp(v) - 1,
    "gelu": lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2))),  # exact GELU, x Phi(x)
    "tanh": math.tanh,
    "sigmoid": lambda v: 1 / (1 + math.exp(-v)),
}


@pytest.mark.parametrize("activation", sorted(HAND_ACTIVATIONS))
def test_an_mlp_with_zero_blocks_is_the_sum_of_its_activation_over_the_input(activation):
    # zero branches leave h = x through the residual blocks; the trunk ends with the activation; out sums it
    net = _hand_mlp(activation)
    want = sum(HAND_ACTIVATIONS[activation](v) for v in (1.0, -2.0))
    assert net(torch.tensor([[1.0, -2.0]])).item() == pytest.approx(want, abs=1e-6)


def test_each_mlp_residual_block_adds_its_branch_to_its_input():
    # each branch's last bias 0.5 (weights 0): two blocks give h = x + 1 = (2, -1); relu and sum -> 2
    net = _hand_mlp("relu", depth=2)
    with torch.no_grad():
        for block in net.blocks:
            block.net[3].bias.fill_(0.5)
    assert net(torch.tensor([[1.0, -2.0]])).item() == pytest.approx(2.0, abs=1e-6)


def test_an_mlp_reads_its_condition_beside_the_input():
    # h = [x, c] = (1, 3): relu(1) + relu(3) = 4; with c = -3 the condition adds nothing: 1
    net = _hand_mlp("relu", depth=0, in_dim=1, cond_dim=1)
    x = torch.tensor([[1.0]])
    assert net(x, torch.tensor([[3.0]])).item() == pytest.approx(4.0)
    assert net(x, torch.tensor([[-3.0]])).item() == pytest.approx(1.0)


def test_the_mlp_config_is_built_with_its_width_depth_and_activation():
    net = build_energy(ModelConfig(name="mlp", width=5, depth=4, activation="tanh"), (3,))
    assert net.inp.out_features == 5 and len(net.blocks) == 4
    assert isinstance(net.act, nn.Tanh) and all(isinstance(b.net[0], nn.Tanh) for b in net.blocks)


# ----- ResNet ------------------------------------------------------------------------------------------
def _hand_resnet(**kw) -> ResNetEnergy:
    """Zero weights; input conv bias (1, -3), readout weights (2, 5), bias 0.5: the feature map is the constant
    (1, -3) through zero-branch blocks and pooling, relu -> (1, 0), E = 2 * 1 + 5 * 0 + 0.5 = 2.5 at any size."""
    net = _zeroed(ResNetEnergy(1, [2, 2], depth=1, activation="relu", **kw))
    with torch.no_grad():
        net.inp.bias.copy_(torch.tensor([1.0, -3.0]))
        net.out.weight.copy_(torch.tensor([[2.0, 5.0]]))
        net.out.bias.fill_(0.5)
    return net


@pytest.mark.parametrize("norm", ["group", "layer", "none"])
def test_a_resnet_with_zero_branches_reads_the_mean_of_its_last_feature_map_at_any_image_size(norm):
    # the skip carries h through each block; the readout is a *mean* over positions, so 8x8 and 16x16 agree
    net = _hand_resnet(norm=norm)
    for side in (8, 16):
        e = net(torch.randn(3, 1, side, side))
        assert torch.allclose(e, torch.full((3,), 2.5)), (side, e)


def test_the_second_norm_of_a_resblock_removes_a_shift_of_its_first_convolution():
    # norm2 (one group: mean over C, H, W) makes the block blind to a constant added to conv1's output
    torch.manual_seed(0)
    block = ResBlock(4, 4, "layer", "relu")
    x = torch.randn(2, 4, 5, 5)
    before = block(x)
    with torch.no_grad():
        block.conv1.bias.add_(0.7)
    assert torch.allclose(block(x), before, atol=1e-5)


@pytest.mark.parametrize("cls, removed", [(DDPMResBlock, True), (ResBlock, False)])
def test_the_ddpm_block_adds_its_embedding_before_the_second_norm_and_the_resblock_after_it(cls, removed):
    # the same layers, two orders: DDPM adds the embedding before norm2, which (one group) removes a shift
    # common to every channel; paper 003's ResBlock adds it after norm2, where the shift reaches conv2
    torch.manual_seed(0)
    block = cls(4, 4, "layer", "relu", embed_dim=3)
    with torch.no_grad():
        block.emb[1].weight.zero_()
        block.emb[1].bias.zero_()
    x, emb = torch.randn(2, 4, 5, 5), torch.randn(2, 3)
    before = block(x, emb)
    with torch.no_grad():
        block.emb[1].bias.fill_(0.9)  # the same shift for every channel
    assert torch.allclose(block(x, emb), before, atol=1e-5) == removed
    with pytest.raises(ValueError, match=f"this {cls.__name__} is conditioned and needs an embedding"):
        block(x)


def test_group_norm_has_at_most_32_groups_of_at_least_4_channels():
    # the docstring's rule: 8 -> 2, 12 -> 3, 64 -> 16, 128 -> 32, 256 -> 32 groups; layer = one group
    for channels, groups in ((8, 2), (12, 3), (64, 16), (128, 32), (256, 32)):
        assert make_norm("group", channels).num_groups == groups
    assert make_norm("layer", 64).num_groups == 1


def test_self_attention_with_uniform_weights_adds_the_mean_over_positions():
    # q = k = 0: softmax weights 1/N over positions; v = x and out = identity: x + mean_positions(x)
    attn = _zeroed(SelfAttention(2, "none"))
    with torch.no_grad():
        attn.qkv.weight[4:, :, 0, 0] = torch.eye(2)
        attn.out.weight[:, :, 0, 0] = torch.eye(2)
    x = torch.randn(3, 2, 4, 5)
    assert torch.allclose(attn(x), x + x.mean((2, 3), keepdim=True), atol=1e-6)
    with torch.no_grad():
        attn.out.weight.zero_()  # a zero output projection leaves the residual alone
    assert torch.equal(attn(x), x)


def test_self_attention_weights_each_query_by_a_softmax_over_the_keys():
    # one channel, positions x = (1, 2), q = k = v = x: row i of the weights is softmax_j(x_i x_j), so
    # y_0 = (e^1 + 2 e^2) / (e^1 + e^2) and y_1 = (e^2 + 2 e^4) / (e^2 + e^4); the output is x + y
    attn = _zeroed(SelfAttention(1, "none"))
    with torch.no_grad():
        attn.qkv.weight.fill_(1.0)
        attn.out.weight.fill_(1.0)
    e = math.exp
    want = torch.tensor([1 + (e(1) + 2 * e(2)) / (e(1) + e(2)), 2 + (e(2) + 2 * e(4)) / (e(2) + e(4))])
    assert torch.allclose(attn(torch.tensor([[[[1.0, 2.0]]]])).flatten(), want, atol=1e-6)


def test_the_resnet_config_is_built_with_its_depth_and_embedding_width():
    cfg = ModelConfig(name="resnet", channels=[4, 8], depth=2, time_embed_dim=12, norm="layer")
    net = build_energy(cfg, (1, 8, 8), time_cond=True)
    assert [len(level) for level in net.levels] == [2, 2]
    assert net.t_mlp[0].out_features == 12 and net.levels[0][0].emb[1].in_features == 12
    assert net.levels[1][0].norm1.num_groups == 1


# ----- UNet and plain ConvNet ---------------------------------------------------------------------------
def _unet() -> UNetEncoderEnergy:
    torch.manual_seed(0)
    return UNetEncoderEnergy(1, [4, 4], depth=1, embed_dim=8, mid_blocks=2).eval()


def test_every_unet_block_is_on_the_energys_path():
    # a shift of one channel of any block's last conv (levels and middle) changes the energy
    net, x = _unet(), torch.randn(2, 1, 8, 8)
    e = net(x, t=3.0)
    for block in [*net.levels[0], *net.levels[1], *net.mid]:
        with torch.no_grad():
            block.conv2.bias[0] += 1.0
        assert not torch.allclose(net(x, t=3.0), e, atol=1e-4)
        with torch.no_grad():
            block.conv2.bias[0] -= 1.0


def test_the_unet_output_norm_removes_a_constant_shift_of_the_last_block():
    # norm_out is GroupNorm(1, C): adding one constant to every channel of the last block does not change E
    net, x = _unet(), torch.randn(2, 1, 8, 8)
    e = net(x, t=3.0)
    with torch.no_grad():
        net.mid[-1].conv2.bias.add_(2.0)
    assert torch.allclose(net(x, t=3.0), e, atol=1e-5)


def test_a_ddpm_block_with_zero_convolutions_is_its_skip():
    # conv1 = conv2 = 0 (biases too): the branch is 0, the block returns x (same channel count: identity skip)
    block = _unet().levels[1][0]
    with torch.no_grad():
        for conv in (block.conv1, block.conv2):
            conv.weight.zero_(), conv.bias.zero_()
    x = torch.randn(2, 4, 4, 4)
    assert torch.equal(block(x, torch.randn(2, 8)), x)


@pytest.mark.parametrize("name", ["resnet", "unet", "plainconv"])
def test_spectral_norm_from_the_config_wraps_every_conv_and_dense_layer(name):
    cfg = ModelConfig(name=name, channels=[4, 4, 4, 4] if name == "plainconv" else [4, 4], depth=1,
                      spectral_norm=True, time_embed_dim=8)
    net = build_energy(cfg, (1, 8, 8))
    layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert layers and all(hasattr(m, "parametrizations") for m in layers)


def test_the_unet_and_plainconv_configs_keep_their_norm_and_activation():
    unet = build_energy(ModelConfig(name="unet", channels=[8, 8], depth=1, norm="group", time_embed_dim=8),
                        (1, 8, 8))
    assert unet.levels[0][0].norm1.num_groups == 2  # group rule: 8 channels -> 2 groups (layer would be 1)
    plain = build_energy(ModelConfig(name="plainconv", channels=[4, 4, 4, 4], activation="elu"), (1, 8, 8))
    assert all(isinstance(a, nn.ELU) for a in plain.acts)


def test_the_plain_convnet_applies_its_activations_between_the_convolutions():
    # all weights positive and biases 0: for a positive image every pre-activation is positive (leaky relu =
    # identity, E doubles with x); for a negative one each is negative and scaled 0.2 by each of 4 activations,
    # so E(-x) = -0.2^4 E(x). Without the activations the net would be linear: E(-x) = -E(x).
    torch.manual_seed(0)
    net = PlainConvEnergy(1, [2, 2, 2, 2], image_size=8)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(p.abs() if p.dim() > 1 else torch.zeros_like(p))
    x = torch.rand(1, 1, 8, 8) + 0.1
    e = net(x)
    assert e.item() > 0 and torch.allclose(net(2 * x), 2 * e, rtol=1e-5)
    assert torch.allclose(net(-x), -(0.2 ** 4) * e, rtol=1e-4)


# ----- Frechet distance and Inception Score ----------------------------------------------------------------
@pytest.mark.parametrize("method", ["eigh", "sqrtm"])
def test_frechet_distance_of_diagonal_gaussians_is_the_sum_of_squared_mean_and_std_differences(method):
    # diagonal: FD = |mu1 - mu2|^2 + sum_i (s1_i - s2_i)^2 = (1 + 4) + ((2 - 1)^2 + (3 - 1)^2) = 10
    fd = frechet_distance_from_stats([1.0, 2.0], np.diag([4.0, 9.0]), [0.0, 0.0], np.eye(2), method=method)
    assert fd == pytest.approx(10.0, abs=1e-9)


@pytest.mark.parametrize("method", ["eigh", "sqrtm"])
def test_frechet_distance_of_non_commuting_covariances_matches_scipys_sqrtm(method):
    # S1 S2 is not symmetric; the reference is tr(S1) + tr(S2) - 2 tr(sqrtm(S1 S2)) by scipy, plus |d|^2 = 0.25
    s1, s2 = np.array([[2.0, 1.0], [1.0, 2.0]]), np.array([[1.0, 0.0], [0.0, 3.0]])
    want = 0.25 + np.trace(s1) + np.trace(s2) - 2 * np.trace(linalg.sqrtm(s1 @ s2)).real
    fd = frechet_distance_from_stats([0.5, 0.0], s1, [0.0, 0.0], s2, method=method)
    assert fd == pytest.approx(want, abs=1e-8)


def test_inception_score_is_exp_of_the_mean_kl_not_the_mean_of_exp():
    # p(y|x) = (1, 0), (0, 1), (1/2, 1/2) twice: p(y) = (1/2, 1/2); KL = log 2, log 2, 0, 0 -> IS = exp(log 2 / 2)
    logits = torch.tensor([[50.0, -50.0], [-50.0, 50.0], [0.0, 0.0], [0.0, 0.0]])
    mean, std = inception_score(logits, splits=1)
    assert mean == pytest.approx(math.sqrt(2.0), abs=1e-9) and std == 0.0


def test_inception_score_is_the_mean_and_std_over_splits_each_with_its_own_marginal():
    # split 1: (1, 0), (0, 1) -> its p(y) = (1/2, 1/2), KL = log 2 each, IS 2; split 2: (1, 0) twice -> p(y) =
    # (1, 0), KL 0, IS 1. Mean 1.5, (population) std 0.5
    logits = torch.tensor([[50.0, -50.0], [-50.0, 50.0], [50.0, -50.0], [50.0, -50.0]])
    mean, std = inception_score(logits, splits=2)
    assert mean == pytest.approx(1.5, abs=1e-9) and std == pytest.approx(0.5, abs=1e-9)


# ----- Inception features --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def inception():
    # He-initialised convolutions keep the activations of order 1 through the 94 convolutions (torch's default init
    # shrinks them to ~1e-6 at the features, where a mean and a max agree within any absolute tolerance)
    torch.manual_seed(0)
    model = InceptionV3()
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    with torch.no_grad():
        model.fc.bias.fill_(3.0)
    return model


def test_inception_features_are_the_mean_of_mixed_7c_and_its_pool_branch_max_pools(inception):
    # pytorch-fid's pool3 features: the global average of the last block; FID's Mixed_7c max-pools its pool
    # branch and Mixed_7b average-pools without the padding (TF): at a corner, the mean of the 2x2 in the image
    seen = {}
    hooks = [getattr(inception, n).register_forward_hook(lambda m, i, o, n=n: seen.update({n: (i[0], o)}))
             for n in ("Mixed_7b", "Mixed_7c")]
    hooks += [getattr(inception, n).branch_pool.register_forward_pre_hook(lambda m, i, n=n: seen.update({n + "p": i[0]}))
              for n in ("Mixed_7b", "Mixed_7c")]
    with torch.no_grad():
        feats = inception.pool_features(torch.randn(1, 3, 139, 139))
    for h in hooks:
        h.remove()
    assert feats.abs().max() > 0.1  # activations of order 1 (see the fixture)
    assert torch.allclose(feats, seen["Mixed_7c"][1].mean((2, 3)), atol=1e-6)
    x7c, x7b = seen["Mixed_7c"][0], seen["Mixed_7b"][0]
    assert torch.allclose(seen["Mixed_7cp"], F.max_pool2d(x7c, 3, stride=1, padding=1))
    assert torch.allclose(seen["Mixed_7bp"][..., 0, 0], x7b[..., :2, :2].mean((2, 3)), atol=1e-6)


def test_inception_logits_leave_out_the_fc_bias_by_default(inception):
    # logits_unbiased: feats @ W^T; with logits_bias the bias (set to 3 for every class) is added
    x = torch.rand(1, 1, 80, 80) * 2 - 1
    with torch.no_grad():
        feats, logits = inception(x)
        _, biased = inception(x, logits_bias=True)
    assert torch.allclose(logits, feats @ inception.fc.weight.T, atol=1e-5)
    assert torch.allclose(biased, logits + 3.0, atol=1e-5)


# ----- digits metric ----------------------------------------------------------------------------------------
def test_the_digits_classifier_is_fitted_on_the_training_split(monkeypatch):
    # _train hands _fit the first 1,500 images of the seeded permutation (not the 297 held-out ones)
    got = {}
    monkeypatch.setattr(D, "_fit", lambda net, x, y, cfg: got.update(x=x, y=y))
    D._train(D.DigitsClassifierConfig())
    xtr, ytr, _, _ = D.digits_split()
    assert torch.equal(got["x"], xtr) and torch.equal(got["y"], ytr)


class _PixelFeatures:
    """A stand-in classifier: features = four pixels of the native image; every image is class 0."""
    cfg = D.DigitsClassifierConfig()

    def features(self, images):
        return D.to_native(images, 8).flatten(1)[:, 26:30].double()

    def classify(self, images):
        n = images.shape[0]
        probs = torch.zeros(n, 10, dtype=torch.float64)
        probs[:, 0] = 1.0
        return torch.zeros(n, dtype=torch.long), probs

    def accuracy(self, images, labels):
        return 0.0


def test_the_digits_floor_and_noise_ceiling_compare_train_and_uniform_noise_with_the_test_split():
    # floor: FD(train, test); ceiling: FD(U[-1, 1] noise of the samples' shape from the same generator, test)
    xtr, _, xte, _ = D.digits_split()
    clf, samples = _PixelFeatures(), xte[:50]
    out = D.digits_metrics(samples, torch.Generator().manual_seed(5), train=xtr, test=xte, clf=clf)
    noise = torch.rand(samples.shape, generator=torch.Generator().manual_seed(5)) * 2 - 1
    assert out["digits_fd_floor"] == pytest.approx(frechet_distance(clf.features(xtr), clf.features(xte)))
    assert out["digits_fd_noise"] == pytest.approx(frechet_distance(clf.features(noise), clf.features(xte)))
    assert out["digits_fd_floor"] > 0.01


def test_the_digits_metric_reads_colour_images_as_the_mean_of_their_channels():
    # channels -1, 0.5, 1 -> grey (-1 + 0.5 + 1) / 3 = 1/6 everywhere
    x = torch.tensor([-1.0, 0.5, 1.0])[None, :, None, None].expand(2, 3, 8, 8)
    assert torch.allclose(D.to_native(x, 8), torch.full((2, 1, 8, 8), 1 / 6))


# ----- image files and arrays ----------------------------------------------------------------------------
def test_float_arrays_in_the_unit_interval_are_mapped_to_minus_one_one():
    # [0, 1] floats: 2 v - 1 (0 -> -1, 0.25 -> -0.5, 1 -> 1); arrays with a negative value are kept as they are
    a = np.array([0.0, 0.25, 1.0], dtype=np.float32).reshape(1, 1, 3, 1)
    assert torch.equal(to_unit_range(a, "a").flatten(), torch.tensor([-1.0, -0.5, 1.0]))
    b = np.array([-0.5, 0.25, 1.0], dtype=np.float32).reshape(1, 1, 3, 1)
    assert torch.equal(to_unit_range(b, "b").flatten(), torch.tensor([-0.5, 0.25, 1.0]))


def test_a_png_of_known_pixels_reads_back_row_by_row_in_rgb_order(tmp_path):
    # a 2 x 3 image (H 2, W 3): pixel (r, c) has red 255 at (0, 2) only, green 255 at (1, 0) only; blue 0
    from PIL import Image
    a = np.zeros((2, 3, 3), dtype=np.uint8)
    a[0, 2, 0], a[1, 0, 1] = 255, 255
    for i in range(2):
        Image.fromarray(a).save(tmp_path / f"{i}.png")
    d = build_dataset(DataConfig(name="imagefolder", path=str(tmp_path), n_test=1))
    want = -torch.ones(3, 2, 3)
    want[0, 0, 2], want[1, 1, 0] = 1.0, 1.0
    assert torch.equal(d.train[0], want) and torch.equal(d.test[0], want)


def test_cifar_rows_are_channel_planes_of_32_by_32(tmp_path):
    # the official layout: 1024 red values (row-major), then 1024 green, then 1024 blue
    import pickle
    row = np.zeros(3072, dtype=np.uint8)
    row[1024 * 1 + 32 * 5 + 7] = 255  # green, row 5, column 7
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for f in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(root / f, "wb") as fh:
            pickle.dump({"data": row[None].copy(), "labels": [3]}, fh)
    d = build_dataset(DataConfig(name="cifar10", path=str(tmp_path)))
    want = -torch.ones(3, 32, 32)
    want[1, 5, 7] = 1.0
    assert torch.equal(d.test[0], want)


def test_the_centre_crop_keeps_the_middle_rows_and_columns():
    # 6 x 7 image of values 10 r + c; crop 2: top (6 - 2) // 2 = 2, left (7 - 2) // 2 = 2
    x = (10 * torch.arange(6)[:, None] + torch.arange(7)).float()[None, None]
    assert torch.equal(centre_crop(x, 2)[0, 0], torch.tensor([[22.0, 23.0], [32.0, 33.0]]))


def test_channels_first_arrays_keep_their_rows_and_columns():
    # (N, C, H, W) = (1, 3, 2, 4) uint8 with one 255 at channel 1, row 0, column 3: read back at the same place
    a = np.zeros((1, 3, 2, 4), dtype=np.uint8)
    a[0, 1, 0, 3] = 255
    want = -torch.ones(1, 3, 2, 4)
    want[0, 1, 0, 3] = 1.0
    assert torch.equal(to_unit_range(a, "a"), want)


def test_rgb_to_grey_is_the_itu_r_601_luma():
    # 0.299 R + 0.587 G + 0.114 B: pure red (1, -1, -1) -> 0.299 - 0.701 = -0.402; pure blue -> 0.114 - 0.886
    x = torch.tensor([[1.0, -1.0, -1.0], [-1.0, -1.0, 1.0]])[:, :, None, None]
    assert torch.allclose(set_channels(x, 1).flatten(), torch.tensor([-0.402, -0.772]), atol=1e-6)
