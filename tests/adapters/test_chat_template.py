"""Prompts through a checkpoint's chat template, whichever kind it is: a tokenizer's own (string
content, Qwen) or a processor's (typed parts, LLaVA-1.5 -- which a folder's chat_template.jinja hands
to AutoTokenizer too, and which rendered a plain string to an empty turn, dropping the question)."""

from __future__ import annotations

import json

import _tiny_models as T
import pytest

import vkd_fast.adapters as A

#: LLaVA-1.5's processor template (the hub's llava-hf layout), reduced to what matters here
PARTS = ("{% for message in messages %}{{ message['role'].upper() + ': ' }}"
         "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\\n' }}{% endfor %}"
         "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' ' }}"
         "{% endfor %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}")
TEXT = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def test_a_processor_template_keeps_the_question():
    tok = T.tiny_tokenizer()
    tok.chat_template = PARTS
    ad = A.get_adapter(T.tiny_llava())
    assert tok.apply_chat_template([{"role": "user", "content": "what is the job ?"}], tokenize=False,
                                   add_generation_prompt=True) == "USER: ASSISTANT:"  # the trap
    text = ad.prompt(tok, "what is the job ?", n_image_tokens=2)
    assert text == "USER: <image><image>\nwhat is the job ? ASSISTANT:"
    plain = T.tiny_tokenizer()  # no template: the family's own format, the same string
    assert ad.prompt(plain, "what is the job ?", n_image_tokens=2) == "USER: <image><image>\nwhat is the job ? ASSISTANT:"
    assert ad.prompt(tok, "what is the job ?", answer="baker") == ad.prompt(plain, "what is the job ?", answer="baker")
    assert ad.prompt(plain, "what is the job ?", answer="baker") == "USER: what is the job ? ASSISTANT: baker"


def test_a_tokenizer_template_takes_a_string():
    tok = T.tiny_tokenizer()
    tok.chat_template = TEXT
    assert A.chat_prompt(tok, "hi there") == "<|im_start|>user\nhi there<|im_end|>\n<|im_start|>assistant\n"


def test_a_template_that_shows_no_text_is_refused():
    tok = T.tiny_tokenizer()
    tok.chat_template = "{% for message in messages %}{{ message['role'] }}{% endfor %}"
    with pytest.raises(ValueError, match="shows the message's text neither as a string nor as"):
        A.chat_prompt(tok, "hi")


def test_the_cli_gives_the_tokenizer_a_folders_processor_template(tmp_path):
    from vkd_fast.cli.specs import load_model

    T.saved_tiny_llava(tmp_path)
    (tmp_path / "chat_template.json").write_text(json.dumps({"chat_template": PARTS}))
    _, tok = load_model(str(tmp_path))
    assert tok.chat_template == PARTS
    (tmp_path / "chat_template.json").write_text("[1]")
    with pytest.raises(ValueError, match="chat_template.json is not a JSON object"):
        load_model(str(tmp_path))
