"""``vkd_robust`` (vkd_fast/methods/vkd_robust.py): VKD's steps, then the image-gated lock trained
against simulated V + P attackers. Checked here on a tiny LLaVA: the VKD phase is plain VKD's bit for
bit and the lock phase changes nothing but the lock (V + P and W equal VKD's run), text-only logits
stay bit-identical to the model before unlearning, the retain term starts at exactly 0 (the lock
starts as the identity), the lock is saved with the run and loads back to the same logits, and the
options and inputs are checked. What the lock buys against the relearning attack is measured on the
toy worlds (docs/robustness.md), not here."""

import _tiny_models as T
import pytest
import torch
from _items import FORGET, RETAIN, qa

import vkd_fast as vf
from vkd_fast.adapters import find_gated_lock, get_adapter, load_gated_lock
from vkd_fast.methods.vkd_robust import LOCK_FOLDER, VKDRobustOptions

LOCK = {"lock_steps": 3, "attackers": 2, "attacker_steps": 1, "attacker_reset": 2, "lock_batch": 2,
        "prior_images": 2}
CONFIG = {"steps": 3, "batch_size": 2, "lr": 3e-3}


def _items():
    return qa(FORGET, "baker"), qa(RETAIN, "pilot")


def _text_logits(model, tok):
    from vkd_fast.utils.text import encode_prompt, pad_right

    ad = get_adapter(model)
    ids, mask = pad_right([encode_prompt(ad, tok, q) for q in ("what is the job of this person ?", "pilot baker")])
    with torch.no_grad():
        return ad.text_logits(ids, mask)


def _image_logits(model, tok, item):
    from vkd_fast.utils.text import encode_prompt

    ad = get_adapter(model)
    image = ad.preprocess([item["image"]])
    ids = torch.tensor([encode_prompt(ad, tok, item["question"], ad.num_image_tokens(**image)[0])])
    with torch.no_grad():
        return model(**ad.model_inputs(ids, torch.ones_like(ids), **image)).logits


def test_vkd_phase_is_vkds_and_the_lock_phase_changes_only_the_lock(tmp_path):
    tok = T.tiny_tokenizer()
    forget, retain = _items()
    plain = T.tiny_llava()
    before = T.tiny_llava()
    robust = T.tiny_llava()
    text_before = _text_logits(before, tok)
    vf.unlearn(plain, forget, retain, method="vkd", config=vf.UnlearnConfig(**CONFIG), tokenizer=tok)
    result = vf.unlearn(robust, forget, retain, method="vkd_robust", options=LOCK, tokenizer=tok,
                        config=vf.UnlearnConfig(**CONFIG, output_dir=str(tmp_path / "run")))
    lock = find_gated_lock(robust)
    assert lock is not None and result.method == "vkd_robust"
    # everything but the lock is VKD's run, bit for bit (W untouched, V + P restored after the attackers)
    robust_params = dict(robust.named_parameters())
    for name, p in plain.named_parameters():
        wrapped = name.replace(".weight", ".base.weight").replace(".bias", ".base.bias")
        q = robust_params.get(name, robust_params.get(wrapped))
        assert q is not None and torch.equal(p, q), name
    # the lock trained, from the identity (its retain term starts at exactly 0)
    assert any(bool(m.lock_B.abs().sum() > 0) for m in lock.modules.values())
    stats = result.method_stats["lock"]
    assert stats["steps"] == 3 and stats["first"]["retain"] == 0.0 and stats["first"]["forget"] > 0
    assert stats["parameters"] == sum(p.numel() for p in lock.parameters())
    # text never sees the lock
    assert torch.equal(_text_logits(robust, tok), text_before)
    # image questions do; saved with the run, the lock loads onto VKD's model and gives the same logits
    locked = _image_logits(robust, tok, forget[0])
    assert not torch.equal(locked, _image_logits(plain, tok, forget[0]))
    assert (tmp_path / "run" / LOCK_FOLDER / "lock.safetensors").is_file()
    load_gated_lock(plain, tmp_path / "run" / LOCK_FOLDER)
    torch.testing.assert_close(_image_logits(plain, tok, forget[0]), locked, rtol=0, atol=0)
    # dropping the lock gives VKD's model back
    lock.remove()
    assert find_gated_lock(robust) is None


def test_inputs_and_options_are_checked():
    forget, retain = _items()
    with pytest.raises(ValueError, match="needs tokenizer"):
        vf.unlearn(T.tiny_llava(), forget, retain, method="vkd_robust", config=vf.UnlearnConfig(**CONFIG))
    with pytest.raises(ValueError, match="question"):
        vf.unlearn(T.tiny_llava(), FORGET, retain, method="vkd_robust", tokenizer=T.tiny_tokenizer(),
                   config=vf.UnlearnConfig(**CONFIG))
    for name, bad in (("lock_steps", 0), ("attackers", 0), ("lock_lr", 0.0), ("lambda_lock_retain", -1.0)):
        with pytest.raises(ValueError, match=name):
            VKDRobustOptions(**{name: bad})
    for bad in ("", "q_proj,q_proj", "q_proj;k_proj", " , "):
        with pytest.raises(ValueError, match="lock_targets"):
            VKDRobustOptions(lock_targets=bad)
    from vkd_fast.adapters.gated_lock import DEFAULT_TARGETS

    assert VKDRobustOptions().lock_target_names == DEFAULT_TARGETS  # the option's default is the lock's
    assert VKDRobustOptions(lock_targets="q_proj, gate_proj").lock_target_names == ("q_proj", "gate_proj")
    method = vf.methods.VKDRobust()
    with pytest.raises(ValueError, match="one process"):
        method.check(forget, retain, T.tiny_tokenizer(), world_size=2)


def test_the_lock_wraps_the_linears_named_in_lock_targets():
    tok = T.tiny_tokenizer()
    forget, retain = _items()
    model = T.tiny_llava()
    text_before = _text_logits(model, tok)
    vf.unlearn(model, forget, retain, method="vkd_robust", tokenizer=tok, config=vf.UnlearnConfig(**CONFIG),
               options={**LOCK, "lock_targets": "q_proj,gate_proj,down_proj"})
    lock = find_gated_lock(model)
    kinds = {name.rpartition(".")[2] for name in lock.modules}
    layers = len(get_adapter(model).llm_layers)
    assert kinds == {"q_proj", "gate_proj", "down_proj"} and len(lock.modules) == 3 * layers
    assert torch.equal(_text_logits(model, tok), text_before)  # text still never sees it


def test_a_second_lock_is_refused():
    from vkd_fast.adapters import install_gated_lock

    model = T.tiny_llava()
    install_gated_lock(model)
    with pytest.raises(ValueError, match="already has a gated lock"):
        install_gated_lock(model)


def test_a_locked_model_saves_as_a_checkpoint_of_its_family_with_the_lock_beside_it(tmp_path):
    from safetensors import safe_open
    from transformers import LlavaForConditionalGeneration

    tok = T.tiny_tokenizer()
    forget, retain = _items()
    model = T.tiny_llava()
    result = vf.unlearn(model, forget, retain, method="vkd_robust", options=LOCK, tokenizer=tok,
                        config=vf.UnlearnConfig(**CONFIG))
    locked = _image_logits(model, tok, forget[0])
    result.save_pretrained(tmp_path / "out")
    with safe_open(str(tmp_path / "out" / "model.safetensors"), "pt") as f:
        names = list(f.keys())
    assert names and not [n for n in names if "lock_" in n or ".base." in n]  # the family's own names only
    assert torch.equal(_image_logits(model, tok, forget[0]), locked)  # the lock is back after saving
    loaded = LlavaForConditionalGeneration.from_pretrained(tmp_path / "out").eval()
    lock = find_gated_lock(model)
    with lock.disabled():
        torch.testing.assert_close(_image_logits(loaded, tok, forget[0]), _image_logits(model, tok, forget[0]),
                                   rtol=0, atol=0)
    load_gated_lock(loaded, tmp_path / "out" / "gated_lock")
    torch.testing.assert_close(_image_logits(loaded, tok, forget[0]), locked, rtol=0, atol=0)


def test_answer_targets_are_the_models_first_answer_token_distributions_averaged_over_the_images():
    from vkd_fast.methods.vkd_robust import answer_targets

    tok = T.tiny_tokenizer()
    forget, retain = _items()
    model = T.tiny_llava().eval()
    images = [[retain[0]["image"]], [retain[1]["image"], retain[2]["image"]]]
    got = answer_targets(model, get_adapter(model), tok, forget[:2], images)
    # reference: one unpadded forward per (item, image); the logits before the first answer token
    for row, it, imgs in zip(got, forget[:2], images):
        probs = [torch.softmax(_image_logits(model, tok, {**it, "image": im})[0, -1].float(), -1) for im in imgs]
        torch.testing.assert_close(row, torch.stack(probs).mean(0), rtol=1e-5, atol=1e-6)
    assert torch.allclose(got.sum(-1), torch.ones(2))


def test_the_stand_in_target_asks_each_forget_question_about_vkds_stand_in(monkeypatch):
    import vkd_fast.methods.vkd_robust as R

    tok = T.tiny_tokenizer()
    forget, retain = _items()
    # two images per forget person, so that "one stand-in per person" is checked, not just assumed
    forget = [{**it, "identity": i // 2} for i, it in enumerate(forget)]
    seen = {}
    real = R.train_gated_lock

    def spy(*args, **kwargs):
        seen["stand_ins"] = kwargs["stand_ins"]
        return real(*args, **kwargs)

    monkeypatch.setattr(R, "train_gated_lock", spy)
    method = R.VKDRobust(LOCK)  # stand_in is the default
    vf.unlearn(T.tiny_llava(), forget, retain, method=method, tokenizer=tok, config=vf.UnlearnConfig(**CONFIG))
    nf = len(forget)
    expected = [retain[k - nf]["image"] for k in method.target.target_keys]
    assert seen["stand_ins"] == expected and all(k >= nf for k in method.target.target_keys)
    # all images of one forget person are asked about the same retain person (VKD's stand-in), never a forget one
    people = {}
    for it, k in zip(forget, method.target.target_keys):
        people.setdefault(it["identity"], set()).add(retain[k - nf]["identity"])
    assert all(len(v) == 1 for v in people.values())
    # the prior target passes no stand-ins
    method = R.VKDRobust({**LOCK, "lock_forget_target": "prior"})
    vf.unlearn(T.tiny_llava(), forget, retain, method=method, tokenizer=tok, config=vf.UnlearnConfig(**CONFIG))
    assert seen["stand_ins"] is None


def test_lock_forget_target_is_checked():
    with pytest.raises(ValueError, match="lock_forget_target must be one of"):
        VKDRobustOptions(lock_forget_target="stranger")
    with pytest.raises(ValueError, match="forget_target 'retain_person'"):
        VKDRobustOptions(lock_forget_target="stand_in", forget_target="retain_mean")
    assert VKDRobustOptions().lock_forget_target == "stand_in"
    assert VKDRobustOptions(lock_forget_target="prior", forget_target="retain_mean").forget_target == "retain_mean"


def _forwards_during_the_lock(monkeypatch, options):
    """Run vkd_robust on the tiny model; per forward of the lock's phase: (W moved from the model's own,
    W training, the lock training). Returns (those records, the model, VKD's model)."""
    import vkd_fast.methods.vkd_robust as R

    tok = T.tiny_tokenizer()
    forget, retain = _items()
    seen = []
    real = R.install_gated_lock

    def spy(model, **kwargs):
        lock = real(model, **kwargs)
        w = get_adapter(model).language_model.layers[0].mlp.gate_proj.weight  # a weight of W the lock does not wrap
        own = w.detach().clone()
        model.register_forward_pre_hook(lambda *_: seen.append(
            (not torch.equal(w, own), w.requires_grad, lock.parameters()[0].requires_grad)))
        return lock

    monkeypatch.setattr(R, "install_gated_lock", spy)
    model, plain = T.tiny_llava(), T.tiny_llava()
    vf.unlearn(plain, forget, retain, method="vkd", config=vf.UnlearnConfig(**CONFIG), tokenizer=tok)
    vf.unlearn(model, forget, retain, method="vkd_robust", options=options, tokenizer=tok,
               config=vf.UnlearnConfig(**CONFIG))
    return set(seen), model, plain


def test_llm_attackers_fine_tune_w_and_the_lock_is_trained_at_the_weights_they_reach(monkeypatch):
    options = {**LOCK, "attackers": 1, "llm_attackers": 1, "lock_steps": 4, "attacker_reset": 4}
    seen, model, plain = _forwards_during_the_lock(monkeypatch, options)
    # the llm attacker's turn: W moved and training, the lock with it (it is part of W); the lock's turn
    # under it: W moved (the attacker's weights), only the lock training; the lock's other terms at W itself
    assert (True, True, True) in seen and (True, False, True) in seen and (False, False, True) in seen
    # W is back bit for bit afterwards: everything but the lock is VKD's run
    robust_params = dict(model.named_parameters())
    for name, p in plain.named_parameters():
        q = robust_params.get(name, robust_params.get(name.replace(".weight", ".base.weight")
                                                      .replace(".bias", ".base.bias")))
        assert q is not None and torch.equal(p, q), name
    assert find_gated_lock(model) is not None
    # without llm attackers W never moves while the lock trains
    seen, _, _ = _forwards_during_the_lock(monkeypatch, {**LOCK, "attackers": 1, "lock_steps": 4})
    assert not any(moved for moved, _, _ in seen) and (False, False, True) in seen


def test_llm_attackers_is_checked():
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="llm_attackers"):
            VKDRobustOptions(llm_attackers=bad)
    assert VKDRobustOptions().llm_attackers == 0


def test_the_name_term_asks_each_name_question_next_to_retain_images_and_is_off_at_weight_zero(monkeypatch):
    import vkd_fast.methods.vkd_robust as R

    tok = T.tiny_tokenizer()
    forget, retain = _items()
    forget = [{**it, "name_question": "what is the job of baker ?"} for it in forget]
    retain = [{**it, "name_question": "what is the job of pilot ?"} for it in retain]
    asked = {}
    real = R.encode_qa

    def spy(adapter, tokenizer, items, what):
        asked.setdefault(what, items)
        return real(adapter, tokenizer, items, what)

    monkeypatch.setattr(R, "encode_qa", spy)
    model = T.tiny_llava()
    result = vf.unlearn(model, forget, retain, method="vkd_robust", options={**LOCK, "lambda_lock_names": 1.0},
                        tokenizer=tok, config=vf.UnlearnConfig(**CONFIG))
    named = asked["name questions"]
    retain_images = [it["image"] for it in retain]
    # every item's name question next to a retain person's image, and each retain person's also next to their own
    assert len(named) == len(forget) + 2 * len(retain) == result.method_stats["lock"]["name_questions"]
    assert all(any(n["image"] is im for im in retain_images) for n in named)
    assert [n["question"] for n in named] == [it["name_question"] for it in forget + retain + retain]
    assert [n["image"] for n in named[-len(retain):]] == retain_images
    assert all(n["answer"] == it["answer"] for n, it in zip(named, forget + retain + retain))
    assert result.method_stats["lock"]["first"]["names"] == 0.0  # the lock starts as the identity
    # weight 0 (the default): no name questions, and the lock is the one trained on items without them
    asked.clear()
    plain, bare = T.tiny_llava(), T.tiny_llava()
    vf.unlearn(plain, forget, retain, method="vkd_robust", options=LOCK, tokenizer=tok,
               config=vf.UnlearnConfig(**CONFIG))
    assert "name questions" not in asked
    vf.unlearn(bare, [{k: v for k, v in it.items() if k != "name_question"} for it in forget],
               [{k: v for k, v in it.items() if k != "name_question"} for it in retain], method="vkd_robust",
               options=LOCK, tokenizer=tok, config=vf.UnlearnConfig(**CONFIG))
    a, b = find_gated_lock(plain).state_dict(), find_gated_lock(bare).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="'name_question' must be a non-empty string"):
        vf.unlearn(T.tiny_llava(), [{**forget[0], "name_question": " "}] + forget[1:], retain, method="vkd_robust",
                   options=LOCK, tokenizer=tok, config=vf.UnlearnConfig(**CONFIG))
