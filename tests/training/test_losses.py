"""VAE loss terms and LPIPS checkpoint loading in both standard layouts (weights made by the test)."""

from __future__ import annotations

import pytest
import torch

from training.lpips import LPIPS, LPIPSWeightsMissing, load_lpips
from training.vae import CausalVAE, VAEConfig
from training.vae_loss import PatchDiscriminator, VAELoss, VAELossConfig, discriminator_hinge_loss


@pytest.fixture(scope="module")
def reference_lpips() -> LPIPS:
    torch.manual_seed(0)
    model = LPIPS()
    for i in range(5):  # positive heads, like trained LPIPS
        getattr(model, f"lin{i}").model[1].weight.data.uniform_(0.1, 1.0)
    return model


def _images(seed: int) -> torch.Tensor:
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_full_lpips_state_dict_loads(tmp_path, reference_lpips):
    path = tmp_path / "vgg_lpips.pth"
    torch.save(reference_lpips.state_dict(), path)
    loaded = load_lpips(path)
    x, y = _images(0), _images(1)
    assert torch.allclose(loaded(x, y), reference_lpips(x, y))
    assert torch.allclose(loaded(x, x), torch.zeros(2))
    assert bool((loaded(x, x + 0.5 * (y - x)) < loaded(x, y)).all())


def test_lin_heads_plus_torchvision_backbone_load(tmp_path, reference_lpips):
    state = reference_lpips.state_dict()
    lin = {k: v for k, v in state.items() if k.startswith("lin")}
    backbone = {}
    for k, v in state.items():  # rebuild torchvision's features.N.* naming
        if k.startswith("net.slice"):
            backbone["features." + k.split(".", 2)[2]] = v
    backbone["classifier.0.weight"] = torch.zeros(1)  # ignored
    torch.save(lin, tmp_path / "vgg.pth")
    torch.save(backbone, tmp_path / "vgg16.pth")
    with pytest.raises(LPIPSWeightsMissing, match="lpips_backbone_path"):
        load_lpips(tmp_path / "vgg.pth")
    loaded = load_lpips(tmp_path / "vgg.pth", tmp_path / "vgg16.pth")
    x, y = _images(2), _images(3)
    assert torch.allclose(loaded(x, y), reference_lpips(x, y))


def test_missing_lpips_names_the_setting(tmp_path):
    with pytest.raises(LPIPSWeightsMissing, match="VAELossConfig.lpips_path"):
        VAELoss.from_config(VAELossConfig(lpips_path=str(tmp_path / "none.pth")))
    assert VAELoss.from_config(VAELossConfig(perceptual_weight=0.0)).perceptual is None


def test_vae_loss_terms_and_discriminator():
    torch.manual_seed(0)
    vae = CausalVAE(VAEConfig(block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=4))
    x = torch.rand(1, 3, 5, 32, 32) * 2 - 1
    recon, post = vae(x, generator=torch.Generator().manual_seed(0))
    disc = PatchDiscriminator(width=8, layers=2)
    loss = VAELoss(VAELossConfig(), discriminator=disc)(recon, x, post)
    assert set(loss) == {"l1", "kl", "adversarial", "total"}
    assert torch.isclose(loss["total"], loss["l1"] + loss["kl"] + loss["adversarial"])
    loss["total"].backward()
    assert vae.encoder.conv_in.conv.weight.grad.abs().sum() > 0
    d_loss = discriminator_hinge_loss(disc, x, recon)
    assert d_loss > 0 and d_loss.requires_grad
