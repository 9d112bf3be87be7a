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


def test_random_retain_draws_a_retain_image_per_forget_image():
    from vkd_fast.methods import VKD

    model = T.tiny_llava()
    a, b, c = VKD({"forget_target": "random_retain"}), VKD({"forget_target": "random_retain"}), VKD(
        {"forget_target": "random_retain"})
    a.prepare(model, FORGET, RETAIN, seed=0)
    b.prepare(T.tiny_llava(), FORGET, RETAIN, seed=0)
    c.prepare(T.tiny_llava(), FORGET, RETAIN, seed=1)
    keys = a.target.keys(list(range(len(FORGET))))
    assert keys == b.target.keys(list(range(len(FORGET)))) != c.target.keys(list(range(len(FORGET))))  # seeded
    assert all(k in a.r_keys for k in keys)
    shape = lambda k: tuple(a.inputs[k]["pixel_values"].shape)  # noqa: E731
    assert all(shape(k) == shape(f) for k, f in zip(keys, a.f_keys))  # a target of the forget image's shape


def test_shrink_perturb_moves_every_trainable_matrix_by_the_formula():
    import copy

    from vkd_fast.methods import VKD

    model = T.tiny_llava()
    before = copy.deepcopy(model)
    method = VKD({"shrink_perturb": 0.4, "perturb_scale": 0.5})
    summary = method.prepare(model, FORGET, RETAIN, seed=7)
    g = torch.Generator().manual_seed(7)
    orig, got = dict(before.named_parameters()), dict(model.named_parameters())
    for name in summary["names"]:  # sorted, as the method walks them
        w = orig[name].detach()
        if w.dim() < 2:
            assert torch.equal(got[name], w), name  # biases and norms are kept
            continue
        noise = torch.randn(w.shape, generator=g)
        torch.testing.assert_close(got[name].detach(), 0.6 * w + 0.4 * 0.5 * float(w.std()) * noise)
    # the teacher features were cached before: they are the unperturbed model's
    fresh = VKD()
    fresh.prepare(before, FORGET, RETAIN)
    k = method.r_keys[0]
    assert torch.equal(method.cache.get([k])[0], fresh.cache.get([k])[0])
    with pytest.raises(ValueError, match="shrink_perturb must be in"):
        vf.methods.VKDOptions(shrink_perturb=1.0)
    with pytest.raises(ValueError, match="does not combine with lora"):
        vf.methods.VKDOptions(shrink_perturb=0.5, lora={"r": 2})


def test_retain_person_gives_each_forget_person_one_retain_person():
    from vkd_fast.methods import VKD

    forget = [{**it, "identity": f"f{i % 2}"} for i, it in enumerate(FORGET)]  # two forget people
    retain = [{**it, "identity": f"r{i % 5}"} for i, it in enumerate(RETAIN)]  # five retain people
    method = VKD({"forget_target": "retain_person"})
    method.prepare(T.tiny_llava(), forget, retain, seed=0)
    targets = method.target.keys(list(range(len(forget))))
    person_of = {k: retain[k - len(forget)]["identity"] for k in method.r_keys}
    given = {}
    for it, k in zip(forget, targets):
        given.setdefault(it["identity"], set()).add(person_of[k])
    assert all(len(v) == 1 for v in given.values())  # one retain person per forget person...
    assert len({next(iter(v)) for v in given.values()}) == 2  # ...and different ones for different people
    again = VKD({"forget_target": "retain_person"})
    again.prepare(T.tiny_llava(), forget, retain, seed=0)
    assert again.target.keys(list(range(len(forget)))) == targets  # seeded
    # items that do not say who they picture count as a person each: different retain people, spread
    alone = VKD({"forget_target": "retain_person"})
    alone.prepare(T.tiny_llava(), FORGET, retain, seed=0)
    people = [person_of[k] for k in alone.target.keys(list(range(len(FORGET))))]
    assert len(set(people)) == len(FORGET)  # 4 forget images, 4 different retain people (of 5)
