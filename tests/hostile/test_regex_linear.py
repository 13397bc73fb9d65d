"""Every regular expression that sees tenant text runs in time linear in its input (issue #13, item 2).

The patterns are enumerated from the source (every module-level `re.compile` in aiaas/), so a pattern
added later fails `test_every_pattern_is_classified` until it is given adversarial inputs here (or is
listed as never seeing tenant text). For each pattern and each adversarial shape (a unit that keeps
the pattern matching, repeated, then a suffix that makes it fail), the pattern runs over strings of
10k, 20k and 40k characters both as a scan (finditer: every start) and anchored at both ends
(fullmatch: where `\\d+\\.?\\d*` went quadratic); the whole-cell functions (PII scan and redaction of a
cell, label parsing, text cleaning, CSV sniffing, JSON value counting) run over the same shapes.
Linear means time(40k)/time(10k) <= 6 (4 is linear; quadratic is 16; the same rate, 3x, from 10k to
20k fails a quadratic case before its slow 40k run), timed in CPU time of this
thread (the machine is shared: wall time counts other processes' slices) as the best of several
repeats, and every call under 0.5 s at 40k (the PII scan reads ~5 MB/s; crafted IBAN-like and phone-
like cells used to take seconds per 10k characters with a linear but enormous constant).
"""

from __future__ import annotations

import ast
import collections
import gc
import importlib
import math
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "aiaas"
SIZES = (10_000, 20_000, 40_000)
MAX_RATIO = 6.0
MAX_SECONDS_AT_40K = 0.5
REPEATS = 3
# Under this at the largest size, the ratio measures caches, not the algorithm: 40k characters scanned in
# 1 ms is 25 ns a character, while backtracking of even quadratic order at 40k costs ~1e9 steps (seconds).
# (A 40k-space scan for one letter took 0.03 ms at 10k and 0.26 ms at 40k: 10x, the string leaving L1.)
RATIO_FLOOR_S = 1e-3
SAMPLE_S = 0.001  # each timing sample runs the function enough times to last about this long at 10k

Shape = tuple[str, str]  # (unit repeated, failing suffix)

# --- the adversarial shapes --------------------------------------------------------------------------

PII_SHAPES: list[Shape] = [
    ("AB12 " + "ABCD" * 9 + "1 ", ""),  # IBAN-like: a long word cut into 1-4 character groups every way
    ("AB12" + " A" * 9 + "BCDEFGHIJKLMNOPQRSTUVWXYZ ", ""),
    ("AB12", "!"), ("A1", "1"), ("DE89 ", "x"),
    ("+1" + "1" * 31 + "a ", ""),  # international-phone-like: "+" and a run of digits cut every way
    ("+1 " + "1 " * 7 + "1a ", ""), ("+1 (12) ", "1a"), ("(1)", "a"), ("+", "1"),
    ("1", "a"), ("1 ", "a"), ("1-", "x"), ("1.", "1"), ("12 ", "a"), ("1234 ", "1"), ("0", "1 "),
    ("1.1.", "1"), ("255.", "."), ("1:", "g"), ("a:", ":"), ("::", "g"), ("a", ":"),
    ("a.", "@"), ("a@", "b"), ("a.a@", "!"), ("a-", "@a."), ("a@a.", "1"), ("_", "@"),
    ("+86 ", "a"), ("138", "1"), ("11010519900307", "a"), ("order ", "1"), ("ref no ", "x"), (" ", "x"),
]
NUMBER_SHAPES: list[Shape] = [
    ("1", "a"), ("1", ".a"), ("1", "e"), ("1.", "1a"), ("1e1", "x"), ("+1", "x"), ("1", ",a"), ("1,", "1a"),
    ("0", "a"), (".1", "a"), ("1", " a"),
]
TEXT_SHAPES: list[Shape] = [(" ", "x"), ("\t\n", "a"), (" \u3000", "x"), ("a ", "")]
JSON_SHAPES: list[Shape] = [('\\"', ""), ('"a', ""), ("\\", '"'), ('"\\"', "\\"), ("[", ""), ('{"a":', ""), ('"', "")]
LABEL_SHAPES: list[Shape] = NUMBER_SHAPES + [("a|", "|"), ("a,", ""), ("[", ""), ('["a",', "")]
NAME_SHAPES: list[Shape] = [("a", "!"), ("a-", "!"), ("A", "/"), ("a.", "/a!"), ("-", "a"), ("/", "a")]

# Every module-level pattern that sees tenant text, with the shapes that stress it ("module:NAME").
PATTERNS: dict[str, list[Shape]] = {
    "aiaas.data.pii:_EMAIL_RE": PII_SHAPES,
    "aiaas.data.pii:_CARD_RE": PII_SHAPES,
    "aiaas.data.pii:_IBAN_START": PII_SHAPES,
    "aiaas.data.pii:_ALNUM_RUN": PII_SHAPES,
    "aiaas.data.pii:_RESIDENT_ID_RE": PII_SHAPES,
    "aiaas.data.pii:_RID_SHAPE": PII_SHAPES,
    "aiaas.data.pii:_CN_MOBILE_RE": PII_SHAPES,
    "aiaas.data.pii:_PHONE_INTL_RE": PII_SHAPES,
    "aiaas.data.pii:_PHONE_NATIONAL_RE": PII_SHAPES,
    "aiaas.data.pii:_NOT_A_PHONE_CONTEXT": PII_SHAPES + [("order", " "), ("order no", "\t"), ("# ", " x")],
    "aiaas.data.pii:_IPV4_RE": PII_SHAPES,
    "aiaas.data.pii:_IPV6_CANDIDATE_RE": PII_SHAPES,
    "aiaas.data.pii:_MAYBE_PII": PII_SHAPES,
    "aiaas.data.bulk_check:_CANDIDATE": PII_SHAPES + [("\u0663", "a"), ("1\n", "1")],
    "aiaas.data.bulk_check:_CANDIDATE_ASCII": PII_SHAPES + [("1\n", "1")],
    "aiaas.data.bulk_check:_SURROGATE_ESCAPE": JSON_SHAPES + [("\\u", "d"), ("\\ud", "8")],
    "aiaas.data.cleaning:_WHITESPACE": TEXT_SHAPES,
    "aiaas.data.cleaning:_NUMBER_NAME": NUMBER_SHAPES,
    "aiaas.data.cleaning:_REGRESSION_NUMBER": NUMBER_SHAPES,
    "aiaas.data.cleaning:_DECIMAL_COMMA": NUMBER_SHAPES,
    "aiaas.data.json_reader:_JSON_TOKEN": JSON_SHAPES,
    # Names a tenant sends: organisation slugs, base-model ids, deployment names, keys, request ids, paths.
    "aiaas.registry.models:_SLUG": NAME_SHAPES,
    "aiaas.training.base_models:_DIR_NAME": NAME_SHAPES,
    "aiaas.training.base_models:_HUB_ID": NAME_SHAPES,
    "aiaas.store.deployments:NAME_RE": NAME_SHAPES,
    "aiaas.security.keys:_KEY_RE": NAME_SHAPES + [("aiaas_sk_", "a")],
    "aiaas.api.middleware:_REQUEST_ID_RE": NAME_SHAPES,
    # Registered-model names and references (`support/3`, `support@production`) a tenant sends.
    "aiaas.store.versions:NAME_RE": NAME_SHAPES,
    "aiaas.store.versions:VERSION_REF": NAME_SHAPES + [("a", "/x"), ("a/1", "a")],
    "aiaas.store.versions:ALIAS_REF": NAME_SHAPES + [("a", "@!"), ("a@a", "@")],
    "aiaas.store.versions:_SLUG": NAME_SHAPES + [("!", "a"), ("A ", "a")],
    # Live-traffic monitoring looks at the head of every inference text.
    "aiaas.data.profile:_ASCII_LETTER": TEXT_SHAPES + [("1", "")],
    # The token estimate runs over every inference text before the model does.
    "aiaas.services.inference.tokens:_PIECES": TEXT_SHAPES + [("a", "\u3002"), ("\u6f22", "a"), ("!", ""), ("_a", " ")],
    "aiaas.services.inference.tokens:_ASCII_PIECES": TEXT_SHAPES + [("a", "!"), ("!", ""), ("_a", " "),
                                                                    ("\x1c", "a")],
}
# Patterns the code also runs anchored (match/fullmatch), which can backtrack where a scan does not.
ANCHORED = {
    "aiaas.data.pii:_ALNUM_RUN", "aiaas.data.pii:_RID_SHAPE", "aiaas.data.cleaning:_NUMBER_NAME",
    "aiaas.data.cleaning:_REGRESSION_NUMBER", "aiaas.data.cleaning:_DECIMAL_COMMA",
    "aiaas.training.base_models:_DIR_NAME", "aiaas.training.base_models:_HUB_ID", "aiaas.store.deployments:NAME_RE",
    "aiaas.security.keys:_KEY_RE", "aiaas.api.middleware:_REQUEST_ID_RE",
    "aiaas.store.versions:NAME_RE", "aiaas.store.versions:VERSION_REF", "aiaas.store.versions:ALIAS_REF",
}
# Patterns that never see tenant text, and why.
NOT_TENANT: dict[str, str] = {
    "aiaas.training.checkpoints:_STEP_DIR": "names of checkpoint directories the trainer itself wrote",
    "aiaas.jobs.workdir:ATTEMPT": "names of attempt directories the worker itself created",
    "aiaas.training.recipe:_LAYER": "parameter and module names of the loaded model (its transformers class), never request text",
    "aiaas.training.recipe:_LAYER_MODULE": "parameter and module names of the loaded model (its transformers class), never request text",
    "aiaas.training.recipe:_EMBEDDINGS": "parameter and module names of the loaded model (its transformers class), never request text",
}


def _whole_cell_functions() -> dict[str, tuple[Callable[[str], object], list[Shape]]]:
    from aiaas.core.errors import InvalidFile
    from aiaas.data import cleaning, formats, json_reader, pii
    from aiaas.data.limits import Budget, ReadLimits
    from aiaas.data.pii_files import scan_table
    from aiaas.data.readers import Table
    from aiaas.data.types import CleaningConfig
    from aiaas.services.inference.tokens import estimate_tokens

    def quiet(fn: Callable[[str], object]) -> Callable[[str], object]:
        def call(text: str) -> object:
            try:
                return fn(text)
            except (cleaning._CellError, InvalidFile):
                return None
        return call

    def scan_cell(text: str) -> object:
        return scan_table(Table("csv", None, ["text"], {"text": [text]}, [1], "line"), redact=True)

    def count_json(text: str) -> object:  # limits that make the token walk run to the end
        limits = ReadLimits(max_cells=10**9, max_rows=1, max_columns=10**8)
        return json_reader._count_json_values(text, Budget(limits, len(text), "file"), walk_above=0)

    return {
        "pii.scan_text": (pii.scan_text, PII_SHAPES),
        "pii.redact_text": (pii.redact_text, PII_SHAPES),
        "pii_files.scan_table (one cell, redact)": (scan_cell, PII_SHAPES),
        "cleaning regression label": (quiet(cleaning._label_parser("regression", True)), LABEL_SHAPES),
        "cleaning single label": (quiet(cleaning._label_parser("single_label_classification", True)),
                                  LABEL_SHAPES),
        "cleaning multi label": (quiet(cleaning._label_parser("multi_label_classification", True)),
                                 LABEL_SHAPES),
        "cleaning text": (cleaning.text_cleaner(CleaningConfig(lowercase=True)), TEXT_SHAPES + PII_SHAPES[:6]),
        "formats CSV delimiter sniffing": (formats._guess_delimiter, [('"', ","), (",", '"'), ('";', "\t")]),
        "readers JSON value count": (quiet(count_json), JSON_SHAPES),
        "token estimate (every road)": (lambda text: estimate_tokens([text]),
                                        TEXT_SHAPES + [("abcdefg ", ""), ("a", "!"), ("a", "\u6f22")]),
    }


# --- enumeration -------------------------------------------------------------------------------------

_RE_CALLS = {"match", "search", "fullmatch", "sub", "subn", "findall", "finditer", "split"}


def _source_patterns() -> tuple[set[str], list[str]]:
    """('module:NAME' of every module-level re.compile, 'file:line' of every inline re.<call>(...))."""
    compiled: set[str] = set()
    inline: list[str] = []
    for path in sorted(ROOT.rglob("*.py")):
        module = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
                if isinstance(node, ast.AnnAssign) else []
            value = getattr(node, "value", None)
            if (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
                    and value.func.attr == "compile" and isinstance(value.func.value, ast.Name)
                    and value.func.value.id == "re"):
                compiled.update(f"{module}:{t.id}" for t in targets if isinstance(t, ast.Name))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name) and node.func.value.id in ("re", "regex")
                    and node.func.attr in _RE_CALLS | ({"compile"} if node.func.value.id == "regex" else set())):
                inline.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}")
    return compiled, inline


def test_every_pattern_is_classified():
    compiled, inline = _source_patterns()
    assert not inline, (
        "compile these patterns at module level, so this test finds them and times them: " + ", ".join(inline)
    )
    unclassified = compiled - set(PATTERNS) - set(NOT_TENANT)
    assert not unclassified, (
        f"new patterns {sorted(unclassified)}: add adversarial shapes for them to PATTERNS in {__file__} "
        "(or to NOT_TENANT with the reason they never see tenant text)"
    )
    stale = (set(PATTERNS) | set(NOT_TENANT)) - compiled
    assert not stale, f"listed here but gone from the source: {sorted(stale)}"


# --- timing ------------------------------------------------------------------------------------------


def _make(shape: Shape, n: int) -> str:
    unit, suffix = shape
    body = unit * (n // len(unit) + 1)
    return body[: n - len(suffix)] + suffix


def _best(fn: Callable[[str], object], text: str, calls: int) -> float:
    """Best time of one call; the garbage collector is off while timing (as timeit does), so a
    collection that happens to fall in one size's samples does not read as superlinear growth."""
    best = float("inf")
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(REPEATS):
            start = time.thread_time()
            for _ in range(calls):
                fn(text)
            best = min(best, (time.thread_time() - start) / calls)
            if best > 1.0:  # a slow call is not timer noise, and repeating it only costs time
                break
    finally:
        if enabled:
            gc.enable()
    return best


def _growth(fn: Callable[[str], object], shape: Shape,
            sizes: tuple[int, ...] = SIZES) -> tuple[dict[int, float], str | None]:
    """Best times per size, and why the growth is not linear (None when it is). Measured up to three
    times before failing: the machine is shared, and a burst of load can slow one size."""
    problem: str | None = None
    times: dict[int, float] = {}
    for _attempt in range(3):
        small = _make(shape, sizes[0])
        start = time.thread_time()
        fn(small)
        once = time.thread_time() - start
        calls = max(1, min(1000, int(SAMPLE_S / max(once, 1e-7))))
        times = {}
        for n in sizes:
            times[n] = _best(fn, _make(shape, n), calls)
            scaled_limit = MAX_RATIO ** (math.log(n / sizes[0]) / math.log(4))
            if n > sizes[0] and times[n] / times[sizes[0]] > 1.5 * scaled_limit:
                # Far past linear already (over 1.5 x 6x per 4x): do not wait for the largest size. Closer
                # than that, the judgement waits for it: at 2x the size a ~1 ms sample is at the mercy of
                # one burst of the other xdist worker (2.8x measured once where a quiet rerun gave 2.0x).
                break
        ratio = times[max(times)] / times[sizes[0]]
        if times[max(times)] < RATIO_FLOOR_S:
            return times, None  # too fast for growth to mean anything (see RATIO_FLOOR_S)
        if ratio > MAX_RATIO ** (math.log(max(times) / sizes[0]) / math.log(4)):
            problem = (f"time grows {ratio:.1f}x from {sizes[0]} to {max(times)} chars (linear: "
                       f"{max(times) / sizes[0]:.0f}x; limit {MAX_RATIO:g}x per 4x the size)")
        elif times[sizes[-1]] > MAX_SECONDS_AT_40K:
            problem = f"{times[sizes[-1]]:.2f} s for {sizes[-1]} chars (limit {MAX_SECONDS_AT_40K} s)"
        else:
            return times, None
        if ratio > 1.5 * MAX_RATIO or max(times.values()) > 2 * MAX_SECONDS_AT_40K:
            break  # far past the limit: not noise, and measuring again only costs time
    return times, problem


def _check(label: str, fn: Callable[[str], object], shapes: list[Shape]) -> None:
    failures = []
    for shape in shapes:
        times, problem = _growth(fn, shape)
        if problem:
            shown = ", ".join(f"{n}: {t * 1000:.2f} ms" for n, t in times.items())
            failures.append(f"{label} on {shape!r}: {problem} ({shown})")
    assert not failures, "\n".join(failures)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_pattern_runs_in_linear_time(name):
    module, attr = name.split(":")
    pattern = getattr(importlib.import_module(module), attr)
    assert isinstance(pattern, re.Pattern)
    _check(f"{name} finditer", lambda s: collections.deque(pattern.finditer(s), maxlen=0), PATTERNS[name])
    if name in ANCHORED:
        _check(f"{name} fullmatch", pattern.fullmatch, PATTERNS[name])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(_whole_cell_functions()))
def test_whole_cell_function_runs_in_linear_time(name):
    fn, shapes = _whole_cell_functions()[name]
    _check(name, fn, shapes)


def test_the_timing_catches_a_quadratic_pattern():
    """The harness itself: the regression-number pattern as it was written is refused (on shorter
    strings, so the quadratic case takes a second rather than a minute)."""
    old = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
    _times, problem = _growth(old.fullmatch, ("1", "a"), sizes=(500, 1_000, 2_000))
    assert problem is not None and "grows" in problem
