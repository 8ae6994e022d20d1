"""The adversarial corpus of the normalisers: pairs of requests a reader tells apart (order
numbers, barcodes, verses, ratios, versions, prices, phone numbers, coordinates, hashes, model
names...) which must stay apart with every preset on, and volatile values (dates, times, Unix
times, UUIDs, provider ids, in several written forms and locales) which must match the same
request recorded another day. The first strings are those of the adversarial pass the issue
reports (each collided, or was missed, before the presets were made precise).

A case is the user message of a chat request, with JSON fields beside the messages and a query
where the value's key matters. ``recorded`` is what a recording holds, ``asked`` what a later
request sends. Used in-process by tests/test_normalize.py and through a real mitmdump by
tests/test_volatile.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ALL_PRESETS = "dates,times,uuids,hex-ids"


@dataclass(frozen=True)
class Case:
    name: str
    recorded: str
    asked: str
    recorded_fields: dict[str, Any] = field(default_factory=dict)
    asked_fields: dict[str, Any] = field(default_factory=dict)
    recorded_query: str = ""
    asked_query: str = ""

    def body(self, side: str) -> dict[str, Any]:
        """The chat request of one side ("recorded" or "asked")."""
        return {
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": getattr(self, side)}],
            **getattr(self, f"{side}_fields"),
        }

    def query(self, side: str) -> str:
        return getattr(self, f"{side}_query")


def _same(name: str, recorded: str, asked: str) -> Case:
    return Case(name, recorded, asked)


# Must stay apart: with every preset on, ``asked`` must not get ``recorded``'s answer.
KEPT_APART = [
    _same("order number in epoch range", "Order 1732000000", "Order 1732999999"),
    _same("EAN barcode (13 digits)", "EAN 4006381333931", "EAN 4006381333948"),
    _same("Bible verse", "Explain John 3:16", "Explain John 3:17"),
    _same("Bible verse, two-digit", "Read Psalm 23:10", "Read Psalm 23:11"),
    _same("ratio", "Mix the concentrate 1:20 with water", "Mix the concentrate 1:30 with water"),
    _same("ratio of", "Use a ratio of 10:30 for the blend", "Use a ratio of 10:45 for the blend"),
    _same("CalVer version", "Upgrade to 1.2.2024", "Upgrade to 1.3.2025"),
    _same("CalVer version, dotted year first", "Pin certifi 2024.11.26", "Pin certifi 2024.11.27"),
    _same("version before a date shape", "Release v10.12.2024", "Release v11.12.2024"),
    _same(
        "may before a year",
        "The board may 2030 targets revisit",
        "The board may 2031 targets revisit",
    ),
    _same("table with a year", "Query file_invoices2023", "Query file_invoices2024"),
    _same("call_ word", "Route to call_center2024 queue", "Route to call_center2025 queue"),
    _same("msg_ word", "Open msg_draft2024v1", "Open msg_draft2024v2"),
    _same(
        "git SHA",
        "Explain commit 3f2a9c1d7e4b5a6c8d9e0f1a2b3c4d5e6f7a8b9c",
        "Explain commit 4a1b2c3d4e5f60718293a4b5c6d7e8f901234567",
    ),
    _same(
        "SHA-256",
        "Check e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "Check 2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
    ),
    _same("MD5", "Hash d41d8cd98f00b204e9800998ecf8427e", "Hash 9e107d9d372bb6826bd81d3542a419d6"),
    _same("model snapshot", "Use gpt-4o-2024-08-06", "Use gpt-4o-2024-05-13"),
    _same(
        "model snapshot, compact",
        "Use claude-3-5-sonnet-20241022",
        "Use claude-3-5-sonnet-20240620",
    ),
    _same("order id with a compact date", "Track ORD-20261126", "Track ORD-20261127"),
    _same("bare compact date-shaped number", "Ticket 20261126 is open", "Ticket 20261127 is open"),
    _same("price", "Price $1732.50 total", "Price $1733.50 total"),
    _same("euro price", "It costs €19.99", "It costs €29.99"),
    _same("US phone", "Call +1 415 555 0132", "Call +1 415 555 0133"),
    _same("German phone", "Ruf +49 30 12345678 an", "Ruf +49 30 12345679 an"),
    _same("coordinates", "Go to 48.8566, 2.3522", "Go to 48.8584, 2.2945"),
    _same("IPv4", "Ping 10.0.0.12", "Ping 10.0.0.13"),
    _same("semantic version", "Install v2.10.3", "Install v2.10.4"),
    _same("Ubuntu release", "Ubuntu 24.04 notes", "Ubuntu 22.04 notes"),
    _same("aspect ratio", "Crop to 16:9", "Crop to 21:9"),
    _same("score", "The final score was 21:19", "The final score was 21:17"),
    _same("pace", "Hold a 10:30 mile pace", "Hold a 10:45 mile pace"),
    _same("duration", "The film lasts 2h30", "The film lasts 2h45"),
    _same("account number", "Account 1234567890", "Account 1234567891"),
    _same("ISBN", "ISBN 978-3-16-148410-0", "ISBN 978-3-16-148410-1"),
    _same("IBAN", "IBAN DE89370400440532013000", "IBAN DE89370400440532013001"),
    _same("invoice", "Invoice INV-2024-001", "Invoice INV-2024-002"),
    _same("SKU", "SKU-A1B2C3D4E5", "SKU-A1B2C3D4E6"),
    _same("serial, UUID-like", "Serial 3F2A9C1D-7E4B", "Serial 3F2A9C1D-7E4C"),
    _same("colour", "Paint it #ff5733", "Paint it #ff5734"),
    _same("year alone", "Sales in 2024", "Sales in 2025"),
    _same("fraction", "Take 1/2 cup", "Take 1/3 cup"),
    _same("day count", "Wait 26 days", "Wait 27 days"),
    _same("chocolate, not March", "Buy 2 Mars bars", "Buy 3 Mars bars"),
    _same("march, the verb", "Soldiers march 3 miles", "Soldiers march 4 miles"),
    _same("zip code", "Ship to 94103", "Ship to 94107"),
    _same("temperature", "Set 21.5°C", "Set 22.5°C"),
    _same("percent", "Grow 12.5%", "Grow 13.5%"),
    Case(
        "a number under an ordinary key",
        "Total?",
        "Total?",
        {"metadata": {"order_total": 1732000000}},
        {"metadata": {"order_total": 1732999999}},
    ),
    Case(
        "a query value that is not a time",
        "Page?",
        "Page?",
        recorded_query="page=1764142239",
        asked_query="page=1764228639",
    ),
]

# Must match: recorded one day, asked with the value of another.
MATCHED = [
    _same(
        "written date with weekday",
        "Today is Thursday, November 26, 2026.",
        "Today is Friday, November 27, 2026.",
    ),
    _same("ISO date", "Report for 2026-11-26", "Report for 2026-11-27"),
    _same("US date", "Due 11/26/2026", "Due 11/27/2026"),
    _same("US date with dashes", "Due 11-26-2026", "Due 11-27-2026"),
    _same("European dotted date", "Stand: 26.11.2026", "Stand: 27.11.2026"),
    _same("day month year", "Issued 26 Nov 2026", "Issued 27 Nov 2026"),
    _same("ordinal of", "On the 26th of November, 2026", "On the 27th of November, 2026"),
    _same("month day, no year", "Meeting Nov 26", "Meeting Nov 27"),
    _same("month year", "Plan for November 2026", "Plan for December 2026"),
    _same("Japanese date", "今日は2026年11月26日（木）です", "今日は2026年11月27日（金）です"),
    _same("Korean date", "오늘은 2026년 11월 26일 목요일", "오늘은 2026년 11월 27일 금요일"),
    _same(
        "German date",
        "Heute ist Donnerstag, 26. November 2026.",
        "Heute ist Freitag, 27. November 2026.",
    ),
    _same(
        "French date",
        "Nous sommes le jeudi 26 novembre 2026.",
        "Nous sommes le vendredi 27 novembre 2026.",
    ),
    _same("Spanish date", "Hoy es 26 de noviembre de 2026", "Hoy es 27 de noviembre de 2026"),
    _same("date in a file name", "Load sales_2026-11-26.csv", "Load sales_2026-11-27.csv"),
    _same("compact date in a file name", "Open report_20261126.json", "Open report_20261127.json"),
    _same("ISO week", "Sprint 2026-W48", "Sprint 2026-W49"),
    _same("ISO timestamp", "Now: 2026-11-26T07:30:39Z", "Now: 2026-11-27T08:01:02Z"),
    _same(
        "ISO timestamp with offset", "At 2026-11-26 07:30:39+01:00", "At 2026-11-27 08:01:02+01:00"
    ),
    _same("basic ISO timestamp", "Build 20261126T073039Z", "Build 20261127T080102Z"),
    _same(
        "HTTP date", "Date: Thu, 26 Nov 2026 07:30:39 GMT", "Date: Fri, 27 Nov 2026 08:01:02 GMT"
    ),
    _same("time after at", "Remind me at 10:30", "Remind me at 11:45"),
    _same("time with AM/PM", "It is 10:30 AM", "It is 11:15 PM"),
    _same("time with seconds", "Logged 14:05:10", "Logged 15:06:11"),
    _same("time with a zone", "Deploy 10:30 UTC", "Deploy 11:00 UTC"),
    _same("French time", "Rendez-vous 19h30", "Rendez-vous 20h15"),
    _same("time with h", "Reunión 10:30h", "Reunión 11:45h"),
    _same("German time", "Termin um 10.30 Uhr", "Termin um 11.00 Uhr"),
    _same("Unix time after timestamp", "timestamp: 1764142239", "timestamp: 1764228639"),
    _same("Unix milliseconds", "created_at=1764142239123", "created_at=1764228639456"),
    _same("Unix microseconds", "since 1764142239123456", "since 1764228639456789"),
    Case(
        "Unix time under a time key",
        "Status?",
        "Status?",
        {"metadata": {"created_at": 1764142239}},
        {"metadata": {"created_at": 1764228639}},
    ),
    Case(
        "time of day under a time key",
        "Book it",
        "Book it",
        {"metadata": {"startTime": "10:30"}},
        {"metadata": {"startTime": "11:45"}},
    ),
    Case(
        "Unix time in a query",
        "Since?",
        "Since?",
        recorded_query="since=1764142239",
        asked_query="since=1764228639",
    ),
    _same(
        "UUID",
        "Run 3f2a9c1d-7e4b-4c1d-9e2f-0123456789ab",
        "Run 8b01de55-12ab-4cde-8f00-abcdefabcdef",
    ),
    _same("tool call id", "Result of call_Xz9Kq2LmN8pR4tVw", "Result of call_Ab3Cd4Ef5Gh6Ij7K"),
    _same(
        "Anthropic message id",
        "See msg_01XFDUDYJgAACzvnptvVoYEL",
        "See msg_01AbCdEfGhJkLmNpQrStUvWx",
    ),
    _same(
        "Anthropic tool use id",
        "Tool toolu_01A09q90qw90lq917835lq9",
        "Tool toolu_01B77z11ab22cd33ef44gh5",
    ),
    _same("file id", "Use file-XjGxS3KTG0uNmNOK362iJua3", "Use file-Ab12Cd34Ef56Gh78Ij90Kl12"),
    _same(
        "response id",
        "Continue resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
        "Continue resp_68aa11bed1ec8190b14f964abc0542670bb6a6b452d3795c",
    ),
    _same(
        "chat completion id",
        "Follow chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
        "Follow chatcmpl-C1NAt9DkdwPV3kMo5o681T6rNKLdU",
    ),
    _same(
        "W3C traceparent",
        "trace 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "trace 00-5ce03a4688c45eb7b4df03ae1f1f5847-11a178bb1cb013c8-01",
    ),
    _same("ULID", "Job 01ARZ3NDEKTSV4RRFFQ69G5FAV", "Job 01BX5ZZKBKACTAV9WEVGEMMVRZ"),
]
