"""The task registry (vkd_fast.tasks) and the built-in tasks' seams: what the CLI and the runner ask of
a task, against the readers each task binds (independent of the task classes)."""

from argparse import Namespace

import pytest

from vkd_fast.data.mllmu import DEFAULT_SPLITS
from vkd_fast.eval.protocols import available_protocols
from vkd_fast.eval.protocols.clear import DEFAULT_SPLITS as CLEAR_SPLITS
from vkd_fast.tasks import Task, available_tasks, get_task, register_task


def test_built_in_tasks_in_order_with_their_protocols_and_splits():
    assert available_tasks()[:3] == ["toy", "mllmu", "clear"]
    toy, mllmu, clear = (get_task(n) for n in ("toy", "mllmu", "clear"))
    assert toy.protocols == ("likelihood",) and mllmu.protocols == ("likelihood", "mllmu")
    assert clear.protocols == ("clear",)
    assert mllmu.default_splits == DEFAULT_SPLITS == ("forget_5", "retain_95")
    assert clear.default_splits == (CLEAR_SPLITS["forget"], CLEAR_SPLITS["retain"])
    assert all(p in available_protocols() for t in (toy, mllmu, clear) for p in t.protocols)
    assert toy.model_before(Namespace()) == "toy:vanilla" and mllmu.model_before(Namespace()) is None
    args = Namespace(forget_split=None, retain_split="retain_90")
    assert mllmu.splits(args) == ("forget_5", "retain_90")


def test_toy_task_reads_the_world_the_arguments_name():
    from vkd_fast.data import ToyWorld, ToyWorldConfig

    args = Namespace(world_seed=3, identities=8, forget_fraction=0.25)
    world = ToyWorld(ToyWorldConfig(seed=3, n_identities=8, forget_fraction=0.25))
    items = get_task("toy").train_items("forget", args)
    want = world.unlearn_items(world.forget_ids)
    assert [(it["identity"], it["question"], it["answer"]) for it in items] == \
        [(it["identity"], it["question"], it["answer"]) for it in want]
    sets = get_task("toy").eval_sets(args)
    assert set(sets) == {"forget_vqa", "forget_vqa_unseen", "forget_qa", "retain_vqa", "retain_qa"}
    assert len(sets["forget_qa"]) == len(world.text_items(world.forget_ids))
    with pytest.raises(ValueError, match="toy:forget or toy:retain"):
        get_task("toy").train_items("everyone", args)
    with pytest.raises(ValueError, match="toy:vanilla or toy:gold"):
        get_task("toy").load_model("teacher", args)


def test_a_task_without_data_says_so_and_registry_errors():
    class Bare(Task):
        title = "bare"

    register_task("bare_test", Bare)
    try:
        bare = get_task("bare_test")
        assert bare.name == "bare_test"
        with pytest.raises(ValueError, match=r"the bare task has no training items \(bare_test:\.\.\. is not"):
            bare.train_items("x", None)
        with pytest.raises(NotImplementedError, match="task 'bare_test' defines no likelihood evaluation sets"):
            bare.eval_sets(None)
        with pytest.raises(ValueError, match="--data bare_test needs --root"):
            bare.root(Namespace(root=None))
    finally:
        from vkd_fast.tasks import TASKS

        TASKS.remove("bare_test")
    with pytest.raises(ValueError, match="task name must be an identifier"):
        register_task("two words", Bare)
    with pytest.raises(TypeError, match="must be a subclass of vkd_fast.tasks.Task"):
        register_task("x", object)
    with pytest.raises(ValueError, match="--data must be one of 'toy', 'mllmu', 'clear'"):
        get_task("nope")
