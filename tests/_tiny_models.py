"""Tiny random models of real transformers classes, built from configs (nothing is downloaded)."""

from __future__ import annotations

import torch

IMAGE_TOKEN = 120  # last ids of the tiny vocabularies are reserved for special tokens


def _llava_parts(max_positions: int) -> dict:
    """A CLIP ViT (4 blocks, 16 patches at 32x32) and a Llama (3 layers) for the LLaVA families."""
    from transformers import CLIPVisionConfig, LlamaConfig

    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
                              image_size=32, patch_size=8, projection_dim=32)
    text = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=128, max_position_embeddings=max_positions)
    return {"vision_config": vision, "text_config": text, "image_token_id": IMAGE_TOKEN,
            "vision_feature_layer": -2, "vision_feature_select_strategy": "default"}


def tiny_llava():
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(0)
    return LlavaForConditionalGeneration(LlavaConfig(**_llava_parts(256))).eval()


def tiny_llava_next():
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration

    torch.manual_seed(0)
    cfg = LlavaNextConfig(**_llava_parts(1024), image_grid_pinpoints=[[32, 32], [32, 64], [64, 32], [64, 64]])
    return LlavaNextForConditionalGeneration(cfg).eval()


QWEN_IMAGE, QWEN_VIDEO, QWEN_VSTART, QWEN_VEND = 296, 297, 294, 295
_QWEN_TEXT = dict(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=512, bos_token_id=1, eos_token_id=2, pad_token_id=0)


def _qwen_text():
    """M-RoPE sections must sum to head_dim / 2 (= 8 here); transformers 5 calls the field
    rope_parameters, 4.5x rope_scaling."""
    import transformers

    if int(transformers.__version__.split(".")[0]) >= 5:
        rope = {"rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}}
    else:
        rope = {"rope_theta": 10000.0, "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]}}
    return {**_QWEN_TEXT, **rope}
_QWEN_SPECIAL = dict(image_token_id=QWEN_IMAGE, video_token_id=QWEN_VIDEO, vision_start_token_id=QWEN_VSTART,
                     vision_end_token_id=QWEN_VEND)


def tiny_qwen2_vl():
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    cfg = Qwen2VLConfig(text_config=_qwen_text(),
                        vision_config=dict(depth=3, embed_dim=32, num_heads=4, mlp_ratio=2, hidden_size=64,
                                           in_channels=3, patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
                        **_QWEN_SPECIAL)
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    return Qwen2VLForConditionalGeneration(cfg).eval()


def tiny_qwen2_5_vl():
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    cfg = Qwen2_5_VLConfig(text_config=_qwen_text(),
                           vision_config=dict(depth=4, hidden_size=32, intermediate_size=64, num_heads=4,
                                              out_hidden_size=64, in_channels=3, patch_size=14, spatial_merge_size=2,
                                              temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1, 3]),
                           **_QWEN_SPECIAL)
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    return Qwen2_5_VLForConditionalGeneration(cfg).eval()


def tiny_tokenizer(specials: dict[str, int] | None = None):
    """A word-level tokenizer whose special tokens (default: LLaVA's ``<image>``) have the ids the tiny
    models use; special tokens are matched before whitespace splitting, as in real tokenizers."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = specials or {"<image>": IMAGE_TOKEN}
    words = ["<unk>", "<s>", "</s>", "USER:", "ASSISTANT:", "user", "assistant", "what", "is", "the", "job", "of",
             "this", "person", "?", "mira", "tolvan", "baker", "pilot"]
    vocab = {w: i for i, w in enumerate(words)}
    vocab.update(specials)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   additional_special_tokens=list(specials))


QWEN_SPECIAL_TOKENS = {"<|image_pad|>": QWEN_IMAGE, "<|video_pad|>": QWEN_VIDEO, "<|vision_start|>": QWEN_VSTART,
                       "<|vision_end|>": QWEN_VEND, "<|im_start|>": 290, "<|im_end|>": 291}


def saved_tiny_llava(folder):
    """A tiny LLaVA and its tokenizer saved in ``folder`` (a model directory for the CLI); returns it."""
    tiny_llava().save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def cli_env() -> dict:
    """The environment for a CLI subprocess: this one without the Triton interpreter switch."""
    import os

    return {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
