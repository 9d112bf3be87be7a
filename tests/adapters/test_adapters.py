"""Adapters on tiny random models of the real transformers classes (no downloads)."""

from __future__ import annotations

import _tiny_models as T
import pytest
import torch
from PIL import Image

import vkd_fast as vf
import vkd_fast.adapters as A


def _llava_inputs(adapter, n_images=2):
    g = torch.Generator().manual_seed(1)
    return {"pixel_values": torch.randn(n_images, 3, 32, 32, generator=g)}


def _llava_next_inputs(adapter, n_images=2):
    g = torch.Generator().manual_seed(1)
    sizes = torch.tensor([[32, 64], [32, 32], [64, 64]][:n_images])
    return {"pixel_values": torch.randn(n_images, 5, 3, 32, 32, generator=g), "image_sizes": sizes}


def _features(out):
    """get_image_features returns the per-image features (transformers 4.5x) or an output whose
    pooler_output holds them (5.x)."""
    out = getattr(out, "pooler_output", out)
    return torch.cat(list(out)) if isinstance(out, (list, tuple)) else out


def _llava_reference(model, inputs):
    return _features(model.model.get_image_features(
        vision_feature_layer=model.config.vision_feature_layer,
        vision_feature_select_strategy=model.config.vision_feature_select_strategy, **inputs))


def _qwen_inputs(adapter, n_images=2):
    g = torch.Generator().manual_seed(1)
    grid = torch.tensor([[1, 8, 12], [1, 4, 6], [1, 2, 2]][:n_images])  # different sizes in one batch
    return {"pixel_values": torch.randn(int(grid.prod(-1).sum()), 3 * 2 * 14 * 14, generator=g),
            "image_grid_thw": grid}


def _qwen_reference(model, inputs):
    return _features(model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"]))


FAMILIES = {
    "llava": (T.tiny_llava, _llava_inputs, _llava_reference),
    "llava_next": (T.tiny_llava_next, _llava_next_inputs, _llava_reference),
    "qwen2_vl": (T.tiny_qwen2_vl, _qwen_inputs, _qwen_reference),
    "qwen2_5_vl": (T.tiny_qwen2_5_vl, _qwen_inputs, _qwen_reference),
}
TOKENIZERS = {"llava": None, "llava_next": None, "qwen2_vl": T.QWEN_SPECIAL_TOKENS, "qwen2_5_vl": T.QWEN_SPECIAL_TOKENS}


def _names_in(model, modules):
    ids = {id(p) for m in modules for p in m.parameters()}
    return {n for n, p in model.named_parameters() if id(p) in ids}


@pytest.fixture(params=sorted(FAMILIES), scope="module")
def family(request):
    build, make_inputs, reference = FAMILIES[request.param]
    model = build()
    return request.param, model, make_inputs, reference


def _prompt_ids(adapter, counts, text_before=(1, 5), text_after=(7, 8)):
    """input_ids [n_images, L]: one image per row, some text around it (left-padded to one length)."""
    rows = [list(text_before) + [adapter.image_token_id] * n + list(text_after) for n in counts]
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r)
        mask[i, width - len(r):] = 1
    return ids, mask


def test_registry_and_errors():
    assert A.supported_model_types() == ["llava", "llava_next", "qwen2_5_vl", "qwen2_vl"]
    from transformers import LlamaConfig, LlamaForCausalLM

    lm = LlamaForCausalLM(LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, vocab_size=32))
    with pytest.raises(ValueError, match=r"no vkd_fast adapter for model_type 'llama'.*supported: .*llava.*register_adapter"):
        A.get_adapter(lm)

    class MyAdapter(A.LlavaAdapter):
        pass

    A.register_adapter("llama_custom_test", MyAdapter)
    try:
        lm.config.model_type = "llama_custom_test"
        assert isinstance(A.get_adapter(lm), MyAdapter)
    finally:
        A.registry.ADAPTERS.remove("llama_custom_test")
    with pytest.raises(TypeError, match="subclass of vkd_fast.adapters.VisualAdapter"):
        A.register_adapter("x", object)


def test_a_family_registers_under_its_model_types():
    # each built-in family is registered under what its class declares
    for name in A.supported_model_types():
        assert name in A.adapter_class(name).model_types
    assert A.adapter_class("llama") is None

    @A.register_adapter  # the class form: every name in model_types; returns the class (a decorator)
    class TwoNames(A.LlavaAdapter):
        model_types = ("two_names_a", "two_names_b")

    try:
        assert A.adapter_class("two_names_a") is TwoNames is A.adapter_class("two_names_b")
        assert {"two_names_a", "two_names_b"} <= set(A.supported_model_types())
    finally:
        A.registry.ADAPTERS.remove("two_names_a")
        A.registry.ADAPTERS.remove("two_names_b")
    assert A.adapter_class("two_names_a") is None

    class NoNames(A.LlavaAdapter):
        model_types = ()

    with pytest.raises(ValueError, match=r"NoNames.model_types must be a non-empty tuple .*register_adapter\(model_type"):
        A.register_adapter(NoNames)
    NoNames.model_types = "llava"  # a string, not a tuple of names
    with pytest.raises(ValueError, match="NoNames.model_types must be a non-empty tuple"):
        A.register_adapter(NoNames)
    with pytest.raises(ValueError, match="model_type must be a non-empty string"):
        A.register_adapter("", NoNames)
    with pytest.raises(TypeError, match="adapter_cls must be a subclass of vkd_fast.adapters.VisualAdapter"):
        A.register_adapter(dict)


def test_tap_errors(family):
    _, model, make_inputs, _ = family
    ad = A.get_adapter(model)
    inputs = make_inputs(ad)
    for bad in ("proj", "vision", "vision:x", "llm:0", "text:1", 3):
        with pytest.raises(ValueError, match="tap must be|tap 'llm:0'"):
            ad.visual_features(tap=bad, **inputs)
    n = len(ad.vision_blocks)
    with pytest.raises(ValueError, match=rf"tap 'vision:{n}': the vision tower has {n} blocks, so the block index must "
                                         rf"be in \[-{n}, {n - 1}\]"):
        ad.visual_features(tap=f"vision:{n}", **inputs)
    with pytest.raises(ValueError, match=r"tap 'llm:4': the language model has 3 layers, so j must be in \[1, 3\]"):
        ad.visual_features(tap="llm:4", **inputs)
    with pytest.raises(ValueError, match="needs input_ids"):
        ad.visual_features(tap="llm:1", **inputs)
    with pytest.raises(ValueError, match="trainable must be"):
        ad.set_trainable("vision")


def test_projector_tap_equals_model_features_and_runs_no_llm(family):
    _, model, make_inputs, reference = family
    ad = A.get_adapter(model)
    inputs = make_inputs(ad)
    with torch.no_grad(), A.count_calls(ad.llm_layers) as llm_calls, A.count_calls(ad.vision_blocks) as vit_calls:
        feats, offsets = ad.visual_features(**inputs)
    assert llm_calls == []  # the projector tap never runs the language model
    assert sorted(set(vit_calls)) == list(range(ad.feature_block + 1))  # the ViT stops at the feature block
    with torch.no_grad():
        ref = reference(model, inputs)
    assert torch.equal(feats, ref)  # truncated ViT: bit-equal features
    assert offsets.tolist()[-1] == feats.shape[0] and offsets.tolist()[1:] == torch.tensor(
        ad.num_image_tokens(**inputs)).cumsum(0).tolist()
    assert feats.shape[1] == model.config.text_config.hidden_size


def test_vision_tap_shapes(family):
    _, model, make_inputs, _ = family
    ad = A.get_adapter(model)
    inputs = make_inputs(ad)
    n_images = len(ad.num_image_tokens(**inputs))
    for tap, block in (("vision:0", 0), ("vision:-1", len(ad.vision_blocks) - 1),
                       ("vision:feature", ad.feature_block)):
        seen = []
        hook = ad.vision_blocks[block].register_forward_hook(lambda _m, _a, out, seen=seen: seen.append(out))
        with torch.no_grad(), A.count_calls(ad.vision_blocks) as calls:
            feats, offsets = ad.visual_features(tap=tap, **inputs)
        hook.remove()
        assert max(calls) == block
        block_out = seen[0][0] if isinstance(seen[0], tuple) else seen[0]
        assert feats.shape[1] == block_out.shape[-1]
        assert offsets[-1] == feats.shape[0] and len(offsets) == n_images + 1
        # every patch token once (CLIP's CLS token dropped, as the model does)
        cls = 1 if "CLIP" in type(ad.vision_tower).__name__ else 0
        assert feats.shape[0] == block_out.reshape(-1, block_out.shape[-1]).shape[0] - cls * block_out.shape[0] * (
            block_out.dim() == 3)


def test_vision_feature_tap_is_the_block_the_projector_reads(family):
    _, model, make_inputs, _ = family
    ad = A.get_adapter(model)
    inputs = make_inputs(ad)
    assert ad.parse_tap("vision:feature") == ad.parse_tap(f"vision:{ad.feature_block}")
    with torch.no_grad():
        a, oa = ad.visual_features(tap="vision:feature", **inputs)
        b, ob = ad.visual_features(tap=f"vision:{ad.feature_block}", **inputs)
    assert torch.equal(a, b) and torch.equal(oa, ob)
    assert ad.trainable_names("vision+projector", "vision:feature") == ad.trainable_names(
        "vision+projector", f"vision:{ad.feature_block}")


def test_llm_tap_equals_hidden_states_and_runs_j_layers(family):
    _, model, make_inputs, _ = family
    ad = A.get_adapter(model)
    inputs = make_inputs(ad)
    counts = ad.num_image_tokens(**inputs)
    ids, mask = _prompt_ids(ad, counts)
    extra = {}
    if "image_grid_thw" in inputs:  # M-RoPE needs the image-token types (Qwen2.5-VL silently misplaces without)
        extra["mm_token_type_ids"] = (ids == ad.image_token_id).int()
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask, output_hidden_states=True, **inputs, **extra)
    depth = len(ad.llm_layers)
    img = ids == ad.image_token_id
    for j in range(1, depth + 1):
        with torch.no_grad(), A.count_calls(ad.llm_layers) as calls:
            feats, offsets = ad.visual_features(tap=f"llm:{j}", input_ids=ids, attention_mask=mask, **inputs)
        assert sorted(set(calls)) == list(range(j)) and len(calls) == j
        want = full.hidden_states[j][img]
        if j == depth:  # the last hidden_states entry already has the final norm applied
            feats = ad.language_model.norm(feats)
        torch.testing.assert_close(feats, want, rtol=1e-5, atol=1e-5)
        assert offsets.tolist()[1:] == torch.tensor(counts).cumsum(0).tolist()
    # the same rows through visual_token_positions, as a student_index into flattened hidden states
    rows = ad.visual_token_positions(ids)
    flat = full.hidden_states[1].reshape(-1, full.hidden_states[1].shape[-1])
    first, _ = ad.visual_features(tap="llm:1", input_ids=ids, attention_mask=mask, **inputs)
    torch.testing.assert_close(flat[rows], first, rtol=1e-5, atol=1e-5)
    neg, _ = ad.visual_features(tap="llm:-1", input_ids=ids, attention_mask=mask, **inputs)
    last, _ = ad.visual_features(tap=f"llm:{depth}", input_ids=ids, attention_mask=mask, **inputs)
    assert torch.equal(neg, last)


def _expected_counts(ad, spec, tap="projector"):
    """Parameter counts of a trainable set, derived from the module layout independently."""
    proj_params = {id(p) for m in ad.projector_modules for p in m.parameters()}
    proj = sum(p.numel() for m in ad.projector_modules for p in m.parameters())
    if hasattr(ad, "_newline"):
        proj += ad._newline().numel()
    fb = ad.feature_block
    blocks = [sum(p.numel() for p in b.parameters()) for b in ad.vision_blocks]
    block_params = {id(p) for b in ad.vision_blocks for p in b.parameters()}
    # the ViT's own stem (patch embedding, norms before the blocks); not CLIP's unused post_layernorm
    stem = sum(p.numel() for n, p in ad.vision_tower.named_parameters()
               if id(p) not in block_params | proj_params and "post_layernorm" not in n)
    if spec == "projector":
        return proj
    if spec.startswith("projector+vision_last:"):
        k = int(spec.split(":")[1])
        return proj + sum(blocks[fb - k + 1: fb + 1])
    return proj + stem + sum(blocks[: fb + 1])


@pytest.mark.parametrize("spec", ["projector", "projector+vision_last:1", "projector+vision_last:2", "vision+projector"])
def test_trainable_sets_exact_counts_and_nonzero_gradients(family, spec):
    name, _, make_inputs, _ = family
    model = FAMILIES[name][0]()  # fresh: set_trainable changes requires_grad
    ad = A.get_adapter(model)
    summary = ad.set_trainable(spec)
    assert summary["trainable"] == _expected_counts(ad, spec)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(summary["names"])
    assert summary["total"] == sum(p.numel() for p in model.parameters())
    assert not trainable & _names_in(model, [ad.language_model, model.lm_head])
    assert not any("post_layernorm" in n for n in trainable)  # never influences the features
    later = _names_in(model, list(ad.vision_blocks)[ad.feature_block + 1:])
    assert not trainable & later  # blocks after the feature layer
    feats, _ = ad.visual_features(**make_inputs(ad))
    loss = vf.feature_distill_loss(feats, torch.randn_like(feats).detach())
    loss.backward()
    dead = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert dead == []


def test_vision_tap_trainable_set_excludes_projector_and_later_blocks(family):
    name = family[0]
    model = FAMILIES[name][0]()
    ad = A.get_adapter(model)
    summary = ad.set_trainable("vision+projector", tap="vision:1")
    names = set(summary["names"])
    assert not names & _names_in(model, ad.projector_modules) and not any("image_newline" in n for n in names)
    assert names & _names_in(model, [ad.vision_blocks[1]]) and not names & _names_in(model, [ad.vision_blocks[2]])
    with pytest.raises(ValueError, match="has no parameter that influences tap 'vision:1'"):
        ad.set_trainable("projector", tap="vision:1")


def test_text_logits_bit_identical_after_visual_changes(family):
    name, _, _, _ = family
    model = FAMILIES[name][0]()
    ad = A.get_adapter(model)
    ids = torch.tensor([[1, 5, 6, 7, 8, 9], [1, 9, 8, 7, 6, 5]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        before = ad.text_logits(ids, mask)
        ad.set_trainable("vision+projector")
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p))
        after = ad.text_logits(ids, mask)
    assert torch.equal(before, after)


def test_lora_on_trainable_modules_only(family):
    name, _, make_inputs, _ = family
    model = FAMILIES[name][0]()
    ad = A.get_adapter(model)
    summary = ad.set_trainable("projector+vision_last:1", lora={"r": 4, "lora_alpha": 8})
    assert summary["lora"] and summary["names"] and all("lora_" in n for n in summary["names"])
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trainable == summary["names"]
    allowed = [*ad.projector_modules, ad.vision_blocks[ad.feature_block]]
    assert set(trainable) <= _names_in(model, allowed)
    feats, _ = ad.visual_features(**make_inputs(ad))
    vf.feature_distill_loss(feats, torch.randn_like(feats).detach()).backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad and "lora_B" in n)


def test_save_pretrained_round_trip(family, tmp_path):
    name, model, make_inputs, _ = family
    ad = A.get_adapter(model)
    inputs = make_inputs(ad)
    model.save_pretrained(tmp_path)
    cls = type(model)
    # same attention kernel as the original (a reload would pick sdpa, which differs in the last bits)
    loaded = cls.from_pretrained(tmp_path, attn_implementation=model.config._attn_implementation).eval()
    assert not (set(dict(loaded.named_parameters())) ^ set(dict(model.named_parameters())))
    with torch.no_grad():
        a, _ = ad.visual_features(**inputs)
        b, _ = A.get_adapter(loaded).visual_features(**inputs)
    assert torch.equal(a, b)


def test_preprocess_and_prompt(family):
    name, model, _, _ = family
    ad = A.get_adapter(model)
    g = torch.Generator().manual_seed(0)
    images = [Image.fromarray((torch.rand(h, w, 3, generator=g) * 255).to(torch.uint8).numpy()) for h, w in
              ((40, 50), (32, 32))]
    inputs = ad.preprocess(images)
    with torch.no_grad():
        feats, offsets = ad.visual_features(**inputs)
    counts = ad.num_image_tokens(**inputs)
    assert offsets.diff().tolist() == counts
    tok = T.tiny_tokenizer(TOKENIZERS[name])
    text = ad.prompt(tok, "what is the job of this person ?", n_image_tokens=counts[0])
    ids = tok(text, return_tensors="pt").input_ids
    assert int((ids == ad.image_token_id).sum()) == counts[0]
    text_only = ad.prompt(tok, "what is the job of mira tolvan ?")
    assert ad.image_token(tok) not in text_only and "mira" in text_only
    assert ad.prompt(tok, "what is the job of this person ?", n_image_tokens=1, answer="baker").endswith("baker")
    # with a chat template, the template lays the turn out and the image tokens are kept whole
    tok.chat_template = ("{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {% endfor %}"
                         "{% if add_generation_prompt %}assistant{% endif %}")
    chat = ad.prompt(tok, "what is the job of this person ?", n_image_tokens=counts[1])
    assert chat.startswith("user ") and chat.endswith("assistant")
    assert int((tok(chat, return_tensors="pt").input_ids == ad.image_token_id).sum()) == counts[1]


def test_place_visual_moves_only_vision_and_projector(family):
    name = family[0]
    model = FAMILIES[name][0]()
    ad = A.get_adapter(model)
    visual = set(ad.trainable_names("vision+projector"))
    ad.place_visual("meta")  # a stand-in accelerator: only the placement is checked
    for n, p in model.named_parameters():
        in_llm = ".language_model." in n or n.startswith("lm_head")
        if n in visual:
            assert p.device.type == "meta", n
        elif in_llm:
            assert p.device.type == "cpu", n
    assert all(b.device.type == "meta" for b in ad.vision_tower.buffers())


def test_benchmark_prompt_style_is_the_familys():
    """eval's default prompt style comes from the adapter's benchmark_prompt_style: LLaVA-1.5 keeps the benchmark
    templates' own format even with a chat template; other families follow the tokenizer."""
    from vkd_fast.eval.protocols.prompt import default_style

    plain, chat = T.tiny_tokenizer(), T.tiny_tokenizer()
    chat.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    llava, nxt = A.get_adapter(T.tiny_llava()), A.get_adapter(T.tiny_llava_next())
    assert [default_style(llava, chat), default_style(nxt, chat), default_style(nxt, plain)] == ["llava", "chat", "llava"]

    class Fixed(A.LlavaNextAdapter):
        benchmark_prompt_style = "llava"

    assert default_style(Fixed(nxt.model), chat) == "llava"
