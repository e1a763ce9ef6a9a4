"""How file names appear in everything the client writes: one lossless, reversible escaping.

A file name is whatever bytes the file system holds: on Linux anything but "/" and NUL, so it
may be invalid UTF-8 (Python hands such a name over as a str with lone surrogates, PEP 383) or
hold line breaks, tabs and terminal control codes. None of that can go verbatim into a UTF-8
CSV, a JSON document, a Markdown table or a plot title, so every name the client writes is
`escape_name(name)`:

- each byte of the name that is not part of a printable UTF-8 character (bytes of invalid UTF-8,
  and the control characters U+0000-U+001F, U+007F-U+009F) is written `\\xHH`, two lowercase
  hex digits per byte;
- a backslash is written `\\\\` (two backslashes), so a name that really contains the text
  `\\xff` cannot be mistaken for one with the byte 0xff;
- every other character is written as it is ("/" separators, spaces, quotes, commas, "=",
  letters of any script).

Names without a backslash or such bytes, i.e. nearly all, are written unchanged. The escaped text
contains no other backslash sequences, so Python's bytes-literal rules read it back:
`unescape_name(text)` (or `os.fsdecode(codecs.escape_decode(text)[0])`), and in a shell
`printf '%b' 'caf\\xe9.png'` prints the original bytes.
"""

from __future__ import annotations

import os
import re

# Characters that force the slow path: a backslash, C0/C1 controls, DEL, and surrogates (the
# undecodable bytes of a surrogate-escaped name, or unpaired surrogates on Windows).
_SPECIAL = re.compile("[\\\\\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_ESCAPE = re.compile(r"\\(\\|x[0-9a-fA-F]{2})")


def needs_escape(name: str) -> bool:
    """False when `escape_name(name)` is `name` itself (also for many names joined: one test
    for a whole batch of rows)."""
    return _SPECIAL.search(name) is not None


def escape_name(name: str) -> str:
    """The documented text form of a file name (or a relative path): see the module docstring."""
    if _SPECIAL.search(name) is None:
        return name
    # Decoding the name's own bytes again turns every byte of invalid UTF-8 into one surrogate
    # U+DC80-U+DCFF, whatever the platform's file system encoding did with it.
    text = os.fsencode(name).decode("utf-8", "surrogateescape")
    parts = []
    for character in text:
        code = ord(character)
        if character == "\\":
            parts.append("\\\\")
        elif 0xDC80 <= code <= 0xDCFF:
            parts.append(f"\\x{code - 0xDC00:02x}")
        elif code < 0x20 or 0x7F <= code <= 0x9F:
            parts.extend(f"\\x{byte:02x}" for byte in character.encode("utf-8"))
        else:
            parts.append(character)
    return "".join(parts)


def name_bytes(text: str) -> bytes:
    """The original bytes of an escaped name. A backslash not followed by a backslash or by
    "x" and two hex digits is taken literally (files written before names were escaped)."""
    parts = []
    position = 0
    for match in _ESCAPE.finditer(text):
        parts.append(text[position : match.start()].encode("utf-8", "surrogateescape"))
        sequence = match.group(1)
        parts.append(b"\\" if sequence == "\\" else bytes([int(sequence[1:], 16)]))
        position = match.end()
    parts.append(text[position:].encode("utf-8", "surrogateescape"))
    return b"".join(parts)


def unescape_name(text: str) -> str:
    """The file name `escape_name` wrote as `text`, as Python's os functions take it."""
    if "\\" not in text:
        return text
    return os.fsdecode(name_bytes(text))


def name_order(name: str) -> bytes:
    """Sort key of a (real, unescaped) name: its bytes, the order of `LC_ALL=C ls`. For valid
    UTF-8 names this is also plain string order."""
    return os.fsencode(name)
