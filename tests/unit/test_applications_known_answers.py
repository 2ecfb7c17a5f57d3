"""Known answers for ``ebmlab.applications`` (inpainting, both compositions, guidance, interpolation): each test
pins what the function must do with exact values (hand-computed chains, closed-form slerps, scripted samplers),
so that a wrong mask, noise, weight or concept fails here (mutation check, sixth round, docs/testing.md)."""
import math

import pytest
import torch

from ebmlab.applications import composition, recovery_composition
from ebmlab.applications.guidance import guided_init, guided_sample
from ebmlab.applications.inpainting import inpaint
from ebmlab.applications.interpolation import interpolate, slerp
from ebmlab.applications.recovery_composition import composed_energy, composed_sample
from tests.builders import recovery_objective as _objective




def _shift_init(obj):
    """Replace the initializer by g(x; c) = x + c (every coordinate), g(x; null) = x: guided and composed means
    are then known in closed form."""
    def init_mean(x, t, labels=None):
        return x if labels is None else x + labels.to(x).view(-1, *([1] * (x.dim() - 1)))
    obj.init_mean = init_mean
    return obj


def _level_offsets(obj, per_level_shift):
    """(B, 1) difference at x_0 of two Alg. 2 runs with the same randomness, 0 Langevin steps and no Tweedie step,
    whose proposal means differ by ``per_level_shift`` (B, 1) plus the carried difference: at each level
    d <- (d + shift) / alpha_level (x_t = y_t / alpha_{t+1}), from d = 0 at x_T."""
    d = torch.zeros_like(per_level_shift)
    alpha = obj.levels_for_sampling().alpha
    for level in reversed(range(alpha.shape[0])):
        d = (d + per_level_shift) / alpha[level]
    return d


# ----- inpainting (paper 003 App. C) ------------------------------------------------------------------------
@pytest.mark.parametrize("top_marginal", [False, True])
def test_inpainting_known_region_is_the_noisy_observation_with_one_noise_at_every_level(top_marginal):
    """path[k] is x at level T - k; its known region must be abar_t x_obs + sbar_t e exactly, one e per image for
    all levels (recovered from x_T), not alpha-scaled, not the next level's, not fresh noise. With
    ``top_marginal`` (every ``drl`` model) the top level's chain variable is x_{T-1} itself, not alpha_T x_{T-1}:
    the reset wrote alpha_T x^obs_{T-1} there, which conditioned level T-2 on a shrunken observation."""
    obj = _objective(dim=6, n_steps=2, T=3, denoise=False, top_marginal=top_marginal)
    g = torch.Generator().manual_seed(4)
    x_obs = torch.randn(5, 6, generator=g)
    mask = torch.tensor([1, 1, 1, 0, 0, 0.0])
    out, path = inpaint(obj, x_obs, mask, generator=g, keep_levels=True)
    T = obj.cfg.T
    assert len(path) == T + 1
    k = mask.bool()
    e = (path[0][:, k] - obj.abar[T] * x_obs[:, k]) / obj.sbar[T]
    assert 0.5 < float(e.std()) < 2.0  # a standard normal draw, not a rescaled copy of the data
    for i, x in enumerate(path):
        t = T - i
        want = obj.abar[t] * x_obs[:, k] + obj.sbar[t] * e
        assert torch.allclose(x[:, k], want, atol=1e-5), t
    assert torch.equal(out[:, k], x_obs[:, k])
    assert torch.equal(out[:, ~k], path[-1][:, ~k])  # without the Tweedie step the filled region is x_0


def test_inpainting_never_reads_the_hidden_pixels():
    """Two observations that differ only where the mask is 0 give the same inpainting (same seed): the start x_T
    and every reset carry the known pixels alone."""
    obj = _objective(dim=6, n_steps=2, T=3)
    g = torch.Generator().manual_seed(1)
    x_obs = torch.randn(4, 6, generator=g)
    mask = torch.tensor([0, 1, 0, 1, 1, 0.0])
    other = torch.where(mask.bool(), x_obs, x_obs + 5.0)
    a = inpaint(obj, x_obs, mask, generator=torch.Generator().manual_seed(9))
    b = inpaint(obj, other, mask, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a, b)
    assert torch.equal(a[:, mask.bool()], x_obs[:, mask.bool()])


def test_inpainting_with_a_data_scale_runs_the_diffusion_on_the_scaled_observation():
    """``method.data_scale`` s: the diffusion runs on s x (training, ``generate``). Inpainting x_obs is then
    inpainting s x_obs with the same networks at s = 1, divided by s (Tweedie step included); the known pixels stay
    x_obs. (It used to run the s = 1 diffusion on x_obs itself and return the filled region times s.)"""
    scaled = _objective(dim=6, n_steps=2, T=3, data_scale=4.0)
    plain = _objective(dim=6, n_steps=2, T=3)
    plain.load_state_dict(scaled.state_dict())
    x_obs = torch.randn(5, 6, generator=torch.Generator().manual_seed(2)) * 0.5
    mask = torch.tensor([1, 0, 1, 0, 1, 0.0])
    k = mask.bool()
    out = inpaint(scaled, x_obs, mask, generator=torch.Generator().manual_seed(3))
    ref = inpaint(plain, 4.0 * x_obs, mask, generator=torch.Generator().manual_seed(3))
    assert torch.equal(out[:, k], x_obs[:, k])
    assert torch.allclose(out[:, ~k], ref[:, ~k] / 4.0, atol=1e-5)


# ----- classifier-free guidance (paper 003 Eq. 11-12) --------------------------------------------------------
def test_guided_initializer_is_w_plus_one_times_conditional_minus_w_times_unconditional():
    obj = _shift_init(_objective(num_classes=3, n_steps=1, T=2))
    x, t = torch.randn(4, 2, generator=torch.Generator().manual_seed(2)), torch.zeros(4, dtype=torch.long)
    c = torch.tensor([0, 1, 2, 1])
    for w in (0.0, 0.5, 2.0):  # (w+1)(x + c) - w x = x + (w+1) c
        assert torch.allclose(guided_init(obj, c, w)(x, t), x + (w + 1) * c[:, None].float())


@pytest.mark.parametrize("w", [1.0, 3.0])
def test_guided_sample_moves_every_proposal_by_the_guided_initializers_mean(w):
    """0 Langevin steps, no Tweedie step: with g(x; c) = x + c the guided mean exceeds the w = 0 one by w c at
    every level, so the two samples (same seed) differ by the hand-rolled sum over levels of w c / alpha."""
    obj = _shift_init(_objective(num_classes=3, n_steps=1, T=3, denoise=False))
    c = torch.tensor([1, 2, 0, 1])
    x0 = guided_sample(obj, c, 0.0, generator=torch.Generator().manual_seed(3), n_steps=0)
    xw = guided_sample(obj, c, w, generator=torch.Generator().manual_seed(3), n_steps=0)
    want = _level_offsets(obj, w * c[:, None].float()).expand(-1, 2)
    assert float(want.abs().max()) > 1.0
    assert torch.allclose(xw - x0, want, atol=1e-4)


@pytest.mark.parametrize("steps", [None, 0, 12, 48])
def test_guidance_zero_draws_the_plain_conditional_samples_for_the_same_total_steps(steps):
    """w = 0 is the plain conditional model (Eq. 11-12), so ``draw`` with guidance 0 must give the samples of the
    unguided conditional draw, seed for seed, for every total step count: ``--steps`` / ``Run.sample(steps=)`` is
    the total over the T levels on both paths. (The guided path passed the total on as K' per level: 12 steps ran
    as 12 per level, 72 in all, with Sec. 4.2's step size for K' = 12.)"""
    from ebmlab.training.drawing import draw
    obj = _objective(num_classes=3, n_steps=15, T=6)
    plain = draw(obj, 5, torch.Generator().manual_seed(4), steps=steps, label=1, progress=False).x
    guided = draw(obj, 5, torch.Generator().manual_seed(4), steps=steps, label=1, guidance=0.0, progress=False).x
    assert torch.equal(plain, guided)


@pytest.mark.parametrize("init_conditional", [None, False])
def test_the_initializer_reads_the_label_unless_it_is_unconditional(init_conditional):
    """Sec. 4.5's composition model: a conditional EBM and an *unconditional* initializer (init_conditional false:
    the label never reaches it, in training or sampling); by default the initializer is conditional like the EBM."""
    from ebmlab.training.config import load_config
    obj = _objective(num_classes=3, n_steps=1, T=3, init_conditional=init_conditional)
    with torch.no_grad():  # a random head, so that the label can show (the DRL initialisation starts at zero)
        for p in obj.initializer.parameters():
            p.normal_(0, 0.3, generator=torch.Generator().manual_seed(5))
    x, t = torch.randn(4, 2), torch.tensor([0, 1, 2, 0])
    with_label, without = obj.init_mean(x, t, torch.tensor([0, 1, 2, 1])), obj.init_mean(x, t, None)
    assert torch.equal(with_label, without) == (init_conditional is False)
    assert load_config("paper003_celeba64_compose").method.init_conditional is False


# ----- composition with CDRL (paper 003 Eq. 13-14) -----------------------------------------------------------
def test_composed_energy_without_the_prior_is_the_product_of_experts():
    obj = _objective(num_classes=3, n_steps=1, T=2)
    y, t = torch.randn(4, 2, generator=torch.Generator().manual_seed(5)), torch.zeros(4, dtype=torch.long)
    c1, c2 = torch.tensor([0, 1, 2, 0]), torch.tensor([1, 1, 0, 2])
    e = obj.energy.net_energy
    for w in (0.0, 2.0):
        got = composed_energy(obj, [c1, c2], w, include_prior=False)(y, t)
        assert torch.allclose(got, (w + 1) * (e(y, t, c1) + e(y, t, c2)), atol=1e-5)
        assert not torch.allclose(got, composed_energy(obj, [c1, c2], w)(y, t), atol=1e-3)


def test_composed_sample_proposes_with_the_unconditional_initializer():
    """Sec. 4.5: proposals from g(x; null). With g(x; c) = x + c and g(x; null) = x, a composed sample (0 steps, no
    Tweedie) is the class-c guided sample at w = 0 minus the hand-rolled offset of c per level."""
    obj = _shift_init(_objective(num_classes=3, n_steps=1, T=3, denoise=False))
    c = torch.tensor([2, 1, 2, 1])
    comp = composed_sample(obj, [c], 0.0, generator=torch.Generator().manual_seed(6), n_steps=0)
    cond = guided_sample(obj, c, 0.0, generator=torch.Generator().manual_seed(6), n_steps=0)
    want = _level_offsets(obj, c[:, None].float()).expand(-1, 2)
    assert torch.allclose(cond - comp, want, atol=1e-4)


def test_composition_accuracy_asks_for_the_thickness_classes_after_the_digits(monkeypatch):
    """A scripted sampler: each sample carries the digit and the thickness it was asked for (class C + a), and
    nothing for a concept it was not given; the accuracies are then known exactly."""
    C, asked = 3, []

    def fake_sample(objective, concepts, w, *, include_prior=True, generator=None, n_steps=None):
        asked.append([c.clone() for c in concepts])
        n = concepts[0].shape[0]
        digit, thick = torch.full((n,), -1), torch.full((n,), -1)
        for c in concepts:
            digit = torch.where(c < C, c, digit)
            thick = torch.where(c >= C, c - C, thick)
        return torch.stack([digit, thick], 1).float().add(1) / 10  # inside [-1, 1]: the samples are clamped

    monkeypatch.setattr(recovery_composition, "composed_sample", fake_sample)
    code = lambda v: (v * 10).round().long() - 1  # noqa: E731
    classify = lambda x: code(x[:, 0]).clamp_min(0)  # noqa: E731  an unasked digit reads as 0
    attribute = lambda x, got_c: (code(x[:, 1]) == 1).long()  # noqa: E731  an unasked thickness reads as thin
    out = recovery_composition.composition_accuracy(None, classify, attribute, n_per_pair=2, num_classes=C, batch=5)
    assert [len(a) for a in asked] == [1] * 6 + [2] * 3  # 12 samples in batches of 5, 5, 2 per row
    assert all(bool((a[0] >= C).all()) for a in asked[3:6])  # thickness alone: classes C and C + 1
    assert out["class_only"] == pytest.approx({"class_acc": 1.0, "attribute_acc": 0.5, "both_acc": 0.5, "n": 12})
    assert out["thickness_only"] == pytest.approx({"class_acc": 1 / 3, "attribute_acc": 1.0, "both_acc": 1 / 3, "n": 12})
    assert out["composed"] == pytest.approx({"class_acc": 1.0, "attribute_acc": 1.0, "both_acc": 1.0, "n": 12})


# ----- composition with improved CD (paper 001 Sec. 3.4) -----------------------------------------------------
def test_composition_table_judges_thickness_by_the_classified_digit(monkeypatch):
    """Digit 0's median ink 0.2, digit 1's 0.8; the classifier always says 1. A sample asked for thickness a has
    ink 0.9 (a = 1) or 0.5 (a = 0), 0.5 when no thickness is asked: judged against digit 1's median, the asked
    thickness is always found (0.5 < 0.8 is thin); against the requested digit 0's it would not be."""
    class_obj, attr_obj = object(), object()

    def fake_compose(terms, n, *, generator=None, n_steps=None):
        amount = torch.full((n,), 0.5)
        for obj, cond, w in terms:
            if obj is attr_obj:
                amount = torch.where(cond["y"] == 1, torch.tensor(0.9), torch.tensor(0.5))
        return (2 * amount - 1).view(n, 1, 1, 1).expand(n, 1, 2, 2)

    monkeypatch.setattr(composition, "compose_sample", fake_compose)
    attribute = composition.ThicknessAttribute(torch.tensor([0.2, 0.8]))
    classify = lambda x: torch.ones(x.shape[0], dtype=torch.long)  # noqa: E731
    rows = {r["name"]: r for r in composition.composition_table(class_obj, attr_obj, classify, attribute, n_per_pair=3,
                                                                num_classes=2, batch=4)}
    assert rows["composed"] == {"name": "composed", "class_acc": 0.5, "attribute_acc": 1.0, "both_acc": 0.5, "n": 12}
    assert rows["class_only"]["attribute_acc"] == 0.5 and rows["attribute_only"]["attribute_acc"] == 1.0


# ----- interpolation (paper 002 Sec. 5.1) --------------------------------------------------------------------
def test_slerp_of_orthogonal_vectors_is_the_circle_and_norms_interpolate_linearly():
    a = torch.tensor([[3.0, 0.0, 0.0]])
    b = torch.tensor([[0.0, 1.0, 0.0]])
    for w in (0.0, 0.25, 0.5, 0.8, 1.0):
        r = (1 - w) * 3.0 + w * 1.0
        want = torch.tensor([[r * math.cos(w * math.pi / 2), r * math.sin(w * math.pi / 2), 0.0]])
        assert torch.allclose(slerp(a, b, w), want, atol=1e-5), w


def test_every_interpolation_point_is_generated_from_its_own_slerped_start_and_noises():
    from .test_implicit_diffusion import Quadratic, make

    obj = make(Quadratic([1.0, 0.5], scale=0.5), T=3, K=2, sigma=0.5)
    strip = interpolate(obj, n_points=4, n_pairs=2, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)  # redraw the same randomness
    x_a, x_b = obj.prior(2, g), obj.prior(2, g)
    z_a, z_b = torch.randn(6, 2, 2, generator=g), torch.randn(6, 2, 2, generator=g)
    for j, w in enumerate((0.0, 1 / 3, 2 / 3, 1.0)):
        z = torch.stack([slerp(z_a[s], z_b[s], w) for s in range(6)])
        want = obj.generate(slerp(x_a, x_b, w), noises=z)[0]
        assert torch.allclose(strip[:, j], want, atol=1e-5), w
    assert not torch.allclose(strip[:, 1], obj.generate(slerp(x_a, x_b, 1 / 3), noises=z_a)[0], atol=1e-3)
