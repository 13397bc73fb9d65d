"""PII scan: recall and precision on a seeded synthetic corpus, plus redaction and policy.

The generator builds valid check digits with its own arithmetic (not the module's), so
a bug in a validator cannot hide behind the same bug in the test data.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import random
import string
from collections import Counter
from dataclasses import dataclass

import pytest

from aiaas.core.errors import InvalidFile
from aiaas.data.pii import (
    PII_KINDS,
    apply_pii_policy,
    iban_valid,
    luhn_valid,
    redact_text,
    resident_id_valid,
    scan_text,
    scan_texts,
)

SEED = 20240611
PER_KIND = 220  # single-value sentences per kind; two-value sentences come on top

# ---------------------------------------------------------------------------------------
# Independent check-digit arithmetic for building valid values.
# ---------------------------------------------------------------------------------------


def luhn_check_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:  # doubled once the check digit is appended to the right
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str((10 - total % 10) % 10)


def iban_check_digits(country: str, bban: str) -> str:
    numeric = "".join(str(int(ch, 36)) for ch in bban + country + "00")
    return f"{98 - int(numeric) % 97:02d}"


RID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def rid_check_char(first17: str) -> str:
    return "10X98765432"[sum(int(d) * w for d, w in zip(first17, RID_WEIGHTS, strict=True)) % 11]


# ---------------------------------------------------------------------------------------
# Value generators, one per kind.
# ---------------------------------------------------------------------------------------


def digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def gen_email(rng: random.Random) -> str:
    name = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 10)))
    extra = rng.choice(["", "." + rng.choice(["lee", "wang", "smith"]), digits(rng, 2), "+news", "_x"])
    domain = rng.choice(["example", "mail", "qq", "163", "corp-net", "uni"])
    tld = rng.choice(["com", "org", "net", "io", "co.uk", "com.cn", "de"])
    user = name + extra
    return f"{user.upper() if rng.random() < 0.1 else user}@{domain}.{tld}"


def gen_phone(rng: random.Random) -> str:
    area = str(rng.randint(2, 9)) + digits(rng, 2)
    exch = str(rng.randint(2, 9)) + digits(rng, 2)
    line = digits(rng, 4)
    formats = [
        f"+1 ({area}) {exch}-{line}",
        f"+1 {area}-{exch}-{line}",
        f"+1 {area} {exch} {line}",
        f"({area}) {exch}-{line}",
        f"{area}-{exch}-{line}",
        f"{area}.{exch}.{line}",
        f"1-800-{exch}-{line}",
        f"+44 20 {digits(rng, 4)} {digits(rng, 4)}",
        f"+44 7700 {digits(rng, 6)}",
        f"020 {digits(rng, 4)} {digits(rng, 4)}",
        f"07700 {digits(rng, 6)}",
        f"+49 30 {digits(rng, 7)}",
        f"+49 151 {digits(rng, 8)}",
        f"+33 1 {digits(rng, 2)} {digits(rng, 2)} {digits(rng, 2)} {digits(rng, 2)}",
        f"+91 9{digits(rng, 4)} {digits(rng, 5)}",
        f"+61 2 {digits(rng, 4)} {digits(rng, 4)}",
        f"+81 3-{digits(rng, 4)}-{digits(rng, 4)}",
        f"010-{digits(rng, 8)}",
        f"+44 (0)20 {digits(rng, 4)} {digits(rng, 4)}",
        f"+1-{area}-{exch}-{line}",
        f"+852 {digits(rng, 4)} {digits(rng, 4)}",
        f"+65 6{digits(rng, 3)} {digits(rng, 4)}",
    ]
    return rng.choice(formats)


def gen_cn_mobile(rng: random.Random) -> str:
    head = "1" + str(rng.randint(3, 9)) + digits(rng, 1)
    a, b = digits(rng, 4), digits(rng, 4)
    return rng.choice(
        [
            f"{head}{a}{b}",
            f"{head} {a} {b}",
            f"{head}-{a}-{b}",
            f"+86 {head}{a}{b}",
            f"+86-{head}-{a}-{b}",
            f"+86{head}{a}{b}",
            f"(+86) {head} {a} {b}",
        ]
    )


def gen_card(rng: random.Random) -> str:
    prefix, length = rng.choice(
        [("4", 16), ("4", 13), ("4", 19), ("51", 16), ("55", 16), ("2221", 16), ("34", 15), ("37", 15),
         ("6011", 16), ("62", 16), ("62", 19)]
    )  # fmt: skip
    body = prefix + digits(rng, length - len(prefix) - 1)
    number = body + luhn_check_digit(body)
    sep = rng.choice(["", " ", "-"])
    if length == 15:
        groups = [number[:4], number[4:10], number[10:]]
    else:
        groups = [number[i : i + 4] for i in range(0, length, 4)]
    return sep.join(groups)


IBAN_FORMATS = {  # country: BBAN shape, n = digit, a = upper letter, c = alphanumeric
    "DE": "n" * 18,
    "GB": "aaaa" + "n" * 14,
    "FR": "n" * 10 + "c" * 11 + "nn",
    "NL": "aaaa" + "n" * 10,
    "ES": "n" * 20,
    "IT": "a" + "n" * 10 + "c" * 12,
    "CH": "n" * 5 + "c" * 12,
    "BE": "n" * 12,
    "PL": "n" * 24,
    "NO": "n" * 11,
    "MT": "aaaa" + "n" * 5 + "c" * 18,
    "SA": "nn" + "c" * 18,
}


def gen_iban(rng: random.Random) -> str:
    country = rng.choice(sorted(IBAN_FORMATS))
    pools = {"n": string.digits, "a": string.ascii_uppercase, "c": string.digits + string.ascii_uppercase}
    bban = "".join(rng.choice(pools[k]) for k in IBAN_FORMATS[country])
    iban = country + iban_check_digits(country, bban) + bban
    if rng.random() < 0.5:
        return iban
    return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))


def gen_ip(rng: random.Random) -> str:
    if rng.random() < 0.55:
        return ".".join(str(rng.randint(0, 255)) for _ in range(4))
    if rng.random() < 0.3:
        return f"fe80::{rng.randint(1, 0xFFFF):x}:{rng.randint(1, 0xFFFF):x}"
    addr = ipaddress.IPv6Address(rng.getrandbits(128))
    return addr.exploded if rng.random() < 0.3 else addr.compressed


PROVINCES = ("11", "12", "31", "32", "33", "37", "44", "51", "61", "65")


def gen_resident_id(rng: random.Random) -> str:
    born = dt.date(1950, 1, 1) + dt.timedelta(days=rng.randint(0, 60 * 365))
    first17 = rng.choice(PROVINCES) + digits(rng, 4) + born.strftime("%Y%m%d") + digits(rng, 3)
    return first17 + rid_check_char(first17)


GENERATORS = {
    "email": gen_email,
    "phone": gen_phone,
    "cn_mobile": gen_cn_mobile,
    "card_number": gen_card,
    "iban": gen_iban,
    "ip_address": gen_ip,
    "cn_resident_id": gen_resident_id,
}

TEMPLATES = (
    "Please contact me at {} about the refund.",
    "My details: {}.",
    "{} is what I gave the agent",
    "I tried {} twice but nothing happened",
    "Update the record to {}, thanks!",
    "The customer wrote: \"{}\" in the form",
    "{}",
    "客户留下了{}，请尽快处理。",
    "请核对信息：{}",
    "备注 {} 已确认",
)
TWO_VALUE_TEMPLATES = (
    "First {} and then {} were both provided.",
    "资料：{}；另外 {}。",
    "Details {} / {} (verified)",
)


@dataclass
class Sample:
    text: str
    spans: list[tuple[str, int, int]]  # (kind, start, end) of each embedded value


def _fill(template: str, values: list[tuple[str, str]]) -> Sample:
    parts = template.split("{}")
    text, spans = parts[0], []
    for (kind, value), tail in zip(values, parts[1:], strict=True):
        spans.append((kind, len(text), len(text) + len(value)))
        text += value + tail
    return Sample(text, spans)


def positive_corpus(seed: int = SEED) -> list[Sample]:
    rng = random.Random(seed)
    samples = []
    for kind in PII_KINDS:
        for _ in range(PER_KIND):
            samples.append(_fill(rng.choice(TEMPLATES), [(kind, GENERATORS[kind](rng))]))
    for _ in range(len(PII_KINDS) * 40):
        a, b = rng.sample(PII_KINDS, 2)
        values = [(a, GENERATORS[a](rng)), (b, GENERATORS[b](rng))]
        samples.append(_fill(rng.choice(TWO_VALUE_TEMPLATES), values))
    return samples


def negative_corpus(seed: int = SEED + 1) -> list[str]:
    """Sentences with numbers and near-misses that must not be flagged."""
    rng = random.Random(seed)
    out: list[str] = []

    def bad_luhn() -> str:
        body = rng.choice(["4", "5", "6"]) + digits(rng, 14)
        return body + str((int(luhn_check_digit(body)) + rng.randint(1, 9)) % 10)

    def bad_iban() -> str:
        iban = gen_iban(rng).replace(" ", "")
        good = iban[2:4]
        wrong = f"{(int(good) + rng.randint(1, 96)) % 97:02d}"
        return iban[:2] + wrong + iban[4:]

    def bad_rid() -> str:
        rid = gen_resident_id(rng)
        return rid[:17] + rng.choice([c for c in "0123456789X" if c != rid[17]])

    def bad_date_rid() -> str:
        first17 = rng.choice(PROVINCES) + digits(rng, 4) + rng.choice(["19990230", "20011331", "19870431"])
        first17 += digits(rng, 3)
        return first17 + rid_check_char(first17)

    makers = [
        lambda: f"Order {rng.randint(10**9, 10**12)} has shipped.",
        lambda: f"Your order number is 1{rng.randint(3, 9)}{digits(rng, 9)}.",
        lambda: f"订单号1{rng.randint(3, 9)}{digits(rng, 9)}已发货",
        lambda: f"Tracking #: {digits(rng, 12)}",
        lambda: f"Invoice {rng.randint(100, 999)}-{rng.randint(100, 999)}-{digits(rng, 4)} is overdue",
        lambda: f"Card number {bad_luhn()} was declined.",
        lambda: f"Ref {bad_luhn()} in the log",
        lambda: f"IBAN {bad_iban()} looks wrong",
        lambda: f"身份证号{bad_rid()}校验失败",
        lambda: f"ID {bad_date_rid()} has an impossible date",
        lambda: f"Ping {rng.randint(256, 999)}.{'.'.join(str(rng.randint(0, 255)) for _ in range(3))} fails",
        lambda: f"Upgrade to version {rng.randint(1, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 30)} today",
        lambda: f"Meeting on {rng.randint(2000, 2030)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} "
        f"at {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}",
        lambda: f"It costs ${rng.randint(1, 999)},{digits(rng, 3)}.{digits(rng, 2)} per year",
        lambda: f"We sold {rng.randint(100, 999)} {rng.randint(100, 999)} {digits(rng, 4)} units",
        lambda: f"ISBN 978-{rng.randint(0, 9)}-{digits(rng, 2)}-{digits(rng, 6)}-{rng.randint(0, 9)}",
        lambda: f"MAC {':'.join(f'{rng.randint(0, 255):02X}' for _ in range(6))} is blocked",
        lambda: f"Timestamp {rng.randint(1_500_000_000_000, 1_800_000_000_000)} in ms",
        lambda: f"Postcode {digits(rng, 5)} and {digits(rng, 6)}",
        lambda: f"Commit {''.join(rng.choice('0123456789abcdef') for _ in range(40))}",
        lambda: "Contact us at support at example dot com or @helpdesk",
        lambda: f"Room {rng.randint(100, 999)}, floor {rng.randint(1, 40)}, ext. {rng.randint(1000, 9999)}",
        lambda: "The weather was lovely and the team shipped the release.",
        lambda: "这个模型的效果非常好，我们下周再讨论。",
        lambda: f"Score {rng.random():.4f} after {rng.randint(1, 100)} epochs, lr 3e-5",
        lambda: f"Ratio 12:{rng.randint(10, 59)}:{rng.randint(10, 59)} observed",
        lambda: f"UUID {rng.getrandbits(128):032x}",
    ]
    for i in range(700):
        out.append(makers[i % len(makers)]())
    return out


def _matches(samples: list[Sample]) -> tuple[Counter[str], Counter[str], Counter[str]]:
    """(embedded per kind, found exactly per kind, findings per kind) over the samples."""
    expected, hit, reported = Counter[str](), Counter[str](), Counter[str]()
    for s in samples:
        found = {(f.kind, f.start, f.end) for f in scan_text(s.text)}
        for span in s.spans:
            expected[span[0]] += 1
            hit[span[0]] += span in found
        for kind, _, _ in found:
            reported[kind] += 1
    return expected, hit, reported


@pytest.fixture(scope="module")
def positives() -> list[Sample]:
    return positive_corpus()


@pytest.fixture(scope="module")
def negatives() -> list[str]:
    return negative_corpus()


def test_corpus_is_big_and_covers_every_kind(positives: list[Sample]) -> None:
    assert len(positives) >= 1000
    assert {k for s in positives for k, _, _ in s.spans} == set(PII_KINDS)


@pytest.mark.parametrize("kind", PII_KINDS)
def test_recall_per_kind(positives: list[Sample], kind: str) -> None:
    expected, hit, _ = _matches(positives)
    recall = hit[kind] / expected[kind]
    missed = [s.text for s in positives if any(k == kind for k, _, _ in s.spans)]
    missed = [t for t in missed if not any(f.kind == kind for f in scan_text(t))][:3]
    assert recall >= 0.95, f"{kind} recall {recall:.3f}; e.g. missed in {missed}"


@pytest.mark.parametrize("kind", PII_KINDS)
def test_precision_per_kind(positives: list[Sample], negatives: list[str], kind: str) -> None:
    _, hit, reported = _matches(positives + [Sample(t, []) for t in negatives])
    precision = hit[kind] / max(1, reported[kind])
    assert precision >= 0.98, f"{kind} precision {precision:.3f}"


def test_negative_set_is_almost_never_flagged(negatives: list[str]) -> None:
    flagged = [t for t in negatives if scan_text(t)]
    assert len(flagged) / len(negatives) <= 0.01, flagged[:5]


@pytest.mark.parametrize(
    "text",
    [
        "Card 4111 1111 1111 1112 fails Luhn",
        "Sixteen digits 1234567812345678 but not a card",
        "IBAN DE88 3704 0044 0532 0130 00 has a bad check",
        "Country ZZ12 3456 7890 1234 56 does not issue IBANs",
        "身份证11010519491231002Y无效",
        "ID 110105194902301234 has 30 February",
        "Address 999.10.10.10 is not an address",
        "Order 13812345678 is on its way",
        "The time was 12:30:45 and the MAC 00:1A:2B:3C:4D:5E",
        "Nothing to see here at all.",
    ],
)
def test_known_negatives(text: str) -> None:
    assert scan_text(text) == []


def test_validators_on_published_examples() -> None:
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert iban_valid("DE89370400440532013000") and iban_valid("GB82WEST12345698765432")
    assert not iban_valid("DE89370400440532013001") and not iban_valid("DE8937040044053201300")
    assert resident_id_valid("11010519491231002X") and not resident_id_valid("110105194912310021")


def test_chinese_text_glued_to_numbers_is_found() -> None:
    text = "手机13812345678，身份证11010519491231002X，邮箱li@qq.com"
    assert [f.kind for f in scan_text(text)] == ["cn_mobile", "cn_resident_id", "email"]


def test_overlaps_resolve_to_the_most_specific_kind() -> None:
    # A mobile number inside an e-mail address, a +86 number that is also a generic phone.
    assert [f.kind for f in scan_text("write to 13812345678@163.com")] == ["email"]
    assert [f.kind for f in scan_text("call +86 138 1234 5678")] == ["cn_mobile"]


def test_redact_replaces_values_with_placeholders() -> None:
    text = "Mail a.b@example.com or call +44 20 7946 0958 from 10.0.0.1; IBAN GB82WEST12345698765432."
    assert redact_text(text) == "Mail [EMAIL] or call [PHONE] from [IP_ADDRESS]; IBAN [IBAN]."
    assert redact_text("no pii here") == "no pii here"


def test_redaction_removes_every_generated_value(positives: list[Sample]) -> None:
    leaked = 0
    for s in positives[::7]:
        redacted = redact_text(s.text)
        leaked += sum(s.text[a:b] in redacted for _, a, b in s.spans)
    assert leaked <= 0.05 * len(positives[::7])


def test_scan_texts_reports_counts_and_rows_but_never_values() -> None:
    rows = ["hi", "mail x@example.com", "card 4111-1111-1111-1111 and y@example.org", "ok"]
    report = scan_texts(rows, max_examples=1)
    assert report["rows_scanned"] == 4
    assert report["rows_with_pii"] == 2
    assert report["counts"]["email"] == 2 and report["counts"]["card_number"] == 1
    assert report["examples"]["email"] == [1] and report["examples"]["card_number"] == [2]
    assert set(report["counts"]) == set(PII_KINDS)
    assert "example.com" not in repr(report) and "4111" not in repr(report)


def test_policy_allow_redact_reject() -> None:
    rows = ["plain", "mail x@example.com"]
    kept, report = apply_pii_policy(rows, "allow")
    assert kept == rows and report["rows_with_pii"] == 1
    redacted, _ = apply_pii_policy(rows, "redact")
    assert redacted == ["plain", "mail [EMAIL]"]
    with pytest.raises(InvalidFile) as info:
        apply_pii_policy(rows, "reject", column="text")
    assert "email" in info.value.message and "example.com" not in info.value.message
    assert info.value.param == "text"
    assert apply_pii_policy(["plain"], "reject")[0] == ["plain"]
    with pytest.raises(ValueError):
        apply_pii_policy(rows, "drop")  # type: ignore[arg-type]
