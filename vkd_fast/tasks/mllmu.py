"""MLLMU-Bench as a task: ``--data mllmu --root DIR`` (a local copy: forget_NN/, retain_NN/,
Test_Set/, Full_Set/, Retain_Set/), the data spec ``mllmu:PATH`` (training rows with metadata), its
likelihood evaluation sets and free-form sets, and its own ``eval.py`` protocol (``--protocol mllmu``,
:mod:`vkd_fast.eval.protocols.mllmu`; ``--shots``). Readers: :mod:`vkd_fast.data.mllmu`."""

from __future__ import annotations

from ..data.mllmu import DEFAULT_SPLITS
from .base import Task, register_task


def mllmu_eval_sets(root, forget_split: str | None = None, retain_split: str | None = None,
                    limit: int | None = None) -> dict[str, list[dict]]:
    """MLLMU-Bench's evaluation sets from a local copy: forget / retain VQA and QA from the
    ``forget_NN`` / ``retain_NN`` folders, unseen-image forget VQA from ``Test_Set`` rows of the
    forget people (matched by ``ID``), real-world VQA from ``Retain_Set``. ``limit``: rows per file.
    Splits: None = :data:`DEFAULT_SPLITS` (forget_5, retain_95)."""
    from ..data import load_mllmu_eval, mllmu_split_path

    forget = load_mllmu_eval(mllmu_split_path(root, forget_split or DEFAULT_SPLITS[0]), limit=limit)
    retain = load_mllmu_eval(mllmu_split_path(root, retain_split or DEFAULT_SPLITS[1]), limit=limit)
    sets = {"forget_vqa": forget["vqa"], "forget_qa": forget["qa"], "retain_vqa": retain["vqa"],
            "retain_qa": retain["qa"]}
    forget_ids = {it["id"] for it in forget["vqa"] + forget["qa"]}
    optional = {"forget_vqa_unseen": ("Test_Set", lambda it: it["id"] in forget_ids),
                "real_world_vqa": ("Retain_Set", lambda it: True)}
    for name, (split, keep) in optional.items():
        try:
            path = mllmu_split_path(root, split)
        except FileNotFoundError:
            continue  # a partial copy of the benchmark: that metric is not reported
        sets[name] = [it for it in load_mllmu_eval(path, limit=limit)["vqa"] if keep(it)]
    return {k: v for k, v in sets.items() if v}


def mllmu_free_form_sets(root, forget_split: str | None = None, retain_split: str | None = None,
                         limit: int | None = None) -> dict[str, list[dict]]:
    """MLLMU-Bench's generation (ROUGE-L) and cloze (exact match) items of the forget and retain splits:
    ``{"forget_generation", "forget_cloze", "retain_generation", "retain_cloze"}`` (empty ones left out)."""
    from ..data import load_mllmu_eval, mllmu_split_path

    out = {}
    for side, split in (("forget", forget_split or DEFAULT_SPLITS[0]), ("retain", retain_split or DEFAULT_SPLITS[1])):
        ev = load_mllmu_eval(mllmu_split_path(root, split), limit=limit)
        out[f"{side}_generation"], out[f"{side}_cloze"] = ev["generation"], ev["cloze"]
    return {k: v for k, v in out.items() if v}


class MllmuTask(Task):
    title = "MLLMU-Bench"
    protocols = ("likelihood", "mllmu")
    default_splits = DEFAULT_SPLITS
    root_help = "the local MLLMU-Bench folder (forget_5/, retain_95/, Test_Set/, Full_Set/, Retain_Set/)"
    limit_help = "rows per file (quick runs)"
    protocol_options = {"mllmu": ("--shots",)}
    train_spec_help = "mllmu:PATH (MLLMU-Bench rows with metadata)"

    def add_arguments(self, parser, command: str) -> None:
        if command == "eval":
            parser.add_argument("--shots", type=int, choices=(0, 1, 2),
                                help="--protocol mllmu: demonstration people for classification and fill-in-the-"
                                     "blank (default: the original's 1 and 2)")

    def train_items(self, spec: str, args) -> list[dict]:
        from ..data import load_mllmu_train

        return load_mllmu_train(spec)

    def eval_sets(self, args) -> dict[str, list[dict]]:
        return mllmu_eval_sets(self.root(args), *self.splits(args), limit=args.limit)

    def free_form_sets(self, args) -> dict[str, list[dict]] | None:
        if getattr(args, "max_new_tokens", 0) <= 0:
            return None
        return mllmu_free_form_sets(self.root(args), *self.splits(args), limit=args.limit)

    def benchmark(self, args, protocol: str):
        from ..eval.protocols import load_mllmu_benchmark

        return load_mllmu_benchmark(self.root(args), *self.splits(args), limit=args.limit)

    def protocol_kwargs(self, args, protocol: str) -> dict:
        return {"seed": args.seed, "shots": args.shots}


register_task("mllmu", MllmuTask)
