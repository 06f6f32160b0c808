"""Generate ``sentiment.csv``: labelled English sentences for the BERT classification task.

Run ``python tasks/data/make_sentiment.py`` to rewrite ``tasks/data/sentiment.csv`` byte for byte (the CSV is
committed; this script is how it was made). Columns: ``text``, ``label`` (1 positive, 0 negative) and ``split``
(``train`` or ``test``: a fixed held-out set of 1,000 sentences, balanced, never seen in training).

The sentences are reviews of films, restaurants, gadgets, hotels and books, built from many templates and word
lists: plain statements, negations (``was not``, ``wasn't``, ``was far from``, ``nothing about ... was``),
negated negatives (``not boring at all`` is positive), contrasts whose second clause decides (``..., but ...``),
expectations turned around, recommendations, fixed phrases and ratings. A bag of words cannot get them all right;
a pretrained encoder fine-tuned on the training split does. Everything comes from ``random.Random(SEED)``.
"""

from __future__ import annotations

import csv
import io
import random
import sys
from pathlib import Path

SEED = 20240611
N_TRAIN = 3000
N_TEST = 1000
OUT = Path(__file__).with_name("sentiment.csv")

SUBJECTS = {
    "film": ["the movie", "this film", "the plot", "the acting", "the soundtrack", "the ending", "the cast",
             "the script", "the cinematography", "the sequel", "the dialogue", "the lead actor", "the director's cut",
             "the documentary", "the first episode", "the season finale", "the special effects"],
    "food": ["the food", "the service", "the pasta", "this restaurant", "the dessert", "the staff", "the coffee",
             "the menu", "the pizza", "the soup", "the steak", "the curry", "the bakery", "the waiter",
             "the breakfast", "the wine list"],
    "gadget": ["this phone", "the battery", "the laptop", "the headphones", "the camera", "this blender",
               "the keyboard", "the app", "the latest update", "the charger", "the printer", "the vacuum cleaner",
               "the smartwatch", "the speaker", "the router", "the screen"],
    "travel": ["the hotel", "the room", "the flight", "the beach", "the tour", "the view", "the guide",
               "the check-in", "the resort", "the train ride", "the cruise", "the campsite", "the pool"],
    "book": ["the book", "this novel", "the author's writing", "the characters", "the last chapter", "the memoir",
             "the translation", "the audiobook", "the poetry collection", "the biography", "the cookbook"],
}
NOUNS = {
    "film": ["movie", "film", "show", "performance", "story"],
    "food": ["meal", "dinner", "restaurant", "lunch", "dish"],
    "gadget": ["phone", "gadget", "device", "purchase", "product"],
    "travel": ["stay", "trip", "holiday", "hotel", "journey"],
    "book": ["book", "novel", "read", "story", "memoir"],
}
POSITIVE = ["great", "wonderful", "excellent", "fantastic", "superb", "brilliant", "delightful", "enjoyable",
            "charming", "lovely", "impressive", "outstanding", "terrific", "amazing", "beautiful", "pleasant",
            "satisfying", "solid", "clever", "gripping", "moving", "fun", "memorable", "flawless", "reliable",
            "refreshing", "stunning", "marvelous", "exceptional", "first-rate", "top-notch", "wonderfully done"]
NEGATIVE = ["terrible", "awful", "boring", "dull", "disappointing", "horrible", "bland", "mediocre", "poor",
            "annoying", "tedious", "clumsy", "lifeless", "messy", "forgettable", "dreadful", "painful", "sloppy",
            "unbearable", "weak", "frustrating", "cheap", "flimsy", "sluggish", "confusing", "overpriced",
            "underwhelming", "lousy", "pathetic", "a letdown", "a waste of money", "a mess"]
INTENSIFIERS = ["", "", "", "really", "very", "truly", "quite", "incredibly", "absolutely", "remarkably", "pretty",
                "so", "rather", "extremely", "genuinely", "simply"]
VERBS_POS = ["loved", "enjoyed", "adored", "liked", "appreciated", "was impressed by", "was delighted by",
             "was thrilled with", "fell in love with", "was happy with"]
VERBS_NEG = ["hated", "disliked", "regretted choosing", "was bored by", "was disappointed by", "got tired of",
             "was annoyed by", "could not stand", "was fed up with", "was let down by"]
BASE_POS = ["love", "enjoy", "like", "appreciate", "care for"]
BASE_NEG = ["hate", "dislike", "mind", "regret"]
PHRASES_POS = ["did not disappoint", "exceeded my expectations", "was worth every penny", "works like a charm",
               "made my day", "is a must", "won me over", "delivered everything it promised",
               "is the best I have had in years", "left me smiling"]
PHRASES_NEG = ["fell short of my expectations", "was a complete waste of time", "stopped working after a week",
               "left a bad taste", "was not worth the money", "broke on the first day", "put me to sleep",
               "made me want a refund", "is the worst I have had in years", "never got better"]
NEGATORS = ["was not", "wasn't", "is not", "isn't", "was never", "was far from", "certainly wasn't",
            "was not at all", "turned out not to be", "is by no means"]
PREFIX_ANY = ["", "", "", "", "Honestly, ", "Overall, ", "To be honest, ", "In short, ", "Frankly, ",
              "All in all, ", "I have to say, ", "Well, "]
PREFIX_POS = ["Happily, ", "Thankfully, ", "Luckily, "]
PREFIX_NEG = ["Sadly, ", "Unfortunately, ", "Alas, "]
ENDINGS = [".", ".", ".", "!", "...", " ."]
EMPH_NEG = ["", "", " at all", " in the least", " in any way"]


def _adj(rng: random.Random, pol: int) -> str:
    return rng.choice(POSITIVE if pol > 0 else NEGATIVE)


def _intens(rng: random.Random, adj: str) -> str:
    if adj.startswith("a ") or " " in adj:  # "a letdown", "wonderfully done": no "very" in front
        return adj
    i = rng.choice(INTENSIFIERS)
    return f"{i} {adj}" if i else adj


def sentence(rng: random.Random) -> tuple[str, int]:
    """One sentence and its label (1 positive, 0 negative)."""
    domain = rng.choice(sorted(SUBJECTS))
    subj = rng.choice(SUBJECTS[domain])
    subj2 = rng.choice([s for s in SUBJECTS[domain] if s != subj])
    noun = rng.choice(NOUNS[domain])
    pol = rng.choice((1, -1))
    kind = rng.randrange(15)
    if kind in (0, 1):
        verb = rng.choice(["was", "is", "felt", "seemed", "turned out to be"])
        text, label = f"{subj} {verb} {_intens(rng, _adj(rng, pol))}", pol
    elif kind in (2, 3):  # negation flips the adjective
        neg = rng.choice(NEGATORS)
        emph = "" if "at all" in neg else rng.choice(EMPH_NEG)
        text, label = f"{subj} {neg} {_adj(rng, pol)}{emph}", -pol
    elif kind == 4:
        text, label = f"I {rng.choice(VERBS_POS if pol > 0 else VERBS_NEG)} {subj}", pol
    elif kind == 5:
        aux = rng.choice(["did not", "didn't", "do not", "don't", "never"])
        verb = rng.choice(BASE_POS if pol > 0 else BASE_NEG)
        if verb in ("mind", "regret"):  # "I didn't mind the food" is positive, like not hating it
            text, label = f"I {aux} {verb} {subj}", 1
        else:
            text, label = f"I {aux} {verb} {subj}", -pol
    elif kind in (6, 7):  # contrast: the second clause decides
        a1, a2 = _adj(rng, -pol), _adj(rng, pol)
        if kind == 6:
            text = f"{subj} was {a1}, but {subj2} was {_intens(rng, a2)}"
        else:
            text = f"although {subj} was {a1}, {subj2} was {_intens(rng, a2)}"
        label = pol
    elif kind == 8:
        choices = [("could not have been better", 1), ("couldn't have been better", 1),
                   ("could not have been worse", -1), ("could have been a lot better", -1),
                   ("could hardly have been better", 1), ("could hardly have been worse", -1)]
        phrase, label = rng.choice(choices)
        text = f"{subj} {phrase}"
    elif kind == 9:
        if pol > 0:
            text = f"I would {rng.choice(['definitely', 'happily', 'absolutely', 'gladly'])} recommend {subj}"
        else:
            text = f"I would {rng.choice(['not', 'never', 'not ever', 'hardly'])} recommend {subj}"
        label = pol
    elif kind == 10:
        text = f"{rng.choice(['nothing about', 'no part of', 'not one thing about'])} {subj} was {_adj(rng, pol)}"
        label = -pol
    elif kind == 11:
        text = f"{subj} {rng.choice(PHRASES_POS if pol > 0 else PHRASES_NEG)}"
        label = pol
    elif kind == 12:
        a1, a2 = _adj(rng, -pol), _adj(rng, pol)
        if rng.random() < 0.5:
            text = f"I expected {subj} to be {a1}, but it was {a2}"
            label = pol
        else:
            text = f"I expected {subj} to be {a1}, and it was"
            label = -pol
    elif kind == 13:
        adj = _adj(rng, pol)
        if adj.startswith("a "):
            text = f"what {adj} this {noun} was"
        else:
            phrase = f"{_intens(rng, adj)} {noun}"
            phrase = ("an " if phrase[0] in "aeiou" else "a ") + phrase
            text = rng.choice([f"what {phrase}", f"such {phrase}", f"it was {phrase} from start to finish"])
        label = pol
    else:
        score = rng.randint(8, 10) if pol > 0 else rng.randint(1, 3)
        extra = f", {subj} was {_adj(rng, pol)}" if rng.random() < 0.5 else ""
        text, label = f"{score} out of 10{extra}", pol
    prefix = rng.choice(PREFIX_ANY + (PREFIX_POS if label > 0 else PREFIX_NEG))
    text = " ".join(text.split())
    text = (prefix + text) if prefix else text
    text = text[0].upper() + text[1:] + rng.choice(ENDINGS)
    return text, 1 if label > 0 else 0


def generate(seed: int = SEED) -> list[tuple[str, int, str]]:
    rng = random.Random(seed)
    per_label = (N_TRAIN + N_TEST) // 2
    seen: set[str] = set()
    by_label: dict[int, list[str]] = {0: [], 1: []}
    while min(len(v) for v in by_label.values()) < per_label:
        text, label = sentence(rng)
        key = text.lower()
        if key in seen or len(by_label[label]) >= per_label:
            continue
        seen.add(key)
        by_label[label].append(text)
    rows: list[tuple[str, int, str]] = []
    for label, texts in by_label.items():
        for i, t in enumerate(texts):
            rows.append((t, label, "test" if i < N_TEST // 2 else "train"))
    rng.shuffle(rows)
    return rows


def to_csv(rows: list[tuple[str, int, str]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["text", "label", "split"])
    w.writerows(rows)
    return buf.getvalue()


def main() -> int:
    text = to_csv(generate())
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT} ({len(text.encode()) / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
