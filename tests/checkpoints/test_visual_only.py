"""load_visual_model (vkd_fast.checkpoints.visual_only): only V and P read, from the shards that hold
them, for every family, sharded and single-file, in the tensor names of transformers 4.x and 5.x;
features and training steps equal the fully loaded model's bit for bit; whatever needs the language
model says so; bad checkpoints are refused with one clear error."""

from __future__ import annotations

import json
import pickle

import _tiny_models as T
import pytest
import torch
from _items import FORGET, RETAIN, qa

import vkd_fast as vf
import vkd_fast.checkpoints.visual_only as V
import vkd_fast.eval
from vkd_fast.checkpoints import CheckpointError, read_header

FAMILIES = {"llava": T.tiny_llava, "llava_next": T.tiny_llava_next, "qwen2_vl": T.tiny_qwen2_vl,
            "qwen2_5_vl": T.tiny_qwen2_5_vl}


def _save(build, path, sharded: bool):
    model = build()
    model.save_pretrained(path, max_shard_size="100KB" if sharded else "10GB")
    return model


def _full(path):
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).eval().requires_grad_(False)


@pytest.mark.parametrize("sharded", [True, False], ids=["sharded", "single"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_visual_only_equals_the_full_model_on_the_visual_path(family, sharded, tmp_path, monkeypatch):
    _save(FAMILIES[family], tmp_path, sharded)
    opened = []
    real = V.read_tensors
    monkeypatch.setattr(V, "read_tensors", lambda path, names: opened.append(path.name) or real(path, names))
    vis = vf.load_visual_model(tmp_path)
    full = _full(tmp_path)
    a_v, a_f = vf.adapters.get_adapter(vis), vf.adapters.get_adapter(full)
    visual = a_f.visual_param_names()
    pv, pf = dict(vis.named_parameters()), dict(full.named_parameters())
    assert all(torch.equal(pv[n], pf[n]) for n in visual)
    assert all(p.is_meta for n, p in pv.items() if n not in visual)  # W never read: no storage at all
    assert not a_v.has_language_model and a_f.has_language_model
    # only the shards that hold V / P tensors were opened
    index = {}
    for f in sorted(tmp_path.glob("*.safetensors")):
        index[f.name] = set(read_header(f)[0]) - {"__metadata__"}
    wanted = {f for f, names in index.items() if any(n.split(".")[0] in ("vision_tower", "visual", "multi_modal_projector",
                                                                          "image_newline") for n in names)}
    assert set(opened) == wanted and (not sharded or len(wanted) < len(index))
    images = a_f.preprocess([FORGET[0]["image"]])
    for tap in ("projector", "vision:feature"):
        with torch.no_grad():
            assert torch.equal(a_v.visual_features(tap=tap, **images)[0], a_f.visual_features(tap=tap, **images)[0])
    cfg = vf.UnlearnConfig(steps=3, batch_size=2, lr=3e-3)
    rv = vf.unlearn(vis, FORGET, RETAIN, config=cfg)
    rf = vf.unlearn(full, FORGET, RETAIN, config=cfg)
    assert rv.trainable["names"] == rf.trainable["names"]
    pv, pf = dict(vis.named_parameters()), dict(full.named_parameters())
    assert all(torch.equal(pv[n], pf[n]) for n in rv.trainable["names"])  # the same training, bit for bit


def test_checkpoints_in_transformers_4_names_load(tmp_path):
    # transformers 4.x wrote LLaVA's CLIP under vision_tower.vision_model.*: rename a 5.x checkpoint so
    from safetensors.torch import load_file, save_file

    model = _save(T.tiny_llava, tmp_path, sharded=False)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    renamed = {k.replace("vision_tower.", "vision_tower.vision_model.", 1) if k.startswith("vision_tower.") else k: v
               for k, v in tensors.items()}
    assert renamed.keys() != tensors.keys()
    save_file(renamed, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    vis = vf.load_visual_model(tmp_path)
    pm = dict(model.named_parameters())
    assert all(torch.equal(p, pm[n]) for n, p in vis.named_parameters() if not p.is_meta)


def test_what_needs_the_language_model_says_so(tmp_path):
    _save(T.tiny_llava, tmp_path, sharded=False)
    vis = vf.load_visual_model(tmp_path)
    ad = vf.adapters.get_adapter(vis)
    tok = T.tiny_tokenizer()
    msg = "loaded without it .*vkd_fast.load_visual_model"
    cases = [
        lambda: ad.text_logits(torch.tensor([[1, 2]])),
        lambda: ad.visual_features(tap="llm:1", **ad.preprocess([FORGET[0]["image"]])),
        lambda: vf.unlearn(vis, qa(FORGET, "baker"), qa(RETAIN, "pilot"), options={"lambda_npo": 1.0}, tokenizer=tok),
        lambda: vf.unlearn(vis, qa(FORGET, "baker"), qa(RETAIN, "pilot"), method="grad_diff", tokenizer=tok),
        lambda: vf.eval.evaluate(vis, tok, {"forget_vqa": [{"question": "what is the job of this person ?",
                                                            "options": ["baker", "pilot"], "answer": "baker",
                                                            "image": FORGET[0]["image"]}]}),
        lambda: vf.eval.relearn(vis, tok, qa(FORGET, "baker"), "visual", vf.eval.RelearnConfig()),
        lambda: vf.unlearn(vis, FORGET, RETAIN, options={"tap": "llm:1"}, tokenizer=tok),
    ]
    for case in cases:
        with pytest.raises(ValueError, match=msg):
            case()
    result = vf.unlearn(vis, FORGET, RETAIN, config=vf.UnlearnConfig(steps=1, batch_size=1))
    with pytest.raises(ValueError, match="pass base=<the checkpoint folder it came from>"):
        result.save_pretrained(tmp_path / "out")


class _Boom:
    def __reduce__(self):  # unpickling this would create a marker file
        return (open, ("UNPICKLED", "w"))


def test_bad_checkpoints_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="holds no safetensors weights"):
        vf.load_visual_model(empty)
    pick = tmp_path / "pickle"
    pick.mkdir()
    (pick / "pytorch_model.bin").write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(CheckpointError, match="only pickle weights .*never unpickles"):
        vf.load_visual_model(pick)
    assert not (tmp_path / "UNPICKLED").exists()
    good = tmp_path / "good"
    _save(T.tiny_llava, good, sharded=False)
    unknown = tmp_path / "unknown"
    _save(T.tiny_llava, unknown, sharded=False)
    cfg = json.loads((unknown / "config.json").read_text())
    (unknown / "config.json").write_text(json.dumps({**cfg, "model_type": "llama"}))
    with pytest.raises(CheckpointError, match="model_type 'llama' has no vkd_fast adapter"):
        vf.load_visual_model(unknown)
    cut = tmp_path / "truncated"
    _save(T.tiny_llava, cut, sharded=False)
    data = (cut / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        vf.load_visual_model(cut)
    (cut / "model.safetensors").write_bytes(data[:5])
    with pytest.raises(CheckpointError, match="truncated"):
        vf.load_visual_model(cut)
    bad_cfg = tmp_path / "badcfg"
    _save(T.tiny_llava, bad_cfg, sharded=False)
    (bad_cfg / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot read its config.json"):
        vf.load_visual_model(bad_cfg)
    assert isinstance(vf.load_visual_model(good), torch.nn.Module)


def test_checkpoint_names_are_the_familys():
    """Each family's adapter class says how its checkpoint names map to the model's (names.py only matches)."""
    from vkd_fast.checkpoints.names import canonical, family_of, match_names

    llava, qwen = family_of("llava"), family_of("qwen2_vl")
    assert llava is vf.adapters.LlavaAdapter and family_of("llava_next") is vf.adapters.LlavaNextAdapter
    assert family_of("not_registered") is vf.adapters.VisualAdapter  # the common wrappers only
    for name in ("vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight",  # 4.x checkpoint
                 "model.vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight",  # 4.57 model
                 "model.vision_tower.encoder.layers.0.mlp.fc1.weight"):  # 5.x model
        assert canonical(name, llava) == "vision_tower.encoder.layers.0.mlp.fc1.weight"
    assert canonical("vision_tower.vision_model.x", qwen) == "vision_tower.vision_model.x"  # LLaVA's rename only
    for name in ("language_model.model.layers.1.q.weight", "model.language_model.layers.1.q.weight",
                 "model.layers.1.q.weight"):  # the common wrappers, every family
        assert canonical(name, qwen) == canonical(name, llava) == canonical(name) == "layers.1.q.weight"
    assert match_names(["model.visual.blocks.0.w"], ["visual.blocks.0.w", "model.layers.0.w"], family=qwen) == {
        "model.visual.blocks.0.w": "visual.blocks.0.w"}
    with pytest.raises(CheckpointError, match="would both be the model's 'vision_tower.x'"):
        match_names([], ["vision_tower.x", "vision_tower.vision_model.x"], family=llava)
