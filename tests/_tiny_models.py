"""Tiny random models of real transformers classes, built from configs (nothing is downloaded)."""

from __future__ import annotations

import torch

IMAGE_TOKEN = 120  # last ids of the tiny vocabularies are reserved for special tokens


def tiny_llava():
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(0)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
                              image_size=32, patch_size=8, projection_dim=32)
    text = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=128, max_position_embeddings=256)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_id=IMAGE_TOKEN,
                      vision_feature_layer=-2, vision_feature_select_strategy="default")
    return LlavaForConditionalGeneration(cfg).eval()


def tiny_llava_next():
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextConfig, LlavaNextForConditionalGeneration

    torch.manual_seed(0)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
                              image_size=32, patch_size=8, projection_dim=32)
    text = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=128, max_position_embeddings=1024)
    cfg = LlavaNextConfig(vision_config=vision, text_config=text, image_token_id=IMAGE_TOKEN,
                          image_grid_pinpoints=[[32, 32], [32, 64], [64, 32], [64, 64]],
                          vision_feature_layer=-2, vision_feature_select_strategy="default")
    return LlavaNextForConditionalGeneration(cfg).eval()


def tiny_tokenizer(image_token: str = "<image>", image_token_id: int = IMAGE_TOKEN, extra: tuple[str, ...] = ()):
    """A word-level tokenizer whose ``image_token`` has the id the tiny models use."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>", "<s>", "</s>", "USER:", "ASSISTANT:", "what", "is", "the", "job", "of", "this", "person", "?",
             "mira", "tolvan", "baker", "pilot"]
    vocab = {w: i for i, w in enumerate(words)}
    for w in extra:
        vocab.setdefault(w, len(vocab))
    vocab[image_token] = image_token_id
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   additional_special_tokens=[image_token])
