"""Paper 001 Sec. 3.4: composition of conditional energies, the thickness attribute and the table."""
import torch
from torch import nn

from ebmlab.applications.composition import (ComposedEnergy, ThicknessAttribute, attribute_dataset,
                                             compose_sample, composition_table, ink)
from ebmlab.data.dataset import Dataset
from ebmlab.objectives.improved_cd import ImprovedCD, ImprovedCDConfig


class CondQuadratic(nn.Module):
    """E(x | y) = |x - means[y]|² / 2 (B,)."""

    def __init__(self, means: torch.Tensor):
        super().__init__()
        self.register_buffer("means", means)  # (C, *shape)
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x, y):
        return 0.5 * (x - self.means[y]).flatten(1).pow(2).sum(1) + 0 * self.dummy


def _obj(energy, shape, kind="vector", **kw):
    cfg = ImprovedCDConfig(augment=False, conditional=True, step_size=0.05, noise_scale=0.1,
                           sample_rounds=10, sample_steps=20, **kw)
    return ImprovedCD(energy, cfg, shape, kind=kind, low=torch.tensor(-1.0), high=torch.tensor(1.0), num_classes=2)


def test_composed_energy_is_the_sum():
    e1 = CondQuadratic(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    e2 = CondQuadratic(torch.tensor([[2.0, 0.0], [0.0, 3.0]]))
    x = torch.randn(6, 2)
    y1, y2 = torch.tensor([0, 1, 0, 1, 0, 1]), torch.tensor([1, 1, 0, 0, 1, 0])
    comp = ComposedEnergy([(e1, {"y": y1}, 1.0), (e2, {"y": y2}, 0.5)])
    assert torch.allclose(comp(x), e1(x, y=y1) + 0.5 * e2(x, y=y2))


def test_composition_samples_the_product_of_experts():
    """Two Gaussians exp(-E_k/T) with means m1, m2 compose to a Gaussian with mean (m1 + m2)/2 and
    variance T/2 per coordinate, T = σ²/(2λ) the sampler's temperature; single models keep their means."""
    m1, m2 = torch.tensor([[0.5, -0.5], [0.0, 0.0]]), torch.tensor([[-0.3, 0.7], [0.0, 0.0]])
    a, b = _obj(CondQuadratic(m1), (2,)), _obj(CondQuadratic(m2), (2,))
    n, g = 4000, torch.Generator().manual_seed(0)
    y = torch.zeros(n, dtype=torch.long)
    x = compose_sample([(a, {"y": y}, 1.0), (b, {"y": y}, 1.0)], n, generator=g)
    temp = 0.1 ** 2 / (2 * 0.05)
    assert torch.allclose(x.mean(0), (m1[0] + m2[0]) / 2, atol=0.03)
    assert torch.allclose(x.var(0), torch.full((2,), temp / 2), rtol=0.25)
    x1 = compose_sample([(a, {"y": y}, 1.0)], n, generator=g)
    assert torch.allclose(x1.mean(0), m1[0], atol=0.03)


def test_thickness_attribute_is_balanced_within_classes():
    g = torch.Generator().manual_seed(1)
    images = torch.rand(200, 1, 4, 4, generator=g) * 2 - 1
    labels = torch.arange(200) % 2
    images[labels == 1] = images[labels == 1] * 0.5 + 0.5  # class 1 has much more ink
    attr = ThicknessAttribute.fit(images, labels, num_classes=2)
    lab = attr(images, labels)
    for c in (0, 1):
        assert abs(float(lab[labels == c].float().mean()) - 0.5) <= 0.01
    # adding ink makes an image thick
    thin = images[(labels == 0) & (lab == 0)][:1]
    assert int(attr(thin, torch.tensor([0]))) == 0 and int(attr(thin * 0 + 1, torch.tensor([0]))) == 1
    assert float(ink(-torch.ones(1, 1, 2, 2))) == 0.0


def test_attribute_dataset_relabels():
    g = torch.Generator().manual_seed(2)
    tr, te = torch.rand(40, 1, 2, 2, generator=g) * 2 - 1, torch.rand(10, 1, 2, 2, generator=g) * 2 - 1
    data = Dataset("digits", "image", tr, te, train_labels=torch.arange(40) % 2, test_labels=torch.arange(10) % 2,
                   num_classes=2)
    attr = ThicknessAttribute.fit(tr, data.train_labels, num_classes=2)
    d2 = attribute_dataset(data, attr)
    assert d2.num_classes == 2 and torch.equal(d2.train_labels, attr(tr, data.train_labels))
    assert d2.train is data.train


class InkEnergy(nn.Module):
    """Attribute energy on 2x2 'images': pulls the ink towards 0.35 (thin) or 0.65 (thick)."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x, y):
        target = torch.tensor([0.35, 0.65])[y]
        return 40.0 * (ink(x) - target).pow(2) + 0 * self.dummy


def test_composition_table_finds_both_attributes_only_when_composed():
    """Classes: image templates 'left column' (0) and 'right column' (1) with ink 0.5; the class EBM
    fixes the side, the attribute EBM the ink. Only the composition gets both right most of the time."""
    templates = torch.tensor([[[[0.0, -1.0], [0.0, -1.0]]], [[[-1.0, 0.0], [-1.0, 0.0]]]])  # (2, 1, 2, 2)
    cls_obj = _obj(CondQuadratic(templates), (1, 2, 2), kind="image")
    attr_obj = _obj(InkEnergy(), (1, 2, 2), kind="image")
    cls_obj.cfg.noise_scale = attr_obj.cfg.noise_scale = 0.05

    def classify(x):  # side with more ink
        return (x[:, 0, :, 1].sum(1) > x[:, 0, :, 0].sum(1)).long()

    attr = ThicknessAttribute(torch.tensor([0.5, 0.5]))
    rows = {r["name"]: r for r in composition_table(cls_obj, attr_obj, classify, attr, n_per_pair=150,
                                                    num_classes=2, generator=torch.Generator().manual_seed(3))}
    assert rows["class_only"]["class_acc"] > 0.9 and abs(rows["class_only"]["attribute_acc"] - 0.5) < 0.15
    assert rows["attribute_only"]["attribute_acc"] > 0.9 and abs(rows["attribute_only"]["class_acc"] - 0.5) < 0.15
    assert rows["composed"]["both_acc"] > 0.85
    assert rows["composed"]["both_acc"] > rows["class_only"]["both_acc"] + 0.2
