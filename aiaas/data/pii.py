"""Offline PII scan and redaction for uploaded training text.

Training data leaks into model weights, so a dataset's owner should know which rows
carry personal data before fine-tuning, and be able to redact or refuse them. This
runs fully offline (regular expressions plus check-digit validation, no model), so it
is cheap enough to scan every row of an upload.

Precision matters as much as recall: a scanner that flags every order number gets
switched off. So each candidate is validated where the format allows it (Luhn for
cards, mod-97 for IBANs, ISO 7064 MOD 11-2 and a real birth date for Chinese resident
ids, octet ranges for IPs), and bare digit runs are not called phone numbers unless
their shape says so.

Reports never include the PII values themselves, only kinds, counts and row indices.
"""

from __future__ import annotations

import bisect
import datetime as _dt
import ipaddress
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from aiaas.core.errors import InvalidFile

logger = logging.getLogger(__name__)

PII_KINDS: tuple[str, ...] = (
    "email",
    "phone",
    "cn_mobile",
    "card_number",
    "iban",
    "ip_address",
    "cn_resident_id",
)

PiiPolicy = Literal["allow", "redact", "reject"]
PII_POLICIES: tuple[str, ...] = ("allow", "redact", "reject")


@dataclass(frozen=True, slots=True)
class PiiFinding:
    """One PII span: `text[start:end]` is the value (kept out of reports on purpose)."""

    kind: str
    start: int
    end: int


# ---------------------------------------------------------------------------------------
# Check-digit validators (pure functions; also handy for tests that build valid values).
# ---------------------------------------------------------------------------------------


def luhn_valid(digits: str) -> bool:
    """Luhn (mod 10) check used by every payment card network."""
    if not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


# Total IBAN length per country (ISO 13616 registry). Knowing the exact length lets us
# stop at the right place when the IBAN is followed by more text, and rejects
# look-alikes from countries that do not issue IBANs.
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28,
    "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24,
    "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SC": 31,
    "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip


def iban_mod97(iban: str) -> int:
    """ISO 7064 MOD 97-10 remainder of a compact IBAN (valid IBANs give 1)."""
    rearranged = iban[4:] + iban[:4]
    remainder = 0
    for ch in rearranged:
        # Letters count as two digits (A=10 .. Z=35); fold them in piecewise to keep ints small.
        value = int(ch, 36)
        remainder = (remainder * (100 if value > 9 else 10) + value) % 97
    return remainder


def iban_valid(iban: str) -> bool:
    """A compact, upper-case IBAN with a known country length and a passing mod-97 check."""
    if len(iban) < 15 or not iban.isalnum() or not iban.isascii():
        return False
    if IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban[2:4].isdigit():
        return False
    return iban_mod97(iban) == 1


_RID_WEIGHTS = tuple(pow(2, 17 - i, 11) for i in range(17))
_RID_CHECK = "10X98765432"
# First two digits: province-level region codes (plus 71/81/82/83 and 91 for
# Taiwan, Hong Kong, Macao residents and overseas Chinese).
_RID_PROVINCES = frozenset(
    "11 12 13 14 15 21 22 23 31 32 33 34 35 36 37 41 42 43 44 45 46 "
    "50 51 52 53 54 61 62 63 64 65 71 81 82 83 91".split()
)


def resident_id_check_char(first17: str) -> str:
    """ISO 7064 MOD 11-2 check character for the first 17 digits of a resident id."""
    total = sum(int(d) * w for d, w in zip(first17, _RID_WEIGHTS, strict=True))
    return _RID_CHECK[total % 11]


def resident_id_valid(value: str) -> bool:
    """18 chars: region, a real birth date (not in the future), sequence, check char."""
    if len(value) != 18 or not value[:17].isdigit():
        return False
    if value[:2] not in _RID_PROVINCES:
        return False
    try:
        born = _dt.date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return False
    if born.year < 1900 or born > _dt.date.today():
        return False
    return resident_id_check_char(value[:17]) == value[17].upper()


# ---------------------------------------------------------------------------------------
# Candidate patterns. Boundaries are ASCII-only on purpose: Chinese text often puts a
# number right after a character (手机13812345678), and `\b`/`\w` would treat that
# character as part of the word.
# ---------------------------------------------------------------------------------------

# Not glued to a longer run of digits, even through one separator ("4111 1111 ...").
_NO_DIGITS_BEFORE = r"(?<![A-Za-z0-9])(?<!\d[ .\-])"
_NO_DIGITS_AFTER = r"(?![A-Za-z0-9])(?![ .\-]?\d)"

_EMAIL_RE = re.compile(
    r"(?<![A-Za-z0-9._%+\-])"
    r"[A-Za-z0-9](?:[A-Za-z0-9._%+\-]{0,62}[A-Za-z0-9_%+\-])?"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}"
    r"(?![A-Za-z0-9\-])"
)

# Major industry identifier 2-6 (Mastercard 2-series, Amex, Visa, Mastercard, Discover/UnionPay).
_CARD_RE = re.compile(r"(?<!\+)" + _NO_DIGITS_BEFORE + r"[2-6](?:[ \-]?\d){12,18}" + _NO_DIGITS_AFTER)

# An IBAN candidate starts at a word start with two letters and two digits, and goes on with 3-8
# groups of 1-4 letters or digits, each after an optional single space, ending at a word end. Every
# word start is tried: a failed candidate such as "AB12 word DE89 ..." must not swallow the real IBAN
# that follows it. (As one regex, `(?: ?[A-Za-z0-9]{1,4}){3,8}` tried every way of cutting a long
# word into groups before giving up: seconds for a 64 KiB cell of such words. _iban_candidates
# finds the same candidates by counting groups per word.)
_IBAN_START = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}")
_ALNUM_RUN = re.compile(r"[A-Za-z0-9]*+")
_IBAN_MIN_GROUPS, _IBAN_MAX_GROUPS, _IBAN_GROUP = 3, 8, 4

_RESIDENT_ID_RE = re.compile(
    _NO_DIGITS_BEFORE + r"[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx]"
    r"(?![A-Za-z0-9])(?![ .\-]?\d)"
)

# Loose id shape (region, 19xx/20xx year, month/day-like digits) used to tell a
# mistyped resident id from a card number.
_RID_SHAPE = re.compile(r"[1-9]\d{5}(?:18|19|20)\d{2}[01]\d[0-3]\d{4}[\dXx]")

_CN_MOBILE_RE = re.compile(
    r"(?<![A-Za-z0-9+])(?<!\d[ .\-])"
    r"(?P<prefix>(?:\+|00)86[ \-]?|\(\+86\) ?)?"
    r"1[3-9]\d(?:\d{8}|[ \-]\d{4}[ \-]\d{4})" + _NO_DIGITS_AFTER
)

# A group of digits takes all it can (possessive) and is never re-cut: a re-cut group can only end the
# match inside a run of digits, which the lookaheads refuse, and the fewest groups reach every place a
# match may end. Trying every cut of "+1" and 31 digits cost ~45k steps per "+" (seconds for a 64 KiB
# cell). Dropping trailing groups still backtracks, as before.
_PHONE_INTL_RE = re.compile(
    r"(?<![A-Za-z0-9+])"
    r"\+[1-9]\d{0,2}"  # country code
    r"(?:[ .\-]?(?:\(\d{1,4}\)|\d{1,5}+)){1,6}"  # groups, optional area code in parentheses
    r"(?![A-Za-z0-9])(?![ .\-]?\d)"
)

_PHONE_NATIONAL_RE = re.compile(
    _NO_DIGITS_BEFORE
    + r"(?:"
    # North American: (415) 555-2671, 415-555-2671, 415.555.2671, 1-800-555-0199. Area
    # code and exchange never start with 0 or 1; plain spaces ("415 555 2671") are left
    # to the +1 form, since "789 447 7964" is as likely a grouped count.
    r"(?:1[.\-])?(?:\([2-9]\d{2}\) ?|[2-9]\d{2}[.\-])[2-9]\d{2}[ .\-]\d{4}"
    r"|"
    # Trunk-prefixed (UK/EU/CN landline style): 020 7946 0958, 07700 900123, 030-1234567
    r"\(?0\d{2,4}\)?[ \-]\d{3,4}(?:[ \-]?\d{3,4})?"
    r")"
    + _NO_DIGITS_AFTER
)

# Digit runs preceded by these words are identifiers, not phone numbers. Possessive: runs of spaces
# are never shared out between the \s* that follow one another ("number" is tried before "no").
_NOT_A_PHONE_CONTEXT = re.compile(
    r"(?:order|invoice|ticket|tracking|ref(?:erence)?|account|acct|sku|serial|parcel|"
    r"#|订单|单号|编号|发票|快递)(?:\s*+(?:number|no\.?+|id|#|号))?+(?:\s++(?:is|was))?+\s*+[:#：=]?+\s*+$",
    re.IGNORECASE,
)
_CONTEXT_CHARS = 24

_IPV4_RE = re.compile(
    r"(?<![A-Za-z0-9.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
    r"(?![A-Za-z0-9])(?!\.\d)"
)

# A run of hex digits, colons and dots with at least two colons; ipaddress decides.
_IPV6_CANDIDATE_RE = re.compile(r"(?<![A-Za-z0-9:.])(?=[0-9A-Fa-f.]*+:[0-9A-Fa-f.]*+:)[0-9A-Fa-f:.]{2,45}")


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def _phone_context_vetoed(text: str, start: int) -> bool:
    """True when the words right before a number say it is an order/ticket/... number."""
    return bool(_NOT_A_PHONE_CONTEXT.search(text[max(0, start - _CONTEXT_CHARS) : start]))


def _find_emails(text: str) -> Iterator[PiiFinding]:
    for m in _EMAIL_RE.finditer(text):
        yield PiiFinding("email", m.start(), m.end())


def _find_cards(text: str) -> Iterator[PiiFinding]:
    for m in _CARD_RE.finditer(text):
        raw = m.group()
        # Separators, when used, must be consistent ("4111 1111 1111 1111", not "4111-1111 11").
        if " " in raw and "-" in raw:
            continue
        digits = _digits(raw)
        # An 18-digit run shaped like a resident id (region code + a date) that failed the id
        # checks is a mistyped id, not a card that happens to pass Luhn.
        if len(digits) == 18 and digits[:2] in _RID_PROVINCES and _RID_SHAPE.fullmatch(digits):
            continue
        if luhn_valid(digits):
            yield PiiFinding("card_number", m.start(), m.end())


def _iban_candidates(text: str) -> Iterator[tuple[int, str]]:
    """(start, raw) for every IBAN-shaped candidate: the longest run of whole words after a start that
    3-8 groups of 1-4 characters can cover. A word of n characters needs ceil(n/4) to n groups, so a
    candidate may end after word j when words 1..j need at most 8 groups and allow at least 3."""
    n = len(text)
    for m in _IBAN_START.finditer(text):
        pos, fewest, most, end = m.end(), 0, 0, -1
        while True:
            begin = pos + 1 if pos < n and text[pos] == " " else pos
            run = _ALNUM_RUN.match(text, begin)  # always matches (possibly empty)
            stop = run.end() if run else begin
            if stop == begin:
                break
            fewest += -(-(stop - begin) // _IBAN_GROUP)
            most += stop - begin
            if fewest > _IBAN_MAX_GROUPS:
                break
            if most >= _IBAN_MIN_GROUPS:
                end = stop
            pos = stop
        if end >= 0:
            yield m.start(), text[m.start() : end]


def _find_ibans(text: str) -> Iterator[PiiFinding]:
    resume = 0
    for start, raw in _iban_candidates(text):
        if start < resume:
            continue
        country = raw[:2].upper()
        length = IBAN_LENGTHS.get(country)
        if length is None:
            continue
        # Walk until `length` alphanumerics are consumed; the IBAN must end at a group end
        # (the regex may have swallowed a following short word such as "OK").
        count, end = 0, 0
        for i, ch in enumerate(raw):
            if ch != " ":
                count += 1
                if count == length:
                    end = i + 1
                    break
        if count != length or (end < len(raw) and raw[end] != " "):
            continue
        compact = raw[:end].replace(" ", "").upper()
        if iban_valid(compact):
            resume = start + end
            yield PiiFinding("iban", start, resume)


def _find_resident_ids(text: str) -> Iterator[PiiFinding]:
    for m in _RESIDENT_ID_RE.finditer(text):
        if resident_id_valid(m.group()):
            yield PiiFinding("cn_resident_id", m.start(), m.end())


def _find_cn_mobiles(text: str) -> Iterator[PiiFinding]:
    for m in _CN_MOBILE_RE.finditer(text):
        if not m.group("prefix") and _phone_context_vetoed(text, m.start()):
            continue
        yield PiiFinding("cn_mobile", m.start(), m.end())


def _find_phones(text: str) -> Iterator[PiiFinding]:
    for m in _PHONE_INTL_RE.finditer(text):
        # E.164 allows at most 15 digits; fewer than 8 is a short code or a price.
        if 8 <= len(_digits(m.group())) <= 15:
            yield PiiFinding("phone", m.start(), m.end())
    for m in _PHONE_NATIONAL_RE.finditer(text):
        n = len(_digits(m.group()))
        if 9 <= n <= 12 and not _phone_context_vetoed(text, m.start()):
            yield PiiFinding("phone", m.start(), m.end())


def _find_ips(text: str) -> Iterator[PiiFinding]:
    for m in _IPV4_RE.finditer(text):
        yield PiiFinding("ip_address", m.start(), m.end())
    for m in _IPV6_CANDIDATE_RE.finditer(text):
        raw = m.group().rstrip(".")  # a sentence may end right after the address
        end = m.start() + len(raw)
        if end < len(text) and (text[end].isascii() and (text[end].isalnum() or text[end] == "_")):
            continue
        if not any(ch.isdigit() for ch in raw):  # "dead::beef" style words are not addresses
            continue
        try:
            ipaddress.IPv6Address(raw)
        except ValueError:
            continue
        yield PiiFinding("ip_address", m.start(), end)


# Order matters: when spans overlap, the earlier detector wins. The more specific,
# better-validated formats go first (an email can hold a mobile number; an IBAN or a
# resident id can look like a card; a +86 mobile is also a generic phone).
_DETECTORS: tuple[Callable[[str], Iterator[PiiFinding]], ...] = (
    _find_emails,
    _find_ibans,
    _find_resident_ids,
    _find_cards,
    _find_ips,
    _find_cn_mobiles,
    _find_phones,
)


# A necessary condition for any detector above to find something, in one pass of one regex: "@"
# (email), ":" (IPv6), digit-dot-digit (IPv4), "+" and a digit (international phone), two letters
# and two digits (IBAN), eleven digits with single space/dash separators (card, resident id,
# mainland mobile), a digit, separator and three digits (national phone). Most cells of a
# training file ("order 42", "ref 1234") fail it, so a whole-file scan skips the seven detectors
# for them. Keep it implied by every detector when one changes (tests/api/test_pii_upload.py).
_MAYBE_PII = re.compile(r"@|:|\d\.\d|\+\d|[A-Za-z]{2}\d{2}|\d(?:[ \-]?\d){10}|\d\)?[ .\-]\d{3}")


def might_contain_pii(text: str) -> bool:
    """False only when scan_text(text) is certainly empty (a cheap pre-check for bulk scans)."""
    return _MAYBE_PII.search(text) is not None


def scan_text(text: str) -> list[PiiFinding]:
    """All non-overlapping PII spans in `text`, sorted by position."""
    # Fast path: every kind needs a digit except e-mail addresses, which need "@".
    if not text or ("@" not in text and not any(ch.isdigit() for ch in text)):
        return []
    # `taken` stays sorted and non-overlapping, so one neighbour decides each overlap test: the
    # last kept span that starts before the candidate ends. (A scan over every kept span made a
    # cell packed with values quadratic: 16,000 addresses in one 128 KB cell took seconds.)
    taken: list[PiiFinding] = []
    starts: list[int] = []
    for detect in _DETECTORS:
        for f in detect(text):
            i = bisect.bisect_left(starts, f.end)
            if i and taken[i - 1].end > f.start:
                continue
            taken.insert(i, f)
            starts.insert(i, f.start)
    return taken


def placeholder(kind: str) -> str:
    """The redaction token for a kind: "email" -> "[EMAIL]"."""
    return f"[{kind.upper()}]"


def redact_text(text: str) -> str:
    """`text` with every PII span replaced by its kind's placeholder."""
    return redact_findings(text, scan_text(text))


def redact_findings(text: str, findings: list[PiiFinding]) -> str:
    """`text` with the given spans (sorted, non-overlapping, as scan_text returns them) replaced."""
    if not findings:
        return text
    parts: list[str] = []
    pos = 0
    for f in findings:
        parts.append(text[pos : f.start])
        parts.append(placeholder(f.kind))
        pos = f.end
    parts.append(text[pos:])
    return "".join(parts)


def scan_texts(texts: Iterable[str], *, max_examples: int = 5) -> dict[str, Any]:
    """A PII report over many rows, safe to store and show: counts and row indices only.

    Returns `{"rows_scanned", "rows_with_pii", "counts": {kind: n}, "examples":
    {kind: [row index, ...]}}` with 0-based row indices, at most `max_examples` per kind.
    """
    counts = dict.fromkeys(PII_KINDS, 0)
    examples: dict[str, list[int]] = {kind: [] for kind in PII_KINDS}
    rows = rows_with_pii = 0
    for index, text in enumerate(texts):
        rows += 1
        findings = scan_text(text) if isinstance(text, str) else []
        if findings:
            rows_with_pii += 1
        for kind in {f.kind for f in findings}:
            if len(examples[kind]) < max_examples:
                examples[kind].append(index)
        for f in findings:
            counts[f.kind] += 1
    return {"rows_scanned": rows, "rows_with_pii": rows_with_pii, "counts": counts, "examples": examples}


def apply_pii_policy(
    texts: list[str], policy: PiiPolicy, *, column: str | None = None
) -> tuple[list[str], dict[str, Any]]:
    """Scan `texts` and apply `policy`; returns the (possibly redacted) texts and the report.

    "allow" only reports, "redact" replaces values with placeholders, "reject" raises
    InvalidFile naming the kinds and example rows (never the values) when any PII is found.
    """
    if policy not in PII_POLICIES:
        raise ValueError(f"Unknown PII policy {policy!r}; use one of {', '.join(PII_POLICIES)}.")
    report = scan_texts(texts)
    if policy == "redact" and report["rows_with_pii"]:
        texts = [redact_text(t) for t in texts]
    elif policy == "reject" and report["rows_with_pii"]:
        found = ", ".join(
            f"{kind} ({n}, e.g. rows {', '.join(str(i) for i in report['examples'][kind])})"
            for kind, n in report["counts"].items()
            if n
        )
        raise InvalidFile(
            f"The data contains personal information: {found}. Remove it, or upload with the "
            "PII policy 'redact' to replace it with placeholders.",
            param=column,
        )
    logger.debug("PII scan: %d of %d rows flagged", report["rows_with_pii"], report["rows_scanned"])
    return texts, report
