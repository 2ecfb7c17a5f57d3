"""Composition of M concepts with CDRL EBMs (paper 003, Sec. 3.6, Eq. 13-14).

For concepts c_1..c_M conditionally independent given x:
log p(x | c_1..c_M) = sum_i log p(x | c_i) - (M-1) log p(x) + const (Eq. 13); with guidance weight w
(Eq. 14): (w+1) sum_i f(x; c_i) - (M w + M - 1) f(x). In our energy convention
E = (w+1) sum_i E_net(y; c_i) - (M w + M - 1) E_net(y; null). The product of experts of Du et al.
(2020) is the same without the last term (``include_prior=False``, for comparison).

As in the paper (Sec. 4.5) the proposals come from the unconditional initializer. ``concepts`` is a
list of M label tensors (B,) (each concept a class of the conditional model; for attributes, one
class per attribute value as in Sec. 4.5).
"""
from __future__ import annotations

import torch
from torch import Tensor


def composed_energy(objective, concepts: list[Tensor], w: float = 0.0, include_prior: bool = True):
    """energy_fn(y, t) -> (B,) of Eq. 14 (Eq. 13 at w = 0)."""
    if not getattr(objective.cfg, "conditional", False):
        raise ValueError("composition needs a cdrl model trained with method.conditional=true")
    if not concepts:
        raise ValueError("composition needs at least one concept")
    M, net = len(concepts), objective.energy.net_energy
    prior = (M * w + M - 1) if include_prior else 0.0

    def energy_fn(y: Tensor, t: Tensor) -> Tensor:
        e = sum(net(y, t, c) for c in concepts) * (w + 1)
        return e - prior * net(y, t, None) if prior else e
    return energy_fn


def composed_sample(objective, concepts: list[Tensor], w: float = 0.0, *, include_prior: bool = True,
                    generator: torch.Generator | None = None, n_steps: int | None = None) -> Tensor:
    """(B, ...) samples from the composed model, unconditional initializer proposals."""
    fn = composed_energy(objective, concepts, w, include_prior)
    x_T = objective.prior(concepts[0].shape[0], generator)
    return objective.generate(x_T, generator=generator, n_steps=n_steps, energy_fn=fn,
                              init_fn=lambda x, t: objective.init_mean(x, t, None)).x


def composition_dataset(data, attribute):
    """Sec. 4.5's training labels for digits: "we treat images with a certain attribute value as
    individual classes" and "randomly assign each image in a training batch to a class based on the
    controlled attribute value". Here every training image appears twice, once labelled with its digit
    class c (0..C-1) and once with C + its thickness (``attribute``, 0 thin / 1 thick), so that a
    batch drawn at random assigns each image to one of its two attributes with probability 1/2, as
    in the paper, and one conditional network learns both (``num_classes`` = C + 2)."""
    import dataclasses
    C = int(data.num_classes)

    def relabel(x, y):
        return torch.cat([x, x]), torch.cat([y, C + attribute(x, y)])
    train, train_labels = relabel(data.train, data.train_labels)
    test, test_labels = relabel(data.test, data.test_labels)
    return dataclasses.replace(data, train=train, train_labels=train_labels, test=test, test_labels=test_labels,
                               num_classes=C + 2, info={**data.info, "labels": f"0..{C - 1}: digit; {C}, {C + 1}: "
                                                        "thin, thick (Sec. 4.5 attribute classes)"})


def composition_accuracy(objective, classify, attribute, *, n_per_pair: int, w: float = 3.0, num_classes: int = 10,
                         generator: torch.Generator | None = None, batch: int = 500) -> dict[str, dict]:
    """{"class_only" | "thickness_only" | "composed": {"class_acc", "attribute_acc", "both_acc", "n"}}
    over every (digit, thickness) pair, ``n_per_pair`` samples each, for a model trained on
    ``composition_dataset`` labels: sampling with the digit concept alone (guidance w), the thickness
    concept alone, and both composed by Eq. 14 (all with the unconditional initializer, Sec. 4.5).
    ``classify(x) -> (N,)`` digit labels; the thickness of a sample is judged with its classified digit."""
    pairs = torch.cartesian_prod(torch.arange(num_classes), torch.arange(2))   # (2C, 2)
    want_c = pairs[:, 0].repeat_interleave(n_per_pair)                         # (N,)
    want_a = pairs[:, 1].repeat_interleave(n_per_pair)
    concepts = {"class_only": lambda c, a: [c], "thickness_only": lambda c, a: [num_classes + a],
                "composed": lambda c, a: [c, num_classes + a]}
    out = {}
    for name, make in concepts.items():
        xs = [composed_sample(objective, make(want_c[i:i + batch], want_a[i:i + batch]), w,
                              generator=generator).clamp(-1, 1).cpu() for i in range(0, len(want_c), batch)]
        x = torch.cat(xs)
        got_c = classify(x).cpu()
        ok_c, ok_a = got_c == want_c, attribute(x, got_c) == want_a
        out[name] = {"class_acc": float(ok_c.float().mean()), "attribute_acc": float(ok_a.float().mean()),
                     "both_acc": float((ok_c & ok_a).float().mean()), "n": len(x)}
    return out
