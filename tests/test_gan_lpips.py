"""LPIPS through the weights registry: a tiny random VGG16-layout network and linear layers saved
as torchvision / lpips files, loaded by the same path as real weights, against the formula written
out with F.conv2d; missing weights fall back to L2 with one warning line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from avatarcli.gan.lpips import load_lpips, lpips_or_l2

WIDTHS = (2, 3, 4, 4, 5)
CONVS = {0: 0, 2: 0, 5: 1, 7: 1, 10: 2, 12: 2, 14: 2, 17: 3, 19: 3, 21: 3, 24: 4, 26: 4, 28: 4}  # index -> stage
POOLS = (4, 9, 16, 23)
TAPS = (3, 8, 15, 22, 29)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 in torchvision's vgg16.features


def _files(tmp_path, monkeypatch):
    g = torch.Generator().manual_seed(0)
    vgg, cin = {}, 3
    for i, stage in CONVS.items():
        vgg[f"features.{i}.weight"] = torch.randn(WIDTHS[stage], cin, 3, 3, generator=g) * 0.5
        vgg[f"features.{i}.bias"] = torch.randn(WIDTHS[stage], generator=g) * 0.1
        cin = WIDTHS[stage]
    vgg["classifier.0.weight"] = torch.zeros(2, 2)  # not used by LPIPS
    lins = {f"lin{i}.model.1.weight": torch.rand(1, w, 1, 1, generator=g) for i, w in enumerate(WIDTHS)}
    torch.save(vgg, tmp_path / "vgg16-397923af.pth")
    torch.save(lins, tmp_path / "vgg.pth")
    monkeypatch.setenv("AVATAR_WEIGHTS_VGG16", str(tmp_path / "vgg16-397923af.pth"))
    monkeypatch.setenv("AVATAR_WEIGHTS_LPIPS_VGG", str(tmp_path / "vgg.pth"))
    return vgg, lins


def _reference(vgg, lins, x, y) -> torch.Tensor:
    """The paper's formula, step by step."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).reshape(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).reshape(1, 3, 1, 1)

    def taps(a):
        a, out = (a - shift) / scale, []
        for i in range(30):
            if i in CONVS:
                a = F.conv2d(a, vgg[f"features.{i}.weight"], vgg[f"features.{i}.bias"], padding=1)
            elif i in POOLS:
                a = F.max_pool2d(a, 2)
            else:
                a = a.clamp(min=0)
            if i in TAPS:
                out.append(a)
        return out

    d = torch.zeros(x.shape[0])
    for k, (a, b) in enumerate(zip(taps(x), taps(y))):
        na = a / (a.square().sum(1, keepdim=True).sqrt() + 1e-10)
        nb = b / (b.square().sum(1, keepdim=True).sqrt() + 1e-10)
        d = d + ((na - nb).square() * lins[f"lin{k}.model.1.weight"]).sum(1).mean(dim=[1, 2])
    return d


def test_lpips_loaded_through_the_registry_matches_the_formula(tmp_path, monkeypatch):
    vgg, lins = _files(tmp_path, monkeypatch)
    lp = load_lpips()
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1, torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    got = lp(x, y)
    torch.testing.assert_close(got, _reference(vgg, lins, x, y), rtol=1e-5, atol=1e-7)
    assert (got > 0).all() and float(lp(x, x).abs().max()) == 0.0
    torch.testing.assert_close(lp(x, y, torch.ones(2, 1, 32, 32)), got)  # an all-ones mask = no mask
    half = torch.zeros(2, 1, 32, 32)
    half[..., :16] = 1
    y2 = y.clone()
    y2[..., 16:] = x[..., 16:]  # y2 agrees with x on the right half: the left-half distance stays
    assert float((lp(x, y2, 1 - half)).max()) < 0.5 * float(lp(x, y2, half).min())


def test_missing_weights_fall_back_to_l2_with_one_warning(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AVATAR_WEIGHTS_LPIPS_VGG", str(tmp_path / "absent.pth"))
    assert lpips_or_l2() is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "L2 only" in err[0] and "absent.pth" in err[0]


def test_inversion_uses_the_perceptual_term(tmp_path, monkeypatch):
    from avatarcli.gan.generator import GanConfig, TriplaneGenerator
    from avatarcli.gan.invert import InversionConfig, gan_camera, invert, masked_l2

    _files(tmp_path, monkeypatch)
    lp = load_lpips()
    torch.manual_seed(0)
    G = TriplaneGenerator(GanConfig.tiny())
    G.mapping.w_avg.normal_()
    c = gan_camera(0.0, 0.0)
    target = torch.rand(1, 3, 16, 16) * 2 - 1
    mask = torch.ones(1, 1, 16, 16)
    cfg = InversionConfig(w_steps=1, pti_steps=0, lpips_weight=3.0)
    inv = invert(G, target, mask, c, cfg, perceptual=lp)
    inv0 = invert(G, target, mask, c, cfg)
    with torch.no_grad():  # the inversion starts from the tracked w_avg
        start = G.synthesis(G.mapping.w_avg[None, None].expand(1, G.num_ws, -1), c).image
    l2, per = float(masked_l2(start, target, mask)), float(lp(start, target, mask)[0])
    assert inv0.w_losses[0] == pytest.approx(l2, rel=1e-4)
    assert inv.w_losses[0] == pytest.approx(l2 + 3.0 * per, rel=1e-4) and per > 0
    assert np.isfinite(inv.w_losses).all()
