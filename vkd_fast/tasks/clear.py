"""CLEAR as a task: ``--data clear --root DIR`` (a local copy, one folder per configuration:
forget10_perturbed/, retain_perturbed/, real_faces/, real_world/), the data spec ``clear:PATH``
(image rows, caption as the answer), and CLEAR's own protocol (``--protocol clear``, its only one:
:mod:`vkd_fast.eval.protocols.clear`; ``--reference``, ``--generation-image``). Readers:
:mod:`vkd_fast.data.clear`."""

from __future__ import annotations

from ..eval.protocols.clear import DEFAULT_SPLITS
from .base import Task, register_task


class ClearTask(Task):
    title = "CLEAR"
    protocols = ("clear",)
    default_splits = (DEFAULT_SPLITS["forget"], DEFAULT_SPLITS["retain"])
    root_help = "the local CLEAR folder (one folder per configuration)"
    limit_help = "rows per configuration (default 300, as CLEAR)"
    protocol_options = {"clear": ("--reference", "--generation-image")}
    train_spec_help = "clear:PATH (CLEAR image rows, caption as the answer)"

    def add_arguments(self, parser, command: str) -> None:
        if command == "eval":
            parser.add_argument("--reference", help="--protocol clear: a gold model's CLEAR result (--output of this "
                                                    "command) for the forget-quality KS test")
            parser.add_argument("--generation-image", action="store_true",
                                help="--protocol clear: show the image to the ROUGE generation (CLEAR's own code does "
                                     "not; a deviation, recorded in the output)")

    def train_items(self, spec: str, args) -> list[dict]:
        from ..data import load_clear_train

        return load_clear_train(spec)

    def benchmark(self, args, protocol: str):
        from ..eval.protocols import load_clear_benchmark

        return load_clear_benchmark(self.root(args), args.forget_split, args.retain_split,
                                    **({"rows": args.limit} if args.limit else {}))

    def protocol_kwargs(self, args, protocol: str) -> dict:
        from ..eval.protocols.clear import reference_truth_ratios
        from ..utils.files import read_json_file

        reference = None
        if args.reference:  # checked before any model loads
            reference = read_json_file("--reference", args.reference)
            try:
                reference_truth_ratios(reference)
            except ValueError as exc:
                raise ValueError(f"--reference {args.reference}: {exc}") from None
        return {"seed": args.seed, "reference": reference, "generation_image": args.generation_image}


register_task("clear", ClearTask)
