"""Train a character n-gram model per language (resumable from its checkpoint)."""

from __future__ import annotations

import argparse
import json
import math
import os
from collections import Counter
from pathlib import Path

from common import LANGUAGES, log_metric


def ngrams(text: str, order: int) -> Counter[str]:
    padded = "^" * (order - 1) + text + "$"
    return Counter(padded[i : i + order] for i in range(len(padded) - order + 1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--order", type=int, default=3)
    args = parser.parse_args()
    data = Path(os.environ["HPCFLEET_INPUTS"]) / "prepare" / "data"
    checkpoints = Path(os.environ.get("HPCFLEET_OUTPUTS", ".")) / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    state_file = checkpoints / "model.json"
    model = json.loads(state_file.read_text()) if state_file.exists() else {"languages": {}}
    model["order"] = args.order
    for step, language in enumerate(LANGUAGES, start=1):
        if language in model["languages"]:
            continue  # trained before an interruption: resume after it
        lines = (data / language / "train.txt").read_text(encoding="utf-8").splitlines()
        counts: Counter[str] = Counter()
        for line in lines:
            counts.update(ngrams(line, args.order))
        total = sum(counts.values())
        nll = -sum(c * math.log(c / total) for c in counts.values()) / total
        model["languages"][language] = dict(counts)
        log_metric("train_nll", nll, step)
        state_file.write_text(json.dumps(model), encoding="utf-8")
    log_metric("languages_trained", len(model["languages"]))
    print(f"model with {len(model['languages'])} languages in {state_file}")


if __name__ == "__main__":
    main()
