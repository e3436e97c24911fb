"""Generate a train and a held-out text for each of the 24 languages."""

from __future__ import annotations

import argparse
import os
import random
from pathlib import Path

from common import LANGUAGES, log_metric, sentence, syllables


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--sentences", type=int, default=300)
    args = parser.parse_args()
    data = Path(os.environ.get("HPCFLEET_OUTPUTS", ".")) / "data"
    total_chars = 0
    for language in LANGUAGES:
        inventory = syllables(language, args.seed)
        rng = random.Random(f"text-{language}-{args.seed}")
        folder = data / language
        folder.mkdir(parents=True, exist_ok=True)
        train = [sentence(rng, inventory) for _ in range(args.sentences)]
        test = [sentence(rng, inventory) for _ in range(max(20, args.sentences // 5))]
        (folder / "train.txt").write_text("\n".join(train) + "\n", encoding="utf-8")
        (folder / "test.txt").write_text("\n".join(test) + "\n", encoding="utf-8")
        total_chars += sum(map(len, train))
    log_metric("languages", len(LANGUAGES))
    log_metric("train_chars", total_chars)
    print(f"wrote {len(LANGUAGES)} languages, {total_chars} training characters to {data}")


if __name__ == "__main__":
    main()
