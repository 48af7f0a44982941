"""The text side of the embedded corpus: an English sentence grammar, aligned English/Spanish/French
sentences, and short passages with questions about them.

Everything is drawn from a `random.Random` the caller seeds, so the same seed gives the same text.
The English vocabulary is a few hundred common words; sentences are grammatical but mostly
unpredictable, so a model has to listen rather than guess from context.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

NAMES = (
    "anna ben clara david emma frank grace henry iris jack kate leo maria nick olivia peter rose "
    "sam tina victor"
).split()
ADJECTIVES = (
    "red blue green yellow black white brown purple small big old new young happy sad quiet loud "
    "warm cold soft heavy bright dark clean dirty tall short tiny gentle strange"
).split()
# (singular, plural)
NOUNS = [
    tuple(pair.split("/"))
    for pair in (
        "cat/cats dog/dogs bird/birds horse/horses fish/fish cow/cows mouse/mice rabbit/rabbits "
        "apple/apples orange/oranges banana/bananas cake/cakes cup/cups plate/plates box/boxes "
        "ball/balls book/books pen/pens chair/chairs table/tables door/doors window/windows "
        "car/cars bus/buses train/trains boat/boats bike/bikes house/houses garden/gardens "
        "tree/trees flower/flowers river/rivers hill/hills road/roads bridge/bridges lamp/lamps "
        "clock/clocks phone/phones bag/bags coat/coats hat/hats shoe/shoes key/keys "
        "letter/letters picture/pictures song/songs story/stories game/games shop/shops "
        "school/schools park/parks city/cities farm/farms kitchen/kitchens room/rooms "
        "bottle/bottles basket/baskets blanket/blankets candle/candles"
    ).split()
]
# (base, past)
TRANSITIVE_VERBS = [
    tuple(pair.split("/"))
    for pair in (
        "see/saw find/found take/took buy/bought sell/sold paint/painted wash/washed "
        "carry/carried drop/dropped open/opened close/closed clean/cleaned move/moved "
        "watch/watched like/liked want/wanted keep/kept hold/held push/pushed pull/pulled "
        "fix/fixed break/broke build/built cook/cooked catch/caught throw/threw bring/brought "
        "make/made read/read hide/hid"
    ).split()
]
INTRANSITIVE_VERBS = (
    "walked ran sat slept jumped waited stayed danced sang played stood rested arrived laughed "
    "worked"
).split()
PREPOSITIONS = "in on under near behind beside inside over across around".split()
TIMES = (
    "today", "yesterday", "this morning", "last night", "every day", "after lunch",
    "before dinner", "at noon", "on monday", "on friday", "in the evening", "again",
)
NUMBERS = "two three four five six seven eight nine ten twelve".split()

ENGLISH_TEMPLATES = (
    "{name} {vt_past} the {adj} {noun} {time}",
    "the {adj} {noun} {vi} {prep} the {noun2}",
    "{name} and {name2} {vt_past} {number} {adj} {nouns}",
    "did {name} {vt} the {adj} {noun} {prep} the {noun2}",
    "please {vt} the {noun} {prep} the {adj} {noun2}",
    "the {noun} {prep} the {noun2} is {adj}",
    "{name} {vi} {prep} the {adj} {noun} {time}",
    "there are {number} {adj} {nouns} {prep} the {noun2}",
)


def english_vocabulary() -> set[str]:
    """Every word the English grammar can produce (for reports and tests)."""
    words = set(NAMES) | set(ADJECTIVES) | set(INTRANSITIVE_VERBS) | set(PREPOSITIONS)
    words |= set(NUMBERS) | {w for pair in NOUNS + TRANSITIVE_VERBS for w in pair}
    words |= {w for phrase in TIMES for w in phrase.split()}
    words |= {w for t in ENGLISH_TEMPLATES for w in t.split() if not w.startswith("{")}
    return words


def english_sentence(rng: random.Random) -> str:
    """One sentence from the grammar, e.g. "the quiet horse slept behind the bridge"."""
    name, name2 = rng.sample(NAMES, 2)
    (noun, nouns), (noun2, _) = rng.sample(NOUNS, 2)
    vt, vt_past = rng.choice(TRANSITIVE_VERBS)
    fields = dict(
        name=name, name2=name2, noun=noun, nouns=nouns, noun2=noun2, vt=vt, vt_past=vt_past,
        vi=rng.choice(INTRANSITIVE_VERBS), adj=rng.choice(ADJECTIVES),
        prep=rng.choice(PREPOSITIONS), time=rng.choice(TIMES), number=rng.choice(NUMBERS),
    )
    return rng.choice(ENGLISH_TEMPLATES).format(**fields)


def unique_sentences(rng: random.Random, count: int, make=english_sentence, key=lambda item: item,
                     allowed=lambda item: True) -> list:
    """`count` items from `make(rng)` with distinct `key(item)`, in the order first drawn, leaving out those
    `allowed(item)` rejects."""
    seen: dict = {}
    attempts = 0
    while len(seen) < count:
        item = make(rng)
        if allowed(item):
            seen.setdefault(key(item), item)
        attempts += 1
        if attempts > 50 * count:
            raise ValueError(f"the grammar cannot produce {count} distinct sentences")
    return list(seen.values())


# --- Aligned translations -------------------------------------------------------------------
# Subjects are animate and objects inanimate, so Spanish needs no personal "a"; colours follow
# the noun in Spanish and French, so word order is fixed: article noun colour.


@dataclass(frozen=True)
class Noun:
    en: str
    es: str  # with gender: "m:gato"
    fr: str  # with gender: "f:voiture"


@dataclass(frozen=True)
class Colour:
    en: str
    es: str  # "rojo/roja"
    fr: str  # "vert/verte"


SUBJECTS = [
    Noun(*row.split(","))
    for row in (
        "cat,m:gato,m:chat", "dog,m:perro,m:chien", "bird,m:pájaro,m:oiseau",
        "girl,f:niña,f:fille", "boy,m:niño,m:garçon", "woman,f:mujer,f:femme",
        "man,m:hombre,m:homme", "teacher,m:profesor,m:professeur", "horse,m:caballo,m:cheval",
        "cow,f:vaca,f:vache", "mouse,m:ratón,f:souris",
    )
]
OBJECTS = [
    Noun(*row.split(","))
    for row in (
        "book,m:libro,m:livre", "box,f:caja,f:boîte", "ball,f:pelota,m:ballon",
        "car,m:coche,f:voiture", "chair,f:silla,f:chaise", "table,f:mesa,f:table",
        "cup,f:taza,f:tasse", "hat,m:sombrero,m:chapeau", "bag,f:bolsa,m:sac",
        "key,f:llave,f:clé", "bottle,f:botella,f:bouteille", "boat,m:barco,m:bateau",
        "house,f:casa,f:maison", "window,f:ventana,f:fenêtre",
    )
]
COLOURS = [
    Colour(*row.split(","))
    for row in (
        "red,rojo/roja,rouge/rouge", "blue,azul/azul,bleu/bleue", "green,verde/verde,vert/verte",
        "black,negro/negra,noir/noire", "white,blanco/blanca,blanc/blanche",
        "yellow,amarillo/amarilla,jaune/jaune",
    )
]
VERBS = {  # English third person -> (Spanish, French)
    "sees": ("ve", "voit"), "wants": ("quiere", "veut"), "finds": ("encuentra", "trouve"),
    "takes": ("toma", "prend"), "has": ("tiene", "a"), "buys": ("compra", "achète"),
    "carries": ("lleva", "porte"), "paints": ("pinta", "peint"), "washes": ("lava", "lave"),
}
TIME_PHRASES = {  # English -> (Spanish, French)
    "": ("", ""), "today": ("hoy", "aujourd'hui"), "every day": ("cada día", "chaque jour"),
    "now": ("ahora", "maintenant"), "at night": ("por la noche", "la nuit"),
}
TRANSLATION_LANGUAGES = ("es", "fr")


def _noun_phrase(noun: Noun, colour: Colour | None, language: str) -> str:
    if language == "en":
        return f"the {colour.en} {noun.en}" if colour else f"the {noun.en}"
    gender, word = getattr(noun, language).split(":")
    if language == "es":
        article = "el" if gender == "m" else "la"
    else:  # French elides the article before a vowel or mute h
        article = "l'" if word[0] in "aeiouhé" else ("le" if gender == "m" else "la")
    phrase = f"{article}{word}" if article.endswith("'") else f"{article} {word}"
    if colour:
        masculine, feminine = getattr(colour, language).split("/")
        phrase += " " + (masculine if gender == "m" else feminine)
    return phrase


def translation_example(rng: random.Random) -> tuple[str, str, str]:
    """An English sentence, its translation and the translation's language ("es" or "fr")."""
    language = rng.choice(TRANSLATION_LANGUAGES)
    subject, obj = rng.choice(SUBJECTS), rng.choice(OBJECTS)
    subject_colour = rng.choice(COLOURS) if rng.random() < 0.4 else None
    object_colour = rng.choice(COLOURS)
    verb = rng.choice(sorted(VERBS))
    time = rng.choice(sorted(TIME_PHRASES))
    index = TRANSLATION_LANGUAGES.index(language)
    english = f"{_noun_phrase(subject, subject_colour, 'en')} {verb} {_noun_phrase(obj, object_colour, 'en')} {time}"
    translation = (
        f"{_noun_phrase(subject, subject_colour, language)} {VERBS[verb][index]} "
        f"{_noun_phrase(obj, object_colour, language)} {TIME_PHRASES[time][index]}"
    )
    return english.strip(), translation.strip(), language


# --- Passages, questions, answers (SQA / SC) ------------------------------------------------

PLACES = "kitchen garden park school shop library station farm market museum".split()
POSSESSIONS = "ball book hat bag bike coat cup box kite lamp".split()
QA_COLOURS = "red blue green yellow black white brown purple".split()


def question_answer(rng: random.Random) -> tuple[str, str, str]:
    """A two-sentence passage, a question about it and its short answer."""
    name, name2 = rng.sample(NAMES, 2)
    first = rng.random() < 0.5
    person = name if first else name2
    if rng.random() < 2 / 3:
        (thing, thing2), (colour, colour2) = rng.sample(POSSESSIONS, 2), rng.sample(QA_COLOURS, 2)
        passage = f"{name} has a {colour} {thing}. {name2} has a {colour2} {thing2}."
        thing, colour = (thing, colour) if first else (thing2, colour2)
        if rng.random() < 0.5:
            return passage, f"what color is the {thing} of {person}?", colour
        return passage, f"who has the {colour} {thing}?", person
    place, place2 = rng.sample(PLACES, 2)
    passage = f"{name} is in the {place}. {name2} is in the {place2}."
    return passage, f"where is {person}?", f"in the {place if first else place2}"
