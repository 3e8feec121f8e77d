"""Trim the quoted history and signature off a reply, leaving what the customer wrote.

Rules, applied line by line from the top (after HTML conversion, where
``<blockquote>`` became ``> `` lines):

* lines starting with ``>`` are quoted history and dropped (inline replies
  keep the customer's own lines);
* an attribution line ("On Tue, … <x@example.com> wrote:", "Am … schrieb …:",
  "Le … a écrit :", "… написал:", Apple's "On 3 Nov 2026, at 10:12, … wrote:",
  Thunderbird's "On 11/3/26 10:12, … wrote:", possibly wrapped over up to
  three lines) is dropped when a ``>`` block follows it; when no ``>`` block
  follows (HTML mail whose quote is not marked up) everything from it on is
  cut — but only for the strict forms that contain a date or an address;
* Outlook separators ("-----Original Message-----" and its German, French,
  Russian… forms) and Outlook header blocks ("From:" followed by
  "Sent:/Date:" and "To:/Subject:" within a few lines, also localised) cut
  everything from there on, together with a "_____" rule just above;
* a signature separator line ("-- " or "--") cuts everything below it.

Forwarded messages ("---------- Forwarded message ---------", a header block
whose subject starts with FW:/Fwd:/WG:/TR:…) are *kept*: a customer who
forwards something to support wants the agent to read it.

If trimming leaves nothing, the full text is returned.
"""

from __future__ import annotations

import re

__all__ = ["visible_text"]

_SIG_RE = re.compile(r"^-- ?$")
_ORIGINAL_RE = re.compile(
    r"^-{2,}\s*(?:original message|original nachricht|ursprüngliche nachricht"
    r"|message d['’]origine|исходное сообщение|oorspronkelijk bericht|messaggio originale"
    r"|mensaje original|mensagem original|originalmeddelande|alkuperäinen viesti"
    r"|wiadomość oryginalna|původní zpráva)\s*-{2,}$",
    re.IGNORECASE,
)
_RULE_RE = re.compile(r"^[_\-=]{8,}$")
_FORWARD_RE = re.compile(
    r"forwarded message|begin forwarded message|weitergeleitete nachricht|message transféré"
    r"|пересылаемое сообщение|mensaje reenviado|messaggio inoltrato|doorgestuurd bericht",
    re.IGNORECASE,
)
_FIELD = r"^\*?\s*(?:{})\s*\*?\s*:"
_HDR_FROM_RE = re.compile(
    _FIELD.format("from|von|de|van|da|od|från|fra|от|差出人|发件人|寄件者"), re.IGNORECASE
)
_HDR_DATE_RE = re.compile(
    _FIELD.format(
        "sent|date|gesendet|datum|envoyé|date d['’]envoi|verzonden|inviato|data|enviado|enviada"
        "|fecha|skickat|sendt|отправлено|дата|送信日時|发送时间|日期"
    ),
    re.IGNORECASE,
)
_HDR_TO_RE = re.compile(
    _FIELD.format(
        "to|subject|an|betreff|à|a|objet|aan|onderwerp|oggetto|para|asunto|till|ämne|til"
        "|emne|кому|тема|宛先|件名|收件人|主题"
    ),
    re.IGNORECASE,
)
_FW_SUBJECT_RE = re.compile(
    _FIELD.format("subject|betreff|objet|тема|onderwerp|oggetto|asunto|assunto")
    + r"\s*(?:fw|fwd|wg|tr|rv|enc|vs|pd|пересл)\s*:",
    re.IGNORECASE,
)
_VERB = (
    r"(?:(?<!\w)(?:wrote|writes|escribió|ha scritto|schreef|escreveu|skrev|kirjoitti"
    r"|napisał\(a\)|napisała|napisał|написал\(а\)|написала|написал|пишет|писал|a écrit)"
    r"|写道|寫道)"
)
_LOOSE_RE = re.compile(rf"(?:{_VERB}|(?<!\w)schrieb)(?!\w)", re.IGNORECASE)
_STRICT_RE = re.compile(
    rf"(?:{_VERB}\s*[:：]|^am\s.+\sschrieb\s.+:|(?<!\w)schrieb(?:\s+am\s.+)?:)$",
    re.IGNORECASE,
)
_START_RE = re.compile(
    r"^(?:(?:on|am|le|el|il|em|op|den|dne|dnia|w|в)\s|\d|[^\W\d_]{2,4}\.?,\s)", re.IGNORECASE
)


def _quoted(line: str) -> bool:
    return line.lstrip().startswith(">")


def _next_is_quote(lines: list[str], start: int) -> bool:
    for line in lines[start : start + 4]:
        if line.strip():
            return _quoted(line)
    return False


def _attribution(lines: list[str], i: int) -> tuple[int, bool] | None:  # noqa: PLR0911
    """(last line, strict) of an attribution starting at line i, if there is one."""
    for k in range(3):
        j = i + k
        if j >= len(lines) or (k and (not lines[j].strip() or _quoted(lines[j]))):
            return None
        if k and not _START_RE.match(lines[i].strip()):
            return None
        window = " ".join(line.strip() for line in lines[i : j + 1])
        if len(window) > 600:
            return None
        if not window.endswith((":", "：")):
            continue
        has_mark = "@" in window or any(ch.isdigit() for ch in window)
        if has_mark and _STRICT_RE.search(window):
            return j, True
        if _LOOSE_RE.search(window) or "@" in window:
            return j, False
        return None
    return None


def _header_block(lines: list[str], i: int) -> bool:
    if not _HDR_FROM_RE.match(lines[i].strip()):
        return False
    following = [line.strip() for line in lines[i + 1 : i + 8] if line.strip()][:5]
    if not any(_HDR_DATE_RE.match(line) for line in following):
        return False
    if not any(_HDR_TO_RE.match(line) for line in following):
        return False
    if any(_FW_SUBJECT_RE.match(line) for line in following):
        return False
    before = [line for line in lines[max(0, i - 4) : i] if line.strip()]
    return not any(_FORWARD_RE.search(line) for line in before)


def _rule_above(lines: list[str], i: int) -> int:
    j = i - 1
    while j >= 0 and not lines[j].strip():
        j -= 1
    if j >= 0 and (_RULE_RE.match(lines[j].strip()) or _ORIGINAL_RE.match(lines[j].strip())):
        return j
    return i


def visible_text(text: str) -> str:
    """The part of *text* the sender actually wrote (see module docstring)."""
    lines = text.split("\n")
    cut = len(lines)
    dropped: set[int] = set()
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if not stripped or _quoted(line):
            i += 1
            continue
        if _SIG_RE.match(line.rstrip("\r")) or _ORIGINAL_RE.match(stripped):
            cut = i
            break
        if _header_block(lines, i):
            cut = _rule_above(lines, i)
            break
        found = _attribution(lines, i) if len(stripped) < 600 else None
        if found is not None:
            end, strict = found
            if _next_is_quote(lines, end + 1):
                dropped.update(range(i, end + 1))
                i = end + 1
                continue
            if strict:
                cut = i
                break
        i += 1
    kept: list[str] = []
    for index, line in enumerate(lines[:cut]):
        if index in dropped or _quoted(line):
            continue
        if not line.strip() and (not kept or not kept[-1]):
            continue
        kept.append(line.rstrip())
    result = "\n".join(kept).strip()
    return result or text.strip()
