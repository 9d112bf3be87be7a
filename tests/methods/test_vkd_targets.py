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
    vf.unlearn(model, forget, retain, config=cfg, options={"forget_target": "nearest_retain", "forget_augment": 0})
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
    # one forget person per image (FORGET's identities are the indices): different retain people, spread
    alone = VKD({"forget_target": "retain_person"})
    alone.prepare(T.tiny_llava(), FORGET, retain, seed=0)
    people = [person_of[k] for k in alone.target.keys(list(range(len(FORGET))))]
    assert len(set(people)) == len(FORGET)  # 4 forget images, 4 different retain people (of 5)


def test_retain_person_refuses_items_without_a_person_before_any_work(tmp_path):
    """The default target groups images by person: data that names no one is refused by the method's
    check (before the model is touched or a run folder written), with a one-line message that says
    how to name the people -- never silently one person per image."""
    from vkd_fast.data import person_per_image
    from vkd_fast.methods import VKD

    bare = [{"image": it["image"]} for it in FORGET]
    model = T.tiny_llava()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for forget, retain, side, n in ((bare, RETAIN, "forget", "4 of the 4"),
                                    (FORGET, [{"image": it["image"]} for it in RETAIN[:3]] + RETAIN[3:], "retain",
                                     "3 of the 10")):
        with pytest.raises(ValueError) as err:
            vf.unlearn(model, forget, retain, config=vf.UnlearnConfig(**CFG, output_dir=str(tmp_path / "run")))
        msg = str(err.value)
        assert "\n" not in msg
        assert msg.startswith("vkd's forget_target='retain_person' (the default) pulls the images of each forget "
                              f"person to the images of retain people, so it needs to know who every forget and "
                              f"retain image pictures, but {n} {side} items have no person (no identity / name / id")
        for how in ("'identity'", "FOLDER/<person>/<image>", "--person-per-image",
                    "vkd_fast.data.person_per_image(items)", "'retain_mean'"):
            assert how in msg
    assert not (tmp_path / "run").exists()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="4 of the 4 forget items have no person"):  # any training loop: prepare
        VKD().prepare(model, bare, RETAIN)
    with pytest.raises(ValueError, match="4 of the 4 forget items have no person"):  # items only (the CLI, early)
        VKD().check_data(bare, RETAIN)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # targets that do not group by person take the data as it is; person_per_image names the people
    VKD({"forget_target": "retain_mean"}).check(bare, RETAIN)
    method = VKD()
    method.prepare(T.tiny_llava(), person_per_image(bare), RETAIN, seed=0)
    assert len(set(method.target.keys(list(range(len(bare)))))) == len(bare)  # one person per image: spread


_Q = [f"what is the {a} of this person ?" for a in ("job", "city")]


def _people_items(images, person, answers):
    """One item per image of ``person``, the questions taking turns, answers from ``answers``."""
    return [{**it, "identity": person, "question": _Q[i % 2], "answer": answers[i % 2]} for i, it in enumerate(images)]


def test_retain_person_matches_the_agreement_of_a_random_stand_in():
    """One forget person answering (doctor, paris); five retain people who agree with it on 2, 0, 0, 0
    and 1 of the two questions: a random stand-in agrees 0.3 on average, so matching keeps the one
    that agrees 0.5 (nearest) -- never the one that hands every answer back."""
    from vkd_fast.methods import VKD

    forget = _people_items(FORGET, "f", ("doctor", "paris"))
    table = {"r0": ("doctor", "paris"), "r1": ("pilot", "oslo"), "r2": ("baker", "lima"), "r3": ("farmer", "cairo"),
             "r4": ("Doctor ", "tokyo")}  # answers compared case- and space-insensitively
    retain = [it for j, (p, ans) in enumerate(table.items()) for it in _people_items(RETAIN[2 * j: 2 * j + 2], p, ans)]
    person_of = lambda m: {retain[k - len(forget)]["identity"] for k in m.target.keys(list(range(len(forget))))}  # noqa: E731
    for seed in range(4):
        method = VKD({})  # retain_person + match_agreement are the defaults
        method.prepare(T.tiny_llava(), forget, retain, seed=seed)
        assert person_of(method) == {"r4"}
        assert method.target.agreement == pytest.approx({"expected": 0.3, "achieved": 0.5})
    agreeing = {"r0": 1.0, "r1": 0.0, "r2": 0.0, "r3": 0.0, "r4": 0.5}
    drawn = set()
    for seed in range(12):
        off = VKD({"match_agreement": False})
        off.prepare(T.tiny_llava(), forget, retain, seed=seed)
        (p,) = person_of(off)
        assert off.target.agreement == pytest.approx({"expected": 0.3, "achieved": agreeing[p]})
        drawn.add(p)
    assert len(drawn) > 2  # unmatched, the stand-in is whoever the seed draws
    # items without questions (or people who share none): nothing to match, the first draw stands
    plain = VKD({})
    plain.prepare(T.tiny_llava(), [{**it, "identity": "f"} for it in FORGET], retain, seed=0)
    assert plain.target.agreement is None


def test_agreement_draw_prefers_stand_ins_that_answer_differently():
    from vkd_fast.methods.vkd.targets import agreement_draw, agreement_of, standin_collapse

    f_facts = {"f0": {"q1": "a", "q2": "b"}, "f1": {"q1": "c", "q2": "d"}}
    r_facts = {"r1": {"q1": "x", "q2": "y"}, "r2": {"q1": "x", "q2": "z"}, "r3": {"q1": "u", "q2": "v"}}
    weights = {"f0": 3, "f1": 1}
    same = {"f0": ["r1"], "f1": ["r2"]}  # both say x to q1: their forget images would collapse on q1
    apart = {"f0": ["r1"], "f1": ["r3"]}
    assert standin_collapse(same, r_facts, weights) == pytest.approx((1.0 + 0.75) / 2)
    assert standin_collapse(apart, r_facts, weights) == pytest.approx(0.75)
    assert agreement_of(same, f_facts, r_facts, weights) == {"expected": 0.0, "achieved": 0.0}
    assert agreement_draw([same, apart, same], f_facts, r_facts, weights) == 1
    assert agreement_draw([apart, same], f_facts, r_facts, weights) == 0
    # agreement first: a stand-in that agrees as often as the average beats diverse but wrong ones
    r_facts["r4"] = {"q1": "a", "q2": "y"}  # agrees with f0 on half; average over r1..r4 for f0: 0.125
    near = {"f0": ["r4"], "f1": ["r3"]}
    a = agreement_of(near, f_facts, r_facts, weights)
    assert a == pytest.approx({"expected": (3 * 0.125 + 1 * 0.0) / 4, "achieved": 3 * 0.5 / 4})
    assert agreement_draw([same, near], f_facts, r_facts, weights) == 0  # |0.375-0.094| > |0-0.094|
    assert agreement_of({"f0": ["r1"]}, {"f0": {"q9": "a"}}, r_facts, {"f0": 1}) is None
