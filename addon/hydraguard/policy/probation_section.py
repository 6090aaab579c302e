"""The `probation:` block of a budget: its schema and its compiled `ProbationSpec`.

A probation budget clamps a fleet of new accounts before hydra linking has seen enough of
them: every not-yet-established account arriving through the networks its `when` names
(residential proxies, hosting, ...) also draws from one budget keyed by the network.
"""

from __future__ import annotations

from pathlib import Path

from .budget_model import ProbationSpec
from .schema import Checked, Errors, Field, Int, ListOf, Num, Str, Struct

__all__ = ["NETWORK_ATTRS", "PROBATION", "compile_probation"]

NETWORK_ATTRS = ("network", "ip", "prefix", "asn", "country")

PROBATION = Struct(
    doc="Makes the budget a probation budget: it applies only to accounts that are not "
    "established yet, and its key is the network they arrive through (not their cluster), "
    "so the new accounts of one network share it. An account is established when it is "
    "listed in known_accounts, or when every threshold that is set holds.",
    fields={
        "key": Field(
            ListOf(Str(choices=NETWORK_ATTRS), min_len=1, allow_scalar=True),
            default=("asn",),
            doc="Network attributes the shared budget is keyed by: network (the kind of "
            "flagged network: residential_proxy, public_proxy, tor_exit, anonymous_vpn, "
            "hosting; one budget per kind), ip (the exit address; an IPv6 address counts by "
            "its /64), prefix (/24 or /64), asn, country.",
            example=["asn"]),
        "min_age": Field(Num(min=0, max=365 * 86400), default=86400,
                         doc="Seconds since the account was first seen (0: no age needed).",
                         example=86400),
        "min_requests": Field(Int(min=0, max=1_000_000), default=20,
                              doc="Requests served to the account without a refusal.",
                              example=20),
        "min_tokens": Field(Int(min=0, max=10_000_000_000), default=0,
                            doc="Tokens charged to the account (0: not needed). Makes "
                            "warming an account with cheap requests cost what it should.",
                            example=50000),
        "known_accounts": Field(
            Str(), default=None,
            doc="File of account hashes (`hydraguard hash-key KEY`), one per line, `#` "
            "comments: always established (enterprise customers, your own services). "
            "Relative to the rules file; read when the rules load.",
            example="lists/known-accounts.txt"),
    },
)


def _known(c: Checked, path: str, errors: Errors, base: Path | None) -> frozenset[str]:
    name = c["known_accounts"]
    if name is None:
        return frozenset()
    file = Path(name) if base is None or Path(name).is_absolute() else base / name
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as e:
        errors.add(c.at("known_accounts"), f"{path}.known_accounts: cannot read {file}: "
                   f"{e.strerror or e}")
        return frozenset()
    out = set()
    for n, line in enumerate(text.splitlines(), 1):
        item = line.split("#", 1)[0].strip()
        if not item:
            continue
        if not (item.startswith("acct_") and len(item) == 25):
            errors.add(c.at("known_accounts"), f"{path}.known_accounts: {file}:{n}: "
                       f"{item[:40]!r} is not an account hash (acct_ + 20 hex; see "
                       "`hydraguard hash-key`)")
            continue
        out.add(item)
    return frozenset(out)


def compile_probation(c: Checked | None, path: str, errors: Errors, base: Path | None
                      ) -> ProbationSpec | None:
    """The compiled probation block (None: the budget is an ordinary one)."""
    if c is None:
        return None
    return ProbationSpec(
        key=tuple(dict.fromkeys(c["key"])), min_age_s=float(c["min_age"]),
        min_requests=int(c["min_requests"]), min_tokens=int(c["min_tokens"]),
        known=_known(c, f"{path}.probation", errors, base))
