"""Workload and metrics for bench/memory.py: synthetic long conversations with planted
facts, paraphrased questions about them, and the replay that measures whether a
fact's turn is in the context the memory manager assembles.

Everything is generated from templates and word lists with one `random.Random(seed)`,
so a seed gives the same conversations on every machine."""

from __future__ import annotations

import random
import re
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmos.kernel.conversation import PER_MESSAGE, Conversations
from llmos.kernel.crypto import KeyRing
from llmos.kernel.memory import MemoryStore, Scope

# -- word lists ----------------------------------------------------------------------
FEMALE = [
    "Clara", "Maya", "Ines", "Priya", "Hannah", "Sofia", "Lena", "Amara", "Greta", "Yuki",
    "Nadia", "Rosa", "Ingrid", "Zoe", "Fatima", "Elif", "Marta", "Aoife", "Chloe", "Tamsin",
]  # fmt: skip
MALE = [
    "Tobias", "Rafael", "Omar", "Kenji", "Lukas", "Mateo", "Dmitri", "Arjun", "Felix", "Noah",
    "Bruno", "Eamon", "Jonas", "Kwame", "Pavel", "Idris", "Emil", "Theo", "Marco", "Sami",
]  # fmt: skip
SURNAMES = [
    "Okafor", "Lindqvist", "Moreau", "Castellano", "Nakamura", "Brennan", "Novak",
    "Haddad", "Fischer", "Delgado", "Kowalski", "Achterberg", "Ferreira", "Petrov",
    "Osei", "Vasquez", "Lundgren", "Mbeki", "Rinaldi", "Thornbury",
]  # fmt: skip
CITIES = [
    "Lisbon", "Montreal", "Osaka", "Valencia", "Edinburgh", "Krakow", "Porto", "Melbourne",
    "Tbilisi", "Ljubljana", "Nairobi", "Bergen", "Seville", "Hanoi", "Quebec", "Tallinn",
    "Bologna", "Reykjavik", "Marseille", "Rotterdam", "Cusco", "Trieste", "Galway",
]  # fmt: skip
STREETS = ["Maple", "Harbour", "Linden", "Copper", "Willow", "Chestnut", "Foundry", "Orchard"]
MONTHS = [
    "January", "February", "March", "April", "May", "June", "July", "August",
    "September", "October", "November", "December",
]  # fmt: skip
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
HOURS = ["6:40", "7:15", "8:05", "9:30", "11:50", "13:20", "15:45", "17:10", "19:35", "21:55"]
PW_WORDS = ["heron", "falcon", "otter", "juniper", "basalt", "comet", "lantern", "thistle"]
DRUGS = ["penicillin", "amoxicillin", "cephalexin", "erythromycin", "tetracycline"]
DAILY_MEDS = ["levothyroxine", "lisinopril", "metformin", "atorvastatin", "sertraline"]
PETS = [("dog", "puppy"), ("cat", "kitty"), ("parrot", "bird"), ("rabbit", "bunny")]
PET_NAMES = ["Biscuit", "Pepper", "Mochi", "Juniper", "Waffles", "Ziggy", "Nutmeg", "Pickle"]
JOBS = ["a radiographer", "a structural engineer", "a sommelier", "an actuary", "a stenographer"]
COMPANIES = ["Brightwater Labs", "Kestrel Freight", "Orbital Mills", "Halcyon Health"]
CAR_MODELS = ["Subaru Outback", "Volvo V60", "Toyota Corolla", "Skoda Octavia", "Mazda CX-5"]
COLORS = ["green", "silver", "dark blue", "burgundy", "white", "charcoal"]
SCHOOLS = ["Ridgeway", "Brookfield", "Larkspur", "Fernhill", "Oakmont"]
OBJECTS = ["blue flowerpot", "stone frog", "doormat", "loose brick", "watering can"]
RESTAURANTS = ["Casa Lupita", "The Gilded Fig", "Pho Saigon", "Trattoria Nonna", "Bento Box"]
INSTRUMENTS = ["cello", "clarinet", "trombone", "viola", "oboe"]
BLOOD = ["O negative", "A positive", "B negative", "AB positive", "O positive"]
MALLS = ["Riverside", "Northgate", "Westfield", "Central"]

# -- the facts and their paraphrased questions ---------------------------------------
# Each entry: a fact template; `questions`, phrased differently (no content word in
# common but those in `allow`: the key entity, a name, a city, the type of thing asked);
# `literal`, a question that reuses the fact's own words (the easy case, for contrast).
FACTS: list[dict[str, Any]] = [
    {
        "id": "sister_city",
        "fact": "My sister {f} moved to {city} in {year}.",
        "literal": "What city did my sister move to?",
        "questions": ["Which city does my sibling live in now?", "Where did {f} relocate to?"],
        "allow": ["{f}"],
    },
    {
        "id": "wifi",
        "fact": "The wifi password at the cabin is {pw}.",
        "literal": "What's the wifi code for the lake house?",
        "questions": [
            "What do I type to get online at our lake house?",
            "What's the network passphrase for the cottage?",
        ],
    },
    {
        "id": "allergy",
        "fact": "I'm allergic to {drug}.",
        "literal": "Which drug am I allergic to?",
        "questions": [
            "Which antibiotic makes me break out in hives?",
            "What medicine should a doctor never prescribe me?",
        ],
    },
    {
        "id": "pet",
        "fact": "Our {pet} is called {petname}.",
        "literal": "What is our {pet} called?",
        "questions": ["What name did we give our {petsyn}?", "How do we address the {petsyn}?"],
    },
    {
        "id": "flight",
        "fact": "My flight to {city} leaves on {weekday} at {hour}.",
        "literal": "Which day is my flight to {city}?",
        "questions": [
            "When does my plane to {city} take off?",
            "What time is my departure for the {city} trip?",
        ],
        "allow": ["{city}"],
    },
    {
        "id": "dentist",
        "fact": "My dentist is Dr. {s}, on {street} Street.",
        "literal": "What's the name of my dentist?",
        "questions": ["Who looks after my teeth?", "Which doctor cleans my teeth?"],
    },
    {
        "id": "parking",
        "fact": "I parked the car on level {n} of the {mall} garage, spot {spot}.",
        "literal": "Which garage did I leave the car in?",
        "questions": [
            "Where did I leave my vehicle?",
            "On which floor is the automobile waiting for me?",
        ],
    },
    {
        "id": "mother_birthday",
        "fact": "My mother's birthday is {month} {day}.",
        "literal": "When is my mother's birthday?",
        "questions": ["When should I send mum a card?", "On what date was my mom born?"],
    },
    {
        "id": "door_code",
        "fact": "The code for the office door is {code}.",
        "literal": "What's the code to get into the office?",
        "questions": [
            "How do I get into the workplace after hours?",
            "What number do I punch in at the building entrance at work?",
        ],
    },
    {
        "id": "job",
        "fact": "I work as {job} at {company}.",
        "literal": "Where do I work?",
        "questions": ["What's my profession?", "Which firm employs me?"],
    },
    {
        "id": "blood",
        "fact": "My blood type is {blood}.",
        "literal": "What is my blood type?",
        "questions": [
            "What group would the hospital need if I had a transfusion?",
            "Which blood group am I?",
        ],
        "allow": ["blood"],
    },
    {
        "id": "landlord",
        "fact": "My landlord is called {f} {s}.",
        "literal": "What is my landlord's name?",
        "questions": ["Who owns the apartment I rent?", "To whom do I pay rent each month?"],
    },
    {
        "id": "son_school",
        "fact": "My son {m} is in third grade at {school} Elementary.",
        "literal": "What grade is my son in?",
        "questions": ["Where does my boy study?", "Which primary school does my kid attend?"],
        "allow": ["school"],
    },
    {
        "id": "spare_key",
        "fact": "I keep the spare key under the {object} by the back door.",
        "literal": "Where is the spare key?",
        "questions": [
            "If I'm locked out, how can I get inside?",
            "Where's the extra house key hidden?",
        ],
        "allow": ["key"],
    },
    {
        "id": "anniversary",
        "fact": "Our wedding anniversary is on {month} {day}.",
        "literal": "When is our anniversary?",
        "questions": ["When did my spouse and I get married?", "What date did we tie the knot?"],
    },
    {
        "id": "car",
        "fact": "I drive a {color} {carmodel}.",
        "literal": "What car do I drive?",
        "questions": ["What vehicle do I own?", "What kind of automobile is mine?"],
    },
    {
        "id": "meds",
        "fact": "I take {mg} mg of {med} every morning.",
        "literal": "What do I take every morning?",
        "questions": [
            "What pill do I swallow with breakfast each day?",
            "Which medication am I on daily?",
        ],
    },
    {
        "id": "friend_city",
        "fact": "My best friend {m} lives in {city}.",
        "literal": "Which city does my best friend live in?",
        "questions": ["Where is {m} based these days?", "Which town is my closest pal from?"],
        "allow": ["{m}"],
    },
    {
        "id": "locker",
        "fact": "My gym locker combination is {code3}.",
        "literal": "What's my gym locker combination?",
        "questions": [
            "How do I open my locker at the fitness center?",
            "What digits open the padlock at the health club?",
        ],
        "allow": ["locker"],
    },
    {
        "id": "marathon",
        "fact": "I'm training for the {city} marathon in {month}.",
        "literal": "Which marathon am I training for?",
        "questions": [
            "Which long-distance race am I preparing for?",
            "What running event have I been getting in shape for?",
        ],
    },
    {
        "id": "restaurant",
        "fact": "My favourite restaurant is {restaurant} on {street} Avenue.",
        "literal": "What is my favourite restaurant?",
        "questions": [
            "Where do I like to eat out most?",
            "Which place is my top pick for dinner out?",
        ],
    },
    {
        "id": "grandfather",
        "fact": "My grandfather was born in {city} in {year0}.",
        "literal": "Where was my grandfather born?",
        "questions": [
            "What is grandpa's hometown?",
            "Where does my granddad come from originally?",
        ],
    },
    {
        "id": "passport",
        "fact": "My passport expires in {month} {year2}.",
        "literal": "When does my passport expire?",
        "questions": [
            "When do I need to renew my travel document?",
            "Until when is my passport valid?",
        ],
        "allow": ["passport"],
    },
    {
        "id": "plumber",
        "fact": "The plumber is coming on {weekday} to fix the leaking sink.",
        "literal": "When is the plumber coming?",
        "questions": [
            "When is the pipe repair scheduled?",
            "What day will someone repair the kitchen faucet?",
        ],
    },
    {
        "id": "daughter_instrument",
        "fact": "My daughter {f} plays the {instrument} in the school orchestra.",
        "literal": "What does my daughter play in the orchestra?",
        "questions": [
            "Which instrument does my girl practise?",
            "What music does my kid make in the band?",
        ],
        "allow": ["instrument"],
    },
    {
        "id": "therapist",
        "fact": "My therapist appointment is every {weekday} at {hour}.",
        "literal": "When is my therapist appointment?",
        "questions": ["When do I see my counsellor each week?", "What time are my sessions?"],
    },
    {
        "id": "neighbour",
        "fact": "Our neighbour {f} waters the plants whenever we travel.",
        "literal": "Which neighbour waters our plants?",
        "questions": [
            "Who takes care of the garden while we're away?",
            "Who looks after our greenery during holidays?",
        ],
    },
]

FACT_LEADS = [
    "",
    "",
    "Oh, before I forget:",
    "Random thing, but",
    "Just so you know,",
    "Something to remember:",
    "By the way,",
]
LITERAL_SHARE = 0.35  # questions that reuse the fact's words; the rest are paraphrases
QUESTION_LEADS = ["", "", "", "Quick question:", "Remind me,", "Hey,", "I forgot again."]

# -- filler chit-chat ------------------------------------------------------------------
SLOTS: dict[str, list[str]] = {
    "food": [
        "lentil soup", "banana bread", "mushroom risotto", "tacos", "ramen", "shakshuka",
        "a chickpea curry", "sourdough", "paella", "stuffed peppers", "dumplings", "lasagne",
    ],
    "show": [
        "a nature documentary", "that detective series", "an old western", "a baking show",
        "a sci-fi film", "a stand-up special", "a period drama", "a cooking competition",
    ],
    "book": [
        "a thriller set in Iceland", "a history of the Silk Road", "a memoir by a chef",
        "a fantasy trilogy", "a book about sleep", "a collection of short stories",
    ],
    "hobby": [
        "watercolour painting", "bouldering", "knitting", "birdwatching", "woodworking",
        "learning Spanish", "photography", "baking bread", "chess", "pottery",
    ],
    "person": [
        "a coworker", "my neighbour", "my cousin", "an old classmate", "my manager",
        "a friend from college", "my aunt", "the guy from the bakery",
    ],
    "place": [
        "the farmers market", "the library", "the park by the river", "the hardware store",
        "the new cafe downtown", "the museum", "the beach", "the community garden",
    ],
    "weather": [
        "rainy", "freezing", "humid", "windy", "surprisingly sunny", "foggy", "stormy",
    ],
    "adj": [
        "exhausting", "relaxing", "chaotic", "lovely", "boring", "productive", "strange",
        "hilarious", "stressful", "quiet",
    ],
    "day": [
        "yesterday", "this morning", "last weekend", "on Tuesday", "last night",
        "over the holidays", "earlier today", "a few days ago",
    ],
    "num": ["two", "three", "four", "five", "six", "ten", "twenty"],
    "thing": [
        "the bookshelf", "the garden fence", "my bike", "the laptop", "the washing machine",
        "the kitchen drawer", "the printer", "my headphones",
    ],
    "sport": ["football", "tennis", "basketball", "cycling", "swimming", "rugby", "cricket"],
    "music": ["jazz", "old soul records", "a podcast about space", "folk music", "techno"],
}  # fmt: skip

TOPICS: dict[str, list[str]] = {
    "cooking": [
        "I tried making {food} {day} and it turned out better than expected.",
        "The recipe said twenty minutes but it took me almost an hour.",
        "I think I used too much salt, but nobody complained.",
        "Next time I want to try {food} with fresh herbs from the market.",
        "My kitchen was a complete mess afterwards.",
        "Do you think it is worth buying a proper cast iron pan?",
        "We ended up ordering pizza anyway because everyone was starving.",
        "I am trying to cook at home more often to save some money.",
    ],
    "weather": [
        "It has been {weather} all week and I am tired of it.",
        "The forecast says it will stay {weather} until the weekend.",
        "I forgot my umbrella again and got completely soaked.",
        "Honestly the {weather} days make me want to stay in bed.",
        "We had to cancel the picnic because of the weather.",
        "The evenings are getting shorter and darker now.",
    ],
    "work": [
        "Work was {adj} today, we had {num} meetings back to back.",
        "My manager wants the report finished before Friday.",
        "I spent most of the afternoon answering emails.",
        "There is a new person on the team and she seems really nice.",
        "The printer on our floor has been broken for a week.",
        "I am thinking about asking for a day off next month.",
        "We finally shipped the project we had been working on since spring.",
        "Someone microwaved fish in the break room again.",
    ],
    "tv": [
        "I watched {show} {day} and could not stop.",
        "The ending of {show} was a bit disappointing to be honest.",
        "Do you have any recommendations for something light to watch?",
        "We started a new series but gave up after two episodes.",
        "I fell asleep on the sofa halfway through the movie.",
    ],
    "reading": [
        "I am reading {book} at the moment.",
        "It is slow at the start but the second half is great.",
        "I borrowed it from {place} and it is already overdue.",
        "I try to read a few pages every night before sleeping.",
        "My book club is meeting next week and I have not finished the chapter.",
    ],
    "hobbies": [
        "I have been getting into {hobby} lately.",
        "I spent {day} practising {hobby} for a few hours.",
        "It is harder than it looks but really satisfying.",
        "I watched a bunch of tutorials online to get better.",
        "I might sign up for a beginner class in the spring.",
        "My hands were sore afterwards but it was worth it.",
    ],
    "errands": [
        "I went to {place} {day} and it was packed.",
        "I had to return {thing} because it was broken.",
        "The queue at the post office took forever.",
        "I finally fixed {thing} after putting it off for weeks.",
        "I keep forgetting to buy light bulbs.",
        "We need to clean out the garage at some point.",
    ],
    "social": [
        "I had coffee with {person} {day}.",
        "We talked for hours about nothing in particular.",
        "{person} is planning a surprise party for a friend.",
        "I have not seen {person} in ages, it was nice to catch up.",
        "We are thinking of doing a board game night soon.",
        "It was {adj}, but I was glad to be home afterwards.",
    ],
    "sports": [
        "Did you see the {sport} match {day}?",
        "Our team lost again, which was not a surprise.",
        "I went for a long walk {day} to clear my head.",
        "I am trying to stretch more because my back has been stiff.",
        "A few of us play {sport} on Thursday evenings.",
        "I think I pulled something in my shoulder.",
    ],
    "music": [
        "I have been listening to a lot of {music} recently.",
        "We went to a small concert {day} and the sound was amazing.",
        "I keep meaning to learn a few songs on the guitar.",
        "My playlist for running needs an update.",
    ],
    "sleep": [
        "I slept badly {day} because the neighbours were loud.",
        "I am trying to go to bed earlier but it never works.",
        "Too much coffee in the afternoon is probably the problem.",
        "I had the strangest dream about being late for an exam.",
    ],
    "plans": [
        "We might go to the coast for a few days next month.",
        "I am trying to plan a trip but the prices are ridiculous.",
        "Maybe we will just stay home and relax this year.",
        "I would love to see the mountains in autumn.",
        "A friend invited us to stay at their place for a weekend.",
    ],
    "shopping": [
        "I bought a new pair of running shoes {day}.",
        "Everything at the supermarket seems more expensive every week.",
        "I am trying not to buy things I do not need.",
        "The sale at the furniture shop ended before I got there.",
    ],
    "family": [
        "My parents called {day} to ask about the holidays.",
        "My cousin is getting married next summer.",
        "We had a big family dinner and it was {adj}.",
        "The kids were full of energy all afternoon.",
    ],
    "tech": [
        "My phone battery dies by lunchtime now.",
        "I spent an hour trying to update {thing} and it still does not work.",
        "I finally backed up all my photos.",
        "The internet was down for half the day.",
    ],
}

OPENERS = ["", "", "", "So,", "Anyway,", "Honestly,", "Okay so", "Hmm,", "Well,", "Funny thing,"]

REPLIES = [
    "That sounds {adj}! How are you feeling about it now?",
    "Oh nice, thanks for telling me.",
    "I hope the rest of the week is calmer for you.",
    "Ha, that happens to everyone at some point.",
    "Interesting. What made you decide to do that?",
    "Got it, I'll remember that.",
    "That must have been {adj}.",
    "Sounds like you deserve a break.",
    "Would you like some tips on that?",
    "Fair enough! Anything else on your mind?",
    "I'm glad it worked out in the end.",
    "That's a good plan. Let me know how it goes.",
    "Oh no, I'm sorry to hear that.",
    "Noted. Is there anything I can help with?",
]
ANSWER_REPLIES = ["Let me check my notes.", "Good question, one moment.", "Let me think."]


def _fill(template: str, rng: random.Random) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: rng.choice(SLOTS[m.group(1)]), template)


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


def _after(lead: str, s: str) -> str:
    """`s` following `lead` in one sentence: lower-case its first word unless it is I."""
    if not lead:
        return s
    if (lead[-1] in ",:" or lead[-1].isalpha()) and not re.match(r"I\b", s):
        s = s[0].lower() + s[1:]
    return f"{lead} {s}"


def filler_sentence(rng: random.Random, topic: str | None = None) -> str:
    return _cap(_fill(rng.choice(TOPICS[topic or rng.choice(list(TOPICS))]), rng))


def filler_turn(rng: random.Random, lo: int = 20, hi: int = 80) -> str:
    """A user turn of chit-chat: sentences from one or two topics (more if they run
    dry), lo..hi words, no sentence template twice."""
    topics = rng.sample(list(TOPICS), rng.choice([1, 1, 2]))
    target = rng.randint(lo, hi)
    sentences: list[str] = []
    used: set[str] = set()
    words = 0
    for attempt in range(60):
        if words >= target:
            break
        if attempt and attempt % 12 == 0:  # the topics ran dry: wander off to another
            topics.append(rng.choice(list(TOPICS)))
        template = rng.choice(TOPICS[rng.choice(topics)])
        s = _cap(_fill(template, rng))
        n = len(s.split())
        if template in used or words + n > hi:
            continue
        used.add(template)
        sentences.append(s)
        words += n
    sentences[0] = _after(rng.choice(OPENERS), sentences[0])
    return " ".join(sentences)


def reply_text(rng: random.Random) -> str:
    return _fill(rng.choice(REPLIES), rng)


def _values(rng: random.Random) -> dict[str, str]:
    pet, petsyn = rng.choice(PETS)
    return {
        "f": rng.choice(FEMALE),
        "m": rng.choice(MALE),
        "s": rng.choice(SURNAMES),
        "city": rng.choice(CITIES),
        "year": str(rng.randint(2008, 2023)),
        "year0": str(rng.randint(1930, 1955)),
        "year2": str(rng.randint(2026, 2033)),
        "pw": f"{rng.choice(PW_WORDS)}-{rng.randint(10, 99)}",
        "drug": rng.choice(DRUGS),
        "pet": pet,
        "petsyn": petsyn,
        "petname": rng.choice(PET_NAMES),
        "weekday": rng.choice(WEEKDAYS),
        "hour": rng.choice(HOURS),
        "street": rng.choice(STREETS),
        "n": str(rng.randint(2, 6)),
        "mall": rng.choice(MALLS),
        "spot": f"{rng.choice('ABCDEFG')}{rng.randint(10, 99)}",
        "month": rng.choice(MONTHS),
        "day": str(rng.randint(1, 28)),
        "code": str(rng.randint(1000, 9999)),
        "code3": f"{rng.randint(1, 39)}-{rng.randint(1, 39)}-{rng.randint(1, 39)}",
        "job": rng.choice(JOBS),
        "company": rng.choice(COMPANIES),
        "blood": rng.choice(BLOOD),
        "school": rng.choice(SCHOOLS),
        "object": rng.choice(OBJECTS),
        "color": rng.choice(COLORS),
        "carmodel": rng.choice(CAR_MODELS),
        "mg": rng.choice(["25", "50", "75", "100"]),
        "med": rng.choice(DAILY_MEDS),
        "restaurant": rng.choice(RESTAURANTS),
        "instrument": rng.choice(INSTRUMENTS),
    }


def _format(template: str, values: dict[str, str]) -> str:
    return template.format(**values)


# -- content words (for checking that questions are paraphrases) ----------------------
_STOP_TEXT = """a about after all also am an and any are as at be been before being by can
could did do does doing each every for from get getting go had has have having he her here
him his how i i'm if in into is it its just me mine my now of on once or our out over she
should so some than that the their them then there these they this those to too until up
was we we're were what what's when where where's which while who whom why will with would
you your days"""
_STOP = frozenset(_STOP_TEXT.split())


def content_words(text: str) -> set[str]:
    words = re.findall(r"[a-z0-9']+", text.lower())
    out = set()
    for w in words:
        w = w.strip("'")
        if w.endswith("'s"):
            w = w[:-2]
        if len(w) < 2 or w in _STOP:
            continue
        out.add(w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w)
    return out


@dataclass
class Planted:
    fact_id: str
    fact: str  # the fact sentence
    turn_text: str  # the user turn it was said in
    question: str
    user_index: int  # which user turn (0-based) carries the fact
    shared: list[str]  # content words the question shares with the fact, minus `allow`
    shared_any: list[str]  # all content words the two share


@dataclass
class Conversation:
    cid: int
    users: list[str]  # user turns, in order
    replies: list[str]  # one assistant reply after each user turn
    planted: list[Planted] = field(default_factory=list)

    @property
    def turns(self) -> int:
        return len(self.users) + len(self.replies)


def make_conversation(cid: int, seed: int, pairs: int = 110) -> Conversation:
    """`pairs` user/assistant exchanges (2*pairs turns), 3-5 facts planted at random depths
    (never in the last 10% of the conversation), then one paraphrased question per fact."""
    rng = random.Random(f"{seed}:{cid}")
    users = [filler_turn(rng, 20, 78) for _ in range(pairs)]
    replies = [reply_text(rng) for _ in range(pairs)]
    templates = rng.sample(FACTS, rng.randint(3, 5))
    positions = rng.sample(range(2, int(pairs * 0.9)), len(templates))
    planted = []
    for tpl, pos in zip(templates, positions, strict=True):
        values = _values(rng)
        fact = _format(tpl["fact"], values)
        lead = rng.choice(FACT_LEADS)
        # said alone, or with a sentence of chit-chat before or after it
        style = rng.choice(["alone", "before", "after"])
        parts = [_after(lead, fact)]
        if style == "before":
            parts.insert(0, filler_sentence(rng))
        elif style == "after":
            parts.append(filler_sentence(rng))
        users[pos] = " ".join(parts)
        replies[pos] = rng.choice(["Got it, I'll remember that.", "Noted!", "Thanks, noted."])
        literal = rng.random() < LITERAL_SHARE
        question = _format(tpl["literal"] if literal else rng.choice(tpl["questions"]), values)
        question = _after(rng.choice(QUESTION_LEADS), question)
        allow = content_words(" ".join(_format(a, values) for a in tpl.get("allow", [])))
        common = content_words(fact) & content_words(question)
        planted.append(
            Planted(
                tpl["id"], fact, users[pos], question, pos, sorted(common - allow), sorted(common)
            )
        )
    rng.shuffle(planted)  # questions are asked in an order unrelated to the facts'
    return Conversation(cid, users, replies, planted)


def make_conversations(n: int, seed: int, pairs: int = 110) -> list[Conversation]:
    return [make_conversation(i, seed, pairs) for i in range(n)]


def corpus_sentence(rng: random.Random) -> str:
    """A memory for the latency corpus: chit-chat, a fact, or an assistant line."""
    r = rng.random()
    if r < 0.15:
        return _format(rng.choice(FACTS)["fact"], _values(rng))
    if r < 0.25:
        return "assistant: " + reply_text(rng)
    return "user: " + filler_turn(rng, 8, 40)


def corpus_query(rng: random.Random) -> str:
    if rng.random() < 0.6:
        return _format(rng.choice(rng.choice(FACTS)["questions"]), _values(rng))
    lead = rng.choice(["What did I say when", "Do you remember when I said", "Did I mention"])
    return _after(lead, filler_sentence(rng).rstrip(".?")) + "?"


# -- the replay --------------------------------------------------------------------------
class CachedTokens:
    """What Conversations needs of a device (tokenize, render_chat, context_length),
    in front of a real one; token counts of short texts are cached (same results)."""

    def __init__(self, dev: Any, context_length: int) -> None:
        self.dev = dev
        self.context_length = context_length
        self.cache: dict[str, int] = {}

    async def tokenize(self, text: str) -> list[int]:
        if len(text) > 2000:
            return list(await self.dev.tokenize(text))
        n = self.cache.get(text)
        if n is None:
            n = self.cache[text] = len(await self.dev.tokenize(text))
        return [0] * n

    async def render_chat(self, messages: list[dict[str, Any]]) -> str:
        return str(await self.dev.render_chat(messages))


def open_db(folder: Path) -> sqlite3.Connection:
    db = sqlite3.connect(str(folder / "bench.db"), isolation_level=None)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def recent_only(turns: list[Any], budget: int) -> list[int]:
    """Baseline: the most recent turns that fit in `budget` (token counts + template)."""
    out, used = [], 0
    for t in reversed(turns):
        cost = t.tokens + PER_MESSAGE
        if used + cost > budget:
            break
        used += cost
        out.append(t.idx)
    return out


async def replay(
    conv: Conversation,
    dev: Any,
    budget: int,
    embedder: Any,
    max_tokens: int = 64,
    conversations: type[Conversations] = Conversations,
    store: type[MemoryStore] = MemoryStore,
    probe_k: int = 50,
) -> list[dict[str, Any]]:
    """Replay `conv` through a fresh MemoryStore + Conversations (a new SQLite DB) with
    `budget` = context_length - max_tokens, then ask each question in turn. Per question:
    whether the fact's turn was in the assembled context (window or recalled), whether
    it was in the recent-turns-only baseline, and where search ranked it."""
    owner, pid = "bench", 1
    dev.context_length = budget + max_tokens
    evidence: dict[int, int] = {}  # user index -> turn idx
    facts_at = {p.user_index for p in conv.planted}
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="llmos-membench-") as tmp:
        db = open_db(Path(tmp))
        memory = store(db, embedder, KeyRing.ephemeral(db))  # texts sealed, as in the kernel
        conv_mgr = conversations(db, memory)
        for i, (user, reply) in enumerate(zip(conv.users, conv.replies, strict=True)):
            _, view = await conv_mgr.assemble(dev, owner, pid, user, max_tokens)
            if i in facts_at:
                evidence[i] = view["parts"][-1]["turn"]
            conv_mgr.record_reply(pid, reply, len(await dev.tokenize(reply)))
        last_user = len(conv.users) - 1
        for k, p in enumerate(conv.planted):
            ev = evidence[p.user_index]
            q_tokens = len(await dev.tokenize(p.question)) + PER_MESSAGE
            baseline = recent_only(conv_mgr.turns(pid), budget - q_tokens)
            _, view = await conv_mgr.assemble(dev, owner, pid, p.question, max_tokens)
            parts = {part["part"]: part for part in view["parts"]}
            window = parts["recent_turns"]["turns"]
            recalled = parts["recalled"]["memories"]
            hits = memory.search(Scope(owner, pid, shared=False), p.question, probe_k)
            rank = next((r for r, h in enumerate(hits) if h["meta"].get("turn") == ev), None)
            out.append(
                {
                    "cid": conv.cid,
                    "fact_id": p.fact_id,
                    "fact": p.fact,
                    "question": p.question,
                    "paraphrased": not p.shared,
                    "evidence_turn": ev,
                    "turns_back": view["parts"][-1]["turn"] - ev,
                    "user_turns_back": last_user + k + 1 - p.user_index,
                    "in_window": ev in window,
                    "in_recalled": any(m["turn"] == ev for m in recalled),
                    "recalled": ev in window or any(m["turn"] == ev for m in recalled),
                    "recent_only": ev in baseline,
                    "search_rank": rank,
                    "recalled_turns": [m["turn"] for m in recalled],
                    "recalled_texts": [m["text"][:90] for m in recalled],
                    "window_start": view["window_start"],
                    "recall_tokens": parts["recalled"]["tokens"],
                }
            )
            answer = ANSWER_REPLIES[k % len(ANSWER_REPLIES)]
            conv_mgr.record_reply(pid, answer, len(await dev.tokenize(answer)))
        db.close()
    return out


def share(rows: list[dict[str, Any]], key: str) -> float:
    return sum(1 for r in rows if r[key]) / len(rows) if rows else 0.0
