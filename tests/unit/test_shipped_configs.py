"""The configs shipped inside the package (``src/ebmlab/configs``, issue 12 part 6): each one loads by
name and builds; ``ebmlab configs`` lists and prints them; unknown names get one sentence."""
from __future__ import annotations

import pytest
import torch

from ebmlab.cli import main
from ebmlab.config import config_description, shipped_config_text, shipped_configs
from ebmlab.data import DATASETS, TOYS, build_dataset
from ebmlab.energies.build import build_energy
from ebmlab.errors import ConfigError
from ebmlab.objectives import build_objective
from ebmlab.training.config import load_config

NAMES = shipped_configs()
# data that needs no download: the toys (exact samplers) and scikit-learn's bundled 8x8 digits
LOCAL_DATA = set(TOYS) | {"digits"}
# small networks and splits so that building the whole objective takes well under a second
SHRINK = ["data.n_train=512", "data.n_test=128", "model.width=16", "model.depth=1"]


def test_the_paper_configs_and_the_default_are_shipped():
    assert len(NAMES) >= 25 and {"default", "paper004_rings_hybrid", "digits_hybrid"} <= set(NAMES)
    for paper in range(5):
        assert any(n.startswith(f"paper{paper:03d}_") for n in NAMES)


def test_default_config_is_the_built_in_default():
    """``make demo`` trains ``--config default``; a bare ``ebmlab train`` must train the same thing."""
    assert load_config("default").to_dict() == load_config(None).to_dict()


@pytest.mark.parametrize("name", NAMES)
def test_shipped_config_loads_and_builds(name, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # found by name from anywhere, not relative to a checkout
    cfg = load_config(name)
    assert config_description(shipped_config_text(name)), f"{name}.yaml should start with a comment line"
    assert cfg.data.name in DATASETS, f"{name}: data.name {cfg.data.name!r} is not a registered dataset"
    if cfg.data.name in LOCAL_DATA:
        sets = SHRINK + (["model.channels=[8, 8]"] if cfg.model.channels else [])
        small = load_config(name, sets)
        objective = build_objective(small, build_dataset(small.data))
        params = list(objective.parameters())
    else:  # image scale (CIFAR-10, CelebA, ImageNet-32): the energy network with the config's own settings
        d = cfg.data
        size = d.image_size or 32
        params = list(build_energy(cfg.model, (d.channels or 3, size, size)).parameters())
    assert sum(p.numel() for p in params) > 0
    assert all(torch.isfinite(p).all() for p in params)


def test_load_by_name_path_and_errors(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(shipped_config_text("paper004_rings_hybrid"))
    assert load_config(path).to_dict() == load_config("paper004_rings_hybrid").to_dict()
    with pytest.raises(ConfigError, match="neither a config file nor a shipped config.*paper004_rings_hybrid"):
        load_config("paper004_rings_hybird")
    with pytest.raises(ConfigError, match="does not exist; the shipped configs"):
        load_config(tmp_path / "nope.yaml")


def test_cli_configs_lists_and_prints(capsys):
    assert main(["configs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in lines] == NAMES
    hybrid = next(ln for ln in lines if ln.startswith("paper004_rings_hybrid "))
    assert "Paper 004" in hybrid  # the first comment line of the file
    assert main(["configs", "paper004_rings_hybrid"]) == 0
    assert capsys.readouterr().out == shipped_config_text("paper004_rings_hybrid")


@pytest.mark.parametrize("argv", [["configs", "nope"], ["train", "--config", "nope", "--set", "train.steps=1"]])
def test_cli_unknown_config_is_one_sentence(argv, capsys, tmp_path):
    assert main([*argv, *(["--out", str(tmp_path / "r")] if argv[0] == "train" else [])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ebmlab: error:") and "paper004_rings_hybrid" in err[0]


# ----- paper-scale configs: architecture and parameter counts against the papers' tables ----------------------
def _count(net) -> int:
    return sum(p.numel() for p in net.parameters())


def _readout_map(net, x, **cond):
    """(C, H, W) of the feature map a ResNet energy pools (the input of its last activation)."""
    seen = []
    hook = net.act.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape[1:])))
    net(x, **cond)
    hook.remove()
    return seen[0]


def _attention_input(net, x):
    seen = []
    hook = net.attn.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape[1:])))
    net(x)
    hook.remove()
    return seen[0]


PAPER_SCALE = [n for n in NAMES if n.startswith("paper")
               and n.split("_", 1)[1].startswith(("cifar10", "celeba", "imagenet32", "flowers"))]


def test_every_paper_scale_config_has_a_header_naming_its_source():
    assert len(PAPER_SCALE) >= 17
    for name in PAPER_SCALE:
        text = shipped_config_text(name)
        header = "\n".join(ln for ln in text.splitlines() if ln.startswith("#"))
        assert config_description(text).startswith(f"Paper {name[5:8]}"), name
        assert any(w in header for w in ("Table", "App.", "Sec.")), name


def test_paper001_table5_cifar10():
    """Table 5: last ResBlock Down (2x2 final map), Self Attention 64 after the second down-sampling (8x8), on
    every scale of the multi-scale energy; App. B.2 on [0, 1] pixels -> lambda x4, sigma x2 on [-1, 1]; no blur."""
    from ebmlab.energies.multiscale import build_multiscale
    cfg = load_config("paper001_cifar10")
    m = cfg.method
    assert (m.step_size, m.noise_scale, m.n_steps, m.buffer_size, m.reset_prob) == (2000.0, 0.002, 40, 10000, 0.001)
    assert m.augment_flip and not m.augment_blur and list(m.augment_scale) == [0.02, 1.0]
    torch.manual_seed(0)
    net = build_multiscale(cfg.model, (3, 32, 32))
    x = torch.randn(1, 3, 32, 32)
    full = net.nets[0]
    assert [len(level) for level in full.levels] == [2, 2, 2, 2]
    assert _attention_input(full, x) == (64, 8, 8)
    for sub, f in zip(net.nets, net.factors):
        xs = torch.nn.functional.avg_pool2d(x, f) if f > 1 else x
        assert _readout_map(sub, xs) == (256, 2, 2)
        assert _attention_input(sub, xs)[1:] == (8, 8)


def test_paper001_table6_celebahq():
    from ebmlab.energies.multiscale import build_multiscale
    cfg = load_config("paper001_celebahq")
    assert (cfg.method.step_size, cfg.method.noise_scale, cfg.method.augment_blur) == (4000.0, 0.002, False)
    torch.manual_seed(0)
    full = build_multiscale(cfg.model, (3, 128, 128)).nets[0]
    assert [len(level) for level in full.levels] == [1, 1, 1, 2, 2]
    x = torch.randn(1, 3, 128, 128)
    assert _readout_map(full, x) == (512, 4, 4)
    assert _attention_input(full, x) == (256, 8, 8)


def test_paper002_table7_columns():
    """Table 7: ResNet 32x32 6M, UNet 32x32 9M (the headline FID 17.03), UNet 64x64 45M; sigmoid, no attention."""
    from ebmlab.energies.unet import UNetEncoderEnergy
    from ebmlab.objectives.implicit_diffusion import time_energy
    counts = {}
    for name, size in (("paper002_cifar10", 32), ("paper002_cifar10_unet", 32), ("paper002_celeba64", 64)):
        cfg = load_config(name)
        assert cfg.model.activation == "sigmoid" and not cfg.model.attention and cfg.model.pool == "subpixel"
        net = time_energy(cfg, (3, size, size))
        assert not any("Attention" in type(m).__name__ for m in net.modules())
        counts[name] = _count(net)
    assert 4.5e6 < counts["paper002_cifar10"] < 6.5e6                      # paper: 6M
    assert 8.0e6 < counts["paper002_cifar10_unet"] < 9.5e6                 # paper: 9M
    assert 25e6 < counts["paper002_celeba64"] < 45e6                       # paper: 45M (gap: see its header)
    unet = load_config("paper002_cifar10_unet")
    assert unet.model.name == "unet" and unet.model.channels == [128, 256, 256, 128] and unet.model.depth == 2
    assert (unet.method.T, unet.method.K, unet.method.eta, unet.train.weight_decay) == (20, 3, 1.7, 0.01)
    assert isinstance(time_energy(load_config("paper002_celeba64"), (3, 64, 64)), UNetEncoderEnergy)


P003 = {"paper003_cifar10": ([128, 256, 256, 256], 8, 512), "paper003_imagenet32": ([256, 512, 512, 512], 8, 1024),
        "paper003_imagenet32_cond": ([128, 256, 256, 256], 8, 512),
        "paper003_cifar10_drl_t8": ([128, 256, 256, 256], 8, 512),
        "paper003_cifar10_large": ([256, 512, 512, 512], 8, 1024),
        "paper003_celeba64_compose": ([128, 256, 256, 256, 256], 2, 512),
        "paper003_celeba64_inpaint": ([128, 256, 256, 256, 256], 8, 512)}


@pytest.mark.parametrize("name", sorted(P003))
def test_paper003_table6_settings(name):
    """Table 6 structures; A.1: leaky ReLU blocks, ReLU on the final map, spectral norm, no pooling after the
    last block, the energy summed over channels and positions; authors' code: gradient clipping 1.0, horizontal
    flips and the sigma_1 / sigma_{t+1} level weights, but Eq. 3's conditional EBM at the top level too."""
    channels, depth, temb = P003[name]
    cfg = load_config(name)
    mc = cfg.model
    assert (mc.channels, mc.depth, mc.time_embed_dim) == (channels, depth, temb)
    assert (mc.activation, mc.last_activation, mc.spectral_norm, mc.down_last) == ("leaky_relu", "relu", True, None)
    assert cfg.train.grad_clip == 1.0 and cfg.data.hflip is True and cfg.train.ema == 0.9999
    assert cfg.train.batch_size == 256 and (cfg.method.n_steps, cfg.method.denoise_coef) == (15, 2.0)
    assert (mc.readout, cfg.method.loss_weight, cfg.method.top_marginal) == ("sum", "sigma", False)
    if name == "paper003_cifar10_drl_t8":
        assert (cfg.method.schedule, cfg.method.T) == ("drl", 8)
    else:
        assert (cfg.method.schedule, cfg.method.T) == ("cosine", 6)
    assert cfg.method.conditional == name.endswith(("_cond", "_compose"))


@pytest.mark.slow  # (default tier kept near 10 min on CI; `make test-slow` and .ci/run run it)
def test_paper003_network_layout():
    cfg = load_config("paper003_cifar10")
    torch.manual_seed(0)
    net = build_energy(cfg.model, (3, 32, 32), time_cond=True)
    assert isinstance(net.act, torch.nn.ReLU) and isinstance(net.levels[0][0].act1, torch.nn.LeakyReLU)
    assert _readout_map(net, torch.randn(1, 3, 32, 32), t=1.0) == (256, 4, 4)  # pooling in 3 of 4 blocks
    assert 30e6 < _count(net) < 40e6  # 34.6 M (the paper gives no count)
    large = build_energy(load_config("paper003_cifar10_large").model, (3, 32, 32), time_cond=True)
    assert 3.5 < _count(large) / _count(net) < 4.5  # twice the channels: ~4x the weights


@pytest.mark.parametrize("name", ["paper000_cifar10_cdce", "paper000_celeba32_cdce", "paper000_cifar10_jointcd"])
def test_paper000_app_c2(name):
    """App. C.2: ResNet18 without BatchNorm, LeakyReLU, T = 1024, AdamW; no EMA (App. C uses none)."""
    from ebmlab.energies.build import build_joint_energy
    cfg = load_config(name)
    assert cfg.train.ema is None
    assert (cfg.method.T, cfg.method.sigma_n, cfg.train.batch_size, cfg.train.steps) == (1024, 1.0, 512, 300000)
    assert cfg.method.name == ("joint_cd" if "jointcd" in name else "cd_ce")
    if cfg.method.name == "joint_cd":
        assert cfg.method.ce_weight == 0.0
    assert (cfg.data.image_size or 32) == 32
    head = build_joint_energy(cfg.model, (3, 32, 32), cfg.method.T, cfg.method.sigma_n)
    assert 11e6 < _count(head) < 12.5e6  # ResNet18: 11.2 M


@pytest.mark.parametrize("name", ["paper004_cifar10", "paper004_flowers"])
def test_paper004_natural_images(name):
    """Sec. 3: Nijkamp et al.'s ConvNet with n_f = 128 (1024 final channels) + attention, hybrid lambda = 25,
    eps 1, T 5e-5, L 500, 50k iterations; no EMA."""
    cfg = load_config(name)
    m = cfg.method
    assert (m.name, m.lam, m.step_size, m.temperature, m.n_steps, m.n_steps_data) == \
        ("hybrid", 25.0, 1.0, 5e-5, 500, 500)
    assert (m.sampler, m.target_accept, m.energy_l2, cfg.train.steps, cfg.train.ema) == \
        ("langevin", None, 0.0, 50000, None)
    assert "T = 0.005" in shipped_config_text(name) and "T = 5e-5" in shipped_config_text(name)
    net = build_energy(cfg.model, (3, 32, 32))
    assert net.convs[-1].out_channels == 1024 and net.attn is not None
    assert 10e6 < _count(net) < 12e6


def test_hflip_doubles_the_training_split_with_mirror_images():
    """data.hflip: the training split and its mirror images (a batch drawn uniformly is flipped w.p. 1/2)."""
    plain = build_dataset(load_config("paper003_digits").data)
    flipped = build_dataset(load_config("paper003_digits", ["data.hflip=true"]).data)
    n = plain.train.shape[0]
    assert flipped.train.shape[0] == 2 * n and torch.equal(flipped.train[:n], plain.train)
    assert torch.equal(flipped.train[n:], plain.train.flip(-1))
    assert torch.equal(flipped.train_labels, torch.cat([plain.train_labels, plain.train_labels]))
    assert torch.equal(flipped.test, plain.test) and flipped.info.get("hflip") is True
    assert load_config("paper003_digits").data.hflip is None  # off unless asked for


@pytest.mark.parametrize("method", ["persistent", "data", "persistent_refresh", "noise"])
def test_the_default_config_takes_another_method(method):
    """`--config default --set method.name=persistent` was refused ("noise_chain ais needs method.name noise or
    hybrid") because default.yaml wrote the resolved ais out; it now says null and resolves per method, and
    default.yaml is still the library default run, hash for hash."""
    assert load_config("default").run_hash() == load_config(None).run_hash()
    other = [f"method.name={method}"]
    assert load_config("default", other).to_dict() == load_config(None, other).to_dict()
