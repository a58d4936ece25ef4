"""People's names: one rule wherever a name enters (enroll's folder names, ``gallery add -p``, ``gallery
rename``, ``people label``), and safe file names derived from any name a gallery may hold.

A name is Unicode NFC (``José`` typed with a combining accent and with a precomposed one is one person),
stripped, at most ``MAX_LENGTH`` characters, without control, format (zero-width) or path characters,
not ``.``/``..``, and not what results call strangers (``unknown``, ``unknown-N``). Names that differ
only by case are one person to a reader: ``case_clash`` finds them so the caller can refuse. numpy-free.
"""

from __future__ import annotations

import re
import unicodedata

from .errors import GalleryError

UNKNOWN = "unknown"  # results' name for a face nobody matched (gallery.UNKNOWN is the same)
MAX_LENGTH = 100  # a name is one line of a table, an S3 key part and a file name part
_STRANGER = re.compile(rf"{UNKNOWN}(-\d+)?", re.IGNORECASE)  # a stranger's name in results and timelines
_PATH = frozenset("/\\")
_UNSAFE_IN_FILE = re.compile(r"[^\w.\-]+")  # what a derived file name keeps of a name (\w is Unicode-aware)


def plural(count: int, noun: str, many: str | None = None) -> str:
    """``1 photo``, ``2 photos`` (``many``: an irregular plural, ``1 person``/``2 people``)."""
    return f"{count} {noun if count == 1 else many or noun + 's'}"


def is_stranger(label: str) -> bool:
    """``unknown`` or ``unknown-N``: what results call faces nobody matched."""
    return _STRANGER.fullmatch(label.strip()) is not None


def person_name(name: str) -> str:
    """``name`` as stored: NFC, surrounding whitespace removed; a GalleryError saying what is wrong otherwise."""
    clean = unicodedata.normalize("NFC", str(name)).strip()
    if not clean:
        raise GalleryError(f"a person's name cannot be empty or only whitespace (got {name!r})")
    bad = sorted({c for c in clean if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")}, key=ord)
    if bad:
        shown = ", ".join(f"U+{ord(c):04X}" for c in bad)
        raise GalleryError(f"a person's name cannot hold control or invisible characters such as newlines or zero-width spaces "
                           f"(got {name!r}: {shown})")  # fmt: skip
    if any(c in _PATH for c in clean) or clean in (".", ".."):
        raise GalleryError(f"a person's name cannot hold / or \\ or be . or .. (got {name!r}): it names files and keys")
    if len(clean) > MAX_LENGTH:
        raise GalleryError(f"a person's name is at most {MAX_LENGTH} characters (got {len(clean)}: {clean[:40]!r}...)")
    if is_stranger(clean):
        raise GalleryError(f"{clean!r} cannot be a person's name: results call faces nobody matched "
                           f"{UNKNOWN!r} and number strangers {UNKNOWN}-1, {UNKNOWN}-2...")  # fmt: skip
    return clean


def lookup_name(name: str) -> str:
    """A name as typed to find someone (NFC, stripped): no validation, so a legacy name is still found."""
    return unicodedata.normalize("NFC", str(name)).strip()


def case_clash(name: str, people: list[str]) -> str | None:
    """The enrolled person whose name differs from ``name`` only by case (None when there is none, or
    when ``name`` is enrolled as it is)."""
    if name in people:
        return None
    folded = name.casefold()
    return next((p for p in people if p.casefold() == folded), None)


def file_part(name: str) -> str:
    """A piece of a file name or S3 key for any name (letters, digits, ``_.-``; other runs become ``_``):
    a name from an old gallery or a course data.pt may hold anything."""
    safe = _UNSAFE_IN_FILE.sub("_", unicodedata.normalize("NFC", name)).strip("._") or "person"
    return safe[:MAX_LENGTH]


def unique_file(stem: str, suffix: str, taken: set[str]) -> str:
    """``stem + suffix``, or with ``-2``, ``-3``... when ``taken`` has it (two names may give one
    ``file_part``); the name returned is added to ``taken``."""
    name, n = stem + suffix, 1
    while name in taken:
        n += 1
        name = f"{stem}-{n}{suffix}"
    taken.add(name)
    return name
