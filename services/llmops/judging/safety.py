"""Safety detectors: personal data (PII) and prompt-injection attempts, reported as spans.

These run on every prompt and answer, so they are regular expressions plus checksums, not a
model. Each finding carries its character span (to highlight or redact it) and a masked form of
the matched text that is safe to write to logs and traces: a detector that copied the value it
found into a trace would itself be a leak.

Precision matters as much as recall here: a chatbot sees many order numbers, dates, prices and
version strings, and a flag on each of them would be ignored. Hence the checksums (Luhn for
cards, ISO 13616 mod-97 for IBANs, a real calendar date for Korean RRNs), the excluded number
ranges of SSNs and NINOs, and a minimum of nine digits for a phone number.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import asdict, dataclass
from typing import Callable, Iterator

# Masked views of injection phrases are cut to this length; the phrase is not secret, only long.
_INJECTION_EXCERPT = 80


@dataclass(frozen=True)
class Finding:
    """One detected span of ``text``: ``text[start:end]`` is what matched."""
    kind: str
    start: int
    end: int
    masked: str

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# checksums


def luhn_ok(digits: str) -> bool:
    """The Luhn (mod 10) check of payment card numbers; spaces and dashes are ignored.

    Every issued card number passes it and a random number passes one time in ten, which is
    what separates a card from an order number of the same length.
    """
    digits = re.sub(r"[ -]", "", digits)
    if not digits.isdigit() or not digits.isascii():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


_IBAN_SHAPE = re.compile(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}")


def iban_ok(s: str) -> bool:
    """ISO 13616 / ISO 7064 mod-97-10 check of an IBAN, spaces allowed.

    The first four characters move to the end, letters become 10..35, and the resulting number
    must leave remainder 1 modulo 97. A single wrong or swapped character always fails.
    """
    compact = s.replace(" ", "").upper()
    if not _IBAN_SHAPE.fullmatch(compact):
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def _date_ok(yymmdd: str, gender_digit: str) -> bool:
    """A Korean RRN's birth date: the gender digit gives the century (1, 2: 1900s; 3, 4: 2000s)."""
    century = 1900 if gender_digit in "12" else 2000
    try:
        dt.date(century + int(yymmdd[:2]), int(yymmdd[2:4]), int(yymmdd[4:6]))
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# PII


def _mask(value: str, head: int = 0, tail: int = 0) -> str:
    """``value`` with each letter and digit replaced by ``*`` except the first ``head`` and the
    last ``tail`` of them; separators stay, so the masked form keeps the value's shape."""
    positions = [i for i, ch in enumerate(value) if ch.isalnum()]
    keep = set(positions[:head]) | set(positions[len(positions) - tail:] if tail else [])
    return "".join(ch if (i in keep or not ch.isalnum()) else "*" for i, ch in enumerate(value))


def _mask_email(value: str) -> str:
    local, _, domain = value.partition("@")
    return f"{local[0]}***@{domain}"


def _digit_count(value: str) -> int:
    return sum(ch.isdigit() for ch in value)


def _card_ok(value: str) -> bool:
    return 13 <= _digit_count(value) <= 19 and luhn_ok(value)


def _phone_ok(value: str) -> bool:
    # E.164 allows at most 15 digits; fewer than 9 are years, prices, extensions, short codes
    return 9 <= _digit_count(value) <= 15


def _rrn_ok(value: str) -> bool:
    return len(value) == 14 and _date_ok(value[:6], value[7])


@dataclass(frozen=True)
class _PiiDetector:
    kind: str
    pattern: re.Pattern[str]
    accept: Callable[[str], bool]
    mask: Callable[[str], str]


# Ordered by the strength of the evidence: when two spans overlap, the earlier kind wins, so a
# card number (Luhn) is not also a phone number (digit count) and an IBAN (mod 97) is not a card.
_PII: tuple[_PiiDetector, ...] = (
    _PiiDetector(
        "iban",
        re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?:\ ?[A-Z0-9]{4}){2,7}(?:\ ?[A-Z0-9]{1,4})?(?![A-Za-z0-9])", re.A),
        iban_ok,
        lambda v: _mask(v, head=2, tail=4),
    ),
    _PiiDetector(
        "credit_card",
        re.compile(r"""(?<![\w-])(?:
              \d{13,19}                                         # contiguous
            | \d{4}([ -])\d{4}(?:\1\d{4}){1,2}(?:\1\d{1,4})?    # 4-4-4-4 (13 to 19 digits)
            | \d{4}([ -])\d{6}\2\d{4,5}                          # Amex 4-6-5, Diners 4-6-4
            )(?![\w-])""", re.X | re.A),
        _card_ok,
        lambda v: _mask(v, tail=4),
    ),
    _PiiDetector(
        "kr_rrn",
        re.compile(r"(?<![\d-])\d{6}-[1-4]\d{6}(?![\d-])", re.A),
        _rrn_ok,
        lambda v: _mask(v, head=2),
    ),
    _PiiDetector(
        "us_ssn",
        # area 000, 666 and 900-999, group 00 and serial 0000 are never issued
        re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])", re.A),
        lambda v: True,
        lambda v: _mask(v, tail=4),
    ),
    _PiiDetector(
        "uk_nino",
        # HMRC: first letter not D F I Q U V; second not D F I O Q U V; BG GB KN NK NT TN ZZ unused
        re.compile(r"""(?<![A-Za-z0-9])
            (?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]
            \ ?\d{2}\ ?\d{2}\ ?\d{2}\ ?[A-D]
            (?![A-Za-z0-9])""", re.X | re.I | re.A),
        lambda v: True,
        lambda v: _mask(v, head=1),
    ),
    _PiiDetector(
        "email",
        re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])", re.A),
        lambda v: True,
        _mask_email,
    ),
    _PiiDetector(
        "phone",
        re.compile(r"""(?<![\w+.-])(?:
              \+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}   # +44 20 7946 0958
            | (?:1[ .-])?\(?\d{3}\)?[ .-]?\d{3}[ .-]\d{4}                        # (555) 123-4567
            | \(?0\d{1,4}\)?[ .-]\d{3,4}[ .-]?\d{4}                              # 020 7946 0958, 010-1234-5678
            | 0[1-9](?:[ .-]\d{2}){4}                                            # 01 42 68 53 00
            )(?![\w-])""", re.X | re.A),
        _phone_ok,
        lambda v: _mask(v, tail=2),
    ),
)
_PRIORITY = {d.kind: rank for rank, d in enumerate(_PII)}


def _accepted_span(match: re.Match[str], accept: Callable[[str], bool]) -> tuple[int, int] | None:
    """The longest prefix of ``match`` that ``accept`` takes, cut only at a separator.

    Regexes cannot run a checksum while they backtrack, so a greedy match may take one group too
    many ("BE68 5390 0754 7034 2024" where 2024 is a year); shorter prefixes ending before a
    space, dash or dot are tried before giving up.
    """
    start, value = match.start(), match.group()
    ends = [len(value)] + [i for i in range(len(value) - 1, 0, -1) if value[i] in " -." and value[i - 1].isalnum()]
    for end in ends:
        if accept(value[:end]):
            return start, start + end
    return None


def _pii_candidates(text: str) -> Iterator[Finding]:
    for detector in _PII:
        for match in detector.pattern.finditer(text):
            span = _accepted_span(match, detector.accept)
            if span is not None:
                start, end = span
                yield Finding(detector.kind, start, end, detector.mask(text[start:end]))


def find_pii(text: str) -> list[Finding]:
    """Personal data in ``text``: emails, phone numbers, payment cards, US SSNs, UK National
    Insurance numbers, IBANs and Korean resident registration numbers, sorted by start.

    Where spans of two kinds overlap, only the kind with the stronger check is kept (see the
    order of ``_PII``).
    """
    kept: list[Finding] = []
    for finding in sorted(_pii_candidates(text), key=lambda f: (_PRIORITY[f.kind], f.start)):
        if all(finding.end <= k.start or finding.start >= k.end for k in kept):
            kept.append(finding)
    return sorted(kept, key=lambda f: f.start)


# ---------------------------------------------------------------------------------------------
# prompt injection

_NOT_NEGATED = r"(?<!n't\s)(?<!not\s)(?<!never\s)"
_EARLIER = r"(?:previous|prior|above|preceding|earlier|former|original|initial|system|developer)"
_RULES = (r"(?:instructions?|rules|directions|directives|guidelines|prompts?|commands|constraints"
          r"|restrictions|guardrails|programming|context)")
_SHELL = r"(?:bash|zsh|fish|sh|shell|powershell|cmd|the\s+terminal|linux|windows|macos)"
_NO_LIMITS = (r"(?:restrictions|limits|limitations|filters|rules|guidelines|censorship|ethics|morals"
              r"|ethical\s+\w+|moral\s+\w+|safety\s+\w+|boundaries)")
_CONTEXT_DATA = (r"(?:conversation|chat(?:\s+(?:history|log))?|message\s+history|previous\s+messages|transcript"
                 r"|system\s+prompt|(?:your\s+)?instructions|secrets|credentials|memory|context|inbox"
                 r"|(?:user|user's|users'|personal|customer|private)\s+(?:data|info(?:rmation)?|details)"
                 r"|everything\s+above|the\s+above)")

# One regex per kind, case-insensitive and tolerant of any run of whitespace (re.X: the layout
# below is not part of the pattern; a literal space or # is written \s or \#).
INJECTION_PATTERNS: dict[str, re.Pattern[str]] = {
    kind: re.compile(pattern, re.I | re.X)
    for kind, pattern in {
        "ignore_instructions": rf"""
              {_NOT_NEGATED}\b(?:ignore|disregard|forget|override|bypass)\s+
              (?:(?:all|any|every)\s+)?(?:of\s+)?
              (?:your\s+(?:{_EARLIER}\s+)* | (?:(?:the|these|those)\s+)?(?:{_EARLIER}\s+)+)
              {_RULES}\b
            | {_NOT_NEGATED}\b(?:ignore|disregard|forget)\s+(?:all\s+|any\s+)?(?:of\s+)?(?:the\s+)?
              (?:instructions?|rules|everything|anything)\s+
              (?:(?:said|written|stated)\s+)?(?:above|before\s+this|you\s+(?:were|have\s+been)\s+(?:given|told))
            | {_NOT_NEGATED}\b(?:ignore|disregard|forget)\s+(?:all\s+)?(?:of\s+)?the\s+above         # "ignore the above
              (?=\s*(?:$|[.,;:!]|and\b|instead\b|then\b))                                    #  and say ..."
            | \bignora(?:r)?\s+(?:todas\s+)?(?:las\s+)?instrucciones\s+(?:anteriores|previas)      # es
            | \b(?:ignorier\w*|vergiss|vergessen\s+sie)\s+(?:du\s+)?(?:alle\s+)?
              (?:vorherigen|bisherigen|obigen|vorigen)\s+(?:anweisungen|instruktionen|regeln|befehle)  # de
            | \b(?:ignore[rz]?|oublie[rz]?)\s+(?:toutes\s+)?(?:les\s+|tes\s+|vos\s+)?
              instructions\s+(?:précédentes|antérieures|ci-dessus)                                  # fr
            | (?:이전|앞선|앞의|위의|기존|지금까지의?)\s*(?:모든\s*)?(?:지시|지침|명령|규칙|프롬프트)
              (?:사항)?(?:들)?(?:을|를|은|는)?\s*(?:모두\s*|전부\s*)?(?:무시|잊)                          # ko
        """,
        "system_prompt_leak": rf"""
              \b(?:reveal|print|show|repeat|display|output|dump|leak|recite|disclose|share|tell|give
                  |spell\s+out|write\s+out|what\s+(?:is|are|was|were))\s+
              (?:me\s+|us\s+)?(?:back\s+)?(?:(?:all|exactly|verbatim)\s+)?(?:of\s+)?
              (?:
                  your\s+(?:(?:full|entire|complete|original|initial|hidden|secret|exact|system|custom)\s+)*
                  (?:system\s+prompt|system\s+message|prompt|instructions(?!\s+(?:for|on|about)\s))
                | the\s+(?:(?:full|entire|complete|original|initial|hidden|secret|exact)\s+)*
                  (?:system\s+(?:prompt|message|instructions)|(?:initial|hidden|secret|original)\s+(?:prompt|instructions))
                  (?!\s+(?:in|of|for|on)\s+{_SHELL}\b)
              )
            | \brepeat\s+(?:all\s+)?(?:of\s+)?(?:the\s+)?(?:words|text|everything|lines?)\s+(?:above|before\s+this)
            | \b(?:muestra|revela|imprime|dime)(?:me)?\s+(?:tu|el)\s+(?:prompt|mensaje)\s+(?:del|de)\s+sistema  # es
            | \b(?:zeig|gib|verrate|nenne)\w*\s+(?:mir\s+)?(?:deinen?|den)\s+(?:system-?prompt|systemanweisungen)  # de
            | 시스템\s*(?:프롬프트|지시|지침|메시지)(?:를|을)?\s*(?:그대로\s*|전부\s*|모두\s*)?
              (?:보여|알려|출력|말해|공개)                                                              # ko
        """,
        "role_override": rf"""
              \byou\s+are\s+(?:now\s+)?(?:DAN|STAN|DUDE|AIM)\b
            | \bdo\s+anything\s+now\b
            | \b(?:act|behave|respond|answer|roleplay|role-play)\s+(?:as|like)\s+
              (?:if\s+you\s+(?:were|are)\s+)?(?:[\w'-]+\s+){{0,6}}?
              (?:without|with\s+no|free\s+(?:of|from))\s+(?:any\s+)?{_NO_LIMITS}
            | \bpretend\s+(?:that\s+)?(?:you\s+(?:are|have)|to\s+be)\s+(?:an?\s+)?
              (?:unrestricted|unfiltered|uncensored|evil|jailbroken|no\s+(?:rules|restrictions|filters|limits))
            | \byou\s+(?:now\s+)?have\s+no\s+(?:rules|restrictions|limits|filters|guidelines)\b
            | \byou\s+(?:are|have\s+been)\s+(?:now\s+)?(?:freed|liberated|jailbroken|unchained|unrestricted|uncensored|unfiltered)\b
            | \b(?:no\s+longer|not)\s+bound\s+by\s+(?:any\s+|your\s+|the\s+)?
              (?:rules|guidelines|restrictions|policies|content\s+polic(?:y|ies)|openai|anthropic)
            | \b(?:chatgpt|gpt|ai|assistant|model|you|yourself|llm|claude|gemini)\s+(?:\w+\s+){{0,2}}?
              with\s+developer\s+mode\s+enabled
            | \bdeveloper\s+mode\s+output\b
            | \b(?:you\s+(?:are\s+)?(?:now\s+)?(?:in|entering|enter)|(?:enable|activate|switch\s+(?:on|to))\s+your)\s+
              developer\s+mode\b
            | \bjailbreak(?:ed)?\s+mode\b
            | \bjailbreak\s+(?:yourself|your\s+(?:rules|restrictions|filters|programming|guidelines))
        """,
        "delimiter_injection": r"""
              <\|\s*(?:im_start|im_end|im_sep|system|user|assistant|endoftext|eot_id
                     |start_header_id|end_header_id|begin_of_text)\s*\|>
            | \[/?INST\] | <</?SYS>>
            | (?<![\w\#])\#{2,}[\ \t]*(?:system|instructions?|assistant)[\ \t]*:
            | </s>(?=\s*(?:<s>|\[INST\]|<\||\#{2,}|(?:system|user|assistant|human)\s*:))
        """,
        "exfiltration": rf"""
              \b(?:send|post|upload|forward|transmit|exfiltrate|leak|e-?mail|submit|output|dump|copy)\b[^\n]{{0,80}}?
              \b{_CONTEXT_DATA}\b[^\n]{{0,60}}?
              \b(?:to|at|into|via)\s+(?:this\s+|the\s+following\s+)?(?:url|endpoint|webhook|server|link|address)?
              \s*:?\s*<?https?://[^\s)>\]]*
            | !\[[^\]\n]*\]\(\s*<?https?://[^)\s]*(?:\{{|\?[^)\s]*=)[^)]*\)    # markdown image carrying data
            | <img\s[^>]*src\s*=\s*["']?https?://[^"'\s>]*(?:\{{|\?[^"'\s>]*=)
        """,
    }.items()
}


def find_injection(text: str) -> list[Finding]:
    """Prompt-injection attempts in ``text``, one finding per matched phrase, sorted by start.

    ``masked`` holds the matched phrase itself (cut to 80 characters): an attack phrase is not
    personal data, and showing it is what makes a flag reviewable.
    """
    findings = [
        Finding(kind, m.start(), m.end(), _excerpt(m.group()))
        for kind, pattern in INJECTION_PATTERNS.items()
        for m in pattern.finditer(text)
    ]
    return sorted(findings, key=lambda f: (f.start, f.end))


def _excerpt(phrase: str) -> str:
    phrase = " ".join(phrase.split())
    return phrase if len(phrase) <= _INJECTION_EXCERPT else phrase[:_INJECTION_EXCERPT - 1] + "…"
