"""Country (ISO 3166-1 alpha-2) and subdivision (ISO 3166-2) codes in rules, checked against
the maintained `pycountry` tables, with a "did you mean" for the usual mistakes:
`UK` -> GB, `GBR` / `826` / `Germany` -> the alpha-2 code, `UA43` / `ukr-43` -> UA-43.

A code the databases return but that no rule can name would silently refuse nobody (a rule
that lists `UK` never sees a client from GB), so unknown codes are errors, never warnings.
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass
from typing import Any

import pycountry

from .schema import Errors, Spec, _type_name
from .yamlpos import Where

# Codes GeoIP databases return that ISO 3166-1 does not assign (user-assigned range).
EXTRA_COUNTRIES = {"XK": "Kosovo"}
# ISO 3166 "exceptionally reserved" codes people write for a country that has another code.
RESERVED = {"UK": "GB", "EL": "GR"}


def country_name(code: str) -> str | None:
    """The name of a valid alpha-2 code, else None."""
    if code in EXTRA_COUNTRIES:
        return EXTRA_COUNTRIES[code]
    c = pycountry.countries.get(alpha_2=code) if len(code) == 2 else None
    return c.name if c is not None else None


def subdivision_name(code: str) -> str | None:
    """The name of a valid ISO 3166-2 code, else None."""
    s = pycountry.subdivisions.get(code=code) if "-" in code else None
    return s.name if s is not None else None


def _hint(code: str, name: str | None) -> str:
    return f' (did you mean "{code}", {name}?)' if name else f' (did you mean "{code}"?)'


def _country_guess(text: str) -> str | None:
    """The alpha-2 code a mistaken country token most likely means."""
    up = text.upper()
    if RESERVED.get(up):
        return RESERVED[up]
    try:
        return pycountry.countries.lookup(text).alpha_2  # alpha-3, numeric, names
    except LookupError:
        return None


@functools.lru_cache(maxsize=4096)
def check_country(text: str) -> tuple[str | None, str]:
    """(normalized code, '') or (None, error message)."""
    up = text.strip().upper()
    if country_name(up):
        return up, ""
    msg = f"{text!r} is not an ISO 3166-1 alpha-2 country code"
    if subdivision_name(up):
        return None, f"{text!r} is a subdivision (ISO 3166-2) code, not a country code"
    guess = _country_guess(text.strip())
    if guess:
        return None, msg + _hint(guess, country_name(guess))
    historic = pycountry.historic_countries.get(alpha_2=up) if len(up) == 2 else None
    if historic is not None:
        return None, f"{text!r} is a withdrawn ISO 3166-1 code ({historic.name})"
    return None, msg


@functools.lru_cache(maxsize=4096)
def check_subdivision(text: str) -> tuple[str | None, str]:
    """(normalized code, '') or (None, error message)."""
    up = text.strip().upper()
    if subdivision_name(up):
        return up, ""
    msg = f"{text!r} is not an ISO 3166-2 subdivision code"
    if country_name(up):
        return None, f"{text!r} is a country code, not a subdivision (ISO 3166-2) code"
    split = _split(up)
    if split is None:
        named = _subdivision_by_name(text.strip())
        return None, msg + (_hint(named, subdivision_name(named)) if named else "")
    country, part = split
    fixed = f"{country}-{part}"
    if subdivision_name(fixed):
        return None, msg + _hint(fixed, subdivision_name(fixed))
    if not part.isdigit():  # a misspelt letter code (US-CAL); numbers are arbitrary
        codes = [s.code for s in pycountry.subdivisions.get(country_code=country) or ()]
        close = difflib.get_close_matches(fixed, codes, n=1, cutoff=0.8)
        if close:
            return None, msg + _hint(close[0], subdivision_name(close[0]))
    return None, f"{msg} (no subdivision {part} in {country})"


NAMES = {"CRIMEA": "UA-43"}  # common English names the ISO tables spell otherwise


def _subdivision_by_name(text: str) -> str | None:
    """The one subdivision whose name starts with `text` (Sevastopol, Donetsk), if any."""
    low = text.lower()
    if low.upper() in NAMES:
        return NAMES[low.upper()]
    if len(low) < 4:
        return None
    hits = [s.code for s in pycountry.subdivisions if s.name.lower().startswith(low)]
    return hits[0] if len(hits) == 1 else None


def _split(up: str) -> tuple[str, str] | None:
    """(alpha-2 country, subdivision part) of a mistaken code: UA43, UKR-43, GB_ENG."""
    for n in (2, 3):
        if n == 3 and up[3:4] not in ("-", "_", " "):
            break  # an alpha-3 country only with a separator (UKR-43), not in "Crimea"
        head, rest = up[:n], up[n:].lstrip("-_ ")
        if not (1 <= len(rest) <= 3 and rest.isalnum()):
            continue
        country = head if country_name(head) else _country_guess(head)
        if country is not None:
            return country, rest
    return None


@dataclass
class IsoCode(Spec):
    """A country (`kind="country"`) or subdivision (`kind="subdivision"`) code; written in any
    case, stored upper-case."""

    kind: str = "country"

    @property
    def type_label(self) -> str:  # type: ignore[override]
        return ("country code (ISO 3166-1 alpha-2)" if self.kind == "country"
                else "subdivision code (ISO 3166-2)")

    def check(self, value: Any, where: Where, path: str, errors: Errors) -> Any:
        if isinstance(value, bool) or not isinstance(value, str | int):
            hint = ' (YAML reads a bare NO as false: write Norway as "NO")' \
                if value is False else ""
            return errors.add(where, f"{path}: expected a {self.type_label}, got "
                              f"{_type_name(value)}{hint}")
        check = check_country if self.kind == "country" else check_subdivision
        code, problem = check(str(value))
        if code is None:
            return errors.add(where, f"{path}: {problem}")
        return code
