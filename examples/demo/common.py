"""Shared by the demo's jobs: the 24 languages, the text generator, metric logging."""

from __future__ import annotations

import json
import os
import random
import time

# Letters that give each language its look; shared Latin letters make some hard to tell apart.
ALPHABETS = {
    "bg": "абвгдежзийклмнопрстуфхцчшщъюя",
    "cs": "abcdeěfhijklmnoprřsštuůvyýzžáčí",
    "da": "abdefghijklmnoprstuvæøå",
    "de": "abcdefghiklmnoprstuwzäöüß",
    "el": "αβγδεζηθικλμνξοπρστυφχψω",
    "en": "abcdefghiklmnoprstuwy",
    "es": "abcdefghijlmnopqrstuvyzñáéó",
    "et": "adeghijklmnoprstuvõäöü",
    "fi": "adehijklmnoprstuvyäö",
    "fr": "abcdefgilmnopqrstuvéèàçê",
    "ga": "abcdefghilmnorstuáéíóú",
    "hr": "abcdefghijklmnoprstuvzčćđšž",
    "hu": "abdefghijklmnoprstuvyzáéőöüű",
    "it": "abcdefgilmnopqrstuvzàèò",
    "lt": "abdegijklmnoprstuvyząčęėįšųūž",
    "lv": "abdegijklmnoprstuvzāčēģīķļņšūž",
    "mt": "abdefghijklmnoprstuvxzċġħż",
    "nl": "abcdefghijklmnoprstuvwz",
    "pl": "abcdeghijklmnoprstuwyząćęłńóśźż",
    "pt": "abcdefghijlmnopqrstuvzãçéõá",
    "ro": "abcdefghijlmnoprstuvzăâîșț",
    "sk": "abcdefhijklmnoprstuvyzáäčďľňôšťž",
    "sl": "abcdeghijklmnoprstuvzčšž",
    "sv": "abdefghijklmnoprstuvyåäö",
}
LANGUAGES = list(ALPHABETS)
VOWELS = set("aeiouyæøåäöüõéèàêáíóúőűąęėįųūāēīůýěôăâîαεηιουωаеиоуъюя")


def syllables(language: str, seed: int) -> list[str]:
    """A language's syllable inventory: consonant-vowel(-consonant) from its alphabet."""
    rng = random.Random(f"{language}-{seed}")
    letters = ALPHABETS[language]
    vowels = [c for c in letters if c in VOWELS] or list(letters[:3])
    consonants = [c for c in letters if c not in VOWELS] or list(letters[3:])
    inventory = set()
    while len(inventory) < 60:
        onset = rng.choice(consonants)
        nucleus = rng.choice(vowels)
        coda = rng.choice(consonants) if rng.random() < 0.3 else ""
        inventory.add(onset + nucleus + coda)
    return sorted(inventory)


def sentence(rng: random.Random, inventory: list[str]) -> str:
    words = []
    for _ in range(rng.randint(4, 9)):
        words.append("".join(rng.choice(inventory) for _ in range(rng.randint(1, 3))))
    return " ".join(words)


def log_metric(key: str, value: float, step: int = 0) -> None:
    """Append one metric line to $HPCFLEET_METRICS (the hpcfleet job contract)."""
    path = os.environ.get("HPCFLEET_METRICS")
    if not path:
        return
    record = {"key": key, "value": value, "step": step, "timestamp": int(time.time() * 1000)}
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
