"""A fixed, seeded set of English support-desk sentences with a topic label each.

Six topics, so the benchmark model is a 6-way classifier. Sentences are assembled
from hand-written openers, topic cores, details and closings, which gives 5-64
MiniLM tokens per sentence (special tokens included) with a spread that looks like
real traffic: many short messages, a long tail of rambling ones.
"""

from __future__ import annotations

import random
from collections.abc import Callable

LABELS = ("billing", "shipping", "technical", "account", "praise", "complaint")
MIN_TOKENS = 5
MAX_TOKENS = 64

_OPENERS = (
    "Hi,",
    "Hello there,",
    "Good morning,",
    "Hey team,",
    "Quick question:",
    "Sorry to bother you again, but",
    "I hope you can help.",
    "Dear support,",
    "Just so you know,",
    "Following up on my last message,",
    "This is the third time I am writing:",
    "Hi again,",
    "Urgent:",
    "FYI,",
)

_CORES = {
    "billing": (
        "my card was charged twice for the same order",
        "the invoice for March shows the wrong amount",
        "I was billed for the annual plan although I picked monthly",
        "please refund the payment from last Tuesday",
        "why did my subscription price go up this month",
        "the VAT number on our invoice is missing",
        "I need a copy of every receipt from last year for my accountant",
        "the discount code was not applied at checkout",
        "can I pay by bank transfer instead of credit card",
        "there is a charge of 49 dollars that I do not recognise",
    ),
    "shipping": (
        "my package has not arrived yet",
        "the tracking page has not changed in five days",
        "the courier left the parcel at the wrong address",
        "can I change the delivery address for an order that already shipped",
        "do you ship to Canada and how long does customs take",
        "the box arrived but two items were missing",
        "the delivery was scheduled for Monday and nobody came",
        "how much does express shipping to Germany cost",
        "our warehouse did not receive the pallet planned for Thursday",
        "the parcel is stuck at the depot according to the carrier",
    ),
    "technical": (
        "the app crashes every time I open the settings page",
        "login fails with error 403 after the update",
        "the export button does nothing in Firefox",
        "sync between my phone and laptop stopped working",
        "the dashboard takes over a minute to load",
        "I get a blank screen after uploading a CSV file",
        "the API returns a timeout for large requests",
        "notifications arrive twice on Android",
        "the battery drains very fast since the latest version",
        "the printer integration throws an unknown driver error",
    ),
    "account": (
        "I cannot reset my password",
        "please delete my account and all my personal data",
        "how do I add a second admin to our team",
        "my account was locked after three login attempts",
        "I want to change the email address on my profile",
        "two-factor codes arrive after they have expired",
        "can I merge my personal and work accounts",
        "I never received the verification email",
        "please transfer ownership of the workspace to my colleague",
        "my username shows someone else's name",
    ),
    "praise": (
        "thank you for the quick answer",
        "the new dashboard is much faster than the old one",
        "your support team was wonderful",
        "I love the latest update",
        "the onboarding was smooth and easy to follow",
        "great job on the mobile app",
        "the replacement arrived the next day, well done",
        "this is the best tool we have bought this year",
        "the documentation is clear and complete",
        "everything works perfectly now",
    ),
    "complaint": (
        "this is the worst service I have ever received",
        "nobody answers my emails",
        "I have waited on hold for an hour",
        "the product broke after two days",
        "I am very disappointed with the quality",
        "your agent was rude on the phone",
        "I am considering switching to another provider",
        "the promised callback never happened",
        "the prices went up but the service got worse",
        "I feel completely ignored as a customer",
    ),
}

_DETAILS = (
    "and I have already tried restarting everything",
    "even though I followed the guide on your website",
    "which is a problem because we launch next week",
    "and my manager is asking for an update every day",
    "since the middle of last month",
    "on both the web version and the mobile app",
    "although the order number is 58213",
    "and the chat bot could not help me at all",
    "after I changed my plan yesterday",
    "which never happened before the last update",
    "for all twelve people in our office",
    "while I was travelling abroad",
)

_CLOSINGS = (
    "Thanks.",
    "Please advise.",
    "Can you look into it?",
    "Any help is appreciated.",
    "Thank you in advance!",
    "Let me know what you need from me.",
    "Regards, Anna.",
    "Cheers.",
    "I need an answer today.",
    "What are my options?",
)

_SHORT = {  # what people actually type into a chat box
    "billing": ("refund please", "double charge?", "wrong invoice amount"),
    "shipping": ("where is my order", "parcel missing", "tracking not updating"),
    "technical": ("app keeps crashing", "error 500 again", "cannot upload files"),
    "account": ("forgot my password", "delete my account", "locked out"),
    "praise": ("thanks, that fixed it", "great service!", "love it"),
    "complaint": ("terrible experience", "still no answer", "very disappointed"),
}


def _sentence(rng: random.Random, label: str) -> str:
    if rng.random() < 0.12:
        return rng.choice(_SHORT[label])
    parts = []
    capital = True
    if rng.random() < 0.45:
        opener = rng.choice(_OPENERS)
        parts.append(opener)
        capital = opener.endswith((".", "!"))
    core = rng.choice(_CORES[label])
    for detail in rng.sample(_DETAILS, rng.choice((0, 0, 1, 1, 2, 3))):
        core += " " + detail
    if capital:
        core = core[0].upper() + core[1:]
    parts.append(core + rng.choice((".", ".", "!", "?")))
    if rng.random() < 0.3:  # a second request in the same message
        extra = rng.choice(_CORES[label])
        parts.append("Also, " + extra + ".")
    if rng.random() < 0.5:
        parts.append(rng.choice(_CLOSINGS))
    return " ".join(parts)


def generate(
    n: int, *, seed: int, count_tokens: Callable[[list[str]], list[int]] | None = None
) -> tuple[list[str], list[str]]:
    """`n` distinct (sentence, label) pairs, balanced over LABELS, reproducible from `seed`.

    With `count_tokens` (texts -> token counts, special tokens included), sentences outside
    MIN_TOKENS..MAX_TOKENS are drawn again, so every text fits the 5-64 token range.
    """
    rng = random.Random(seed)
    texts: list[str] = []
    labels: list[str] = []
    seen: set[str] = set()
    attempts = 0
    while len(texts) < n:
        attempts += 1
        if attempts > 100 * n:
            raise RuntimeError(f"could not draw {n} distinct sentences in range; got {len(texts)}")
        label = LABELS[len(texts) % len(LABELS)]
        text = _sentence(rng, label)
        if text in seen:
            continue
        if count_tokens is not None and not MIN_TOKENS <= count_tokens([text])[0] <= MAX_TOKENS:
            continue
        seen.add(text)
        texts.append(text)
        labels.append(label)
    order = list(range(n))
    rng.shuffle(order)
    return [texts[i] for i in order], [labels[i] for i in order]
