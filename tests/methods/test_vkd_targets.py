"""VKD's forget targets (vkd_fast.methods.vkd.targets)."""

from __future__ import annotations

import _tiny_models as T
import pytest
import torch
from _items import CFG, FORGET, RETAIN
from PIL import Image

import vkd_fast as vf
import vkd_fast.adapters as A
from vkd_fast.engine import UnlearnConfig


@pytest.mark.parametrize("target", ["misdirect", "repel"])
def test_other_forget_targets(target):
    model = T.tiny_llava()
    opts = {"forget_target": target, "metric": "cosine" if target == "misdirect" else "mse"}
    h = vf.unlearn(model, FORGET, RETAIN, config=vf.UnlearnConfig(**CFG), options=opts).history
    first, last = h[0]["loss_forget"], h[-1]["loss_forget"]
    assert last < first  # misdirect: closer to the anchor; repel: hinge shrinks as rows move away


def test_nearest_retain_keys_by_pixels():
    from vkd_fast.methods.vkd.targets import nearest_retain_keys

    g = torch.Generator().manual_seed(0)
    retain = [torch.randn(1, 3, 8, 8, generator=g) for _ in range(5)] + [torch.randn(1, 3, 8, 16, generator=g)]
    forget = [retain[3] + 0.01 * torch.randn(1, 3, 8, 8, generator=g),
              retain[5] + 0.01 * torch.randn(1, 3, 8, 16, generator=g),  # only same-shaped images compete
              retain[0] * 0.99]
    assert nearest_retain_keys(forget, retain) == [3, 5, 0]
    with pytest.raises(ValueError, match=r"forget image 0: no retain image has its processed shape \(1, 3, 4, 4\)"):
        nearest_retain_keys([torch.zeros(1, 3, 4, 4)], retain)


def test_nearest_retain_target_pulls_forget_features_to_the_nearest_retain_image():
    import vkd_fast as vf

    def image(rgb, noise_seed):
        g = torch.Generator().manual_seed(noise_seed)
        px = (torch.tensor(rgb, dtype=torch.float32) + 20 * torch.randn(32, 32, 3, generator=g)).clamp(0, 255)
        return {"image": Image.fromarray(px.to(torch.uint8).numpy())}

    forget = [image((200, 30, 30), 0), image((30, 200, 30), 1)]
    retain = [image((190, 40, 40), 2), image((40, 190, 40), 3), image((30, 30, 200), 4), image((120, 120, 120), 5)]
    teacher = T.tiny_llava()
    ad_t = A.get_adapter(teacher)

    def feats(ad, items):
        with torch.no_grad():
            return ad.visual_features(tap="vision:feature", **ad.preprocess([it["image"] for it in items]))[0]

    f_t, near = feats(ad_t, forget), feats(ad_t, [retain[0], retain[1]])  # by colour: forget i -> retain i
    model = T.tiny_llava()
    cfg = UnlearnConfig(steps=100, batch_size=2, lr=5e-3)
    vf.unlearn(model, forget, retain, config=cfg, options={"forget_target": "nearest_retain"})
    f_s = feats(A.get_adapter(model), forget)
    before, after = (f_t - near).pow(2).mean().item(), (f_s - near).pow(2).mean().item()
    assert after < 0.5 * before, (before, after)
