"""VKD's research variants in vkd_fast.experimental (method vkd_experimental): the misdirect and repel
targets, shrink-perturb, their options, and the package's place (not imported by ``import vkd_fast``;
registered by the plug-in path)."""

from __future__ import annotations

import copy
import subprocess
import sys

import _tiny_models as T
import pytest
import torch
from _items import CFG, FORGET, RETAIN

import vkd_fast as vf
import vkd_fast.adapters as A
import vkd_fast.experimental as X
from vkd_fast.experimental import VKDExperimental, VKDExperimentalOptions
from vkd_fast.methods import Batch


@pytest.mark.parametrize("target", ["misdirect", "repel"])
def test_other_forget_targets(target):
    model = T.tiny_llava()
    opts = {"forget_target": target, "metric": "cosine" if target == "misdirect" else "mse"}
    h = vf.unlearn(model, FORGET, RETAIN, method="vkd_experimental", config=vf.UnlearnConfig(**CFG),
                   options=opts).history
    first, last = h[0]["loss_forget"], h[-1]["loss_forget"]
    assert last < first  # misdirect: closer to the anchor; repel: hinge shrinks as rows move away


def _features(model, items):
    ad = A.get_adapter(model)
    return [ad.visual_features(tap="vision:feature", **ad.preprocess([it["image"]]))[0] for it in items]


def test_repel_objective_against_an_independent_computation():
    model = T.tiny_llava()
    teacher = copy.deepcopy(model)
    method = VKDExperimental({"forget_target": "repel", "lambda_retain": 0.7, "lambda_forget": 1.3})
    assert method.options.forget_augment == 0.0  # repel's target is the image's own features
    method.prepare(model, FORGET, RETAIN)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # move the student away from the teacher
        for p in method.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    batch = Batch([0, 3, 3], [1, 4, 9])
    loss, terms = method.step(batch, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        t_retain, t_forget = _features(teacher, RETAIN), _features(teacher, FORGET)
    s_f = torch.cat(_features(model, [FORGET[i] for i in batch.forget]))
    s_r = torch.cat(_features(model, [RETAIN[i] for i in batch.retain]))
    row_mse = lambda a, b: ((a - b) ** 2).mean(-1)  # noqa: E731
    retain = row_mse(s_r, torch.cat([t_retain[i] for i in batch.retain])).mean()
    # a hinge on the distance to the own features, compared after seeded noise
    noise = torch.randn(s_f.shape, generator=torch.Generator().manual_seed(5))
    noisy = s_f + 0.01 * s_f.detach().pow(2).mean().sqrt() * noise
    forget = torch.relu(1.0 - row_mse(noisy, torch.cat([t_forget[i] for i in batch.forget]))).mean()
    torch.testing.assert_close(loss, 0.7 * retain + 1.3 * forget, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(terms["loss_forget"], forget.detach(), rtol=1e-4, atol=1e-6)
    assert float(forget.detach()) > 1e-6


def test_shrink_perturb_moves_every_trainable_matrix_by_the_formula():
    model = T.tiny_llava()
    before = copy.deepcopy(model)
    method = VKDExperimental({"shrink_perturb": 0.4, "perturb_scale": 0.5})
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
    fresh = vf.methods.VKD()
    fresh.prepare(before, FORGET, RETAIN)
    k = method.r_keys[0]
    assert torch.equal(method.cache.get([k])[0], fresh.cache.get([k])[0])


def test_experimental_options_are_validated():
    with pytest.raises(ValueError, match="shrink_perturb must be in"):
        VKDExperimentalOptions(shrink_perturb=1.0)
    with pytest.raises(ValueError, match="does not combine with lora"):
        VKDExperimentalOptions(shrink_perturb=0.5, lora={"r": 2})
    with pytest.raises(ValueError, match="repel_margin must be > 0"):
        VKDExperimentalOptions(repel_margin=0)
    with pytest.raises(ValueError, match="meta_every must be"):
        VKDExperimentalOptions(meta_every=0)
    with pytest.raises(ValueError, match="forget_augment needs a target that is not the image.s own"):
        VKDExperimentalOptions(forget_augment=0.5, forget_target="repel")
    assert VKDExperimentalOptions(forget_target="repel").forget_augment == 0.0
    assert VKDExperimentalOptions(forget_target="misdirect").forget_augment == 0.6
    for name in ("lambda_meta", "shrink_perturb", "misdirect_scale", "repel_noise"):
        with pytest.raises(ValueError, match=f"unknown vkd option.*{name}"):  # not VKD's any more
            vf.methods.create_method("vkd", {name: 1.0})


@pytest.mark.parametrize("target", ["misdirect", "repel"])
def test_plain_vkd_refuses_the_research_targets_naming_where_they_live(target):
    with pytest.raises(ValueError, match=rf"forget_target '{target}' lives in vkd_fast.experimental "
                                         r"\(method vkd_experimental\)"):
        vf.methods.VKDOptions(forget_target=target)  # registered (this test's fixture), yet not VKD's
    X.unregister()
    with pytest.raises(ValueError, match=rf"forget_target '{target}' is a research variant: it lives in "
                                         r"vkd_fast.experimental \(method vkd_experimental\)"):
        vf.methods.VKDOptions(forget_target=target)


def test_vkd_experimental_with_vkds_options_is_vkd_bit_for_bit():
    runs = [vf.unlearn(T.tiny_llava(), FORGET, RETAIN, method=m, config=vf.UnlearnConfig(**CFG)).model
            for m in ("vkd", "vkd_experimental")]
    start = T.tiny_llava()
    for (n, p), q in zip(runs[0].named_parameters(), runs[1].parameters()):
        assert torch.equal(p, q), n
    assert any(not torch.equal(p, s) for p, s in zip(runs[0].parameters(), start.parameters()))  # it trained


def test_checkpoint_resume_with_repel_ends_with_the_uninterrupted_weights(tmp_path):
    import shutil

    opts = {"forget_target": "repel", "metric": "mse"}  # repel draws noise from the run's step generator
    whole = vf.unlearn(T.tiny_llava(), FORGET, RETAIN, method="vkd_experimental", config=vf.UnlearnConfig(**CFG),
                       options=opts).model
    first = vf.UnlearnConfig(**CFG, output_dir=str(tmp_path / "run"), save_every=5)
    vf.unlearn(T.tiny_llava(), FORGET, RETAIN, method="vkd_experimental", config=first, options=opts)
    shutil.rmtree(tmp_path / "run" / "checkpoint-10")
    shutil.rmtree(tmp_path / "run" / f"checkpoint-{CFG['steps']}")
    resumed = vf.unlearn(T.tiny_llava(), FORGET, RETAIN, method="vkd_experimental", config=first, options=opts,
                         resume=True)
    assert resumed.start_step == 5
    for (n, p), q in zip(whole.named_parameters(), resumed.model.parameters()):
        assert torch.equal(p, q), n


@pytest.mark.slow
def test_import_vkd_fast_leaves_it_out_and_the_plugin_path_registers_it():
    code = ("import sys, vkd_fast as vf\n"
            "from vkd_fast.methods.vkd import forget_targets\n"
            "print('vkd_fast.experimental' in sys.modules, 'vkd_experimental' in vf.available_methods(), "
            "'repel' in forget_targets())\n"
            "from vkd_fast.cli.options import load_plugins, options_help\n"
            "load_plugins(['unlearn', '--plugin', 'vkd_fast.experimental'])\n"
            "print('vkd_experimental' in vf.available_methods(), 'repel' in forget_targets(), "
            "'vkd_experimental.lambda_meta' in options_help(), 'vkd.lambda_meta' in options_help())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=T.cli_env(), timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "False", "False", "True", "True", "True", "False"]
