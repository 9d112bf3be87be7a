"""Benchmarks' own evaluation protocols, beside our likelihood protocol (docs/method.md §4.3):
``mllmu`` (MLLMU-Bench's ``eval.py``: generated letters, fill-in-the-blank, ROUGE / BLEU) and
``clear`` (CLEAR's probabilities, truth ratios, ROUGE-L recall, forget quality), seeded, with a
per-question audit record for every score. Run them through :func:`vkd_fast.eval.evaluate` with
``protocol=``, or directly."""

from .clear import ClearBenchmark, ClearScorer, evaluate_clear, load_clear_benchmark
from .mllmu import MllmuBenchmark, evaluate_mllmu, load_mllmu_benchmark, parse_choice
from .prompt import ModelGenerator, Prompt, PromptRenderer, Turn

PROTOCOLS = ("likelihood", "mllmu", "clear")

__all__ = ["PROTOCOLS", "ClearBenchmark", "ClearScorer", "MllmuBenchmark", "ModelGenerator", "Prompt",
           "PromptRenderer", "Turn", "evaluate_clear", "evaluate_mllmu", "load_clear_benchmark",
           "load_mllmu_benchmark", "parse_choice"]
