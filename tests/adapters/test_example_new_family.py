"""The docs' worked example of a new model family (examples/extending/new_family.py: DeepSeek-VL in one
file) works end to end through the public API on a tiny random model of transformers' own class:
get_adapter picks it, its taps equal the model's own computations, VKD trains only V and P, and its
checkpoints load visual-only and export through the names its adapter declares."""

from __future__ import annotations

from pathlib import Path

import _tiny_models as T
import pytest
import torch
from _items import FORGET, RETAIN

import vkd_fast as vf
import vkd_fast.adapters as A
from vkd_fast.checkpoints import CheckpointError
from vkd_fast.checkpoints.names import match_names
from vkd_fast.utils.plugins import load_plugin

pytest.importorskip("transformers.models.deepseek_vl", reason="this transformers has no DeepSeek-VL (4.56 added it)")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "extending" / "new_family.py"


@pytest.fixture(scope="module")
def example():
    """The example file imported as a user would (by path); its registration undone afterwards."""
    assert A.adapter_class("deepseek_vl") is None  # not a built-in family
    module = load_plugin(str(EXAMPLE))
    yield module
    A.registry.ADAPTERS.remove("deepseek_vl")


def tiny_deepseek_vl():
    """SigLIP (3 blocks, 16 patches at 32x32) -> MLP aligner -> Llama (3 layers), like the tiny LLaVA."""
    from transformers import DeepseekVLConfig, DeepseekVLForConditionalGeneration, LlamaConfig, SiglipVisionConfig

    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                                image_size=32, patch_size=8)
    text = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=128, max_position_embeddings=256)
    torch.manual_seed(0)
    cfg = DeepseekVLConfig(vision_config=vision, text_config=text, image_token_id=T.IMAGE_TOKEN)
    return DeepseekVLForConditionalGeneration(cfg).eval()


def _pixels(n=2):
    return {"pixel_values": torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))}


def _model_features(model, pixel_values):
    out = model.model.get_image_features(pixel_values)  # transformers 4.x: the tensor; 5.x: in pooler_output
    return getattr(out, "pooler_output", out)


def test_get_adapter_picks_the_family_and_its_taps_are_the_models(example):
    model = tiny_deepseek_vl()
    ad = A.get_adapter(model)
    assert type(ad) is example.DeepseekVLAdapter and "deepseek_vl" in A.supported_model_types()
    inputs = _pixels()
    with torch.no_grad(), A.count_calls(ad.llm_layers) as llm, A.count_calls(ad.vision_blocks) as vit:
        feats, offsets = ad.visual_features(**inputs)
    assert llm == [] and sorted(set(vit)) == [0, 1, 2]
    with torch.no_grad():
        ref = _model_features(model, inputs["pixel_values"])
        hidden = ad.vision_tower(inputs["pixel_values"], output_hidden_states=True).hidden_states
    assert torch.equal(feats, ref.reshape(-1, ref.shape[-1]))  # the projector tap: the model's image features
    assert offsets.tolist() == [0, 16, 32] and ad.num_image_tokens(**inputs) == [16, 16]
    for tap, block in (("vision:0", 0), ("vision:feature", 2)):
        with torch.no_grad(), A.count_calls(ad.vision_blocks) as vit:
            feats, _ = ad.visual_features(tap=tap, **inputs)
        assert max(vit) == block and torch.equal(feats, hidden[block + 1].reshape(-1, 32))  # every patch token
    # llm:j -- hidden_states[j] of the model's own forward at the image positions, running j layers
    ids = torch.tensor([[1, 7] + [T.IMAGE_TOKEN] * 16 + [8, 9]] * 2)
    with torch.no_grad(), A.count_calls(ad.llm_layers) as llm:
        feats, _ = ad.visual_features(tap="llm:2", input_ids=ids, attention_mask=torch.ones_like(ids), **inputs)
    with torch.no_grad():
        full = model(input_ids=ids, pixel_values=inputs["pixel_values"], output_hidden_states=True).hidden_states[2]
    assert sorted(set(llm)) == [0, 1] and torch.allclose(feats, full[ids == T.IMAGE_TOKEN], atol=1e-5)


def test_vkd_changes_only_the_vision_side(example):
    model = tiny_deepseek_vl()
    ad = A.get_adapter(model)
    names = set(ad.trainable_names("vision+projector"))
    assert any("post_layernorm" in n for n in names) and any("aligner" in n for n in names)  # P: norm + aligner
    assert not any("language_model" in n or n.startswith("lm_head") or ".head." in n for n in names)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    # VKD at the projector tap (the whole visual path: ViT, final norm, aligner)
    result = vf.unlearn(model, FORGET, RETAIN, options={"tap": "projector"},
                        config=vf.UnlearnConfig(steps=3, batch_size=2, lr=3e-3))
    assert set(result.trainable["names"]) == names
    after = dict(model.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed <= names and any("aligner" in n for n in changed) and any("encoder" in n for n in changed)
    assert all(torch.equal(before[n], after[n]) for n in before if n not in names)  # the LLM bit-identical
    # the family's prompt (a tokenizer without a chat template: its plain template) holds the image's tokens
    tok = T.tiny_tokenizer()
    image = ad.preprocess([FORGET[0]["image"]])
    n = ad.num_image_tokens(**image)[0]
    text = ad.prompt(tok, "what is the job of this person ?", n_image_tokens=n)
    assert text.startswith("User: <image>") and text.endswith("\n\nAssistant:")
    ids = tok(text, add_special_tokens=False, return_tensors="pt").input_ids
    assert int((ids == T.IMAGE_TOKEN).sum()) == n == 16
    with torch.no_grad():
        assert model(**ad.model_inputs(ids, torch.ones_like(ids), **image)).logits.shape[1] == ids.shape[1]


def test_checkpoints_go_by_the_names_the_adapter_declares(example, tmp_path):
    from safetensors.torch import load_file, save_file

    model = tiny_deepseek_vl()
    base = tmp_path / "base"
    model.save_pretrained(base)
    A.get_adapter(model).default_image_processor().save_pretrained(base)  # the folder's processor config
    # rewrite the checkpoint into the other transformers line's names (4.x: model.vision_model.vision_model.*)
    tensors = load_file(str(base / "model.safetensors"))
    deep, flat = "model.vision_model.vision_model.", "model.vision_model."
    if any(k.startswith(deep) for k in tensors):
        other = {flat + k[len(deep):] if k.startswith(deep) else k: v for k, v in tensors.items()}
    else:
        other = {deep + k[len(flat):] if k.startswith(flat) else k: v for k, v in tensors.items()}
    assert other.keys() != tensors.keys()
    save_file(other, str(base / "model.safetensors"), metadata={"format": "pt"})
    visual = sorted(A.get_adapter(model).visual_param_names())
    with pytest.raises(CheckpointError, match="has no tensor for"):  # without the family's checkpoint_renames
        match_names(visual, list(other), family=A.VisualAdapter)
    import warnings

    vis = vf.load_visual_model(base)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the folder's own processor config: no class-defaults warning
        A.get_adapter(vis).preprocess([FORGET[0]["image"]])
    pm = dict(model.named_parameters())
    loaded = {n: p for n, p in vis.named_parameters() if not p.is_meta}
    assert set(loaded) == set(visual) and all(torch.equal(p, pm[n]) for n, p in loaded.items())
    result = vf.unlearn(vis, FORGET, RETAIN, config=vf.UnlearnConfig(steps=2, batch_size=2, lr=3e-3))
    result.save_pretrained(tmp_path / "out", base=base)
    exported = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert exported.keys() == other.keys()  # written in the base checkpoint's own names
    to_ckpt = match_names(list(pm), list(exported), family=example.DeepseekVLAdapter)
    trained, pv = set(result.trainable["names"]), dict(vis.named_parameters())
    for n in pm:
        want = pv[n] if n in trained else pm[n]
        assert torch.equal(exported[to_ckpt[n]], want), n  # V / P the unlearned ones; the LLM the base's


def test_the_cli_plugin_option_registers_the_family(example):
    from vkd_fast.cli.options import load_plugins

    load_plugins(["unlearn", "--plugin", str(EXAMPLE)])  # what `vkd-fast ... --plugin new_family.py` does
    cls = A.adapter_class("deepseek_vl")
    assert cls is not example.DeepseekVLAdapter and cls.__name__ == "DeepseekVLAdapter"  # the plug-in's import
    assert isinstance(A.get_adapter(tiny_deepseek_vl()), cls)
