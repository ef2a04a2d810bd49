"""Closed-form checks of the schedule, loss, guidance, truncation and samplers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.config import ScheduleConfig
from engine.diffusion.guidance import icmg_combine
from engine.diffusion.losses import spectral_angle_loss
from engine.diffusion.noise import KEY_STEP, ConditionKeyedNoise, PositionalNoise, TorchNoise, gaussian_field
from engine.diffusion.samplers import SamplingOptions, sample
from engine.diffusion.schedule import NoiseSchedule, TrainingTimesteps
from engine.diffusion.truncation import ProgressiveTruncation, pdt_percentile, percentile_clamp


@pytest.fixture(scope="module")
def schedule():
    return NoiseSchedule(ScheduleConfig())


def test_q_sample_moments_match_closed_form(schedule):
    torch.manual_seed(0)
    x0 = torch.full((200_000,), 0.7)
    t = torch.full((200_000,), 400)
    xt = schedule.q_sample(x0, t, torch.randn_like(x0))
    ab = float(np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))[400])
    assert xt.mean().item() == pytest.approx(math.sqrt(ab) * 0.7, abs=5e-3)
    assert xt.var().item() == pytest.approx(1 - ab, rel=2e-2)
    mean, var = schedule.q_mean_variance(x0[:1], t[:1])
    assert mean.item() == pytest.approx(math.sqrt(ab) * 0.7, rel=1e-5)
    assert var.item() == pytest.approx(1 - ab, rel=1e-5)


def test_posterior_matches_bayes_rule(schedule):
    # q(x_{t-1}|x_t,x_0) from q(x_{t-1}|x_0) * q(x_t|x_{t-1}), both Gaussian, solved in closed form.
    t = 300
    betas = np.linspace(1e-4, 0.02, 1000)
    ab = np.cumprod(1 - betas)
    a_t, ab_prev = 1 - betas[t], ab[t - 1]
    x0, xt = 0.3, -1.2
    prec = 1 / (1 - ab_prev) + a_t / betas[t]
    mean = (math.sqrt(ab_prev) * x0 / (1 - ab_prev) + math.sqrt(a_t) * xt / betas[t]) / prec
    m, v = schedule.q_posterior(torch.tensor([x0]), torch.tensor([xt]), torch.tensor([t]))
    assert m.item() == pytest.approx(mean, rel=1e-5)
    assert v.item() == pytest.approx(1 / prec, rel=1e-5)


def test_x0_eps_round_trip(schedule):
    x0 = torch.randn(2, 5, 4, 4)
    eps = torch.randn_like(x0)
    t = torch.tensor([10, 900])
    xt = schedule.q_sample(x0, t, eps)
    assert torch.allclose(schedule.predict_x0(xt, t, eps), x0, atol=1e-4)
    assert torch.allclose(schedule.predict_eps(xt, t, x0), eps, atol=1e-4)


def test_uniform_training_timesteps_cover_every_step(schedule):
    draw = TrainingTimesteps(schedule, "uniform")
    t = draw(200_000, torch.Generator().manual_seed(0))
    counts = torch.bincount(t, minlength=schedule.num_timesteps)
    assert counts.numel() == schedule.num_timesteps and counts.min() > 100
    assert abs(t.float().mean().item() - (schedule.num_timesteps - 1) / 2) < 3


def test_lognormal_training_timesteps_follow_the_requested_sigma_law(schedule):
    # Inside the schedule's sigma range, the snapped log(sigma / data_std) has the requested
    # mean and std (snapping moves each draw by at most half a step, ~0.01 in log sigma here).
    draw = TrainingTimesteps(schedule, "lognormal", data_std=0.1, log_sigma_mean=-0.5, log_sigma_std=0.8)
    t = draw(100_000, torch.Generator().manual_seed(0))
    ab = schedule.alphas_cumprod[t]
    log_ratio = 0.5 * torch.log((1 - ab) / ab) - math.log(0.1)
    assert log_ratio.mean().item() == pytest.approx(-0.5, abs=0.02)
    assert log_ratio.std().item() == pytest.approx(0.8, abs=0.02)
    # Most draws fall far below the middle of the schedule, unlike uniform t.
    assert (t < schedule.num_timesteps // 2).float().mean() > 0.99


def test_lognormal_training_timesteps_snap_to_the_nearest_step(schedule):
    draw = TrainingTimesteps(schedule, "lognormal", data_std=1.0, log_sigma_std=0.0)
    for target in (50, 400, 900):
        draw.log_sigma_mean = float(draw.log_sigmas[target]) + 1e-4
        assert set(draw(16).tolist()) == {target}
    draw.log_sigma_mean = 100.0
    assert set(draw(4).tolist()) == {schedule.num_timesteps - 1}


def test_unknown_training_noise_levels_are_refused(schedule):
    with pytest.raises(ValueError, match="uniform or lognormal"):
        TrainingTimesteps(schedule, "cosine")


def test_cosine_schedule_is_monotone():
    s = NoiseSchedule(ScheduleConfig(kind="cosine"))
    ab = s.alphas_cumprod.numpy()
    assert np.all(np.diff(ab) < 0) and ab[0] > 0.999 and ab[-1] < 1e-3


def test_pdt_percentile_is_linear_from_p_T_to_one():
    assert pdt_percentile(999, 1000, 0.88) == pytest.approx(0.88)
    assert pdt_percentile(-1, 1000, 0.88) == pytest.approx(1.0)
    assert pdt_percentile(499, 1000, 0.9) == pytest.approx(0.95)


def test_percentile_clamp_on_known_tensor():
    values = torch.arange(-10, 11, dtype=torch.float32).reshape(1, 21, 1, 1)  # |v| = 0..10
    out = percentile_clamp(values, 0.9, "sample")
    tau = np.quantile(np.abs(np.arange(-10, 11)), 0.9)  # 9.0
    assert out.abs().max().item() == pytest.approx(tau)
    small = torch.tensor([[0.2, -0.5, 3.0]]).reshape(1, 3, 1, 1)
    # the 0.5-quantile of |v| is 0.5 < 1, so the threshold stays at 1
    assert torch.equal(percentile_clamp(small, 0.5, "sample"), torch.tensor([0.2, -0.5, 1.0]).reshape(1, 3, 1, 1))


def test_pixel_scope_clamps_each_spectrum_separately():
    v = torch.zeros(1, 4, 1, 2)
    v[0, :, 0, 0] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    v[0, :, 0, 1] = torch.tensor([10.0, 20.0, 30.0, 40.0])
    out = percentile_clamp(v, 2 / 3, "pixel")
    assert out[0, :, 0, 0].max().item() == pytest.approx(3.0)
    assert out[0, :, 0, 1].max().item() == pytest.approx(30.0)


def test_icmg_combination():
    c, u = torch.tensor([1.0, 2.0]), torch.tensor([0.5, 3.0])
    assert torch.allclose(icmg_combine(c, u, 2.0), torch.tensor([2.0, 0.0]))
    assert torch.equal(icmg_combine(c, u, 0.0), c)


def test_sam_loss_of_proportional_spectra_is_zero():
    x = torch.rand(2, 6, 3, 3) + 0.1
    assert spectral_angle_loss(x, 3.5 * x).item() == pytest.approx(0.0, abs=1e-6)
    y = torch.zeros(1, 2, 1, 1)
    y[0, 0] = 1
    z = torch.zeros(1, 2, 1, 1)
    z[0, 1] = 1
    assert spectral_angle_loss(y, z).item() == pytest.approx(1.0)


def test_positional_noise_in_strips_equals_one_draw():
    shape = (2, 5, 37, 23)
    origins = [(100, 7), (3, 250)]
    whole = PositionalNoise(9, origins, rows=10 ** 6).draw(2, 4, shape, torch.device("cpu"))
    chunked = PositionalNoise(9, origins, rows=8).draw(2, 4, shape, torch.device("cpu"))
    torch.testing.assert_close(chunked, whole, rtol=0, atol=0)


def test_positional_noise_agrees_on_overlaps_and_is_standard_normal():
    big = gaussian_field(5, 3, 2, 0, 0, 64, 64, torch.device("cpu"))
    tiles = PositionalNoise(5, [(0, 0), (16, 24)]).draw(0, 3, (2, 2, 32, 32), "cpu")
    assert torch.equal(tiles[0], big[:, :32, :32])
    assert torch.equal(tiles[1], big[:, 16:48, 24:56])
    field = gaussian_field(1, 0, 8, 0, 0, 256, 256, torch.device("cpu"))
    assert abs(field.mean().item()) < 0.01 and abs(field.std().item() - 1) < 0.01
    other_step = gaussian_field(1, 1, 8, 0, 0, 256, 256, torch.device("cpu"))
    assert abs(torch.corrcoef(torch.stack([field.flatten(), other_step.flatten()]))[0, 1].item()) < 0.01


def test_condition_keyed_noise_follows_the_condition_not_the_position():
    cond = torch.randn(2, 4, 20, 30, generator=torch.Generator().manual_seed(0))
    cond[1, :, 5:9, 3:12] = cond[0, :, 11:15, 17:26]  # the same four-channel values elsewhere in another tile
    cond[0, :, 0, :] = cond[0, :, 0, :1]  # a uniform row
    noise = ConditionKeyedNoise(3, cond, rows=7).draw(1, 2, (2, 6, 20, 30), "cpu")
    assert torch.equal(noise[1, :, 5:9, 3:12], noise[0, :, 11:15, 17:26])
    assert bool((noise[0, :, 0, :] == noise[0, :, 0, :1]).all())
    torch.testing.assert_close(noise, ConditionKeyedNoise(3, cond, rows=100).draw(1, 2, noise.shape, "cpu"),
                               rtol=0, atol=0)
    changed = cond.clone()
    changed[0, 3, 2, 2] += 2 * KEY_STEP  # one channel of one pixel, by two grid steps
    changed[0, 1, 4, 4] += 1e-6 * changed[0, 1, 4, 4]  # rounding-sized change elsewhere
    moved = ConditionKeyedNoise(3, changed).draw(1, 2, noise.shape, "cpu")
    assert not torch.equal(moved[0, :, 2, 2], noise[0, :, 2, 2]) and torch.equal(moved[1], noise[1])
    assert torch.equal(moved[0, :, 4, 4], noise[0, :, 4, 4])


def test_condition_keyed_noise_is_standard_normal_and_new_per_step_band_and_seed():
    cond = torch.randn(1, 4, 256, 256, generator=torch.Generator().manual_seed(1))
    field = ConditionKeyedNoise(1, cond).draw(0, 0, (1, 8, 256, 256), "cpu")
    assert abs(field.mean().item()) < 0.01 and abs(field.std().item() - 1) < 0.01
    others = [ConditionKeyedNoise(1, cond).draw(0, 1, field.shape, "cpu"),
              ConditionKeyedNoise(2, cond).draw(0, 0, field.shape, "cpu"), field[:, 1:]]
    for other, mine in zip(others, [field, field, field[:, :1]]):
        r = torch.corrcoef(torch.stack([mine.flatten(), other[:, :mine.shape[1]].flatten()]))[0, 1].item()
        assert abs(r) < 0.01


# --- samplers on a Gaussian data set whose exact noise predictor is known --------------------------
MU, SIGMA = 0.8, 0.5


def exact_eps(schedule):
    """For x0 ~ N(MU, SIGMA^2): E[eps | x_t] = sqrt(1-ab) (x_t - sqrt(ab) MU) / (ab SIGMA^2 + 1 - ab)."""
    def predict(x, t):
        ab = schedule.alpha_bar(int(t))
        return math.sqrt(1 - ab) * (x - math.sqrt(ab) * MU) / (ab * SIGMA ** 2 + 1 - ab)
    return predict


def _noise(seed):
    source = TorchNoise(seed)
    return lambda step, shape: source.draw(0, step, shape, "cpu")


def _check_moments(x, tol_mean=0.02, tol_std=0.03):
    assert x.mean().item() == pytest.approx(MU, abs=tol_mean)
    assert x.std().item() == pytest.approx(SIGMA, abs=tol_std)


def test_ddpm_reaches_data_distribution(schedule):
    result = sample(exact_eps(schedule), schedule, (1, 1, 100, 100), _noise(0), SamplingOptions("ddpm"))
    assert result.nfe == 1000
    _check_moments(result.x0)


@pytest.mark.parametrize("steps", [100, 50])
def test_ddim_reaches_data_distribution(schedule, steps):
    result = sample(exact_eps(schedule), schedule, (1, 1, 100, 100), _noise(1), SamplingOptions("ddim", steps))
    assert result.nfe == steps
    _check_moments(result.x0)


@pytest.mark.parametrize("steps", [20, 10])
def test_dpmpp_2m_reaches_data_distribution(schedule, steps):
    result = sample(exact_eps(schedule), schedule, (1, 1, 100, 100), _noise(2), SamplingOptions("dpmpp", steps))
    assert result.nfe == steps
    _check_moments(result.x0)


def test_truncation_with_threshold_floor_one_leaves_unit_scale_data_alone(schedule):
    # Data within [-1, 1]: x0 clamping at max(quantile, 1) never binds at the end of sampling.
    trunc = ProgressiveTruncation("x0", 0.9, schedule.num_timesteps)
    plain = sample(exact_eps(schedule), schedule, (1, 1, 64, 64), _noise(3), SamplingOptions("ddim", 20))
    clamped = sample(exact_eps(schedule), schedule, (1, 1, 64, 64), _noise(3), SamplingOptions("ddim", 20, trunc))
    assert clamped.x0.abs().max() <= max(plain.x0.abs().max(), 1.0) + 1e-6


class _ZeroNet(torch.nn.Module):
    out_channels = 2
    config = None

    def forward(self, x_t, t, cond=None, cond_features=None):
        return torch.zeros_like(x_t)


def test_gaussian_skip_alone_samples_the_per_band_prior(schedule):
    from engine.diffusion.preconditioning import GaussianSkip

    skip = GaussianSkip(_ZeroNet(), schedule, (0.05, 0.4))
    x = torch.randn(1, 2, 4, 4)
    t = torch.tensor([300])
    ab = schedule.alpha_bar(300)
    expected = math.sqrt(1 - ab) * x / (ab * torch.tensor([0.05, 0.4]).reshape(1, 2, 1, 1) ** 2 + 1 - ab)
    assert torch.allclose(skip(x, t), expected, atol=1e-6)
    result = sample(lambda x_t, tt: skip(x_t, torch.full((x_t.shape[0],), tt)), schedule,
                    (1, 2, 100, 100), _noise(4), SamplingOptions("dpmpp", 20))
    assert result.x0[0, 0].std().item() == pytest.approx(0.05, rel=0.1)
    assert result.x0[0, 1].std().item() == pytest.approx(0.4, rel=0.1)


def test_edm_with_a_silent_network_is_the_gaussian_optimum(schedule):
    """F = 0 leaves c_skip x~, the optimal denoiser of N(0, sd^2): the same eps as the Gaussian skip path."""
    from engine.diffusion.preconditioning import EDMPreconditioning, GaussianSkip

    std = (0.05, 0.4)
    edm = EDMPreconditioning(_ZeroNet(), schedule, std)
    skip = GaussianSkip(_ZeroNet(), schedule, std)
    x = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    for step in (0, 10, 300, 999):
        t = torch.full((3,), step)
        # float32: eps = (x_t - alpha x0_hat) / sqrt(1 - ab) cancels digits at small t
        assert torch.allclose(edm(x, t), skip(x, t), rtol=1e-3, atol=1e-4)


def test_edm_target_reproduces_x0_and_bounds_the_network_gain(schedule):
    from engine.diffusion.preconditioning import EDMPreconditioning

    std = torch.tensor([0.05, 0.4]).reshape(1, 2, 1, 1)

    class Oracle(torch.nn.Module):
        out_channels = 2
        config = None
        answer = None

        def forward(self, x_t, t, cond=None, cond_features=None):
            return self.answer

    oracle = Oracle()
    edm = EDMPreconditioning(oracle, schedule, (0.05, 0.4))
    x0 = torch.randn(2, 2, 8, 8) * std
    noise = torch.randn_like(x0)
    for step in (0, 500, 999):
        t = torch.full((2,), step)
        x_t = schedule.q_sample(x0, t, noise)
        oracle.answer = edm.target(x0, x_t, t)
        x0_hat, _ = edm.denoise(x_t, t)
        assert torch.allclose(x0_hat, x0, atol=1e-4)
        # the noise the sampler receives is the true noise when the network is exact
        assert torch.allclose(edm(x_t, t), noise, atol=2e-3 if step == 0 else 1e-4)
        # a unit error in F moves x0_hat by c_out <= sd, at every noise level
        _, _, _, c_out, _ = edm.coefficients(t)
        assert bool((c_out <= std + 1e-6).all())
    # c_out -> sd at high noise, -> sigma at low noise
    _, _, _, c_out, _ = edm.coefficients(torch.tensor([999]))
    assert torch.allclose(c_out.flatten(), std.flatten(), rtol=0.01)


def test_edm_loss_is_zero_for_the_exact_network(schedule):
    """The MSE term compares the raw output with EDM's target, and x0_hat feeds the angle term."""
    from engine.diffusion.losses import LossBatch, LossTerms, diffusion_loss
    from engine.diffusion.preconditioning import EDMPreconditioning

    x0 = torch.randn(4, 2, 8, 8) * 0.1 + 0.3

    class Exact(torch.nn.Module):
        out_channels = 2
        config = None

        def forward(self, x_t, t, cond=None, cond_features=None):
            # the network sees c_in x~; undo it to state the target in terms of x_t
            alpha, _, c_skip, c_out, c_in = edm.coefficients(t)
            return (x0 - c_skip * x_t / c_in) / c_out

    edm = EDMPreconditioning(Exact(), schedule, (0.1, 0.1))
    out = diffusion_loss(edm, schedule, LossBatch(x0, torch.zeros(4, 3, 8, 8)), LossTerms(sam_weight=1.0, p_uncond=0.0),
                         generator=torch.Generator().manual_seed(0))
    assert out["mse"].item() < 1e-6
    assert out["sam"].item() < 1e-5
    wrong = diffusion_loss(edm, schedule, LossBatch(x0 + 0.05, torch.zeros(4, 3, 8, 8)),
                           LossTerms(sam_weight=0.0, p_uncond=0.0), generator=torch.Generator().manual_seed(0))
    assert wrong["mse"].item() > 1e-3


def test_unknown_parameterisation_is_refused(schedule):
    from engine.diffusion.preconditioning import make_denoiser

    with pytest.raises(ValueError, match="parameterisation"):
        make_denoiser(_ZeroNet(), schedule, "v", None)
    with pytest.raises(ValueError, match="data_std"):
        make_denoiser(_ZeroNet(), schedule, "edm", None)


def test_edm_floors_a_vanishing_band_std(schedule):
    """A band the baseline copies exactly (std ~1e-16) must not blow the regression target up."""
    from engine.diffusion.losses import LossBatch, LossTerms, diffusion_loss
    from engine.diffusion.preconditioning import STD_FLOOR, EDMPreconditioning

    class Silent(torch.nn.Module):
        out_channels = 2
        config = None

        def forward(self, x_t, t, cond=None, cond_features=None):
            return torch.zeros_like(x_t)

    edm = EDMPreconditioning(Silent(), schedule, (0.2, 1e-16))
    assert edm.std.flatten()[1].item() == pytest.approx(0.2 * STD_FLOOR)
    x0 = torch.randn(4, 2, 8, 8) * torch.tensor([0.2, 1e-8]).reshape(1, 2, 1, 1)
    out = diffusion_loss(edm, schedule, LossBatch(x0, torch.zeros(4, 3, 8, 8)), LossTerms(p_uncond=0.0),
                         generator=torch.Generator().manual_seed(0))
    assert out["mse"].item() < 10


def test_masked_mse_weights_pixels_and_skips_uncovered_bands():
    from engine.diffusion.losses import masked_mse

    error = torch.zeros(1, 2, 1, 2)
    error[0, 0] = torch.tensor([[1.0, 3.0]])
    error[0, 1] = 100.0  # an uncovered band
    mask = torch.tensor([[1.0, 0.0]])
    assert masked_mse(error, mask).item() == pytest.approx(2.0)
    weight = torch.tensor([[[[1.0, 0.0]]]])  # the second pixel takes no part
    assert masked_mse(error, mask, weight).item() == pytest.approx(1.0)
    weight = torch.tensor([[[[1.0, 3.0]]]])
    assert masked_mse(error, mask, weight).item() == pytest.approx((1 * 1 + 3 * 3) / 4)


def test_condition_dropout_uses_the_null_condition():
    from engine.diffusion.losses import drop_condition

    cond = torch.ones(400, 3, 2, 2)
    dropped = drop_condition(cond, 0.25, -10.0, torch.Generator().manual_seed(0))
    items = dropped[:, 0, 0, 0]
    assert set(items.unique().tolist()) == {1.0, -10.0}
    assert 0.15 < (items == -10.0).float().mean().item() < 0.35
    assert torch.equal(drop_condition(cond, 0.0, -10.0, torch.Generator().manual_seed(0)), cond)


def _ema_after(decay: float, updates: int) -> float:
    """The shadow of a one-weight model whose weight jumps from 0 to 1 before the first update."""
    from engine.diffusion.ema import EMA
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    ema = EMA(model, decay)
    with torch.no_grad():
        model.weight.fill_(1.0)
    for _ in range(updates):
        ema.update(model)
    return float(ema.shadow.weight)


@pytest.mark.parametrize("updates", [1, 5, 600])
def test_ema_warm_up_keeps_1_over_binomial_of_the_initial_weights(updates):
    # prod_{k<n} (1 + k) / (10 + k) = n! 9! / (n + 9)! = 1 / C(n + 9, 9) while the warm-up is below decay.
    kept = 1.0 - _ema_after(0.999, updates)
    assert kept == pytest.approx(1.0 / math.comb(updates + 9, 9), rel=1e-4, abs=1e-7)
    assert kept < 0.999 ** updates  # the un-warmed average kept 55 % of the random start after 600


def test_ema_decay_caps_the_warm_up():
    # decay 0.2: updates 0 and 1 use (1 + k) / (10 + k) = 0.1, 2/11 (< 0.2), every later one 0.2.
    assert 1.0 - _ema_after(0.2, 5) == pytest.approx(0.1 * 2 / 11 * 0.2 ** 3, rel=1e-3)


def test_pdt_clamps_data_in_units_of_each_band_std():
    # Two bands of std 0.01 and 1, each pixel's spectrum (0.05, 0.5) up to sign: 5 and 0.5 std. At t = T - 1
    # p = 0.5: in data units tau = max(median(0.05, 0.5), 1) = 1 clamps nothing; in std units tau =
    # max(median(5, 0.5), 1) = 2.75 std clamps the first band to 0.0275.
    values = torch.tensor([0.05, -0.05, 0.5, -0.5]).view(1, 2, 1, 2)
    plain = ProgressiveTruncation("x0", 0.5, 10, scope="pixel")
    scaled = ProgressiveTruncation("x0", 0.5, 10, scope="pixel", band_scale=(0.01, 1.0))
    assert torch.equal(plain(values, 9), values)
    assert scaled(values, 9).flatten().tolist() == pytest.approx([0.0275, -0.0275, 0.5, -0.5])


def test_guidance_per_stage():
    from engine.config import SamplerConfig, override_sampler

    both = SamplerConfig(name="ddim", steps=2, guidance=2.0)
    assert (both.guidance_for_stage(1), both.guidance_for_stage(2)) == (2.0, 2.0)
    paper = override_sampler(both, guidance_stage1=0.0)
    assert (paper.guidance_for_stage(1), paper.guidance_for_stage(2)) == (0.0, 2.0)
    assert override_sampler(paper, guidance=3.0).guidance_for_stage(1) == 0.0
