"""The adapter interface: one family's layout of an MLLM behind one API.

An adapter knows where a model keeps its vision encoder (V), projector (P) and language model (W),
how to run V and P alone to get each image's visual tokens, where those tokens sit in the LLM
input, and which parameters influence a feature tap. Everything is done with removable forward
hooks on the model's own modules, never by patching code:

* a *stop hook* on a block records its output and raises ``_StopForward``, which ends the forward
  right there -- that is how the ViT runs only up to the layer the model reads (or a ``vision:i``
  tap) and the LLM only up to layer j for an ``llm:j`` tap (cost grows with j, not with depth);
* visual features are inserted into the LLM input the way the model does it (embeddings at the
  image-token positions replaced in order).

Taps (METHOD.md section 2), all returned packed ``[sum of tokens, D]`` with per-image ``offsets``:

* ``projector`` -- the visual tokens the projector feeds into the LLM;
* ``vision:i`` -- output of ViT block i (0-based; negative counts from the last block) at the patch
  tokens (the model's own token selection, e.g. without CLIP's CLS token);
* ``llm:j`` -- output of the first j decoder layers (``hidden_states[j]`` of a full forward, before
  any final norm) at the image-token positions, 1 <= j <= depth (negative: depth + 1 + j).
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass

import torch
from torch import nn


class _StopForward(Exception):
    """Raised by a stop hook to end a forward pass early."""


def run_until(fn, module: nn.Module):
    """Call ``fn()`` and return ``module``'s output from the first time it runs; nothing after it
    runs. Raises if ``fn`` finishes without calling ``module``."""
    seen = []

    def hook(_mod, _args, output):
        seen.append(output[0] if isinstance(output, (tuple, list)) else output)
        raise _StopForward

    handle = module.register_forward_hook(hook)
    try:
        fn()
    except _StopForward:
        return seen[0]
    finally:
        handle.remove()
    raise RuntimeError(f"the forward pass never reached {type(module).__name__}")


@contextlib.contextmanager
def count_calls(modules):
    """Context manager yielding a list whose length is the number of forward calls of ``modules``
    (used by tests to check truncated forwards)."""
    calls: list[int] = []
    handles = [m.register_forward_pre_hook(lambda _m, _a, i=i: calls.append(i)) for i, m in enumerate(modules)]
    try:
        yield calls
    finally:
        for h in handles:
            h.remove()


@dataclass(frozen=True)
class Tap:
    kind: str  # "projector" | "vision" | "llm"
    index: int | None = None  # normalised: 0-based block for vision, number of layers for llm

    def __str__(self) -> str:
        return self.kind if self.index is None else f"{self.kind}:{self.index}"


_TAP_RE = re.compile(r"^(projector|vision:(-?\d+|feature)|llm:(-?\d+))$")
_TRAINABLE_RE = re.compile(r"^(projector|vision\+projector|projector\+vision_last:(\d+)|language_model|all)$")


class VisualAdapter:
    """Base class; a family subclass fills in the ``_`` hooks below.

    Subclasses must provide the properties ``vision_tower``, ``vision_blocks``, ``projector_modules``,
    ``language_model``, ``llm_layers``, ``image_token_id``, ``feature_block`` and implement
    ``_vision_forward``, ``_select_patch_tokens``, ``_project``, ``_llm_kwargs``, ``num_image_tokens``,
    ``vision_param_owners`` and ``image_prompt_template``.
    """

    model_types: tuple[str, ...] = ()

    def __init__(self, model: nn.Module):
        self.model = model
        self.config = model.config

    # ------------------------------------------------------------------ layout (family-specific)
    @property
    def vision_tower(self) -> nn.Module:
        raise NotImplementedError

    @property
    def vision_blocks(self) -> nn.ModuleList:
        raise NotImplementedError

    @property
    def projector_modules(self) -> list[nn.Module]:
        """Modules (and owners of parameters) of P."""
        raise NotImplementedError

    @property
    def language_model(self) -> nn.Module:
        raise NotImplementedError

    @property
    def llm_layers(self) -> nn.ModuleList:
        raise NotImplementedError

    @property
    def image_token_id(self) -> int:
        return int(self.config.image_token_id)

    @property
    def feature_block(self) -> int:
        """0-based index of the last ViT block whose output the model uses."""
        return len(self.vision_blocks) - 1

    def vision_param_owners(self, last_block: int) -> list[nn.Module]:
        """Modules of V that influence the output of block ``last_block`` (embeddings, blocks 0..last)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ taps
    def parse_tap(self, tap: str) -> Tap:
        if not isinstance(tap, str) or not _TAP_RE.match(tap.strip()):
            raise ValueError(f"tap must be 'projector', 'vision:<block>', 'vision:feature' or 'llm:<layer>', "
                             f"got {tap!r}")
        tap = tap.strip()
        if tap == "projector":
            return Tap("projector")
        if tap == "vision:feature":  # the block the projector reads (LLaVA: vision_feature_layer)
            return Tap("vision", self.feature_block)
        kind, raw = tap.split(":")
        i = int(raw)
        if kind == "vision":
            n = len(self.vision_blocks)
            if not -n <= i < n:
                raise ValueError(f"tap {tap!r}: the vision tower has {n} blocks, so the block index must be in "
                                 f"[{-n}, {n - 1}]")
            return Tap("vision", i % n)
        depth = len(self.llm_layers)
        if not (1 <= i <= depth or -depth <= i <= -1):
            raise ValueError(f"tap {tap!r}: the language model has {depth} layers, so j must be in [1, {depth}] "
                             f"or [{-depth}, -1]")
        return Tap("llm", i if i > 0 else depth + 1 + i)

    def _run_vision(self, pixel_values, last_block: int, **image_kwargs) -> torch.Tensor:
        """Output of ViT block ``last_block``; blocks after it never run."""
        return run_until(lambda: self._vision_forward(pixel_values, **image_kwargs), self.vision_blocks[last_block])

    def visual_features(self, pixel_values, tap: str = "projector", input_ids=None, attention_mask=None,
                        **image_kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        """Each image's features at ``tap``, packed: ``(feats [sum tokens, D], offsets [n_images + 1])``.

        ``llm:j`` taps also need the prompt (``input_ids`` with the model's image tokens, and
        ``attention_mask``): hidden states at image positions depend on the text before them.
        """
        t = self.parse_tap(tap)
        if t.kind == "vision":
            out = self._run_vision(pixel_values, t.index, **image_kwargs)
            return self._pack(self._select_patch_tokens(out, **image_kwargs))
        per_image = self._project(self._run_vision(pixel_values, self.feature_block, **image_kwargs), **image_kwargs)
        if t.kind == "projector":
            return self._pack(per_image)
        if input_ids is None:
            raise ValueError(f"tap {tap!r} needs input_ids (the prompt with the image tokens) and attention_mask")
        feats = torch.cat(per_image)
        mask = input_ids == self.image_token_id
        n_tok = int(mask.sum())
        if n_tok != feats.shape[0]:
            raise ValueError(f"input_ids hold {n_tok} image tokens but the images give {feats.shape[0]} visual tokens")
        embeds = self.model.get_input_embeddings()(input_ids)
        embeds = embeds.masked_scatter(mask.unsqueeze(-1), feats.to(embeds.dtype))
        kwargs = self._llm_kwargs(input_ids, attention_mask, embeds, **image_kwargs)
        hidden = run_until(lambda: self.language_model(**kwargs), self.llm_layers[t.index - 1])
        rows = hidden[mask]
        return rows, self._offsets([p.shape[0] for p in per_image], rows.device)

    def visual_token_positions(self, input_ids) -> torch.Tensor:
        """Row numbers of the image tokens in ``input_ids`` flattened to ``[B * L]`` -- the rows of
        ``hidden_states.reshape(-1, D)`` that hold visual tokens (a ``student_index`` for the loss)."""
        return torch.nonzero((input_ids == self.image_token_id).reshape(-1)).squeeze(1)

    @staticmethod
    def _offsets(lengths, device) -> torch.Tensor:
        offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64, device=device)
        if lengths:
            offsets[1:] = torch.tensor(lengths, device=device).cumsum(0)
        return offsets

    def _pack(self, per_image) -> tuple[torch.Tensor, torch.Tensor]:
        per_image = list(per_image)
        return torch.cat(per_image), self._offsets([p.shape[0] for p in per_image], per_image[0].device)

    # family hooks
    def _vision_forward(self, pixel_values, **image_kwargs):
        raise NotImplementedError

    def _select_patch_tokens(self, block_out, **image_kwargs) -> list[torch.Tensor]:
        raise NotImplementedError

    def _project(self, block_out, **image_kwargs) -> list[torch.Tensor]:
        raise NotImplementedError

    def _llm_kwargs(self, input_ids, attention_mask, inputs_embeds, **image_kwargs) -> dict:
        return {"inputs_embeds": inputs_embeds, "attention_mask": attention_mask}

    def num_image_tokens(self, **image_kwargs) -> list[int]:
        """Visual tokens each image takes in the LLM input (what the prompt must hold)."""
        raise NotImplementedError

    def place_visual(self, device) -> None:
        """Move only V and P (with their buffers) to ``device``; the language model stays where it is.
        For projector / vision taps that is all training needs, so a 7B-class LLM never has to sit on
        the accelerator."""
        device = torch.device(device)
        self.vision_tower.to(device)
        for module in self.projector_modules:
            module.to(device)
        visual = set(self.trainable_names("vision+projector"))
        owners = dict(self.model.named_modules())
        for name, param in list(self.model.named_parameters()):
            if name in visual and param.device != device:  # loose parameters of P (e.g. image_newline)
                owner_name, _, leaf = name.rpartition(".")
                owner = owners[owner_name]
                owner._parameters[leaf] = nn.Parameter(param.data.to(device), requires_grad=param.requires_grad)

    # ------------------------------------------------------------------ image pre-processing
    #: transformers image processor classes to try, in order (PIL-based ones first: torchvision,
    #: which the "fast" processors need, does not work next to CPU torch here)
    image_processor_classes: tuple[str, ...] = ()

    def image_processor_kwargs(self) -> dict:
        return {}

    def image_processor(self):
        """The family's transformers image processor, configured from the model's config."""
        import transformers

        for name in self.image_processor_classes:
            cls = getattr(transformers, name, None)
            if cls is not None:
                return cls(**self.image_processor_kwargs())
        raise RuntimeError(f"none of the image processors {self.image_processor_classes} exists in transformers "
                           f"{transformers.__version__}")

    def collate(self, per_image: list[dict]) -> dict:
        """Join the image inputs of single images (``preprocess([image])`` each) into one batch."""
        return {k: torch.cat([d[k] for d in per_image]) for k in per_image[0]}

    def preprocess(self, images) -> dict:
        """PIL images -> the keyword arguments of :meth:`visual_features` (``pixel_values`` and the
        family's extras such as ``image_sizes`` or ``image_grid_thw``)."""
        out = self.image_processor()(images=images, return_tensors="pt")
        return {k: v for k, v in out.items()}

    # ------------------------------------------------------------------ text
    def model_inputs(self, input_ids, attention_mask=None, **image_kwargs) -> dict:
        """Keyword arguments of a full forward ``model(**...)`` of a prompt with its images."""
        return {"input_ids": input_ids, "attention_mask": attention_mask, **image_kwargs}

    def text_logits(self, input_ids, attention_mask=None) -> torch.Tensor:
        """Logits of a text-only forward (no image: V and P never run)."""
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    image_prompt_template = "USER: {image}\n{question} ASSISTANT:"
    text_prompt_template = "USER: {question} ASSISTANT:"
    chat_image_separator = "\n"  # between the image block and the question in a chat turn
    answer_separator = " "

    def image_token(self, tokenizer) -> str:
        return tokenizer.convert_ids_to_tokens(self.image_token_id)

    def _image_block(self, tokenizer, n_image_tokens: int) -> str:
        """The text an image occupies in the prompt: its placeholder token, repeated."""
        return self.image_token(tokenizer) * n_image_tokens

    def prompt(self, tokenizer, question: str, n_image_tokens: int | None = None, answer: str | None = None) -> str:
        """The prompt text for an image question (``n_image_tokens`` given: the image placeholder is
        repeated that many times, as the model expects) or a text-only question. Uses the tokenizer's
        chat template when it has one, else the family's plain template."""
        block = None if n_image_tokens is None else self._image_block(tokenizer, n_image_tokens)
        if getattr(tokenizer, "chat_template", None):
            content = question if block is None else f"{block}{self.chat_image_separator}{question}"
            text = tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                                 add_generation_prompt=True)
        elif block is None:
            text = self.text_prompt_template.format(question=question)
        else:
            text = self.image_prompt_template.format(image=block, question=question)
        return text if answer is None else f"{text}{self.answer_separator}{answer}"

    # ------------------------------------------------------------------ trainable sets
    def _param_names(self, owners: list) -> set[str]:
        """Names of the model's parameters held by ``owners`` (modules, or parameters themselves)."""
        ids = {id(p) for m in owners for p in (m.parameters() if isinstance(m, nn.Module) else [m])}
        return {n for n, p in self.model.named_parameters() if id(p) in ids}

    def trainable_names(self, spec: str, tap: str = "projector") -> list[str]:
        """Parameter names of the trainable set ``spec`` that can influence ``tap`` (sorted)."""
        m = _TRAINABLE_RE.match(spec.strip()) if isinstance(spec, str) else None
        if not m:
            raise ValueError("trainable must be 'projector', 'projector+vision_last:<K>', 'vision+projector', "
                             f"'language_model' or 'all', got {spec!r}")
        if spec.strip() == "all":  # output-level baselines (e.g. mmunlearner) update V, P and W
            return sorted(n for n, _ in self.model.named_parameters())
        if spec.strip() == "language_model":  # W with its output head: what output-level baselines update
            return sorted(self._param_names([self.language_model, self.model.get_output_embeddings()]))
        t = self.parse_tap(tap)
        # a vision:i tap reads block i directly (even past the model's feature layer) and never the projector
        last = t.index if t.kind == "vision" else self.feature_block
        use_projector = t.kind != "vision"
        owners: list[nn.Module] = list(self.projector_modules) if use_projector else []
        if spec.strip() == "vision+projector":
            owners += self.vision_param_owners(last)
        elif m.group(2) is not None:
            k = int(m.group(2))
            if k < 1:
                raise ValueError(f"trainable {spec!r}: K must be >= 1")
            first = max(0, self.feature_block - k + 1)
            owners += [self.vision_blocks[b] for b in range(first, self.feature_block + 1) if b <= last]
        names = sorted(self._param_names(owners))
        if not names:
            raise ValueError(f"trainable set {spec!r} has no parameter that influences tap {tap!r} "
                             "(a vision:i tap never sees the projector)")
        return names

    def set_trainable(self, spec: str = "vision+projector", tap: str = "projector", lora: dict | None = None) -> dict:
        """Freeze everything, then unfreeze the trainable set ``spec`` (restricted to what influences
        ``tap``). With ``lora`` (peft ``LoraConfig`` keyword arguments, e.g. ``{"r": 8, "lora_alpha": 16}``)
        LoRA adapters are injected into the Linear layers of that set and only they train.

        Returns a summary: ``trainable`` / ``total`` parameter counts, ``share`` and ``names``.
        """
        names = self.trainable_names(spec, tap)
        for p in self.model.parameters():
            p.requires_grad_(False)
        if lora is not None:
            names = self._inject_lora(names, lora)
        params = dict(self.model.named_parameters())
        for n in names:
            params[n].requires_grad_(True)
        trainable = sum(params[n].numel() for n in names)
        total = sum(p.numel() for p in self.model.parameters())
        return {"trainable": trainable, "total": total, "share": trainable / total, "names": names,
                "spec": spec, "tap": tap, "lora": lora is not None}

    def _inject_lora(self, names: list[str], lora: dict) -> list[str]:
        try:
            from peft import LoraConfig, inject_adapter_in_model
        except ImportError as exc:  # pragma: no cover - peft is in the dev/hf extras
            raise RuntimeError("LoRA needs peft: pip install 'vkd-fast[hf]'") from exc
        wanted = {n.rsplit(".", 1)[0] for n in names}
        targets = sorted(
            name for name, mod in self.model.named_modules() if isinstance(mod, nn.Linear) and name in wanted
        )
        if not targets:
            raise ValueError("lora: the trainable set has no nn.Linear layer to adapt")
        cfg = LoraConfig(target_modules=targets, **lora)
        inject_adapter_in_model(cfg, self.model)
        return sorted(n for n, _ in self.model.named_parameters() if "lora_" in n)
