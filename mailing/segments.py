"""How many SMS parts a text is billed as: GSM-7 when the GSM 03.38 alphabet holds every
character, else UCS-2.

The alphabet is the ``gsm0338`` codec's (PyPI): it encodes the basic table in one septet
and the extension table (``[ ] { } € ^ ~ \\ |`` ...) as an escape plus one, so the length
of the encoding is the septet count. UCS-2 is counted in UTF-16 code units, so a character
outside the Basic Multilingual Plane (an emoji) takes two. Parts are filled greedily and a
character is never split across two parts (an escape pair, a surrogate pair), as phones
and operators join them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import gsm0338  # noqa: F401  (registers the "gsm03.38" codec)

from mailing.rules import GSM_MULTI_PART, GSM_SINGLE_PART, UCS2_MULTI_PART, UCS2_SINGLE_PART

GSM_CODEC = "gsm03.38"
GSM7 = "GSM-7"
UCS2 = "UCS-2"


@dataclass(frozen=True, slots=True)
class Segments:
    encoding: str
    characters: int  # septets for GSM-7, UTF-16 code units for UCS-2
    parts: int
    # The distinct characters that force UCS-2, in the order they first appear.
    forcing_ucs2: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        """The API's shape: encoding, characters, parts."""
        data = asdict(self)
        del data["forcing_ucs2"]
        return data


def _gsm_septets(character: str) -> int | None:
    try:
        return len(character.encode(GSM_CODEC))
    except UnicodeEncodeError:
        return None


def _ucs2_units(character: str) -> int:
    return len(character.encode("utf-16-le")) // 2


def _parts(costs: list[int], single: int, multi: int) -> int:
    total = sum(costs)
    if total == 0:
        return 0
    if total <= single:
        return 1
    parts, used = 1, 0
    for cost in costs:
        if used + cost > multi:
            parts, used = parts + 1, 0
        used += cost
    return parts


def count(text: str) -> Segments:
    """The encoding, length in its units and number of parts of one message."""
    septets = [_gsm_septets(character) for character in text]
    if all(cost is not None for cost in septets):
        costs = [cost for cost in septets if cost is not None]
        return Segments(GSM7, sum(costs), _parts(costs, GSM_SINGLE_PART, GSM_MULTI_PART))
    forcing = tuple(
        dict.fromkeys(ch for ch, cost in zip(text, septets, strict=True) if cost is None)
    )
    costs = [_ucs2_units(character) for character in text]
    return Segments(UCS2, sum(costs), _parts(costs, UCS2_SINGLE_PART, UCS2_MULTI_PART), forcing)
