"""The denoiser: shapes per role and preset, conditioning really used, gradients, guidance, LSA."""
import pytest
import torch

from retree_core.config import PRESETS, NetConfig, net_config
from retree_core.nets import build_net
from retree_core.nets.blocks import LocalitySelfAttention, SpadeGroupNorm
from retree_core.samplers import guided


def tiny(role, size=32, **kw):
    torch.manual_seed(0)
    return build_net(net_config("tiny", role, size, **kw))


@pytest.mark.parametrize("role,channels", [("vessel", 1), ("concat", 3), ("spade", 3)])
@pytest.mark.parametrize("patch_px", [1, 2])
def test_output_shape_matches_input(role, channels, patch_px):
    net = tiny(role, patch_px=patch_px)
    x = torch.randn(2, channels, 32, 32)
    mask = torch.randn(2, 1, 32, 32).sign()
    assert net(x, torch.tensor([3, 900]), mask).shape == (2, channels, 32, 32)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_presets_build_with_attention_where_configured(preset):
    cfg = net_config(preset, "concat", 64)
    net = build_net(cfg)
    n_attn = sum(isinstance(m, LocalitySelfAttention) for m in net.modules())
    expected = sum(cfg.has_attention(level) for level in range(1, len(cfg.channels)))  # encoder
    expected += sum(cfg.has_attention(level) for level in range(len(cfg.channels) - 1))  # decoder
    assert n_attn == expected * cfg.attn_depth and n_attn > 0


@pytest.mark.parametrize("role", ["concat", "spade"])
def test_mask_changes_the_prediction_and_gets_gradient(role):
    net = tiny(role)
    if role == "spade":  # SPADE starts as plain GroupNorm (zero-initialised gamma/beta); perturb it
        for m in net.modules():
            if isinstance(m, SpadeGroupNorm):
                torch.nn.init.normal_(m.gamma.weight, std=0.1)
    x, t = torch.randn(1, 3, 32, 32), torch.tensor([500])
    mask = torch.zeros(1, 1, 32, 32, requires_grad=True)
    with torch.no_grad():
        a = net(x, t, torch.ones(1, 1, 32, 32))
        b = net(x, t, -torch.ones(1, 1, 32, 32))
    assert (a - b).abs().mean() > 1e-4
    net(x, t, mask).square().mean().backward()
    assert mask.grad is not None and mask.grad.abs().sum() > 0
    assert all(p.grad is not None for n, p in net.named_parameters() if "gamma" not in n and "beta" not in n)


def test_spade_parameters_receive_gradient():
    net = tiny("spade")
    net(torch.randn(2, 3, 32, 32), torch.tensor([10, 20]), torch.randn(2, 1, 32, 32).sign()).mean().backward()
    spade = [m for m in net.modules() if isinstance(m, SpadeGroupNorm)]
    assert spade and all(m.gamma.weight.grad.abs().sum() > 0 for m in spade)


def test_spade_only_in_decoder_unless_asked():
    dec = sum(isinstance(m, SpadeGroupNorm) for m in tiny("spade").modules())
    both = sum(isinstance(m, SpadeGroupNorm) for m in tiny("spade", spade_encoder=True).modules())
    assert 0 < dec < both
    assert not any(isinstance(m, SpadeGroupNorm) for m in tiny("concat").modules())


def test_none_mask_is_the_null_condition():
    net = tiny("concat").eval()
    x, t = torch.randn(1, 3, 32, 32), torch.tensor([100])
    assert torch.equal(net(x, t, None), net(x, t, torch.zeros(1, 1, 32, 32)))


def test_guidance_one_equals_conditional_and_other_scales_extrapolate():
    net = tiny("concat").eval()
    x, t, mask = torch.randn(2, 3, 32, 32), torch.tensor([50, 50]), torch.randn(2, 1, 32, 32).sign()
    with torch.no_grad():
        cond, null = net(x, t, mask), net(x, t, torch.zeros_like(mask))
        assert torch.equal(guided(net, mask, 1.0)(x, t), cond)
        g3 = guided(net, mask, 3.0)(x, t)
        assert torch.allclose(g3, null + 3 * (cond - null), atol=1e-5)
        assert torch.allclose(guided(net, mask, 0.0)(x, t), null, atol=1e-5)


def test_lsa_masks_the_diagonal_and_learns_temperature():
    attn = LocalitySelfAttention(8, 2)
    tokens = torch.randn(1, 5, 8)
    # A token identical to itself would dominate plain attention; with LSA, changing only token 0's
    # value vector cannot change token 0's output.
    v_weight = attn.qkv.weight.detach().clone()
    out = attn(tokens)
    tokens2 = tokens.clone()
    tokens2[0, 0] += 10.0
    attn.qkv.weight.data[:16] = 0  # q, k independent of the tokens: uniform attention off the diagonal
    out_a, out_b = attn(tokens), attn(tokens2)
    assert torch.allclose(out_a[0, 0], out_b[0, 0], atol=1e-5)
    assert not torch.allclose(out_a[0, 1], out_b[0, 1])
    attn.qkv.weight.data = v_weight
    out.sum().backward()
    assert attn.log_temperature.grad is not None


def test_config_validation_messages():
    with pytest.raises(ValueError, match="unknown role"):
        NetConfig(role="gan")
    with pytest.raises(ValueError, match="divisible by 16"):
        net_config("lean", "concat", 100)
    with pytest.raises(ValueError, match="unknown preset"):
        net_config("huge", "concat", 64)


def test_input_skip_is_the_best_linear_noise_estimate():
    from retree_core.diffusion import NoiseSchedule
    from retree_core.nets.unet import SIGMA_DATA, eps_skip_coefficients

    schedule = NoiseSchedule()
    coeff = eps_skip_coefficients(schedule.alpha_bar)
    g = torch.Generator().manual_seed(0)
    x0 = SIGMA_DATA * torch.randn(200_000, generator=g)
    eps = torch.randn(200_000, generator=g)
    for t in (0, 100, 400, 999):
        xt = schedule.add_noise(x0, torch.full((1,), t), eps)
        regression = (eps * xt).mean() / (xt * xt).mean()  # least-squares slope of eps on x_t
        standard_error = (1 / (len(xt) * (xt * xt).mean())).sqrt().item()
        assert abs(regression.item() - coeff[t].item()) < 5 * standard_error, t
    assert coeff[999] > 0.99 and coeff[0] < 0.05


def test_input_skip_output_and_old_configs():
    net = tiny("concat")
    assert net.cfg.input_skip and "eps_skip" not in net.state_dict()  # rebuilt from configs, not stored
    torch.nn.init.zeros_(net.outc.weight)
    torch.nn.init.zeros_(net.outc.bias)  # the UNet branch says nothing: only the skip is left
    x = torch.randn(2, 3, 32, 32)
    out = net(x, torch.tensor([999, 0]), torch.zeros(2, 1, 32, 32))
    assert torch.allclose(out[0], x[0] * net.eps_skip[999]) and net.eps_skip[999] > 0.99
    assert out[1].abs().max() < 0.05 * x[1].abs().max()
    from retree_core.config import from_dict, to_dict
    old = {k: v for k, v in to_dict(net.cfg).items() if k != "input_skip"}  # saved before the skip existed
    assert from_dict(NetConfig, old).input_skip is False
    with pytest.raises(ValueError, match="alpha_bar"):
        from retree_core.nets.unet import ReTreeUNet
        ReTreeUNet(net.cfg)
