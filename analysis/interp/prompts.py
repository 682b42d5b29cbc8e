"""The text sent to explainer and scorer models and the parsing of what comes back. Tokens are marked as delphi
marks them (``<<token>>``, consecutive marked tokens in one pair), so explanations and scores are comparable with
delphi's published numbers; the prompts' wording is ours."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import groupby

L, R = "<<", ">>"
EXPLANATION_MARK = "[EXPLANATION]:"

#: a chat prompt: [{"role": "system" | "user" | "assistant", "content": str}, ...]
Messages = list[dict[str, str]]


class MalformedAnswerError(ValueError):
    """A model's answer that cannot be read as asked (no list of 0/1 of the right length, no explanation)."""


def mark(tokens: Sequence[str], marked: Callable[[int], bool]) -> str:
    """The tokens joined, each run of consecutive marked tokens between ``<<`` and ``>>``."""
    out: list[str] = []
    for is_marked, group in groupby(range(len(tokens)), key=marked):
        text = "".join(tokens[i] for i in group)
        out.append(L + text + R if is_marked else text)
    return "".join(out)


def mark_active(tokens: Sequence[str], acts: Sequence[float], threshold: float) -> str:
    """Tokens whose activation exceeds ``threshold`` × the context's maximum marked (none when it never fires)."""
    top = max(acts, default=0.0)
    return mark(tokens, lambda i: top > 0 and acts[i] > threshold * top)


EXPLAIN_SYSTEM = """You study what a single feature of a language model responds to.
You will see text excerpts. In each, the tokens where the feature is active are marked like <<this>>; several \
marked tokens in a row are marked together, <<like this>>.{activations}

Find what the marked tokens have in common, and what in the surrounding text they depend on. Give one short, \
specific description (a few words, not a list, not the markers themselves). End with a line of the form
[EXPLANATION]: <your description>"""

ACTIVATIONS_NOTE = (" After each excerpt, the marked tokens are listed with the feature's strength on each, "
                    "from 0 to 10.")

#: two worked examples (with one, small models answer with its explanation whatever they are shown)
EXPLAIN_EXAMPLES = [
    ("Excerpt 1: the ocean is wid<<er>> than the river\n"
     "Excerpt 2: every year she gets tall<<er>>, and\n"
     "Excerpt 3: the hole was small<<er>> but deep<<er>> than",
     "[EXPLANATION]: the comparative suffix \"er\" of adjectives of size"),
    ("Excerpt 1: we flew to<< Paris>> in May\n"
     "Excerpt 2: the trains to<< Rome>> and<< Milan>> are late\n"
     "Excerpt 3: she was born in<< Lisbon>>, then",
     "[EXPLANATION]: names of European cities"),
]


def explain_messages(contexts: Sequence[tuple[Sequence[str], Sequence[float]]], *, threshold: float = 0.3,
                     show_activations: bool = False, scale: float | None = None) -> Messages:
    """The explainer's prompt for one latent: its contexts (tokens, activations) with active tokens marked; with
    ``show_activations`` each excerpt is followed by its marked tokens' activations on a 0–10 scale of ``scale``
    (default: the largest activation shown)."""
    top = scale or max((max(a, default=0.0) for _, a in contexts), default=1.0) or 1.0
    lines = []
    for i, (tokens, acts) in enumerate(contexts, start=1):
        lines.append(f"Excerpt {i}: {mark_active(tokens, acts, threshold)}")
        if show_activations:
            m = max(acts, default=0.0)
            shown = [f"({json.dumps(t)}, {round(10 * a / top)})" for t, a in zip(tokens, acts, strict=True)
                     if m > 0 and a > threshold * m]
            lines.append("Activations: " + ", ".join(shown))
    system = EXPLAIN_SYSTEM.format(activations=ACTIVATIONS_NOTE if show_activations else "")
    shots = [m for q, a in EXPLAIN_EXAMPLES for m in ({"role": "user", "content": q},
                                                     {"role": "assistant", "content": a})]
    return [{"role": "system", "content": system}, *shots, {"role": "user", "content": "\n".join(lines)}]


MAX_EXPLANATION = 400  #: characters kept of an explanation (it goes into every scorer prompt)


def parse_explanation(text: str) -> tuple[str, bool]:
    """(explanation, whether it was marked as asked): the text after the last ``[EXPLANATION]:``; an answer
    without the mark gives its last non-empty line (small models often forget the mark), flagged unmarked. An
    empty answer, or the mark with nothing after it (a model cut off by its token limit), is malformed."""
    if EXPLANATION_MARK in text:
        found = text.rsplit(EXPLANATION_MARK, 1)[1].strip().splitlines()
        if not found or not found[0].strip():
            raise MalformedAnswerError(f"nothing after {EXPLANATION_MARK} (cut off by --max-tokens?)")
        return found[0].strip()[:MAX_EXPLANATION], True
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise MalformedAnswerError("the explainer answered with empty text (cut off by --max-tokens?)")
    return lines[-1][:MAX_EXPLANATION], False


CLASSIFY_SYSTEM = {
    "detection": """You check descriptions of a language-model feature against text.
You will get the feature's description and numbered text examples. For each example in order, answer 1 if the \
feature as described is present in it, else 0. Answer with a Python list of 0s and 1s only, one per example, \
and nothing else.""",
    "fuzz": """You check descriptions of a language-model feature against text.
You will get the feature's description and numbered text examples in which some tokens are marked like <<this>>. \
For each example in order, answer 1 if every marked token is one the description fits, else 0. Answer with a \
Python list of 0s and 1s only, one per example, and nothing else.""",
}

CLASSIFY_EXAMPLE = {
    "detection": ("Feature: the word \"of\" before a capitalised name\n\n"
                  "Example 0: Chief of Staff Charlie said\nExample 1: three cups of flour and\n"
                  "Example 2: the Director of Public Prosecutions", "[1,0,1]"),
    "fuzz": ("Feature: the word \"of\" before a capitalised name\n\n"
             "Example 0: Chief<< of>> Staff Charlie said\nExample 1: three<< cups>> of flour and\n"
             "Example 2: the Director<< of>> Public Prosecutions", "[1,0,1]"),
}


def classify_messages(kind: str, explanation: str, texts: Sequence[str]) -> Messages:
    """A scorer's prompt: the explanation and a batch of examples, to be answered with one 0/1 per example."""
    example, answer = CLASSIFY_EXAMPLE[kind]
    body = "\n".join(f"Example {i}: {t}" for i, t in enumerate(texts))
    return [{"role": "system", "content": CLASSIFY_SYSTEM[kind]},
            {"role": "user", "content": example},
            {"role": "assistant", "content": answer},
            {"role": "user", "content": f"Feature: {explanation}\n\n{body}"}]


_LIST = re.compile(r"\[.*?\]", re.S)


def parse_predictions(text: str, n: int) -> list[bool]:
    """The first bracketed list in the answer as ``n`` booleans (delphi's reading: 1/0 or true/false)."""
    found = _LIST.search(text)
    if found is None:
        raise MalformedAnswerError(f"no list in the answer {text[:80]!r}")
    try:
        raw = json.loads(found.group(0).replace("True", "true").replace("False", "false"))
    except ValueError:
        raise MalformedAnswerError(f"the list {found.group(0)[:80]!r} is not a list of 0s and 1s") from None
    if not isinstance(raw, list) or len(raw) != n:
        raise MalformedAnswerError(f"{found.group(0)[:80]!r} does not have {n} answers, one per example")
    if any(v not in (0, 1) or isinstance(v, float) for v in raw):  # True/False are 1/0; "2", "yes", 0.2 are not
        raise MalformedAnswerError(f"{found.group(0)[:80]!r} holds something else than 0, 1, true or false")
    return [bool(v) for v in raw]


def parse_probabilities(logprobs: Sequence[dict] | None, n: int) -> list[float] | None:
    """Per example, P(1) / (P(0) + P(1)) from the top log-probabilities at each answer token that holds a 0 or a
    1 (delphi's reading of the same list; None when the model gave no log-probabilities or another count)."""
    if not logprobs:
        return None
    import math

    out = []
    try:
        for tok in logprobs:
            if "1" in tok["token"] or "0" in tok["token"]:
                lps = [(c["token"], float(c["logprob"])) for c in tok["top"]]
                if any(not (math.isfinite(v) and v <= 0) for _, v in lps):  # not a log-probability
                    return None
                p0 = sum(math.exp(v) for t, v in lps if "0" in t)
                p1 = sum(math.exp(v) for t, v in lps if "0" not in t and "1" in t)
                out.append(p1 / (p0 + p1) if p0 + p1 > 0 else 0.0)
    except (KeyError, TypeError, ValueError):
        return None
    return out if len(out) == n else None


@dataclass(frozen=True)
class Request:
    """What is asked of a model; its hash names the cached answer (same model, prompt and sampling: same key)."""

    client: str
    model: str
    messages: Messages
    max_tokens: int
    temperature: float
    logprobs: int = 0

    def key(self) -> str:
        blob = json.dumps([self.client, self.model, self.messages, self.max_tokens, self.temperature,
                           self.logprobs], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]
