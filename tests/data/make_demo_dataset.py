"""Regenerate aiaas/data/demo/support_intents.csv (deterministic; run by hand, not by pytest).

    python tests/data/make_demo_dataset.py

Customer-support messages for six intents, built from hand-written templates and
slot fillers, then roughened with the noise real exports have (odd casing, extra
whitespace, newlines inside quoted cells, duplicates, empty labels, one message
labelled two ways) so the cleaning report has something to show.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[2] / "aiaas" / "data" / "demo" / "support_intents.csv"
PER_INTENT = 66
SEED = 7

SLOTS: dict[str, list[str]] = {
    "product": [
        "headphones",
        "blender",
        "running shoes",
        "phone case",
        "coffee maker",
        "desk lamp",
        "backpack",
        "keyboard",
        "winter jacket",
        "yoga mat",
        "water bottle",
        "smart watch",
        "office chair",
        "air fryer",
    ],
    "amount": ["$9.99", "$14.50", "$29", "$49.99", "$120", "$15", "$79.95", "$199"],
    "plan": [
        "premium plan",
        "family plan",
        "annual membership",
        "pro subscription",
        "basic plan",
        "monthly plan",
        "student plan",
    ],
    "days": ["three days", "a week", "ten days", "two weeks", "five days", "over a month"],
    "device": ["iPhone", "Android phone", "laptop", "iPad", "Windows PC", "Mac", "Chromebook"],
    "carrier": ["UPS", "FedEx", "DHL", "the courier", "the post office", "USPS"],
    "feature": [
        "checkout page",
        "mobile app",
        "dashboard",
        "search bar",
        "video player",
        "settings page",
        "notification centre",
        "export button",
    ],
    "error": [
        "error 500",
        "a blank white screen",
        "an 'unexpected error' message",
        "a spinning wheel",
        "error code E42",
        "a timeout message",
    ],
    "month": [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ],
    "city": ["Berlin", "Austin", "Toronto", "Leeds", "Lyon", "Melbourne", "Osaka", "Denver"],
}

TEMPLATES: dict[str, list[str]] = {
    "billing": [
        "I was charged twice for my {plan} this month",
        "Why is there a charge of {amount} on my card?",
        "My invoice for {month} shows the wrong amount",
        "Can you send me a copy of my {month} invoice?",
        "I need to update the credit card on file for my {plan}",
        "The price on my bill went up to {amount} without notice",
        "How do I change my billing address?",
        "My payment of {amount} was declined but my bank says everything is fine",
        "I see two pending charges of {amount} on my statement",
        "Please add our VAT number to the invoices for the {plan}",
        "Is the {plan} billed monthly or yearly?",
        "I was billed {amount} for the {plan} but I am on the free tier",
        "Where can I download receipts for my payments?",
        "The tax on my last invoice looks incorrect",
        "Can I pay by bank transfer instead of card?",
    ],
    "refund": [
        "I want a refund for the {product} I returned {days} ago",
        "When will I get my money back for the {product}?",
        "The {product} arrived broken, I would like a full refund",
        "Please refund the {amount} you charged me by mistake",
        "I sent the {product} back but the refund has not arrived",
        "How long does a refund take to reach my card?",
        "The {product} is not what I ordered, can I get a refund?",
        "I was promised a refund of {amount} {days} ago and still nothing",
        "Can I get my money back if I am not happy with the {product}?",
        "Your return label says refund issued but my account shows nothing",
        "I'd like to return the {product} for a refund, it doesn't fit",
        "The refund for my {product} was only partial, I paid {amount}",
        "Please process my refund, the {product} stopped working after {days}",
        "What is your refund policy for the {product}?",
    ],
    "shipping": [
        "Where is my package? I ordered the {product} {days} ago",
        "My {product} still hasn't shipped",
        "The tracking number for my {product} doesn't work",
        "{carrier} says my parcel was delivered but I never got it",
        "Can you ship the {product} to {city}?",
        "How much is express delivery to {city}?",
        "My order is stuck in transit with {carrier} for {days}",
        "I need to change the delivery address for my {product}",
        "Do you offer free shipping on orders over {amount}?",
        "The delivery date for my {product} keeps getting pushed back",
        "The parcel with my {product} was left at the wrong door",
        "When will my {product} be dispatched?",
        "Can I pick up my {product} instead of having it delivered?",
        "{carrier} lost my package with the {product}",
    ],
    "account_access": [
        "I can't log in to my account",
        "I forgot my password and the reset email never arrives",
        "My account is locked after too many login attempts",
        "The two-factor code is not accepted on my {device}",
        "How do I reset my password from my {device}?",
        "I lost my phone and can't get the login verification code",
        "Someone changed the email on my account, I can't sign in",
        "The sign-in page keeps saying my password is wrong",
        "I'd like to change the email address I use to log in",
        "My username isn't recognised when I try to sign in on my {device}",
        "The password reset link says it has expired",
        "Please unlock my account, I am the owner",
        "I get logged out every time I open the app on my {device}",
        "How can I recover access to my old account?",
    ],
    "technical_issue": [
        "The {feature} shows {error} on my {device}",
        "The app crashes every time I open the {feature}",
        "The {feature} is extremely slow today",
        "I get {error} when I try to save my changes",
        "The {feature} won't load on my {device}",
        "Uploading a file fails with {error}",
        "The {feature} freezes after the latest update",
        "Notifications stopped working on my {device}",
        "The {feature} looks broken, buttons overlap each other",
        "Videos don't play, I only see {error}",
        "Since yesterday the {feature} gives me {error}",
        "The app drains the battery on my {device}",
        "Sync between my {device} and the web version is not working",
        "Clicking the {feature} does nothing at all",
    ],
    "cancel_subscription": [
        "Please cancel my {plan}",
        "How do I cancel my {plan} before the next renewal?",
        "I want to stop my {plan} from renewing in {month}",
        "Cancel my membership effective immediately",
        "I no longer need the {plan}, please end it",
        "Can I cancel the {plan} and keep access until {month}?",
        "Turn off auto-renew for my {plan}",
        "I'd like to close my subscription, it's too expensive",
        "How do I end my free trial so I am not charged?",
        "Please don't renew my {plan} next month",
        "I want to downgrade and then cancel the {plan}",
        "Stop my subscription, I am moving to another service",
        "Where is the button to cancel the {plan}?",
        "I'm cancelling, please confirm my {plan} is terminated",
    ],
}

OPENERS = ["", "", "", "Hi, ", "Hello, ", "Hey there. ", "Good morning, ", "Hi team, ", "Urgent: "]
CLOSERS = [
    "",
    "",
    "",
    " Thanks.",
    " Please help.",
    " Thank you!",
    " Any update?",
    " Thanks in advance.",
    " This is frustrating.",
]


def _fill(template: str, rng: random.Random) -> str:
    text = template
    for slot, values in SLOTS.items():
        while "{" + slot + "}" in text:
            text = text.replace("{" + slot + "}", rng.choice(values), 1)
    return text


def _message(template: str, rng: random.Random) -> str:
    body = _fill(template, rng)
    body = body[0].upper() + body[1:]
    opener = rng.choice(OPENERS)
    # "Hi, where is..." but never "Hi, uPS says..." or "Hi, i can't...".
    if opener and not template.startswith("{") and not body.startswith(("I ", "I'")):
        body = body[0].lower() + body[1:]
    closer = rng.choice(CLOSERS)
    if closer and body[-1] not in ".?!":
        body += "."
    return opener + body + closer


def _roughen(text: str, rng: random.Random) -> str:
    """The noise of real exports: casing, doubled or trailing whitespace, tabs."""
    roll = rng.random()
    if roll < 0.06:
        return text.lower()
    if roll < 0.09:
        return text.upper()
    if roll < 0.14:
        return "  " + text.replace(" ", "  ", 2) + " "
    if roll < 0.16:
        return text.replace(" ", "\t", 1)
    return text


def build_rows() -> list[tuple[str, str]]:
    rng = random.Random(SEED)
    rows: list[tuple[str, str]] = []
    for intent, templates in TEMPLATES.items():
        seen: set[str] = set()
        while len(seen) < PER_INTENT:
            text = _message(rng.choice(templates), rng)
            if text not in seen:
                seen.add(text)
                rows.append((_roughen(text, rng), intent))
    rng.shuffle(rows)
    # Multi-line cells, as written when a message is pasted from an email.
    rows[10] = ("Hello,\nmy parcel never arrived and tracking shows nothing.\nCan you check?", "shipping")
    rows[200] = ("I cancelled last week\r\nbut I was charged again for the premium plan", "billing")
    # Labels with stray whitespace, and rows whose label was never filled in.
    rows[30] = (rows[30][0], rows[30][1] + " ")
    rows[31] = (rows[31][0], " " + rows[31][1])
    for i in (50, 150, 250):
        rows[i] = (rows[i][0], "")
    # One message two annotators disagreed on: cleaning drops both copies.
    conflict = "I want to cancel my plan and get my money back"
    rows.insert(120, (conflict, "cancel_subscription"))
    rows.insert(300, (conflict, "refund"))
    # Exact duplicates, as left by a merged export.
    for i in (5, 77, 140, 222, 333):
        rows.insert(i + 3, rows[i])
    return rows


def main() -> None:
    rows = build_rows()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with open(OUT, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    print(f"wrote {len(rows)} rows to {OUT}")


if __name__ == "__main__":
    main()
