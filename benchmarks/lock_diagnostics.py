"""Why the image-gated lock's forget target matters, and what the toy world can say about name
questions asked with an image present (docs/robustness.md, "The lock's forget target").

For each model -- the vanilla, gold, and each ``--runs`` entry unlearned from the vanilla -- on one toy
world: the membership-inference AUC (the forget people's training images against as many strangers',
as the study measures it) with the mean log-probability of the true answer per image on both sides
(a hedged answer gives every option some probability; a stranger's answer is confident and mostly
wrong), and the accuracy of the world's named questions ("what is the <attribute> of <name> ?")
asked next to a portrait: the named person's own, or another person's (a retain person's for the
forget people, the next retain person's for the retain people), and with no image.

    .venv/bin/python benchmarks/lock_diagnostics.py --world-seed 0 \
        --runs 'vkd;vkd_robust {"lock_forget_target": "prior"};vkd_robust'

One thread (set here): the figures in the docs were measured that way.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys


def named_with_image(world, ids, whose: str) -> list[dict]:
    """The world's named questions about ``ids`` with a portrait beside them (its first training
    variant): ``whose`` = "own" (the named person's) or "other" (a retain person's: the next retain
    person for a retain person, retain person ``k mod n`` for the k-th forget person)."""
    if whose not in ("own", "other"):
        raise ValueError(f"whose must be 'own' or 'other', got {whose!r}")
    retain, forget = list(world.retain_ids), list(world.forget_ids)
    out = []
    for it in world.text_items(ids):
        person = it["identity"]
        if whose == "other":
            person = (retain[(retain.index(person) + 1) % len(retain)] if person in retain
                      else retain[forget.index(person) % len(retain)])
        out.append({**it, "image": world.image(person, 0)})
    return out


def parse_runs(spec: str) -> list[tuple[str, dict]]:
    """``"name [json options];name ..."`` -> [(method, options)]."""
    runs = []
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        name, _, opts = part.partition(" ")
        runs.append((name, json.loads(opts) if opts.strip() else {}))
    return runs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world-seed", type=int, default=0)
    ap.add_argument("--runs", default="vkd;vkd_robust", help="methods to unlearn with, ';'-separated, each "
                                                              "optionally followed by its options as JSON")
    args = ap.parse_args(argv)
    runs = parse_runs(args.runs)

    import torch

    import vkd_fast as vf
    from vkd_fast.adapters import get_adapter
    from vkd_fast.data import ToyWorld, ToyWorldConfig, load_toy_models
    from vkd_fast.eval.metrics import multiple_choice
    from vkd_fast.eval.privacy import auc, membership_scores

    torch.set_num_threads(1)
    world = ToyWorld(ToyWorldConfig(seed=args.world_seed))
    models = load_toy_models(world)
    tok = models.tokenizer
    members = world.image_items(world.forget_ids, "train")
    strangers = world.stranger_items(len(world.forget_ids), seed=0)
    named = {"forget, own portrait": named_with_image(world, world.forget_ids, "own"),
             "forget, a retain portrait": named_with_image(world, world.forget_ids, "other"),
             "retain, own portrait": named_with_image(world, world.retain_ids, "own"),
             "retain, another's portrait": named_with_image(world, world.retain_ids, "other"),
             "forget, no image": world.text_items(world.forget_ids)}

    def row(label, model):
        model.eval()
        # per image: the mean log-probability of its true answers (the audit's LOSS score), then over images
        m, n = membership_scores(model, tok, members), membership_scores(model, tok, strangers)
        ad = get_adapter(model)
        acc = {k: 100 * multiple_choice(model, ad, tok, v)["accuracy"] for k, v in named.items()}
        print(f"| {label} | {auc(m['loss'], n['loss']):.2f} | {statistics.fmean(m['loss']):.1f} | "
              f"{statistics.fmean(n['loss']):.1f} | "
              + " | ".join(f"{a:.1f}" for a in acc.values()) + " |", flush=True)

    print(f"World {args.world_seed}; named questions: accuracy in %.\n")
    print("| model | MIA AUC | forget people: mean log p(true) | strangers | " + " | ".join(named) + " |")
    print("|---|" + "---:|" * (3 + len(named)))
    row("vanilla", models.vanilla)
    row("gold", models.gold)
    for name, opts in runs:
        model = models.fresh_vanilla()
        vf.unlearn(model, world.unlearn_items(world.forget_ids), world.unlearn_items(world.retain_ids), method=name,
                   options=opts, tokenizer=tok)
        row(name + (" " + json.dumps(opts) if opts else ""), model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
