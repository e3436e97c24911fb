"""Train a character n-gram model, one language after another, writing a checkpoint
every few languages (resumable from its last state)."""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections import Counter
from pathlib import Path

from common import LANGUAGES, log_metric


def ngrams(text: str, order: int) -> Counter[str]:
    padded = "^" * (order - 1) + text + "$"
    return Counter(padded[i : i + order] for i in range(len(padded) - order + 1))


def write_checkpoint(checkpoints: Path, model: dict[str, object], step: int) -> None:
    """checkpoints/iter_NN/model.json, the file written last (hpcfleet starts evaluating
    a checkpoint once it exists): written under another name, then renamed."""
    directory = checkpoints / f"iter_{step:02d}"
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / "model.json.partial"
    partial.write_text(json.dumps(model), encoding="utf-8")
    partial.replace(directory / "model.json")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--order", type=int, default=3)
    parser.add_argument("--every", type=int, default=8, help="languages per checkpoint")
    parser.add_argument("--pause", type=float, default=0.0, help="seconds after a checkpoint")
    args = parser.parse_args()
    data = Path(os.environ["HPCFLEET_INPUTS"]) / "prepare" / "data"
    checkpoints = Path(os.environ.get("HPCFLEET_OUTPUTS", ".")) / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    state_file = checkpoints / "state.json"  # what a resumed job starts from
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
        if step % args.every == 0 or step == len(LANGUAGES):
            write_checkpoint(checkpoints, model, step)
            print(f"checkpoint iter_{step:02d}: {len(model['languages'])} languages", flush=True)
            if step < len(LANGUAGES):
                time.sleep(args.pause)  # the demo's stand-in for hours of training
    log_metric("languages_trained", len(model["languages"]))


if __name__ == "__main__":
    main()
