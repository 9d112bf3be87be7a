"""Prompts built by a benchmark's own templates, and greedy generation from them.

A benchmark template (MLLMU-Bench's, CLEAR's) is written for LLaVA-1.5: ``USER: <image>\\n...`` turns,
one after another (demonstrations carry their answers inline), then ``ASSISTANT:``. A
:class:`Prompt` keeps that structure — turns of (LLaVA role marker, content) plus the reply marker
and the images in order — so one prompt renders two ways:

* ``"llava"``: the benchmark's literal string (the LLaVA family), tokenised with the tokenizer's
  special tokens (BOS), as the benchmark's processor call does;
* ``"chat"``: every turn's content joined into one user message of the model's own chat template
  (the Qwen families), the documented deviation for models that were never trained on LLaVA's
  markers.

Each image slot becomes the adapter's image block (its placeholder token repeated as many times as
the image has visual tokens), which is what a transformers processor does to ``<image>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...adapters.base import chat_prompt

#: where an image goes inside a turn's content (never written to a model or an audit file)
IMAGE_SLOT = "\ufffcimage\ufffc"
#: how an image is written in audit prompts (the benchmarks' own placeholder)
AUDIT_IMAGE = "<image>"
STYLES = ("llava", "chat")


@dataclass(frozen=True)
class Turn:
    """One user turn: ``marker`` is LLaVA's role marker as the template writes it (``"USER: "`` or
    ``"USER:"``), ``content`` the rest, with :data:`IMAGE_SLOT` where an image goes."""

    marker: str
    content: str


@dataclass(frozen=True)
class Prompt:
    """Turns, the reply marker (``"ASSISTANT:"``, sometimes with a trailing space) and the images, one
    per :data:`IMAGE_SLOT` in the turns' order."""

    turns: tuple[Turn, ...]
    reply_marker: str
    images: tuple = field(default=())

    def __post_init__(self):
        slots = sum(t.content.count(IMAGE_SLOT) for t in self.turns)
        if slots != len(self.images):
            raise ValueError(f"a prompt with {slots} image slots needs {slots} images, got {len(self.images)}")

    def literal(self, image_text: str = AUDIT_IMAGE) -> str:
        """The benchmark's LLaVA-1.5 string, images written as ``image_text``."""
        text = "".join(t.marker + t.content for t in self.turns) + self.reply_marker
        return text.replace(IMAGE_SLOT, image_text)

    def content(self, image_text: str = AUDIT_IMAGE) -> str:
        """Every turn's content, joined (no role markers): the one user message of the chat style."""
        return "".join(t.content for t in self.turns).strip().replace(IMAGE_SLOT, image_text)


def default_style(adapter, tokenizer) -> str:
    """``"llava"`` for LLaVA-1.5-family models (the benchmark templates' own format) and for tokenizers
    without a chat template; ``"chat"`` otherwise (Qwen2-VL, Qwen2.5-VL, LLaVA-NeXT with a template)."""
    fixed = getattr(adapter, "benchmark_prompt_style", None)  # the family's own (LLaVA-1.5: "llava")
    if fixed is not None:
        return fixed
    return "chat" if getattr(tokenizer, "chat_template", None) else "llava"


class PromptRenderer:
    """Renders :class:`Prompt` s for one model: the audit text, and the token ids + image inputs.

    ``style``: ``"llava"`` or ``"chat"`` (default :func:`default_style`). The last ``cache_images``
    processed images are kept, by object identity (a demonstration image repeats in every prompt of
    a set; a person's image in each of their questions)."""

    def __init__(self, adapter, tokenizer, style: str | None = None, cache_images: int = 16):
        from collections import OrderedDict

        style = default_style(adapter, tokenizer) if style is None else style
        if style not in STYLES:
            raise ValueError(f"style must be one of {STYLES}, got {style!r}")
        self.adapter, self.tokenizer, self.style = adapter, tokenizer, style
        self._processed: OrderedDict[int, tuple[object, dict]] = OrderedDict()
        self._cache_images = cache_images

    def describe(self) -> str:
        if self.style == "llava":
            return "the benchmark's LLaVA-1.5 strings (USER: / ASSISTANT:), verbatim"
        return ("the model's chat template: one user message holding the benchmark's turns without their USER: / "
                "ASSISTANT: markers, then the template's generation prompt (deviation: the benchmark's strings "
                "are LLaVA-1.5's)")

    def _chat(self, content: str) -> str:
        return chat_prompt(self.tokenizer, content)

    def text(self, prompt: Prompt) -> str:
        """What the model is shown, images written as ``<image>`` (the audit file's prompt)."""
        if self.style == "llava":
            return prompt.literal()
        return self._chat(prompt.content(IMAGE_SLOT)).replace(IMAGE_SLOT, AUDIT_IMAGE)

    def _image_inputs(self, images) -> dict | None:
        if not images:
            return None
        per_image = []
        for image in images:
            key = id(image)
            if key in self._processed:
                self._processed.move_to_end(key)
            else:  # the entry keeps the image alive, so its id cannot be reused while cached
                self._processed[key] = (image, self.adapter.preprocess([image]))
                while len(self._processed) > self._cache_images:
                    self._processed.popitem(last=False)
            per_image.append(self._processed[key][1])
        return self.adapter.collate(per_image)

    def encode(self, prompt: Prompt, answer: str | None = None) -> tuple[list[int], dict | None]:
        """``(token ids, image inputs or None)`` of ``prompt`` — followed by ``answer`` when given (the
        assistant's reply: after a space in the LLaVA style, right after the generation prompt in the
        chat style). The LLaVA style adds the tokenizer's special tokens (BOS), as a processor call on
        the benchmark's string does; a chat template writes its own. (Everything outside the
        benchmark protocols encodes with :func:`vkd_fast.utils.text.encode_prompt`, which adds none:
        the one other convention, stated in that module.)"""
        image_inputs = self._image_inputs(prompt.images)
        counts = self.adapter.num_image_tokens(**image_inputs) if image_inputs else []
        if self.style == "llava":
            text, special = prompt.literal(IMAGE_SLOT), True
            text += "" if answer is None else f" {answer}"
        else:
            text, special = self._chat(prompt.content(IMAGE_SLOT)), False
            text += "" if answer is None else answer
        pieces = text.split(IMAGE_SLOT)
        blocks = [self.adapter.image_block(self.tokenizer, int(n)) for n in counts]
        text = pieces[0] + "".join(b + p for b, p in zip(blocks, pieces[1:]))
        return self.tokenizer(text, add_special_tokens=special).input_ids, image_inputs


class ModelGenerator:
    """``generator(prompt, max_new_tokens) -> str``: the greedy continuation of ``prompt``
    (``model.generate``, no sampling, one prompt at a time), decoded without special tokens.

    Protocols take any callable of that shape, so a scripted stand-in can test their scoring."""

    def __init__(self, model, adapter, tokenizer, style: str | None = None):
        from ..metrics import generation_pad_id

        adapter.require_language_model("generation")
        self.model, self.renderer = model, PromptRenderer(adapter, tokenizer, style)
        self.pad = generation_pad_id(tokenizer)

    def text(self, prompt: Prompt) -> str:
        return self.renderer.text(prompt)

    def describe(self) -> str:
        return self.renderer.describe()

    def __call__(self, prompt: Prompt, max_new_tokens: int) -> str:
        from ..metrics import generate_ids

        ids, image_inputs = self.renderer.encode(prompt)
        new = generate_ids(self.model, self.renderer.adapter, ids, image_inputs, max_new_tokens, self.pad)
        return self.renderer.tokenizer.decode(new, skip_special_tokens=True)
