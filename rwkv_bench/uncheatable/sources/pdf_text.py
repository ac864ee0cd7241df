"""A paper's body text from its PDF, read with pypdfium2 (PDFium; Apache-2.0/BSD): lines in reading order,
blocks of lines, hyphenation undone, page numbers and the rotated arXiv stamp dropped, front matter cut."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

_HEADING = re.compile(r"^(?:\d+\.?|[IVX]+\.)?\s*(?:Introduction|INTRODUCTION)\s*$")


@dataclass
class Line:
    """One line of text on a page; baselines in PDF units, y upwards."""
    text: str
    first_baseline: float
    last_baseline: float
    size: float


def page_lines(page) -> list[Line]:
    """The horizontal lines of a PDFium page in content order (for TeX PDFs the reading order, columns
    included). Rotated text (the arXiv stamp in the margin) and text outside the page are dropped."""
    import ctypes

    import pypdfium2.raw as pdfium_c

    textpage = page.get_textpage()
    width, height = page.get_size()

    def baseline(index: int) -> float:
        x, y = ctypes.c_double(), ctypes.c_double()
        pdfium_c.FPDFText_GetCharOrigin(textpage, index, x, y)
        return y.value

    def make_line(chars: list[tuple[str, int]]) -> Line | None:
        while chars and chars[-1][0].isspace():
            chars.pop()
        while chars and chars[0][0].isspace():
            chars.pop(0)
        if not chars:
            return None
        first, last = chars[0][1], chars[-1][1]
        angle = pdfium_c.FPDFText_GetCharAngle(textpage, first)
        left, bottom, right, top = textpage.get_charbox(first)
        if abs(math.sin(angle)) > 1e-3 or math.cos(angle) < 0 or right < 0 or left > width or top < 0 \
                or bottom > height:
            return None
        return Line(" ".join("".join(ch for ch, _ in chars).split()), baseline(first), baseline(last),
                    pdfium_c.FPDFText_GetFontSize(textpage, first))

    lines: list[Line] = []
    chars: list[tuple[str, int]] = []
    count = textpage.count_chars()
    for i in range(count + 1):
        code = pdfium_c.FPDFText_GetUnicode(textpage, i) if i < count else ord("\n")
        if code in (ord("\n"), ord("\r")):
            pass
        elif code < 32 or code == 0xFFFE:
            # PDFium joins a line that ends with a hyphen to the next and marks the hyphen (code 2): keep
            # the hyphen and the line break, join_lines decides; other control codes are dropped
            if not pdfium_c.FPDFText_IsHyphen(textpage, i):
                continue
            chars.append(("-", i))
        else:
            chars.append((chr(code), i))
            continue
        if (line := make_line(chars)) is not None:
            lines.append(line)
        chars = []
    return lines


def blocks_of(lines: list[Line]) -> list[list[Line]]:
    """Consecutive lines of one font size, each just below the previous one, make a block (a heading,
    a paragraph); a larger gap, a new size or a jump up (a new column) starts the next."""
    blocks: list[list[Line]] = []
    for line in lines:
        if blocks:
            prev = blocks[-1][-1]
            gap = prev.last_baseline - line.first_baseline
            if abs(prev.size - line.size) < 0.5 and 0 < gap <= 1.6 * line.size:
                blocks[-1].append(line)
                continue
        blocks.append([line])
    return blocks


def pdf_text(data: bytes, max_chars: int) -> str:
    """Reading-order text of a PDF, one block a line: lines of a block joined with hyphenation undone,
    page-number blocks dropped. Stops after the page where `max_chars` is reached. A PDF PDFium cannot
    open raises pypdfium2.PdfiumError."""
    import pypdfium2 as pdfium

    out: list[str] = []
    total = 0
    doc = pdfium.PdfDocument(data)
    try:
        for index in range(len(doc)):
            for block in blocks_of(page_lines(doc[index])):
                text = join_lines([line.text for line in block])
                if text and not text.isdigit():
                    out.append(text)
                    total += len(text) + 1
            if total > max_chars:
                break
    finally:
        doc.close()
    return "\n".join(out)


def join_lines(lines: list[str]) -> str:
    """Lines of a block as one: 'hyphen-' + 'ation' -> 'hyphenation', 'Long-' + 'Context' ->
    'Long-Context', otherwise a space."""
    out = ""
    for line in lines:
        if out.endswith("-") and len(out) > 1 and out[-2].isalnum():
            out = (out[:-1] if out[-2].isalpha() and line[:1].islower() else out) + line
        else:
            out = f"{out} {line}" if out else line
    return out


def body_from_pdf_text(text: str, abstract: str) -> str:
    """The body after the front matter: from an 'Introduction' heading if there is one, else after the
    abstract's last words if found, else the whole text (title and authors included)."""
    blocks = text.split("\n")
    for i, block in enumerate(blocks):
        if _HEADING.match(block):
            return "\n".join(blocks[i:])
    tail = " ".join(abstract.split())[-60:]
    flat = " ".join(text.split())
    if len(tail) >= 20 and (pos := flat.find(tail)) >= 0:
        return flat[pos + len(tail):].strip()
    return text


