"""Identify the language of held-out sentences with one checkpoint of the model; log
accuracy and per-char NLL. A language the checkpoint has not been trained on yet is
never identified (accuracy 0)."""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

from common import log_metric


def score(text: str, counts: dict[str, int], total: int, vocab: int, order: int) -> float:
    padded = "^" * (order - 1) + text + "$"
    logp = 0.0
    for i in range(len(padded) - order + 1):
        logp += math.log((counts.get(padded[i : i + order], 0) + 0.1) / (total + 0.1 * vocab))
    return logp


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lang", required=True)
    args = parser.parse_args()
    inputs = Path(os.environ["HPCFLEET_INPUTS"])
    model = json.loads((Path(os.environ["HPCFLEET_CHECKPOINT"]) / "model.json").read_text())
    order = model["order"]
    languages = model["languages"]
    totals = {lang: sum(c.values()) for lang, c in languages.items()}
    vocab = len({g for c in languages.values() for g in c})
    test = (inputs / "prepare" / "data" / args.lang / "test.txt").read_text(encoding="utf-8")
    sentences = [s for s in test.splitlines() if s]
    # Short snippets make the task hard enough that similar languages get confused.
    snippets = [s[:7] for s in sentences]
    correct, nll, chars = 0, 0.0, 0
    for snippet in snippets:
        scores = {lang: score(snippet, languages[lang], totals[lang], vocab, order)
                  for lang in languages}
        correct += max(scores, key=scores.__getitem__) == args.lang
        nll -= scores.get(args.lang, score(snippet, {}, 0, vocab, order))
        chars += len(snippet) + 1
    log_metric("accuracy", correct / len(snippets))
    log_metric("nll", nll / chars)
    print(f"{args.lang}: accuracy {correct / len(snippets):.3f} on {len(snippets)} snippets")


if __name__ == "__main__":
    main()
