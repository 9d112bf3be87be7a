"""The built-in toy world (docs/method.md §6) as a task: ``--data toy`` (the default), the data
specs ``toy:forget`` / ``toy:retain``, the models ``toy:vanilla`` / ``toy:gold`` (built on first use
and cached), and the world's options (``--world-seed``, ``--identities``, ...). The world and its
models are :mod:`vkd_fast.data.toy` and :mod:`vkd_fast.data.toy_model`."""

from __future__ import annotations

from .base import Task, register_task


def toy_eval_sets(world) -> dict[str, list[dict]]:
    """The toy world's evaluation sets (every metric but the real-world one)."""
    return {
        "forget_vqa": world.image_items(world.forget_ids, "train"),
        "forget_vqa_unseen": world.image_items(world.forget_ids, "unseen"),
        "forget_qa": world.text_items(world.forget_ids),
        "retain_vqa": world.image_items(world.retain_ids, "train"),
        "retain_qa": world.text_items(world.retain_ids),
    }


def privacy_row(model, tokenizer, world, members: list[dict], strangers: list[dict] | None = None) -> dict:
    """The toy world's privacy audit (docs/method.md §4.5) as row keys ``mia_auc`` (LOSS score) and
    ``mia_auc_min_k``: ``members`` (the forget people's training-image questions, ``forget_vqa``)
    against as many strangers (:meth:`~vkd_fast.data.ToyWorld.stranger_items`, seed 0; pass them when
    they are already drawn). The demo and the robustness study both measure it this way."""
    from ..eval.privacy import privacy_audit

    strangers = world.stranger_items(len(world.forget_ids), seed=0) if strangers is None else strangers
    out = privacy_audit(model, tokenizer, members, strangers)
    return {"mia_auc": out["auc_loss"], "mia_auc_min_k": out["auc_min_k"]}


def embedding_row(model, tokenizer, forget_all: list[dict], vanilla, cache: dict) -> dict:
    """The embedding attack (docs/method.md §4.4) with the default relearning attack's split (teach job
    and city, test hobby and pet) on ``forget_all`` (forget VQA, training and unseen images); the
    vanilla model's held-out accuracy is computed once and kept in ``cache``. Returns the attack's
    result. The demo and the robustness study both run it this way."""
    from ..eval.embedding_attack import embedding_attack
    from ..eval.relearn import RelearnConfig, held_out_accuracy

    split = RelearnConfig(attributes=("job", "city"))
    if "embedding_acc_before" not in cache:
        cache["embedding_acc_before"] = held_out_accuracy(vanilla, tokenizer, forget_all, split)
    return embedding_attack(model, tokenizer, forget_all, split, acc_before=cache["embedding_acc_before"])


def toy_world(args):
    """The world the command line names (the defaults for options it lacks)."""
    from ..data import ToyWorld, ToyWorldConfig

    return ToyWorld(ToyWorldConfig(seed=getattr(args, "world_seed", 0), n_identities=getattr(args, "identities", 24),
                                   forget_fraction=getattr(args, "forget_fraction", 0.1)))


def toy_model_config(args):
    """The toy models' build options from the command line (the defaults without it)."""
    from ..data import ToyModelConfig

    return ToyModelConfig(max_steps=getattr(args, "build_max_steps", 600), lr=getattr(args, "build_lr", 2e-3))


def toy_models(args, *, rebuild: bool = False):
    """The world's cached vanilla and gold models (built on first use)."""
    from ..data import load_toy_models

    return load_toy_models(toy_world(args), toy_model_config(args), rebuild=rebuild, progress=True)


class ToyTask(Task):
    title = "toy world"
    protocols = ("likelihood",)
    model_spec_help = "toy:vanilla / toy:gold (the toy world's models, built on first use)"
    train_spec_help = "toy:forget / toy:retain (the toy world's training images with a question and answer)"

    def add_arguments(self, parser, command: str) -> None:
        parser.add_argument("--world-seed", type=int, default=0, help="toy world: seed (default 0)")
        parser.add_argument("--identities", type=int, default=24, help="toy world: number of people (default 24)")
        parser.add_argument("--forget-fraction", type=float, default=0.1,
                            help="toy world: share of the people forgotten (default 0.1, at least 2)")
        parser.add_argument("--build-max-steps", type=int, default=600,
                            help="toy models: the training schedule's length for up to 24 people (default 600; "
                                 "longer for more people; a model below its bar at the end goes on up to twice as "
                                 "long)")
        parser.add_argument("--build-lr", type=float, default=2e-3,
                            help="toy models: peak learning rate (default 2e-3)")

    def train_items(self, spec: str, args) -> list[dict]:
        if spec not in ("forget", "retain"):
            raise ValueError(f"dataset toy:{spec!r} must be toy:forget or toy:retain")
        world = toy_world(args)
        return world.unlearn_items(world.forget_ids if spec == "forget" else world.retain_ids)

    def eval_sets(self, args) -> dict[str, list[dict]]:
        return toy_eval_sets(toy_world(args))

    def load_model(self, name: str, args, device=None):
        if name not in ("vanilla", "gold"):
            raise ValueError(f"model toy:{name} must be toy:vanilla or toy:gold")
        models = toy_models(args)
        model = models.vanilla if name == "vanilla" else models.gold
        return (model.to(device) if device is not None else model), models.tokenizer

    def tokenizer(self, args):
        return toy_models(args).tokenizer

    def model_before(self, args) -> str | None:
        return "toy:vanilla"


register_task("toy", ToyTask)
