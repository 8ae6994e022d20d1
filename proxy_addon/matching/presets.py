"""The presets of ``cassette_normalize``: which written forms of a date, a time of day, a UUID or
an id each one replaces, and the context a form needs where its shape alone could be something
else (an order number, a Bible verse, a ratio, a version, a hash).

Each form is a regular expression, with a check where the shape is ambiguous: the text before it
(a word that says time: ``at 10:30``, ``timestamp: 1764142239``), the JSON key or query
parameter that holds the whole value (``created_at``, ``since``), or the shape of an id's tail
(random, not a word). Years are 2000-2099 throughout: a volatile date is near today, a date in
history is content. The README's table of forms ("Keeping cassettes valid") lists them, and
tests/normaliser_corpus.py holds the pairs that must stay apart and the forms that must match.
Pure: nothing here reads or writes anything.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Check = Callable[[re.Match[str]], bool]


@dataclass(frozen=True, slots=True)
class Form:
    """One written form a preset replaces: what a reader calls it, its pattern, and the check a
    match must pass (None: the shape is enough).

    ``prefilter``: an RE2 pattern that matches wherever the form can (a superset, without the
    look-arounds and checks). The normaliser runs one RE2 set of them over each string (linear,
    about a nanosecond a byte) and only the forms it names run their Python pattern, which
    costs some 10 ns a character each. Patterns are ASCII (``\\d``, ``\\s``, ``\\w``), as RE2's are,
    and start with a literal or a character class, never a look-behind, so ``re`` skips to the
    places they can start. ``widens``: the pattern (anchored at its end) is looked for just
    before each placeholder the preset wrote (a weekday before ``<date>``), and the match
    widens that placeholder, keeping its form."""

    label: str
    pattern: re.Pattern[str]
    check: Check | None = None
    prefilter: str | None = None
    widens: bool = False


def _form(
    label: str,
    pattern: str,
    prefilter: str | None,
    check: Check | None = None,
    flags: int = 0,
    widens: bool = False,
) -> Form:
    return Form(label, re.compile(pattern, re.ASCII | flags), check, prefilter, widens)


@dataclass(frozen=True, slots=True)
class Preset:
    """A preset: its forms, in the order they apply, and the placeholder they write. ``keyed``:
    a whole value (a number, or a string) that is volatile because of the key that holds it."""

    name: str
    placeholder: str
    forms: tuple[Form, ...]
    keyed: Callable[[Any, str], bool] | None = None


def _trie(words: set[str]) -> str:
    """An alternation of words as a trie (``J(?:an(?:uary)?|u(?:ly|ne))``): at a place where no
    word starts, the pattern fails at the first or second character, not after trying each."""
    if "" in words and len(words) == 1:
        return ""
    by_first: dict[str, set[str]] = {}
    for word in words:
        if word:
            by_first.setdefault(word[0], set()).add(word[1:])
    branches = [re.escape(first) + _trie(rests) for first, rests in sorted(by_first.items())]
    group = "(?:" + "|".join(branches) + ")" if len(branches) > 1 else branches[0]
    return f"(?:{group})?" if "" in words else group


def _names(words: str, lowercase: bool = True) -> str:
    """Space-separated names as written at the start of a sentence, in capitals, and (unless
    ``lowercase`` is False: "may", "march") in lower case, as one trie."""
    forms: set[str] = set()
    for word in words.split(" "):
        forms |= {word, word.upper()} | ({word.lower()} if lowercase else set())
    return "(?:" + _trie(forms) + ")"


_YEAR = r"20\d\d"
_MM = r"(?:0[1-9]|1[0-2])"
_DD = r"(?:0[1-9]|[12]\d|3[01])"
_M = r"(?:0[1-9]|1[0-2]|[1-9])"
_D = r"(?:0[1-9]|[12]\d|3[01]|[1-9])"
_ORDINAL = r"(?:st|nd|rd|th)?"

# English month names, capitalised or in capitals ("november 26" is not taken, and "may 2030" is
# a verb): one trie, so a place where no month starts fails at once.
_EN_MONTH = (
    _names(
        "January February March April May June July August September October November December "
        "Jan Feb Mar Apr Jun Jul Aug Sept Sep Oct Nov Dec",
        lowercase=False,
    )
    + r"\.?"
)
_EN_WEEKDAY = _names(
    "Monday Tuesday Wednesday Thursday Friday Saturday Sunday Mon Tues Tue Wed Thurs Thu Fri "
    "Sat Sun",
    lowercase=False,
)
# Day-first forms of other languages: only with a day number before the month, so "Mars 2030"
# (the planet) or "mayo" stay words. Month names, then their abbreviations, per language.
LOCAL_MONTHS = {
    "de": "Januar Jänner Februar März April Mai Juni Juli August September Oktober November "
    "Dezember Jan Feb Mär Apr Jun Jul Aug Sep Sept Okt Nov Dez",
    "fr": "janvier février mars avril mai juin juillet août septembre octobre novembre décembre "
    "janv févr avr juil sept oct nov déc",
    "es": "enero febrero marzo abril mayo junio julio agosto septiembre setiembre octubre "
    "noviembre diciembre ene feb abr jun jul ago sept oct nov dic",
    "pt": "janeiro fevereiro março abril maio junho julho agosto setembro outubro novembro "
    "dezembro",
    "it": "gennaio febbraio marzo aprile maggio giugno luglio agosto settembre ottobre novembre "
    "dicembre",
    "nl": "januari februari maart april mei juni juli augustus september oktober november december",
}
_LOCAL_MONTH = (  # matched ignoring case
    "(?:"
    + _trie({name.lower() for names in LOCAL_MONTHS.values() for name in names.split(" ")})
    + r")\.?"
)
_LOCAL_WEEKDAY = _names(
    "Montag Dienstag Mittwoch Donnerstag Freitag Samstag Sonnabend Sonntag lundi mardi mercredi "
    "jeudi vendredi samedi dimanche lunes martes miércoles jueves viernes sábado domingo "
    "segunda-feira terça-feira quarta-feira quinta-feira sexta-feira lunedì martedì mercoledì "
    "giovedì venerdì sabato domenica maandag dinsdag woensdag donderdag vrijdag zaterdag zondag"
)
_CJK_WEEKDAY = (
    r"(?:\s*[（(][月火水木金土日](?:曜日?)?[)）]|\s*(?:星期|周|週)[一二三四五六日天]"
    r"|\s*[월화수목금토일]요일)?"
)

# Words that say the number after them is a time ("at 10:30", "since 1764142239"), in the
# languages above. Checked on the text just before a match.
_TIME_WORDS = (
    r"at|by|from|until|till|since|before|after|around|time|now|clock|"
    r"um|ab|bis|gegen|à|vers|dès|jusqu'à|a\s+las|a\s+la|desde|hasta|às|alle|dalle|om|tot"
)
_TIME_WORD_BEFORE = re.compile(rf"(?:(?<![\w'])(?:{_TIME_WORDS})\s+|@\s*|(?<![\w])T)$", re.I)
_VERSION_BEFORE = re.compile(r"(?:\b(?:v|ver|version|release|rel|build)\.?\s*|[v@=])$", re.I)
_WORD_BEFORE = re.compile(r"([A-Za-z_][\w.-]*)[\"']?\s*[:=]?\s*[\"']?$")
_EXTENSION_AFTER = re.compile(r"\.[A-Za-z][A-Za-z0-9]{1,4}\b")

_CAMEL_TIME_KEY = re.compile(r"[a-z0-9](?:At|Time|Date|Timestamp|Ts|On)$")
_TIME_KEY = re.compile(
    r"(?:^|[_.\-\s])(?:time|timestamp|ts|date|datetime|created|updated|modified|expires?|"
    r"expiry|expiration|deadline|since|until|epoch|when|unix)(?:$|[_.\-\s])"
    r"|_(?:at|on)$|^(?:at|now|iat|exp|nbf)$",
    re.I,
)


@functools.lru_cache(maxsize=4096)
def is_time_key(key: str) -> bool:
    """Whether a JSON key or query parameter (or the word before a number) names a time:
    ``created``, ``timestamp``, ``ts``, ``…_at``, ``createdAt``, ``since``, JWT's ``iat``."""
    return bool(_TIME_KEY.search(key) or _CAMEL_TIME_KEY.search(key))


def _before(m: re.Match[str], n: int = 40) -> str:
    return m.string[max(0, m.start() - n) : m.start()]


def _char_before(m: re.Match[str]) -> str:
    return m.string[m.start() - 1] if m.start() else ""


def _after(m: re.Match[str], n: int = 8) -> str:
    return m.string[m.end() : m.end() + n]


# ---------------------------------------------------------------------------------------------
# dates

_ISO_DATE = rf"{_YEAR}-{_MM}-{_DD}"
_DATE_CORE = (  # any date form, for "a date before this time of day"
    rf"{_ISO_DATE}|{_YEAR}/{_M}/{_D}"
    rf"|{_D}/{_D}/{_YEAR}|{_DD}(?P<sep>[.-]){_DD}(?P=sep){_YEAR}"
    rf"|{_EN_MONTH}\s+{_D}{_ORDINAL}(?:,?\s+{_YEAR})?"
    rf"|{_D}{_ORDINAL}\s+(?:of\s+)?{_EN_MONTH},?(?:\s+{_YEAR})?"
    rf"|{_D}(?:\.|er)?\s+(?:de\s+)?{_LOCAL_MONTH}(?:,?\s+(?:de\s+)?{_YEAR})?"
)
_LOCAL_WEEKDAY_BEFORE = re.compile(rf"{_LOCAL_WEEKDAY},?\s+(?:le\s+)?$|\ble\s+$", re.I)


def _word_start(m: re.Match[str]) -> bool:
    """The match does not start inside a word."""
    return not _char_before(m).isalnum()


def _in_a_name(m: re.Match[str]) -> bool:
    """An ISO or compact date stands alone, or inside a file name (``sales_2026-11-26.csv``,
    ``report-20261126.json``), never inside a model's name (``gpt-4o-2024-08-06``,
    ``claude-3-5-sonnet-20241022``) nor a version or number."""
    before, after = _char_before(m), _after(m, 6)
    if before.isalnum() or before in {".", ":"}:
        return False
    if after[:1].isalnum() or after[:2] in {f"-{d}" for d in "0123456789"}:
        return False
    if before == "-":
        return bool(_EXTENSION_AFTER.match(after)) or after[:1] == "_"
    return True


def _compact_date(m: re.Match[str]) -> bool:
    """``20261126`` is a date only in a file name (``report_20261126.json``, ``_20261126_``);
    on its own it may be an order number."""
    before, after = _char_before(m), _after(m, 6)
    if before.isalnum() or after[:1].isalnum():
        return False
    return before == "_" or after[:1] == "_" or bool(_EXTENSION_AFTER.match(after))


def _numeric_date(m: re.Match[str]) -> bool:
    """``11/26/2026``, ``26.11.2026``, ``11-26-2026``: a day and a month in either order, not a
    version (``v1.2.2024``, ``version 10.12.2024``) nor part of a longer number or word."""
    before = _char_before(m)
    if before.isalnum() or before in {".", "-", "/"} or _VERSION_BEFORE.search(_before(m, 12)):
        return False
    a, b = (int(x) for x in re.split(r"[/.-]", m.group(0))[:2])
    return (a <= 12 and b <= 31) or (b <= 12 and a <= 31)


def _local_date(m: re.Match[str]) -> bool:
    """A day and a month name of another language, with a year, ``de``, a day written ``26.``
    or ``1er``, or a weekday or ``le`` before it: "2 Mars bars" is chocolate."""
    if not _word_start(m):
        return False
    return any(m.group(g) for g in ("mark", "de", "year")) or bool(
        _LOCAL_WEEKDAY_BEFORE.search(_before(m, 24))
    )


_DATE_FORMS = (
    _form(
        "ISO week",
        r"20(?<![\w-]20)\d\d-?W(?:0[1-9]|[1-4]\d|5[0-3])(?:-[1-7])?\b",
        r"20\d\d-?W\d",
    ),
    _form(
        "ISO date",
        rf"20(?<!\d20)\d\d(?:-{_MM}-{_DD}(?!\d)|/{_M}/{_D}(?![\d/]))",
        r"20\d\d[-/]\d",
        _in_a_name,
    ),
    _form(
        "numeric date",
        rf"{_D}/{_D}/{_YEAR}(?![\w/])|{_DD}(?P<sep>[.-]){_DD}(?P=sep){_YEAR}(?![\w]|\.\d)",
        r"\d[/.-]\d\d?[/.-]20\d\d",
        _numeric_date,
    ),
    _form("compact date", rf"20\d\d{_MM}{_DD}(?![\dT])", r"20\d{6}", _compact_date),
    _form(
        "written date (de, fr, es, pt, it, nl)",
        rf"{_D}(?P<mark>\.|er|º)?\s+(?P<de>de\s+)?{_LOCAL_MONTH}"
        rf"(?P<year>,?\s+(?:de\s+)?{_YEAR})?(?![\w])",
        rf"(?i)\d(?:\.|er|º)?\s+(?:de\s+)?{_LOCAL_MONTH}",
        _local_date,
        re.I,
    ),
    _form(
        "written date",
        rf"(?=[ADFJMNOS\d])(?:{_EN_MONTH}(?:\s+{_D}{_ORDINAL}(?:,?\s+{_YEAR})?(?![\d:])"
        rf"|,?\s+{_YEAR})|{_D}{_ORDINAL}\s+(?:of\s+)?{_EN_MONTH},?(?:\s+{_YEAR})?)(?![\w])",
        rf"{_EN_MONTH}(?:\s+\d|,?\s+20\d\d)|\d(?:st|nd|rd|th)?\s+(?:of\s+)?{_EN_MONTH}",
        _word_start,
    ),
    _form(
        "CJK date",
        rf"(?:{_YEAR}\s*年\s*{_M}\s*月(?:\s*{_D}\s*日)?|{_M}\s*月\s*{_D}\s*日"
        rf"|{_YEAR}\s*년\s*{_M}\s*월(?:\s*{_D}\s*일)?|{_M}\s*월\s*{_D}\s*일){_CJK_WEEKDAY}",
        r"\d\s*(?:月|월)",
        lambda m: not _char_before(m).isdigit(),
    ),
    _form(  # the weekday before a date changes with it: "Thursday, <date>", "jeudi <date>"
        "weekday",
        rf"(?:{_EN_WEEKDAY}\.?|(?i:{_LOCAL_WEEKDAY})),?\s+$",
        None,
        _word_start,
        widens=True,
    ),
)
_COMPACT_DATE = re.compile(rf"{_YEAR}{_MM}{_DD}")


def _keyed_date(value: Any, key: str) -> bool:
    """A whole string ``20261126`` under a key that names a date or time."""
    return isinstance(value, str) and bool(_COMPACT_DATE.fullmatch(value)) and is_time_key(key)


# ---------------------------------------------------------------------------------------------
# times

_ZONE = (
    r"(?:UTC|GMT|Z|CET|CEST|EET|EEST|WET|WEST|BST|EST|EDT|CST|CDT|MST|MDT|PST|PDT|AKST|HST|JST|"
    r"KST|IST|AEST|AEDT|h|hrs|Uhr|o'clock|local)\b|[+-]\d\d:?\d\d\b"
)
_ZONE_AFTER = re.compile(rf"\s?(?:{_ZONE})")
_DATE_BEFORE = re.compile(
    rf"(?:{_EN_WEEKDAY}\.?,?\s+)?(?:{_DATE_CORE})(?:,?\s+(?:at\s+|à\s+|um\s+)?|\s*,\s*|T)$"
)


def _hour(m: re.Match[str]) -> bool:
    """The match starts with an hour, 0-23, not inside a word or a number (``T10:30`` is)."""
    before = _char_before(m)
    if (before.isalnum() and before != "T") or before in {":", ".", ",", "/"}:
        return False
    hour = m.group(0)[:2]
    return int(hour if hour.isdigit() else hour[:1]) <= 23


def _time_of_day(m: re.Match[str]) -> bool:
    """``H:MM`` is a time with seconds (``14:05:10``), AM/PM or ``h`` (``10:30h``), a zone after
    it, a word such as "at" before it, or a date before it; not ``John 3:16``, a ratio ``1:20``,
    a score."""
    if not _hour(m):
        return False
    if m.group("seconds") or m.group("ampm"):
        return True
    if _ZONE_AFTER.match(m.string, m.end()):
        return True
    before = _before(m)
    return bool(_TIME_WORD_BEFORE.search(before) or _DATE_BEFORE.search(before))


def _hour_h_minutes(m: re.Match[str]) -> bool:
    """``19h30`` (French and others) with a two-digit hour, or any hour after a time word:
    ``2h30`` alone is a duration."""
    if not _hour(m) or _char_before(m) == "T":
        return False
    return m.group(0).index("h") == 2 or bool(_TIME_WORD_BEFORE.search(_before(m)))


_EPOCH_RANGE = (946_684_800, 4_102_444_800)  # 2000-01-01 .. 2100-01-01, in seconds
_EPOCH_LENGTHS = {9, 10, 12, 13, 15, 16, 18, 19}  # seconds, milli-, micro-, nanoseconds


def in_epoch_range(number: float) -> bool:
    """Whether a number read as Unix time in seconds, milli-, micro- or nanoseconds (by its
    size) falls in 2000-2100."""
    for scale in (1, 1e3, 1e6, 1e9):
        if _EPOCH_RANGE[0] <= number / scale < _EPOCH_RANGE[1]:
            return True
    return False


_EPOCH_DIGITS = re.compile(r"\d{9,10}(?:\.\d{1,9})?|\d{12,13}|\d{15,16}|\d{18,19}")


def _epoch(m: re.Match[str]) -> bool:
    """A Unix time in text only after a word that says time (``timestamp: 1764142239``,
    ``created_at=…``, ``since …``, ``@…``): ``Order 1732000000`` is an order number."""
    digits, _, fraction = m.group(0).partition(".")
    before = _char_before(m)
    if before.isalnum() or before in {".", "_"} or len(digits) not in _EPOCH_LENGTHS:
        return False
    if (fraction and len(digits) > 10) or not in_epoch_range(float(m.group(0))):
        return False
    text = _before(m)
    if text.endswith("@"):
        return True
    word = _WORD_BEFORE.search(text)
    return word is not None and is_time_key(word.group(1))


_TIME_OF_DAY = re.compile(r"(?:[01]?\d|2[0-3]):[0-5]\d(?::[0-5]\d(?:\.\d+)?)?")


def _keyed_time(value: Any, key: str) -> bool:
    """A whole value under a key that names a time: a Unix time (a number, or a string of
    digits) or a time of day (``"10:30"``)."""
    if not is_time_key(key):
        return False
    if isinstance(value, str):
        if _TIME_OF_DAY.fullmatch(value):
            return True
        return bool(_EPOCH_DIGITS.fullmatch(value)) and in_epoch_range(float(value))
    return isinstance(value, int | float) and not isinstance(value, bool) and in_epoch_range(value)


_TIME_FORMS = (
    _form(
        "ISO 8601 timestamp",
        rf"20(?<!\d20)\d\d(?:-{_MM}-{_DD}[T ]\d\d:[0-5]\d(?::[0-5]\d(?:[.,]\d+)?)?"
        r"(?:\s?Z|\s?[+-]\d\d(?::?\d\d)?)?(?![\w:])"
        rf"|{_MM}{_DD}T\d{{4}}(?:\d\d)?(?:Z|[+-]\d{{4}})?(?![\w]))",
        r"20\d\d-\d\d-\d\d[T ]\d\d:\d\d|20\d{6}T\d{4}",
        _in_a_name,
    ),
    _form(
        "HTTP date",
        r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|"
        rf"Oct|Nov|Dec) {_YEAR} \d\d:\d\d:\d\d (?:GMT|UTC|[+-]\d{{4}})\b",
        r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d [A-Z][a-z][a-z] 20\d\d \d\d:\d\d:\d\d",
        _word_start,
    ),
    _form(
        "time of day",
        r"\d\d?:[0-5]\d(?P<seconds>:[0-5]\d(?:\.\d+)?)?"
        r"(?P<ampm>\s?[AaPp]\.?[Mm]\b\.?|h\b)?(?![\w:]|\.\d|,\d)",
        r"\d:[0-5]\d",
        _time_of_day,
    ),
    _form("time of day (19h30)", r"\d\d?h[0-5]\d\b", r"\dh[0-5]\d", _hour_h_minutes),
    _form(
        "time of day (10.30 Uhr)",
        r"\d\d?\.[0-5]\d(?=\s?Uhr\b)",
        r"\d\.[0-5]\d\s?Uhr",
        _hour,
    ),
    _form("Unix time", r"\d{9,19}(?:\.\d{1,9})?(?![\w]|\.\d)", r"\d{9}", _epoch),
)


# ---------------------------------------------------------------------------------------------
# ids


def random_looking(tail: str) -> bool:
    """Whether an id's tail after its prefix is random, not a word: digits with both cases
    (base62: ``call_Xz9Kq2LmN8pR4tVw``), or 16+ hex digits (``resp_67cc…``), or 16+ characters
    that switch between letters and digits at least 4 times; ``file_invoices2023`` is a name."""
    digits = sum(c.isdigit() for c in tail)
    if not digits:
        return False
    if any(c.isupper() for c in tail) and any(c.islower() for c in tail):
        return True
    if len(tail) < 16:
        return False
    if all(c in "0123456789abcdefABCDEF" for c in tail):
        return True
    switches = sum(a.isdigit() != b.isdigit() for a, b in zip(tail, tail[1:]))
    return switches >= 4


# OpenAI's and Anthropic's id prefixes, followed by _ or -
ID_PREFIXES = (
    "chatcmpl cmpl call file msgbatch msg resp req run step thread asst batch srvtoolu toolu vs "
    "ftjob ft modr fc rs sess conv evt"
)
_ID_ALTERNATION = ID_PREFIXES.replace(" ", "|")


def _prefixed_id(m: re.Match[str]) -> bool:
    before = _char_before(m)
    return not (before.isalnum() or before == "_") and random_looking(m.group(1))


def _ulid(m: re.Match[str]) -> bool:
    return _word_start(m) and any(c.isalpha() for c in m.group(0))


_ID_FORMS = (
    _form(
        "provider id (call_, msg_, resp_, file-, …)",
        rf"(?:{_ID_ALTERNATION})[_-]([A-Za-z0-9]{{10,}})\b",
        rf"(?:{_ID_ALTERNATION})[_-][A-Za-z0-9]{{10}}",
        _prefixed_id,
    ),
    _form(
        "W3C traceparent",
        r"[0-9a-f]{2}(?<![\w][0-9a-f]{2})-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}\b",
        r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-",
    ),
    _form("ULID", r"[0-7][0-9A-HJKMNP-TV-Z]{25}\b", r"[0-7][0-9A-HJKMNP-TV-Z]{25}", _ulid),
)

_UUID_FORMS = (
    _form(
        "UUID",
        r"[0-9a-fA-F]{8}(?<![\w][0-9a-fA-F]{8})-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
        r"[0-9a-fA-F]{12}\b",
        r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-",
    ),
)

# Applied in this order whatever order they are given in: a timestamp holds a date.
PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("times", "<time>", _TIME_FORMS, _keyed_time),
        Preset("dates", "<date>", _DATE_FORMS, _keyed_date),
        Preset("uuids", "<uuid>", _UUID_FORMS),
        Preset("hex-ids", "<id>", _ID_FORMS),
    )
}
# Every form of every preset holds a digit, so a string without one skips them all after one
# quick scan; no preset writes a digit, so the answer holds after each.
DIGIT = re.compile(r"\d", re.ASCII)
