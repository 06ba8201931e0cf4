"""Generate the small demo NER corpus shipped with ``distill`` (train/dev/test JSONL).

Every sentence, name, organisation and template here was written for this project; people,
companies, clubs and most events are fictional (real country/city names are used as places).
The output is deterministic: running

    python tools/make_sample.py

rewrites ``distill/data/sample/{train,dev,test}.jsonl`` and ``unlabeled.txt`` (the package data)
byte for byte; a
folder given as the first argument gets them instead.

Format: one JSON object per line, ``{"text": str, "entities": [{"start", "end", "type"}]}``
with ``end`` exclusive character offsets, entities sorted by ``(start, end, type)``.
Types are CoNLL-2003-like: PER, ORG, LOC, MISC.  Some entities are nested (e.g. ORG
"University of Oxford" contains LOC "Oxford"; MISC "French Open" contains MISC "French").

Dev and test draw part of their names from pools that train never uses, so a share of their
entity strings is unseen in train.  Standard library only.
"""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

SEED = 20240613
SIZES = {"train": 400, "dev": 100, "test": 100}
UNLABELED = 4000  # sentences of unlabeled.txt
HELDOUT_FRACTION = 0.3  # share of each atomic name pool reserved for dev/test
HELDOUT_DRAW = 0.5  # in dev/test, chance that an atomic draw comes from the held-out part
REUSE = 0.7  # in dev/test, chance that an entity slot reuses a filler train drew for that slot kind
REUSE_PERSON = 0.8  # the same for people (higher: a person's mention form varies, so reuse hits less)
NEST_P = 0.25  # chance that an ORG/event/treaty slot takes a nested form ("Bank of {CITY}")
NESTED_SHARE = 0.12  # exact share of sentences (per split) with at least one nested entity
DATELINE_P = 0.1  # chance of a "LONDON, May 4 - " prefix on an ordinary sentence
MIN_WORDS, MAX_WORDS = 6, 40

# --------------------------------------------------------------------------------------------
# Name pools (atomic).  Each is split once into a shared part and a held-out part.
# --------------------------------------------------------------------------------------------

FIRST_NAMES = """
James Maria Ahmed Yuki Olga Pieter Lucia Tomasz Ingrid Rahul Chen Fatima Diego Amara Henrik
Sofia Kwame Elena Mateo Aisha Lars Priya Jonas Nadia Viktor Carmen Oliver Hana Marco Leila
Samuel Greta Kenji Irina Pablo Zainab Erik Chloe Dmitri Anita Felipe Rosa Stefan Mei Tariq
Helga Andre Nina Kofi Beatriz Paul Ana Martin Julia Georg Claire Hamid Lina Ruben Astrid
Yusuf Daniela Patrick Ewa Luis Noura Thomas Sara Bruno Ines Arjun Linnea Sergei Catherine
Omar Marta Hugo Keiko Nikolai Adaeze Richard Monika Emeka Alessandra Frank Teresa Ivan Leon
Grace Mohammed Joaquim Ayumi Bernard Siobhan Vusi Magdalena Rafael Solveig Tomas Esther
""".split()

SURNAMES = """
Hartley Okafor Lindqvist Moreau Kowalczyk Tanaka Brennan Vasquez Achterberg Nakamura Petrov
Alvarez Whitcombe Haddad Sorensen Castellano Mbatha Reinholt Delaunay Okonkwo Varga Rasmussen
Kaur Dubois Marchetti Novak Eriksen Ferreira Gallagher Hoffmann Ishikawa Jovanovic Kellerman
Lambert Mendez Nieminen O'Sullivan Popescu Quinlan Rossi Schreiber Toivonen Ulrich Whitaker
Yilmaz Zielinski Abernathy Bianchi Carvalho Dunmore Esposito Falk Grigoriev Halloran Ibrahim
Jansen Kapoor Larsen Moretti Nakashima Oyelaran Pacheco Renard Santoro Thorne Uchida Valdez
Wexler Xu Yamada Zeller Ashdown Brandt Cieslak Drummond Engstrom Fontaine Gorski Holloway
Iqbal Juarez Kessler Lindgren Mallory Nwosu Osei Pereira Radcliffe Stavridis Tremblay
Underwood Vogel Wainwright Adebayo Bergstrom Costa Dalton El-Amin Fischer Garrido Hakimi
Ivanova Jaramillo Kruger Lowell McAllister Nordin Ostrowski Prentice Ramos Sandoval Takahashi
Vance Whitfield Zamora Haverford Lacroix
""".split() + ["Van der Berg", "de Souza", "Al-Rashid", "Mac Giolla"]

COMPANIES = [
    "Norrland Steel", "Pellworth Holdings", "Kestrel Airways", "Valtera Motors", "Orion Telecom",
    "Brightwater Energy", "Castlegate Insurance", "Halvorsen Shipping", "Axiom Pharmaceuticals",
    "Sunfield Foods", "Tessaro Group", "Lumen Systems", "Greyfield Capital", "Novaro Mining",
    "Redcliff Brewing", "Altamira Petroleum", "Bluestone Securities", "Corvid Software",
    "Delmare Textiles", "Everly Chemicals", "Fairhaven Media", "Granton Rail", "Harrow & Pike",
    "Kinloch Distillers", "Larkspur Retail", "Mistral Aerospace", "Northgate Partners",
    "Oberon Semiconductors", "Palisade Logistics", "Quayside Properties", "Rosendahl AG",
    "Sable Cement", "Tidewater Freight", "Umbra Electronics", "Vireo Biotech", "Westmark Stores",
    "Yardley Construction", "Zephyr Airlines", "Ardent Health", "Crestline Motors", "Dunlin Oil",
    "Emberly Glass", "Fenwick Automotive", "Glenmore Utilities", "Hollis Bancorp", "Icarus Data",
    "Jadeport Trading", "Kerrigan Foods", "Loftus Engineering", "Marisol Hotels",
    "Nettlefield Gas", "Oakhurst Bank", "Pemberton Mills", "Quill Publishing", "Ridgeway Tobacco",
    "Solano Wines", "Trentham Cables", "Upland Farms", "Verity Insurance", "Calloway Group",
    "Stellan Corp", "Ondine SA", "Brava NV", "Kaltberg AG", "Morvane Inc", "Aldwych Securities",
    "Bexley Pharma", "Caradoc Mining", "Drayton Foods", "Elsinore Shipping", "Fosse Telecom",
]

AGENCIES = [
    "International Trade Council", "World Grain Authority", "Federal Securities Commission",
    "Central Statistics Office", "International Relief Committee", "United Nations",
    "European Union", "World Bank", "IMF", "NATO", "OPEC", "UNICEF", "Red Crescent",
    "Maritime Safety Agency", "National Farmers Union", "Competition Tribunal",
    "Continental Development Fund", "Coastal Monitoring Service", "Atlantic Fisheries Board",
    "Institute for Energy Studies", "Refugee Support Network", "Global Health Alliance",
    "National Transport Board", "Civil Aviation Authority", "Press Freedom Watch",
]

PARTIES = [
    "Liberal Reform Party", "Social Democratic Alliance", "People's Progress Party",
    "Green Movement", "National Unity Party", "Christian Labour Union", "Freedom Party",
    "Democratic Renewal", "Farmers' League", "Centre Coalition", "Workers' Front",
    "Civic Platform Alliance", "Radical Left Bloc", "New Republican Party",
]

PAPERS = [
    "Evening Sentinel", "Morning Herald", "Financial Ledger", "Weekly Clarion", "Daily Courier",
    "Northern Gazette", "Harbour Times", "Continental Post", "Sunday Chronicle", "Market Dispatch",
    "Evening Beacon", "Capital Review",
]

CLUBS_PLAIN = [
    "Fortunata", "Vitessa", "Corvinia", "Phoenix United", "Valour FC", "Mercurio", "Aurelia FC",
    "Sporting Lumen", "Estrella Roja", "Kestrel United", "Athletic Varne", "Dynamo Selva",
    "Olympia Nord", "Racing Verde", "Concordia", "Union Sankt Ilse", "Real Calvora", "Borussen",
]

CLUB_NICKS = [
    "Falcons", "Mariners", "Rovers", "Wanderers", "Lions", "Comets", "Rangers", "Tigers",
    "Eagles", "Hawks", "Pioneers", "Stallions", "Titans", "Vikings", "Harriers", "Bulls", "United",
    "City", "Athletic", "Albion",
]

CITIES = """
London Paris Berlin Madrid Rome Chicago Tokyo Nairobi Lagos Lima Oslo Stockholm Helsinki Warsaw
Prague Vienna Budapest Athens Lisbon Dublin Edinburgh Manchester Leeds Glasgow Cardiff Toronto
Montreal Vancouver Boston Denver Seattle Houston Atlanta Sydney Melbourne Auckland Mumbai Delhi
Karachi Dhaka Jakarta Manila Seoul Osaka Shanghai Beijing Hanoi Bangkok Cairo Casablanca Accra
Johannesburg Istanbul Ankara Tehran Riyadh Dubai Amman Beirut Zagreb Belgrade Sofia Bucharest
Kyiv Minsk Riga Vilnius Tallinn Copenhagen Rotterdam Antwerp Geneva Zurich Milan Turin Naples
Barcelona Seville Porto Marseille Lyon Hamburg Munich Frankfurt Oxford Cambridge Bogota
Santiago Quito Caracas Havana Montevideo Kesswick Nordvik Velmora Ashbury Kalvik Dunmoor
""".split() + [
    "Cape Town", "Sao Paulo", "Buenos Aires", "Mexico City", "Rio de Janeiro", "New York",
    "Los Angeles", "Hong Kong", "Kuala Lumpur", "Tel Aviv", "Port Halden", "Mirabel Falls",
    "Santa Irenea", "San Lorenzo", "St Albury", "Port Veyra",
]

# (country, needs "the", nationality adjective)
COUNTRIES = [
    ("France", False, "French"), ("Germany", False, "German"), ("Spain", False, "Spanish"),
    ("Italy", False, "Italian"), ("Britain", False, "British"), ("England", False, "English"),
    ("Scotland", False, "Scottish"), ("Ireland", False, "Irish"),
    ("Portugal", False, "Portuguese"), ("Netherlands", True, "Dutch"),
    ("Belgium", False, "Belgian"), ("Sweden", False, "Swedish"), ("Norway", False, "Norwegian"),
    ("Denmark", False, "Danish"), ("Finland", False, "Finnish"), ("Poland", False, "Polish"),
    ("Austria", False, "Austrian"), ("Switzerland", False, "Swiss"), ("Greece", False, "Greek"),
    ("Turkey", False, "Turkish"), ("Russia", False, "Russian"), ("Ukraine", False, "Ukrainian"),
    ("Hungary", False, "Hungarian"), ("Romania", False, "Romanian"),
    ("Croatia", False, "Croatian"), ("Serbia", False, "Serbian"), ("Japan", False, "Japanese"),
    ("China", False, "Chinese"), ("India", False, "Indian"), ("Pakistan", False, "Pakistani"),
    ("Indonesia", False, "Indonesian"), ("Australia", False, "Australian"),
    ("Canada", False, "Canadian"), ("Mexico", False, "Mexican"), ("Brazil", False, "Brazilian"),
    ("Argentina", False, "Argentine"), ("Chile", False, "Chilean"), ("Peru", False, "Peruvian"),
    ("Colombia", False, "Colombian"), ("Egypt", False, "Egyptian"),
    ("Nigeria", False, "Nigerian"), ("Kenya", False, "Kenyan"), ("Ghana", False, "Ghanaian"),
    ("South Africa", False, "South African"), ("Morocco", False, "Moroccan"),
    ("Jordan", False, "Jordanian"), ("South Korea", False, "South Korean"),
    ("Vietnam", False, "Vietnamese"), ("Thailand", False, "Thai"),
    ("United States", True, "American"), ("New Zealand", False, "New Zealand"),
    ("Czech Republic", True, "Czech"), ("Philippines", True, "Filipino"),
]

REGIONS = [
    ("Balkans", True), ("Alps", True), ("Siberia", False), ("Bavaria", False),
    ("Catalonia", False), ("Andalusia", False), ("Patagonia", False), ("Sahara", True),
    ("Middle East", True), ("Scandinavia", False), ("Yorkshire", False), ("Texas", False),
    ("California", False), ("Ontario", False), ("Queensland", False), ("Tuscany", False),
    ("Normandy", False), ("Punjab", True), ("Rift Valley", True), ("Mekong Delta", True),
    ("Great Lakes", True), ("Highlands", True), ("Upper Velmor", False), ("North Halden", False),
    ("West Africa", False), ("Central Asia", False), ("Baltic states", True),
]

LANGUAGES = ["English", "French", "Spanish", "Arabic", "Mandarin", "Portuguese", "Swahili",
             "Hindi", "German", "Russian", "Japanese", "Turkish", "Polish", "Italian", "Korean"]

RELIGIONS = ["Muslim", "Christian", "Catholic", "Buddhist", "Hindu", "Orthodox", "Protestant",
             "Jewish", "Sikh"]

EVENTS_PLAIN = [
    "World Cup", "Olympics", "Olympic Games", "Champions League", "Davis Cup", "Ryder Cup",
    "Continental Championship", "Atlantic Cup", "Northern Games", "Alpine Trophy",
    "Commonwealth Games", "Super Bowl", "Winter Olympics", "Nations Trophy", "Coastal Regatta",
    "Harbour Classic", "Meridian Cup", "Golden Spur Stakes",
]

PRIZES = ["Nobel Peace Prize", "Nobel Prize in Literature", "Pulitzer Prize", "Golden Lion",
          "Palme d'Or", "Meridian Award", "Aurelian Medal", "Booker Prize", "Silver Quill",
          "Halcyon Prize"]

PRODUCTS = ["Stratos", "Nimbus X2", "Aurora 7", "Vela Pro", "Quill Reader", "Halcyon",
            "Zephyr 300", "Orbit Mini", "Corsa GT", "Pulse One", "Lyra S", "Atlas 9"]

TREATIES_PLAIN = ["Harbour Accord", "Northern Fisheries Convention", "Clean Rivers Charter",
                  "Open Skies Agreement", "Grain Export Pact"]

POOLS = {
    "first": FIRST_NAMES, "last": SURNAMES, "company": COMPANIES, "agency": AGENCIES,
    "party": PARTIES, "paper": PAPERS, "club": CLUBS_PLAIN, "nick": CLUB_NICKS, "city": CITIES,
    "country": COUNTRIES, "region": REGIONS, "lang": LANGUAGES, "rel": RELIGIONS,
    "event": EVENTS_PLAIN, "prize": PRIZES, "product": PRODUCTS, "treaty": TREATIES_PLAIN,
}
# Small closed classes whose every member train should see.
NO_HOLDOUT = {"lang", "rel", "nick"}


def _split_pools(seed: int) -> dict[str, tuple[list, list]]:
    rng = random.Random(seed)
    out = {}
    for name in sorted(POOLS):
        items = list(POOLS[name])
        assert len(set(map(str, items))) == len(items), f"duplicate in pool {name}"
        if name in NO_HOLDOUT:
            out[name] = (items, [])
            continue
        rng.shuffle(items)
        k = max(1, round(len(items) * HELDOUT_FRACTION))
        out[name] = (items[k:], items[:k])
    return out


SPLIT_POOLS = _split_pools(SEED)

# --------------------------------------------------------------------------------------------
# Non-entity fillers
# --------------------------------------------------------------------------------------------

DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]
ROLES_POL = ["prime minister", "foreign minister", "finance minister", "president",
             "defence minister", "interior minister", "trade minister", "opposition leader",
             "health minister", "ambassador"]


class Piece:
    """A rendered slot: its text and entity spans relative to the start of that text."""

    __slots__ = ("text", "spans")

    def __init__(self, text: str, spans: list[tuple[int, int, str]] | None = None):
        self.text = text
        self.spans = spans or []


def ent(text: str, typ: str) -> Piece:
    return Piece(text, [(0, len(text), typ)])


def wrap(outer_type: str, template: str, **inner: Piece) -> Piece:
    """Render ``template`` with inner pieces, and add an outer span of ``outer_type``.

    ``template`` may start with a lowercase article ("the ") that is kept outside the outer span.
    """
    text, spans = "", []
    pos = 0
    for m in re.finditer(r"\{(\w+)\}", template):
        text += template[pos:m.start()]
        p = inner[m.group(1)]
        spans += [(len(text) + s, len(text) + e, t) for s, e, t in p.spans]
        text += p.text
        pos = m.end()
    text += template[pos:]
    return Piece(text, spans + [(0, len(text), outer_type)])


class Sampler:
    """Draws slot fillers for one split."""

    def __init__(self, rng: random.Random, split: str, nest_p: float, memory: dict[str, list]):
        self.rng = rng
        self.train = split == "train"
        self.heldout_ok = not self.train
        self.nest_p = nest_p
        self.memory = memory  # slot kind -> fillers train drew (with repeats), shared by splits
        self.pending: list[tuple[str, object]] = []

    def draw(self, kind: str, factory):
        """A filler for a slot of ``kind``: train records its draws, dev/test partly reuse them."""
        seen = self.memory.setdefault(kind, [])
        reuse = REUSE_PERSON if kind == "PERSON" else REUSE
        if not self.train and seen and self.rng.random() < reuse:
            return self.rng.choice(seen)
        value = factory()
        if self.train:
            self.pending.append((kind, value))
        return value

    def commit(self, accepted: bool) -> None:
        """Keep the current sentence's train draws in memory only if the sentence was kept."""
        if accepted:
            for kind, value in self.pending:
                self.memory[kind].append(value)
        self.pending = []

    # -- atomic draws -------------------------------------------------------------------------
    def pick(self, pool: str, filt=None):
        shared, held = SPLIT_POOLS[pool]
        if filt is not None:
            shared = [x for x in shared if filt(x)]
            held = [x for x in held if filt(x)]
        if self.heldout_ok and held and self.rng.random() < HELDOUT_DRAW:
            return self.rng.choice(held)
        return self.rng.choice(shared)

    def nested(self) -> bool:
        return self.rng.random() < self.nest_p

    def country_piece(self, article_ok: bool = True) -> Piece:
        if article_ok:
            name, art, _ = self.pick("country")
        else:
            name, art, _ = self.pick("country", lambda c: not c[1])
        if art and article_ok:
            return Piece("the " + name, [(4, 4 + len(name), "LOC")])
        return ent(name, "LOC")

    def nat_piece(self) -> Piece:
        return ent(self.pick("country")[2], "MISC")

    def city_piece(self) -> Piece:
        return ent(self.pick("city"), "LOC")

    # -- slot renderers -----------------------------------------------------------------------
    def person(self) -> tuple[str, str]:
        return self.pick("first"), self.pick("last")

    def perf(self, person) -> Piece:
        first, last = person
        r = self.rng.random()
        if r < 0.06:
            return ent(f"{first[0]}. {last}", "PER")
        if r < 0.11:
            return ent(f"{first} {self.rng.choice('ABCDEFGHJKLMNPRST')}. {last}", "PER")
        return ent(f"{first} {last}", "PER")

    def per(self, person) -> Piece:
        return self.perf(person) if self.rng.random() < 0.6 else ent(person[1], "PER")

    def company(self) -> Piece:
        if self.nested():
            form = self.rng.randrange(4)
            if form == 0:
                return wrap("ORG", "{n} Airlines", n=self.nat_piece())
            if form == 1:
                return wrap("ORG", "{c} Telecom", c=self.country_piece(article_ok=False))
            if form == 2:
                return wrap("ORG", "{c} Savings Bank", c=self.city_piece())
            return wrap("ORG", "Bank of {c}", c=self.city_piece())
        return ent(self.pick("company"), "ORG")

    def agency(self) -> Piece:
        if self.nested():
            form = self.rng.randrange(4)
            if form == 0:
                return wrap("ORG", "{n} Red Cross", n=self.nat_piece())
            if form == 1:
                return wrap("ORG", "{n} Foreign Ministry", n=self.nat_piece())
            if form == 2:
                return wrap("ORG", "{c} City Council", c=self.city_piece())
            return wrap("ORG", "{c} Port Authority", c=self.city_piece())
        return ent(self.pick("agency"), "ORG")

    def uni(self) -> Piece:
        r = self.rng.random()
        if r < 0.45:
            return wrap("ORG", "University of {c}", c=self.city_piece())
        if r < 0.7:
            return wrap("ORG", "{c} University", c=self.city_piece())
        return ent(self.rng.choice([
            "Institute of Applied Sciences", "Royal Academy of Medicine", "Hartwell Institute",
            "Polytechnic Institute", "School of Tropical Medicine", "Meridian Research Centre",
        ]), "ORG")

    def cbank(self) -> Piece:
        r = self.rng.random()
        if r < 0.5:
            return wrap("ORG", "Bank of {c}", c=self.country_piece())
        if r < 0.7:
            return wrap("ORG", "National Bank of {c}", c=self.country_piece())
        return ent(self.rng.choice(["Federal Reserve", "Reserve Board", "Monetary Authority",
                                    "European Central Bank"]), "ORG")

    def club(self) -> Piece:
        if self.nested():
            return wrap("ORG", "{c} " + self.pick("nick"), c=self.city_piece())
        return ent(self.pick("club"), "ORG")

    def org(self) -> Piece:
        r = self.rng.random()
        if r < 0.45:
            return self.company()
        if r < 0.75:
            return self.agency()
        if r < 0.85:
            return ent(self.pick("party"), "ORG")
        return ent(self.pick("paper"), "ORG")

    def sportev(self) -> Piece:
        if self.nested():
            form = self.rng.randrange(5)
            if form == 0:
                return wrap("MISC", "{n} Open", n=self.nat_piece())
            if form == 1:
                return wrap("MISC", "{n} Grand Prix", n=self.nat_piece())
            if form == 2:
                return wrap("MISC", "{c} Marathon", c=self.city_piece())
            if form == 3:
                return wrap("MISC", "{n} Championship", n=self.nat_piece())
            return wrap("MISC", "Tour de {c}", c=ent("France", "LOC"))
        return ent(self.pick("event"), "MISC")

    def treaty(self) -> Piece:
        if self.nested():
            form = self.rng.randrange(3)
            if form == 0:
                return wrap("MISC", "Treaty of {c}", c=self.city_piece())
            if form == 1:
                return wrap("MISC", "{c} Protocol", c=self.city_piece())
            return wrap("MISC", "{c} Agreement", c=self.city_piece())
        return ent(self.pick("treaty"), "MISC")

    def fest(self) -> Piece:
        if self.nested():
            return wrap("MISC", "{c} Film Festival", c=self.city_piece())
        return ent(self.rng.choice(["Silver Screen Festival", "Festival of New Cinema",
                                    "Northern Lights Film Week"]), "MISC")

    def region(self) -> Piece:
        name, art = self.pick("region")
        if art:
            return Piece("the " + name, [(4, 4 + len(name), "LOC")])
        return ent(name, "LOC")

    def loc(self) -> Piece:
        r = self.rng.random()
        if r < 0.5:
            return self.city_piece()
        if r < 0.8:
            return self.country_piece()
        return self.region()

    def filler(self, name: str) -> str:
        rng = self.rng
        if name == "NUM":
            return str(rng.randint(2, 19))
        if name == "BIG":
            return f"{rng.randint(1, 95) * 1000 + rng.choice([0, 0, 500, 250]):,}"
        if name == "PCT":
            return f"{rng.randint(0, 9)}.{rng.randint(0, 9)}"
        if name == "PRICE":
            return f"{rng.randint(2, 450)}.{rng.randint(0, 99):02d}"
        if name == "MONEY":
            unit = rng.choice(["million", "billion"])
            cur = rng.choice(["$", "$", "", ""])
            amount = f"{rng.randint(1, 900)}" if unit == "million" else f"{rng.randint(1, 40)}.{rng.randint(1, 9)}"
            return f"{cur}{amount} {unit}" + ("" if cur else rng.choice([" dollars", " euros", " pounds"]))
        if name == "DAY":
            return rng.choice(DAYS)
        if name == "MONTH":
            return rng.choice(MONTHS)
        if name == "YEAR":
            return str(rng.randint(1988, 2023))
        if name == "SCORE":
            return f"{rng.randint(0, 5)}-{rng.randint(0, 4)}"
        if name == "WIN":  # winner's score first
            a = rng.randint(1, 5)
            return f"{a}-{rng.randint(0, a - 1)}"
        if name == "SECS":
            return f"{rng.randint(1, 59)}"
        if name == "SET":
            return rng.choice(["6-3", "6-4", "7-5", "6-2", "7-6", "6-1", "4-6", "3-6"])
        if name == "GOALS":
            return str(rng.randint(0, 4))
        if name == "AGE":
            return str(rng.randint(19, 88))
        if name == "MIN":
            return str(rng.randint(4, 89))
        if name == "TIME":
            return f"{rng.randint(2, 3)}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
        if name == "DIST":
            return rng.choice(["100", "200", "400", "800", "1,500", "5,000", "10,000"])
        if name == "MAG":
            return f"{rng.randint(4, 7)}.{rng.randint(0, 9)}"
        if name == "ROLE":
            return rng.choice(ROLES_POL)
        raise KeyError(name)


# --------------------------------------------------------------------------------------------
# Templates.  Slots: {KIND} or {KIND#k}; the same k reuses one draw (e.g. {PERF#1} ...
# {PERL#1} name the same person).  Different draws of one kind in a sentence are distinct.
# A leading "H|" marks an all-caps headline.
# --------------------------------------------------------------------------------------------

TEMPLATES = [
    # politics
    "{PERF}, the {NAT} {ROLE}, said on {DAY} that talks with {COUNTRY} would resume next month.",
    "{COUNTRY} and {COUNTRY} signed a trade agreement in {CITY} on {DAY}, officials said.",
    "Opposition leader {PERF} of the {PARTY} accused the government of mishandling the economy.",
    "\"We will not accept these terms,\" {PERL} told reporters after the meeting in {CITY}.",
    "The {PARTY} won {NUM} seats in the regional parliament in {REGION}, according to official results.",
    "{PERF} resigned as {ROLE} on {DAY}, ending a {NUM}-year career in government.",
    "Thousands of people marched through central {CITY} on {DAY} to protest against rising fuel prices.",
    "The {AGENCY} said it would publish its findings before the end of {MONTH}.",
    "{NAT} troops will remain in the region until at least {YEAR}, the defence ministry said.",
    "Foreign ministers from {COUNTRY}, {COUNTRY} and {COUNTRY} will meet in {CITY} next week to discuss the {TREATY}.",
    "Police in {CITY} arrested {NUM} people after clashes near the {NAT} embassy.",
    "President {PERF} arrived in {CITY} on {DAY} for a two-day state visit to {COUNTRY}.",
    "A spokesman for {PERL} declined to comment on the report.",
    "Parliament approved the budget by {NUM} votes, a narrower margin than most observers had expected.",
    "The election, the first since {YEAR}, is being monitored by observers from the {AGENCY}.",
    "{PERL}'s coalition collapsed in {MONTH} after the {PARTY} withdrew its support.",
    "The {NAT} {ROLE} is due to visit {COUNTRY}, {COUNTRY} and {COUNTRY} later this month.",
    "{PERF#1} met {PERF#2} in {CITY} on {DAY}, and {PERL#2} later described the talks as \"frank and useful\".",
    "H|{COUNTRY} SAYS TALKS WITH {COUNTRY} TO RESUME.",
    "H|{PERL} WINS SECOND TERM AS {NAT} {ROLE}.",
    # business
    "Shares in {COMPANY} rose {PCT} percent to {PRICE} after the company reported higher first-half profits.",
    "{COMPANY} said on {DAY} it had agreed to buy {COMPANY} for {MONEY}.",
    "{COMPANY} chief executive {PERF} told the {PAPER} that demand in {COUNTRY} remained weak.",
    "Analysts said the deal would make {COMPANY} the largest supplier of cement in {REGION}.",
    "Oil prices fell sharply on {DAY} as traders weighed the latest output figures.",
    "{COMPANY}, based in {CITY}, employs about {BIG} people in {NUM} countries.",
    "The dollar was quoted at {PRICE} yen in late trading, little changed from {DAY}.",
    "{PERF}, an analyst at {COMPANY}, said the figures were \"slightly disappointing\" but not alarming.",
    "{COMPANY} plans to cut {BIG} jobs over the next {NUM} years, mostly at its plants in {COUNTRY} and {COUNTRY}.",
    "Net profit rose to {MONEY} from {MONEY} a year earlier, the company said in a statement.",
    "The {AGENCY} fined {COMPANY} {MONEY} for breaching competition rules.",
    "{COMPANY} will list its shares in {CITY} in {MONTH}, sources familiar with the plan said.",
    "The {CBANK} raised its key lending rate by a quarter of a point to {PCT} percent on {DAY}.",
    "H|{NAT} STOCKS CLOSE HIGHER ON {COMPANY} GAINS.",
    "{PERL} said the {PRODUCT} would go on sale in {COUNTRY} before {MONTH}.",
    "Fans queued overnight outside stores in {CITY} for the launch of the {PRODUCT}.",
    "Trading volume was thin ahead of the holiday weekend, dealers said.",
    # sport
    "{CLUB} beat {CLUB} {WIN} on {DAY} to move {NUM} points clear at the top of the table.",
    "{PERF} scored in the {MIN}th minute to give {CLUB} a {WIN} win over {CLUB}.",
    "{NAT} striker {PERF} has signed a {NUM}-year contract with {CLUB}, the club said on {DAY}.",
    "{PERF} of {COUNTRY} won the {SPORTEV} on {DAY}, finishing {NUM} seconds ahead of {PERF}.",
    "\"It was a difficult match and I'm happy to get through,\" said {PERL}, who next faces {PERF} of {COUNTRY}.",
    "{COUNTRY} will host the {SPORTEV} in {YEAR}, the organisers announced in {CITY}.",
    "The {AGE}-year-old {NAT} set a new world record in the {DIST} metres at the {SPORTEV}.",
    "{CLUB} coach {PERF} was sent off in the second half for protesting against a penalty decision.",
    "Rain delayed the start of play for more than two hours on {DAY}.",
    "{PERL} lost {SET} {SET} to {PERF} in the first round of the {SPORTEV}.",
    "Results of {NAT} first division matches on {DAY}: {CLUB} {GOALS} {CLUB} {GOALS}, {CLUB} {GOALS} {CLUB} {GOALS}.",
    "1. {PERF} ({COUNTRYX}) {TIME}, 2. {PERF} ({COUNTRYX}) {SECS} seconds behind",
    "{CLUB} have not won away from home since {MONTH}, and their supporters are growing impatient.",
    "{NAT} cyclist {PERF} took the leader's jersey on the {NUM}th stage of the {SPORTEV}.",
    "H|SOCCER - {CLUB} BEAT {CLUB} {WIN}.",
    "H|SOCCER - {CLUB} AND {CLUB} DRAW {SCORE}.",
    "H|TENNIS - {PERL} OUSTED IN {CITY}.",
    "More than {BIG} {NAT} fans are expected to travel to {CITY} for the {SPORTEV} final.",
    "In an interview with the {PAPER}, {PERL} said there were no plans to leave {CLUB}.",
    "The home side dominated possession but could not find a way past the goalkeeper.",
    "{PERL#1}'s injury means {CLUB} will be without their captain for the {SPORTEV}, and {PERL#1} is expected to miss at least {NUM} weeks.",
    # culture / general
    "The film, directed by {PERF}, will open the {FEST} in {MONTH}.",
    "{PERF}, who won the {PRIZE} in {YEAR}, died in {CITY} on {DAY} at the age of {AGE}.",
    "The novel has been translated into {NUM} languages, including {LANG} and {LANG}.",
    "Scientists at the {UNI} said the results could help explain why some patients do not respond to treatment.",
    "Heavy rain caused flooding across {REGION} on {DAY}, forcing hundreds of families to leave their homes.",
    "An earthquake measuring {MAG} struck near {CITY} early on {DAY}, the {AGENCY} said.",
    "The museum in {CITY} will display the collection of {NAT} paintings until {MONTH}.",
    "Authorities said the fire started in a warehouse and spread quickly to nearby buildings.",
    "{NUM} people were killed when a bus overturned on a mountain road north of {CITY}.",
    "{REL} leaders in {COUNTRY} called for calm after the attack on a market in {CITY}.",
    "The {AGENCY} warned that the drought in {REGION} could leave millions short of food.",
    "{PERF}, a spokesperson for the {AGENCY}, said the convoy had reached {CITY} safely.",
    "The ferry, carrying {NUM} hundred passengers, left {CITY} for {CITY} on {DAY} evening.",
    "Traffic was slow on most roads into the city after heavy overnight snow.",
    "Temperatures are expected to fall below freezing in parts of {REGION} later this week.",
    "The {PAPER} reported that {PERF} had met {PERF} secretly in {CITY} last month.",
    "According to the {PAPER}, the {NAT} government is considering new limits on foreign ownership.",
    "The talks, held under the auspices of the {AGENCY}, ended without agreement.",
    "{PERF} and {PERF} were among the {NUM} people honoured at a ceremony in {CITY} on {DAY}.",
    "Investigators have not ruled out sabotage, a senior official said.",
    "{CITY}'s mayor, {PERF}, promised to reopen the bridge by {MONTH}.",
    "{ORG} said in a statement on {DAY} that it had suspended operations in {COUNTRY}.",
    "The {UNI} has received a grant of {MONEY} from the {AGENCY} to study coastal erosion.",
    "Speaking in {LANG}, {PERL} thanked the people of {CITY} for their support.",
    "{PERF}'s lawyer said the charges were \"without foundation\" and would be contested in court.",
    "The committee, which includes representatives from {COUNTRY}, {COUNTRY} and the {AGENCY}, said in a report published on {DAY} that the project had been delayed by funding problems, legal disputes and repeated changes to the original design.",
    "{PERL} denied all the allegations on {DAY}.",
    "Ticket sales for the {SPORTEV} have exceeded expectations, organisers in {CITY} said.",
    "The {TREATY} was signed by {NUM} countries but has never been ratified by {COUNTRY}.",
    "Officials at the {ORG} said they were studying the proposal and would respond within {NUM} days.",
    "The weather service said conditions would improve by the weekend.",
    "Residents of {LOC} have complained for years about the poor state of the roads.",
    "{PERF}, {AGE}, a former teacher from {CITY}, was elected leader of the {PARTY} on {DAY}.",
    "The report, seen by the {PAPER}, says {COMPANY} paid {MONEY} to consultants in {COUNTRY} and {COUNTRY} in the {NUM} years to {YEAR}.",
    "Doctors said the patient was in a stable condition.",
    "The government said it expected inflation to ease to {PCT} percent by the end of the year.",
    "Two men were taken to hospital after the collision, which happened shortly after midnight.",
    "The final whistle was greeted with boos from the home supporters.",
    "Unemployment fell for the {NUM}th consecutive month in {MONTH}, official figures showed.",
    "The company declined to say how many staff would be affected by the closure.",
    "Witnesses said the gunmen fled in a white car before police arrived.",
    "{PERF} replaces {PERF}, who stepped down in {MONTH} after {NUM} years as head of {COMPANY}.",
    "\"This is a good day for {CITY},\" {PERF} said.",
    "{PER} told a news conference that {COMPANY} had no intention of selling its stake in {COMPANY}.",
    "Prosecutors said {PERF} and {PERF}, both from {CITY}, would appear in court on {DAY}.",
    "{PERF#1} won the title for the third time, and afterwards {PERL#1} dedicated the victory to the coaching staff.",
    "The book, written by {PERF} and published by {ORG}, has sold more than {BIG} copies.",
    "{PERL} and {PERL} have been named in the squad for the match against {COUNTRY} on {DAY}.",
    "Asked about {PERL}'s comments, {PERF} said only that the matter was closed.",
    "The newspaper quoted {PER} as saying that the plan was \"dead in the water\".",
    "{PERF} will take over as chair of {ORG} from {MONTH}, the board said.",
]

SLOT_RE = re.compile(r"\{([A-Z]+)(?:#(\d+))?\}")
FILLERS = {"NUM", "BIG", "PCT", "PRICE", "MONEY", "DAY", "MONTH", "YEAR", "SCORE", "SET",
           "GOALS", "AGE", "MIN", "WIN", "SECS", "TIME", "DIST", "MAG", "ROLE"}


def render(template: str, s: Sampler) -> tuple[str, list[tuple[int, int, str]]]:
    headline = template.startswith("H|")
    if headline:
        template = template[2:]
    text, spans = "", []
    people: dict[str, tuple[str, str]] = {}
    used: set[str] = set()
    pos = 0
    for m in SLOT_RE.finditer(template):
        text += template[pos:m.start()]
        pos = m.end()
        kind, key = m.group(1), m.group(2)
        if kind in FILLERS:
            text += s.filler(kind)
            continue
        for _ in range(50):
            if kind in ("PERF", "PERL", "PER"):
                if key is not None and key in people:
                    person = people[key]
                else:
                    person = s.draw("PERSON", s.person)
                    while person[1] in {p[1] for p in people.values()}:
                        person = s.draw("PERSON", s.person)
                    people[key if key is not None else f"_{len(people)}"] = person
                piece = {"PERF": s.perf, "PERL": lambda p: ent(p[1], "PER"), "PER": s.per}[kind](person)
                break
            factory = {
                "NAT": s.nat_piece, "COUNTRY": s.country_piece, "CITY": s.city_piece,
                "COUNTRYX": lambda: s.country_piece(article_ok=False),
                "REGION": s.region, "LOC": s.loc, "COMPANY": s.company, "AGENCY": s.agency,
                "PARTY": lambda: ent(s.pick("party"), "ORG"),
                "PAPER": lambda: ent(s.pick("paper"), "ORG"), "CLUB": s.club, "ORG": s.org,
                "UNI": s.uni, "CBANK": s.cbank, "SPORTEV": s.sportev, "TREATY": s.treaty,
                "FEST": s.fest, "LANG": lambda: ent(s.pick("lang"), "MISC"),
                "REL": lambda: ent(s.pick("rel"), "MISC"),
                "PRIZE": lambda: ent(s.pick("prize"), "MISC"),
                "PRODUCT": lambda: ent(s.pick("product"), "MISC"),
            }[kind]
            piece = s.draw(kind, factory)
            if piece.text not in used:
                break
        used.add(piece.text)
        spans += [(len(text) + a, len(text) + b, t) for a, b, t in piece.spans]
        text += piece.text
    text += template[pos:]
    if headline:
        assert len(text.upper()) == len(text)
        text = text.upper()
    elif text[0].islower():
        text = text[0].upper() + text[1:]
    return text, spans


def dateline(s: Sampler) -> Piece:
    city = s.draw("DATELINE", lambda: s.pick("city"))
    up = city.upper()
    return Piece(f"{up}, {s.rng.choice(MONTHS)} {s.rng.randint(1, 28)} - ", [(0, len(up), "LOC")])


def has_nesting(spans: list[tuple[int, int, str]]) -> bool:
    return any(i != j and a[0] <= b[0] and b[1] <= a[1]
               for i, a in enumerate(spans) for j, b in enumerate(spans))


def make_split(split: str, n: int, rng: random.Random, seen: set[str], nest_p: float,
               memory: dict[str, list]) -> list[dict]:
    sampler = Sampler(rng, split, nest_p, memory)
    n_nested = round(n * NESTED_SHARE)
    # Which sentence slots must contain nesting; the split is shuffled at the end.
    want_nested = [i < n_nested for i in range(n)]
    out = []
    while len(out) < n:
        template = rng.choice(TEMPLATES)
        text, spans = render(template, sampler)
        plain = not template.startswith("H|") and not template[0].isdigit()
        if plain and rng.random() < DATELINE_P:
            d = dateline(sampler)
            spans = list(d.spans) + [(a + len(d.text), b + len(d.text), t) for a, b, t in spans]
            text = d.text + text
        entities = sorted(set(spans))
        words = len(text.split())
        ok = (MIN_WORDS <= words <= MAX_WORDS and text not in seen
              and has_nesting(entities) == want_nested[len(out)])
        sampler.commit(ok)
        if not ok:
            continue
        seen.add(text)
        for a, b, _ in entities:
            assert 0 <= a < b <= len(text) and text[a:b] == text[a:b].strip(), (text, a, b)
        out.append({"text": text,
                    "entities": [{"start": a, "end": b, "type": t} for a, b, t in entities]})
    rng.shuffle(out)
    return out


def main(out_dir: Path | None = None) -> None:
    out_dir = (Path(out_dir) if out_dir else
               Path(__file__).resolve().parents[1] / "distill" / "data" / "sample")
    rng = random.Random(SEED)
    seen: set[str] = set()
    memory: dict[str, list] = {}
    for split, n in SIZES.items():  # train first: dev/test reuse part of its fillers
        rows = make_split(split, n, rng, seen, nest_p=NEST_P, memory=memory)
        with open(out_dir / f"{split}.jsonl", "w", encoding="utf-8", newline="\n") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    # Raw text of the same kind, labels dropped: transfer text for distillation (data.unlabeled).
    # Drawn after the labelled splits (which stay byte for byte as they were), like dev/test: a
    # mix of names train has seen and names it has not; no sentence of train/dev/test repeats.
    rows = make_split("unlabeled", UNLABELED, rng, seen, nest_p=NEST_P, memory=memory)
    with open(out_dir / "unlabeled.txt", "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(row["text"] + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else None)
