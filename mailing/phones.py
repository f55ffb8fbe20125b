"""Phone numbers as people write them: one parser (Google's libphonenumber) for the client
form, the CSV import and the clients search.

Stored numbers are 11 digits starting with 7 (``rules.PHONE_REGEX``). People write
``+7 916 123-45-67``, ``8 (916) 123-45-67`` or ``9161234567``; ``normalise`` turns each of
these into ``79161234567``. The JSON API keeps its strict documented format and does not
call this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers

from mailing.rules import PHONE_LENGTH, PHONE_REGEX

REGION = "RU"
COUNTRY_CODE = 7
NATIONAL_LENGTH = PHONE_LENGTH - 1
# "8 (916", "8-916", "8(916": the national trunk prefix 8, written as such.
_TRUNK_PREFIX = re.compile(r"^\s*8\s*[\s(\-.]")


def normalise(text: str) -> str:
    """The stored form of a Russian number written in any common notation; anything else is
    returned stripped, for the services' check to word what is wrong with it."""
    text = text.strip()
    if re.fullmatch(PHONE_REGEX, text):
        return text  # already so (most rows of a file): no need to parse
    try:
        number = phonenumbers.parse(text, REGION)
    except phonenumbers.NumberParseException:
        return text
    national = str(number.national_number)
    if (
        number.country_code != COUNTRY_CODE
        or len(national) != NATIONAL_LENGTH
        or not phonenumbers.is_possible_number(number)
    ):
        return text
    return f"{COUNTRY_CODE}{national}"


@dataclass(frozen=True)
class PhoneQuery:
    """What a search box's text asks of the stored phones: a part of them (``contains``)
    or their beginning (``startswith``); the digits are in the stored notation."""

    digits: str
    lookup: str  # "contains" | "startswith" | "exact"


def search_query(text: str) -> PhoneQuery | None:
    """How to find phones by what someone typed: a whole number in any notation finds that
    number, ``+7916`` and ``8 (916`` find the numbers beginning so, other digits (``916``,
    ``123-45``) are looked for anywhere in the number. None: no digits to look for."""
    digits = re.sub(r"\D", "", text)
    if not digits:
        return None
    if len(digits) == PHONE_LENGTH:
        # A whole number with its 7 or 8 (ten bare digits are found within, below).
        whole = normalise(text)
        if re.fullmatch(PHONE_REGEX, whole):
            return PhoneQuery(whole, "exact")
    if text.lstrip().startswith("+"):
        return PhoneQuery(digits, "startswith")
    if _TRUNK_PREFIX.match(text):
        return PhoneQuery(f"{COUNTRY_CODE}{digits[1:]}", "startswith")
    return PhoneQuery(digits, "contains")
