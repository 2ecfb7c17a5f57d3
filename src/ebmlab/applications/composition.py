"""Zero-shot composition of independently trained conditional EBMs (paper 001 Sec. 3.4, Table 4).

Each concept c_k has its own energy E_k(x | c_k), trained *independently*; the composition is the
product of experts p(x | c_1, ..., c_M) ∝ Π_k p_k(x | c_k), i.e. the energy sum
E(x) = Σ_k w_k E_k(x | c_k) (weights 1 in the paper), formed only at generation time and sampled
with paper 001's generation procedure (Alg. 2: uniform noise, rounds of augmentation + Langevin).

Digits demo (the analogue of Table 4 at CPU scale): a "digit class" EBM E(x | class) and a
"stroke thickness" EBM E(x | thick/thin), both ``improved_cd`` models with ``conditional: true``.
The attribute is defined by a rule on the training split: an image is *thick* when its ink
(mean of (x + 1) / 2 over pixels) exceeds the median ink of its own digit class, so the attribute is
balanced within every class and independent of the class by construction (a global threshold
would make "thick 1" almost absent). The attribute classifier applies the same rule to a sample,
using the class predicted by the digits classifier (``metrics/digits.classify``), so a sample counts as
carrying both attributes when the classifier finds the requested digit *and* its ink is on the
requested side of that digit's median. Accuracies are reported for each single model and for the
composition against every requested (class, attribute) pair; chance is 0.1 / 0.5 / 0.05.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from ebmlab.objectives.improved_cd import ImprovedCD


class ComposedEnergy(nn.Module):
    """E(x) = Σ_k w_k E_k(x, **cond_k) (B,): conditional energies summed at generation time (Sec. 3.4)."""

    def __init__(self, terms: Sequence[tuple[nn.Module, dict, float]]):
        super().__init__()
        if not terms:
            raise ValueError("a composition needs at least one energy")
        self.energies = nn.ModuleList(t[0] for t in terms)
        self.conds = [dict(t[1]) for t in terms]
        self.weights = [float(t[2]) for t in terms]

    def forward(self, x: Tensor) -> Tensor:
        """(B,) energy of the composition: the weighted sum of the parts' energies at ``x`` (B, ...)."""
        total = None
        for energy, cond, w in zip(self.energies, self.conds, self.weights):
            e = w * energy(x, **cond)  # (B,)
            total = e if total is None else total + e
        return total


@torch.no_grad()
def compose_sample(terms: Sequence[tuple[ImprovedCD, dict, float]], n: int, *,
                   generator: torch.Generator | None = None, n_steps: int | None = None) -> Tensor:
    """Alg. 2 on the summed energy of ``terms`` = [(objective, cond, weight)], cond values (n,) labels.

    The first objective supplies the uniform noise, the augmentation transition, the clipping and the
    Langevin settings (step size, noise, rounds); the others contribute only their energies.
    """
    lead = terms[0][0]
    energy = ComposedEnergy([(obj.energy, cond, w) for obj, cond, w in terms])
    x, _ = lead.generate(energy, lead.prior(n, generator), n_steps=n_steps, generator=generator)
    return x


def ink(images: Tensor) -> Tensor:
    """(N,) mean ink of images in [-1, 1] (background -1): mean of (x + 1) / 2 over pixels."""
    return ((images.flatten(1) + 1.0) / 2.0).mean(1)


class ThicknessAttribute:
    """Stroke thickness of a digit: 1 (thick) when its ink exceeds its class's median ink, else 0."""

    def __init__(self, medians: Tensor):
        self.medians = medians  # (num_classes,)

    @classmethod
    def fit(cls, images: Tensor, labels: Tensor, num_classes: int = 10) -> "ThicknessAttribute":
        """Fit the per-class median ink amount from labelled ``images`` (N, C, H, W) in [-1, 1]."""
        amount = ink(images)
        med = torch.stack([amount[labels == c].median() for c in range(num_classes)])
        return cls(med)

    def __call__(self, images: Tensor, classes: Tensor) -> Tensor:
        """(N,) long attribute labels of images whose digit classes are ``classes`` (N,)."""
        return (ink(images) > self.medians.to(images.device)[classes]).long()


def attribute_dataset(data, attribute: ThicknessAttribute):
    """A copy of a labelled digits ``Dataset`` whose labels are the attribute (2 classes)."""
    return dataclasses.replace(
        data, train_labels=attribute(data.train, data.train_labels),
        test_labels=attribute(data.test, data.test_labels), num_classes=2,
        info={**data.info, "labels": "stroke thickness (1 = more ink than the class median)"})


def composition_table(class_obj: ImprovedCD, attr_obj: ImprovedCD, classify: Callable[[Tensor], Tensor],
                      attribute: ThicknessAttribute, *, n_per_pair: int, generator: torch.Generator | None = None,
                      num_classes: int = 10, n_steps: int | None = None, batch: int = 500) -> list[dict]:
    """Rows ``class_only``, ``attribute_only``, ``composed``: how often samples carry the requested digit,
    the requested thickness, and both (Table 4's analogue) over every (class, thickness) pair."""
    pairs = torch.cartesian_prod(torch.arange(num_classes), torch.arange(2))  # (2C, 2)
    want_c = pairs[:, 0].repeat_interleave(n_per_pair)                        # (N,)
    want_a = pairs[:, 1].repeat_interleave(n_per_pair)                        # (N,)
    models = {"class_only": lambda c, a: [(class_obj, {"y": c}, 1.0)],
              "attribute_only": lambda c, a: [(attr_obj, {"y": a}, 1.0)],
              "composed": lambda c, a: [(class_obj, {"y": c}, 1.0), (attr_obj, {"y": a}, 1.0)]}
    rows = []
    for name, make in models.items():
        xs = []
        for i in range(0, len(want_c), batch):
            c, a = want_c[i:i + batch], want_a[i:i + batch]
            xs.append(compose_sample(make(c, a), len(c), generator=generator, n_steps=n_steps).cpu())
        x = torch.cat(xs)
        got_c = classify(x).cpu()
        got_a = attribute(x, got_c)
        ok_c, ok_a = got_c == want_c, got_a == want_a
        rows.append({"name": name, "class_acc": float(ok_c.float().mean()),
                     "attribute_acc": float(ok_a.float().mean()), "both_acc": float((ok_c & ok_a).float().mean()),
                     "n": len(x)})
    return rows
