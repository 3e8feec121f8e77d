"""HTML mail body → readable plain text, in linear time, without exceptions.

A small hand-written scanner (not ``html.parser``) so that the cost is
provably linear: every ``<`` is resolved with one bounded ``find``/regex.

What it produces:

* paragraphs and headings separated by a blank line, ``<br>``/``<div>``/rows
  as line breaks, table cells separated by a space;
* ``- item`` / ``1. item`` for lists (nested lists indented by two spaces);
* links as ``text (url)`` — omitted when the text already is the URL/address,
  or the link is ``#…``/``javascript:``/``cid:``, or has no text;
* images as ``[alt]`` when they have alt text;
* ``<blockquote>`` content prefixed with ``> `` per level, so the quote
  trimmer can treat HTML replies like plain-text ones;
* no ``<script>``, ``<style>``, ``<head>``/``<title>``, comments (including
  Outlook's conditional comments) or ``display:none`` blocks (preheaders);
* entities decoded, whitespace collapsed, zero-width padding removed.
"""

from __future__ import annotations

import html
import re

__all__ = ["MAX_HTML_INPUT", "html_to_text"]

MAX_HTML_INPUT = 1_000_000
"""HTML beyond this many characters is not converted (the caller notes a defect)."""

_TAG_RE = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9:_-]*)([^>]*)>")
_ATTR_RE = re.compile(r"""([^\s=/>"']+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>"']+)))?""")
_HIDDEN_RE = re.compile(r"display\s*:\s*none", re.IGNORECASE)
_WS_RE = re.compile(r"\s+")
_NUMBER_RE = re.compile(r"[0-9]{1,6}")
_INVISIBLE_RE = re.compile("[\u200b\u200c\u2060\ufeff\u034f\u00ad\u180e]")
_BLANKS_RE = re.compile(r"\n{3,}")
_SKIP_CONTENT = frozenset({"script", "style", "title", "head", "xml", "template", "noembed"})
_SKIP_END = {name: re.compile(rf"</{name}\s*>", re.IGNORECASE) for name in _SKIP_CONTENT}
_PARAGRAPH = frozenset(
    {"p", "h1", "h2", "h3", "h4", "h5", "h6", "table", "dl", "address", "figure", "hr", "pre"}
)
_LINE = frozenset(
    {
        "div", "tr", "dt", "dd", "section", "article", "header", "footer", "center", "form",
        "fieldset", "figcaption", "main", "nav", "aside", "caption", "details", "summary",
    }
)  # fmt: skip
_VOID = frozenset({"br", "img", "hr", "meta", "link", "input", "wbr", "col", "area", "base"})
_HIDE_TAGS = frozenset({"div", "span", "table", "center", "font"})


def _attrs(raw: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for match in _ATTR_RE.finditer(raw):
        name = match.group(1).lower()
        if name not in found:
            value = match.group(2) or match.group(3) or match.group(4) or ""
            found[name] = html.unescape(value)
    return found


def _same_target(text: str, url: str) -> bool:
    def norm(value: str) -> str:
        value = value.strip().lower()
        for prefix in ("mailto:", "tel:", "https://", "http://", "www."):
            value = value.removeprefix(prefix)
        return value.rstrip("/")

    return norm(text) == norm(url)


class _Writer:
    def __init__(self, max_chars: int) -> None:
        self.lines: list[str] = []
        self.cur: list[str] = []
        self.blank = 0
        self.quote = 0
        self.size = 0
        self.max_chars = max_chars
        self.capture: list[str] | None = None

    @property
    def full(self) -> bool:
        return self.size > self.max_chars

    def _prefix(self) -> str:
        return "> " * self.quote

    def _open_line(self) -> None:
        if self.blank and self.lines and self.lines[-1].strip("> "):
            self.lines.extend([self._prefix().rstrip()] * min(self.blank, 1))
        self.blank = 0
        self.cur.append(self._prefix())

    def finish_line(self) -> None:
        if self.cur:
            line = "".join(self.cur).rstrip()
            self.lines.append(line)
            self.size += len(line) + 1
            self.cur = []

    def block(self, blank_lines: int) -> None:
        self.finish_line()
        self.blank = max(self.blank, blank_lines)

    def br(self) -> None:
        if self.cur:
            self.finish_line()
        elif self.lines:
            self.lines.append(self._prefix().rstrip())

    def write(self, text: str) -> None:
        if not text:
            return
        if not self.cur:
            text = text.lstrip()
            if not text:
                return
            self._open_line()
        elif text[0] == " " and self.cur[-1].endswith(" "):
            text = text.lstrip()
        self.cur.append(text)
        self.size += len(text)
        if self.capture is not None:
            self.capture.append(text)

    def write_pre(self, text: str) -> None:
        for index, part in enumerate(text.split("\n")):
            if index:
                if not self.cur:
                    self._open_line()
                self.finish_line()
            if part:
                if not self.cur:
                    self._open_line()
                self.cur.append(part.rstrip("\r"))
                self.size += len(part)

    def item(self, marker: str) -> None:
        self.finish_line()
        self._open_line()
        self.cur.append(marker)

    def result(self) -> str:
        self.finish_line()
        return _BLANKS_RE.sub("\n\n", "\n".join(self.lines)).strip("\n")


class _Converter:
    def __init__(self, max_chars: int, honor_hidden: bool) -> None:
        self.out = _Writer(max_chars)
        self.honor_hidden = honor_hidden
        self.hidden_tag: str | None = None
        self.hidden_depth = 0
        self.pre = 0
        self.lists: list[list[int]] = []  # [ordered (0/1), next number]
        self.link: str | None = None

    def text(self, raw: str) -> None:
        if self.hidden_tag is not None:
            return
        text = _INVISIBLE_RE.sub("", html.unescape(raw))
        if self.pre:
            self.out.write_pre(text.replace("\xa0", " "))
        else:
            self.out.write(_WS_RE.sub(" ", text))

    def end_link(self) -> None:
        href, self.link = self.link, None
        captured = self.out.capture
        self.out.capture = None
        if href is None or captured is None:
            return
        label = " ".join("".join(captured).split())
        url = " ".join(href.split())
        lowered = url.lower()
        if not label or not url or url.startswith("#"):
            return
        if lowered.startswith(("javascript:", "cid:", "data:")) or _same_target(label, url):
            return
        self.out.write(f" ({url})")

    def start(self, name: str, raw_attrs: str, self_closing: bool) -> None:  # noqa: PLR0912
        if self.hidden_tag is not None:
            if name == self.hidden_tag and not self_closing:
                self.hidden_depth += 1
            return
        if (
            self.honor_hidden
            and name in _HIDE_TAGS
            and not self_closing
            and _HIDDEN_RE.search(raw_attrs)
        ):
            self.hidden_tag, self.hidden_depth = name, 1
            return
        out = self.out
        if name == "br":
            out.br()
        elif name in _PARAGRAPH:
            out.block(1)
            self.pre += name == "pre"
        elif name in _LINE:
            out.block(0)
        elif name == "blockquote":
            out.block(1)
            out.quote += 1
        elif name in ("ul", "ol"):
            out.block(0 if self.lists else 1)
            start = _attrs(raw_attrs).get("start", "1") if name == "ol" else "1"
            number = int(start) if _NUMBER_RE.fullmatch(start) else 1
            self.lists.append([int(name == "ol"), number])
        elif name == "li":
            if not self.lists:
                self.lists.append([0, 1])
            ordered, number = self.lists[-1]
            self.lists[-1][1] += 1
            indent = "  " * (len(self.lists) - 1)
            out.item(f"{indent}{number}. " if ordered else f"{indent}- ")
        elif name in ("td", "th"):
            if out.cur and not out.cur[-1].endswith(" "):
                out.write(" ")
        elif name == "a":
            if self.link is not None:
                self.end_link()
            href = _attrs(raw_attrs).get("href")
            if href is not None:
                self.link = href
                out.capture = []
        elif name == "img":
            alt = " ".join(_attrs(raw_attrs).get("alt", "").split())
            if alt:
                out.write(f"[{alt}]")

    def end(self, name: str) -> None:
        if self.hidden_tag is not None:
            if name == self.hidden_tag:
                self.hidden_depth -= 1
                if self.hidden_depth <= 0:
                    self.hidden_tag = None
            return
        out = self.out
        if name in _PARAGRAPH:
            out.block(1)
            if name == "pre":
                self.pre = max(0, self.pre - 1)
        elif name in _LINE or name == "li":
            out.block(0)
        elif name == "blockquote":
            out.block(1)
            out.quote = max(0, out.quote - 1)
        elif name in ("ul", "ol"):
            if self.lists:
                self.lists.pop()
            out.block(0 if self.lists else 1)
        elif name == "a":
            self.end_link()

    def run(self, source: str) -> str:  # noqa: PLR0912 - one branch per construct
        size = len(source)
        last_gt = source.rfind(">")
        pos = 0
        while pos < size and not self.out.full:
            lt = source.find("<", pos)
            if lt < 0:
                self.text(source[pos:])
                break
            if lt > pos:
                self.text(source[pos:lt])
            if source.startswith("<!--", lt):
                end = source.find("-->", lt + 4)
                if end < 0:
                    break
                pos = end + 3
                continue
            if source[lt + 1 : lt + 2] in ("!", "?"):
                end = source.find(">", lt + 2)
                if end < 0:
                    break
                pos = end + 1
                continue
            match = _TAG_RE.match(source, lt) if lt < last_gt else None
            if match is None:
                self.text("<")
                pos = lt + 1
                continue
            pos = match.end()
            name = match.group(2).lower()
            attrs = match.group(3)
            if match.group(1):
                self.end(name)
                continue
            self.start(name, attrs, attrs.endswith("/") or name in _VOID)
            if name in _SKIP_CONTENT and not attrs.endswith("/"):
                closing = _SKIP_END[name].search(source, pos)
                if closing is not None:
                    pos = closing.end()
                elif name in ("script", "style"):
                    break  # unclosed: the rest is code, as in a browser
        if self.link is not None:
            self.end_link()
        return self.out.result()


def html_to_text(source: str, *, max_chars: int = 200_000) -> tuple[str, bool]:
    """Convert an HTML document to text; returns (text, truncated).

    Input beyond :data:`MAX_HTML_INPUT` characters and output beyond about
    *max_chars* characters are dropped, and *truncated* is then True.
    """
    truncated = len(source) > MAX_HTML_INPUT
    source = source[:MAX_HTML_INPUT]
    converter = _Converter(max_chars, honor_hidden=True)
    text = converter.run(source)
    if converter.hidden_tag is not None:
        # An unclosed display:none element swallowed the rest: do not trust it.
        converter = _Converter(max_chars, honor_hidden=False)
        text = converter.run(source)
    return text, truncated or converter.out.full
