"""A seeded simulated world for the efficacy benchmark (bench/efficacy.py).

`make_world(seed, variant, scale, refused_countries)` builds, deterministically from
`random.Random(seed)`: the networks (home ISPs, a mobile carrier, an office's business line,
hosting providers, a cloud, ISPs in refused countries, a residential-proxy provider's exits on
the home ISPs), the GeoIP source data for them (the dict `geoip/build.py` builds .mmdb files
from), and the traffic of every population as SDK-shaped requests in time order.

Addresses: IPv4 blocks are fictional allocations in public-looking ranges and IPv6 blocks lie in
2001:db8::/32; they exist only in the temporary databases a run builds. ASNs are the
documentation ASNs (RFC 5398).
"""

from __future__ import annotations

import ipaddress
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import efficacy_text as text

VARIANTS = ("base", "slower", "more-exits", "fewer-per-exit", "paraphrased", "no-cot",
            "batches")
BATCH_PATH = "/v1/messages/batches"
BATCH_SIZE = 25  # prompts per batch of the "batches" hydra
LEGIT = ("ordinary", "same-tool", "neighbours", "office", "saas")
POPULATIONS = ("hydra", *LEGIT, "refused-country")

IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Scale:
    hydra_accounts: int
    exits: int            # hydra exits in the base variant
    ordinary: int
    same_tool: int
    neighbours: int
    office: int
    saas_per_key: int     # requests per SaaS key
    refused: int
    duration: float       # simulated seconds (base variant)
    hydra_span: float     # the hydra's accounts start within this many seconds


SCALES = {
    "small": Scale(300, 12, 60, 20, 4, 25, 80, 10, 6 * 60, 5 * 60),
    "full": Scale(2000, 40, 320, 80, 12, 25, 300, 40, 15 * 60, 12 * 60),
}

# name -> (geoname id, continent, English name)
COUNTRIES: dict[str, tuple[int, str, str]] = {
    "US": (6252001, "NA", "United States"), "GB": (2635167, "EU", "United Kingdom"),
    "DE": (2921044, "EU", "Germany"), "FR": (3017382, "EU", "France"),
    "NL": (2750405, "EU", "Netherlands"), "JP": (1861060, "AS", "Japan"),
    "HK": (1819730, "AS", "Hong Kong"), "CN": (1814991, "AS", "China"),
    "RU": (2017370, "EU", "Russia"), "KP": (1873107, "AS", "North Korea"),
    "IR": (130758, "AS", "Iran"), "CU": (3562981, "NA", "Cuba"),
    "SY": (163843, "AS", "Syria"), "UA": (690791, "EU", "Ukraine"),
    "BY": (630336, "EU", "Belarus"), "VE": (3625428, "SA", "Venezuela"),
}
CONTINENTS = {"AF": 6255146, "AS": 6255147, "EU": 6255148, "NA": 6255149, "SA": 6255150}


@dataclass(frozen=True)
class Network:
    name: str
    asn: int
    country: str
    v4: ipaddress.IPv4Network
    v6: ipaddress.IPv6Network
    registered: str | None = None     # registered country when it differs from `country`
    hosting: bool = False             # whole range flagged is_hosting_provider
    city: str = ""


# home ISPs, mobile carrier, office line, hosting, cloud: (name, country, city, v4, registered)
_HOME = (("Cascade Broadband", "US", "Portland", "46.10.0.0/16"),
         ("Lakeshore Cable", "US", "Chicago", "46.20.0.0/16"),
         ("Albion Fibre", "GB", "Leeds", "81.30.0.0/16"),
         ("Rheinnetz", "DE", "Cologne", "85.40.0.0/16"),
         ("Hexagone Telecom", "FR", "Lyon", "89.50.0.0/16"),
         ("Sakura Hikari", "JP", "Osaka", "94.60.0.0/16"))


def _networks(refused: list[str]) -> dict[str, list[Network]]:
    nets: dict[str, list[Network]] = {"home": [], "refused": []}
    for i, (name, cc, city, v4) in enumerate(_HOME):
        nets["home"].append(Network(name, 64496 + i, cc, ipaddress.IPv4Network(v4),
                                    ipaddress.IPv6Network(f"2001:db8:{0x100 + i:x}::/48"),
                                    city=city))
    nets["mobile"] = [Network("Metro Mobile", 64502, "US", ipaddress.IPv4Network("37.70.0.0/16"),
                              ipaddress.IPv6Network("2001:db8:180::/48"), city="Denver")]
    nets["office"] = [Network("Hanse Business Fibre", 64503, "DE",
                              ipaddress.IPv4Network("62.80.0.0/20"),
                              ipaddress.IPv6Network("2001:db8:190::/48"), city="Hamburg")]
    nets["hosting"] = [
        Network("Hostworks BV", 65536, "NL", ipaddress.IPv4Network("95.90.0.0/20"),
                ipaddress.IPv6Network("2001:db8:300::/48"), hosting=True),
        Network("Dataplex GmbH", 65537, "DE", ipaddress.IPv4Network("95.91.0.0/20"),
                ipaddress.IPv6Network("2001:db8:301::/48"), hosting=True),
        # located in the US, registered in Hong Kong
        Network("Swiftnode Ltd", 65538, "US", ipaddress.IPv4Network("95.92.0.0/20"),
                ipaddress.IPv6Network("2001:db8:302::/48"), registered="HK", hosting=True),
    ]
    nets["cloud"] = [Network("Nimbus Cloud", 65539, "US", ipaddress.IPv4Network("91.100.0.0/20"),
                             ipaddress.IPv6Network("2001:db8:310::/48"), hosting=True)]
    for j, cc in enumerate(refused):
        nets["refused"].append(Network(f"{COUNTRIES[cc][2]} Telecom", 64504 + j if j < 6
                                       else 65540 + j, cc,
                                       ipaddress.IPv4Network(f"77.{110 + j}.0.0/16"),
                                       ipaddress.IPv6Network(f"2001:db8:{0x200 + j:x}::/48")))
    return nets


class Addresses:
    """Distinct random host addresses inside networks (seeded)."""

    def __init__(self, rng: random.Random, used: set[str] | None = None) -> None:
        self.rng, self.used = rng, used if used is not None else set()

    def take(self, net: IPNet) -> str:
        """A new address in `net`; in an IPv6 network wider than /64, in a random /64 of it."""
        while True:
            if net.version == 6 and net.prefixlen < 64:
                sub = self.rng.randrange(1 << (64 - net.prefixlen))
                ip = str(net[(sub << 64) + self.rng.randrange(1, 1 << 64)])
            else:
                ip = str(net[self.rng.randrange(4, min(net.num_addresses - 4, 1 << 64))])
            if ip not in self.used:
                self.used.add(ip)
                return ip


@dataclass(frozen=True)
class Exit:
    """A hydra exit: one address, or (`v6_64`) a /64 whose addresses rotate per request."""

    address: str
    kind: str  # residential | hosting
    network: Network
    v6_64: ipaddress.IPv6Network | None = None

    def pick(self, rng: random.Random) -> str:
        if self.v6_64 is None:
            return self.address
        return str(self.v6_64[rng.randrange(1, 1 << 64)])


@dataclass(frozen=True, slots=True)
class Request:
    t: float                             # simulated seconds since the start
    pop: str
    key: str
    ip: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes


# --------------------------------------------------------------------------- SDK-shaped requests

# name -> (api family, user agent, x-stainless-lang, package version, runtime, runtime version)
SDKS: dict[str, tuple[str, str, str, str, str, str]] = {
    "anthropic-py": ("anthropic", "Anthropic/Python 0.64.0", "python", "0.64.0", "CPython",
                     "3.12.4"),
    "anthropic-js": ("anthropic", "Anthropic/JS 0.60.0", "js", "0.60.0", "node", "v22.3.0"),
    "openai-py": ("openai", "OpenAI/Python 1.99.1", "python", "1.99.1", "CPython", "3.11.9"),
    "openai-js": ("openai", "OpenAI/JS 5.12.0", "js", "5.12.0", "node", "v20.15.1"),
    "curl": ("anthropic", "curl/8.5.0", "", "", "", ""),
}
MODELS = {"anthropic": ("claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1"),
          "openai": ("gpt-4.1", "gpt-4.1-mini", "o4-mini")}


@dataclass(frozen=True)
class Client:
    key: str
    sdk: str
    endpoint: str  # /v1/messages, /v1/chat/completions, /v1/responses
    model: str


def new_client(rng: random.Random, sdk: str | None = None, endpoint: str | None = None) -> Client:
    sdk = sdk or rng.choice(("anthropic-py", "anthropic-py", "anthropic-js", "openai-py",
                             "openai-py", "openai-js", "curl"))
    family = SDKS[sdk][0]
    if family == "anthropic":
        key, ep = "sk-ant-api03-" + rng.randbytes(30).hex(), "/v1/messages"
    else:
        key = "sk-proj-" + rng.randbytes(30).hex()
        ep = rng.choice(("/v1/chat/completions",) * 3 + ("/v1/responses",))
    return Client(key, sdk, endpoint or ep, rng.choice(MODELS[family]))


def request(c: Client, *, t: float, pop: str, ip: str, system: str | None, user: str,
            max_tokens: int, output: int, stream: bool) -> Request:
    family, ua, lang, ver, runtime, rver = SDKS[c.sdk]
    h = [("content-type", "application/json"), ("accept", "application/json"),
         ("user-agent", ua)]
    if lang:
        h += [("x-stainless-lang", lang), ("x-stainless-package-version", ver),
              ("x-stainless-os", "Linux"), ("x-stainless-arch", "x64"),
              ("x-stainless-runtime", runtime), ("x-stainless-runtime-version", rver),
              ("x-stainless-retry-count", "0"), ("x-stainless-timeout", "600")]
    body: dict[str, Any] = {"model": c.model}
    if family == "anthropic":
        h += [("x-api-key", c.key), ("anthropic-version", "2023-06-01")]
        body["max_tokens"] = max_tokens
        if system:
            body["system"] = system
        body["messages"] = [{"role": "user", "content": user}]
    else:
        h.append(("authorization", f"Bearer {c.key}"))
        if c.endpoint == "/v1/responses":
            if system:
                body["instructions"] = system
            body["input"] = user
            body["max_output_tokens"] = max_tokens
        else:
            body["messages"] = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": user}]
            body["max_completion_tokens"] = max_tokens
            if stream:
                body["stream_options"] = {"include_usage": True}
    if stream:
        body["stream"] = True
    h.append(("x-stub-output-tokens", str(output)))  # how much the stand-in upstream answers
    return Request(t, pop, c.key, ip, c.endpoint, tuple(h), json.dumps(body).encode())


# --------------------------------------------------------------------------- the world


@dataclass
class World:
    seed: int
    variant: str
    scale: str
    duration: float
    refused_countries: list[str]
    networks: dict[str, list[Network]]
    exits: list[Exit] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)

    @property
    def hosting_asns(self) -> list[int]:
        return [n.asn for n in self.networks["hosting"] + self.networks["cloud"]]

    def geoip_source(self) -> dict[str, Any]:
        """The source dict of geoip/build.py (`build_one`) for this world."""
        countries = {cc: {"geoname_id": g, "continent": cont, "names": {"en": name}}
                     for cc, (g, cont, name) in COUNTRIES.items()}
        continents = {c: {"geoname_id": g, "names": {"en": c}} for c, g in CONTINENTS.items()}
        asns: dict[int, dict[str, str]] = {}
        nets: list[dict[str, Any]] = []
        for group in self.networks.values():
            for n in group:
                asns[n.asn] = {"org": n.name, "domain": n.name.split()[0].lower() + ".example"}
                for block in (n.v4, n.v6):
                    e: dict[str, Any] = {"network": str(block), "country": n.country,
                                         "asn": n.asn}
                    if n.city:
                        e["city"] = n.city
                    if n.registered:
                        e["registered_country"] = n.registered
                    if n.hosting:
                        e["anonymous"] = {"is_hosting_provider": True}
                    nets.append(e)
        seen: set[str] = set()
        for x in self.exits:  # residential exits: flagged in the Anonymous-IP database only
            block = str(x.v6_64) if x.v6_64 is not None else f"{x.address}/32"
            if x.kind == "residential" and block not in seen:
                seen.add(block)
                nets.append({"network": block, "location": False, "anonymous": {
                    "is_anonymous": True, "is_residential_proxy": True, "confidence": 75,
                    "provider": "flowproxy"}})
        return {"build_epoch": 1735689600, "languages": ["en"], "continents": continents,
                "countries": countries, "subdivisions": {}, "asns": asns, "networks": nets}


def _times(rng: random.Random, n: int, duration: float, sessions: int = 2) -> list[float]:
    """n request times in 1-`sessions` sessions of a user (about 40 s apart inside one)."""
    starts = sorted(rng.uniform(0, duration * 0.95) for _ in range(rng.randint(1, sessions)))
    out, t = [], 0.0
    for i in range(n):
        if i == 0 or (len(starts) > 1 and i == n // 2):
            t = starts.pop(0)
        else:
            t += rng.expovariate(1 / 40)
        out.append(min(t, duration - 1))
    return out


def _exits(rng: random.Random, w: World, addr: Addresses, n: int, v6: int) -> list[Exit]:
    """n exits, half residential (v6 of them rotating /64s) and half hosting."""
    out = []
    for i in range(n):
        if i % 2 == 0:
            isp = rng.choice(w.networks["home"])
            if v6 and i // 2 < v6:
                base = int(isp.v6.network_address) + (rng.randrange(1 << 10, 1 << 16) << 64)
                net64 = ipaddress.IPv6Network((base, 64))
                out.append(Exit(str(net64[1]), "residential", isp, net64))
            else:
                out.append(Exit(addr.take(isp.v4), "residential", isp))
        else:
            host = rng.choice(w.networks["hosting"])
            out.append(Exit(addr.take(host.v4), "hosting", host))
    return out


def _hydra(rng: random.Random, w: World, s: Scale, addr: Addresses, t0: float, span: float
           ) -> None:
    v = w.variant
    per_exit_groups = v == "fewer-per-exit"
    n_exits = {"more-exits": s.exits * 10}.get(v, s.exits)
    if per_exit_groups:  # groups of 4 accounts, each group with 3 exits of its own
        n_exits = -(-s.hydra_accounts // 4) * 3
    w.exits = _exits(rng, w, addr, n_exits, v6=max(1, n_exits // 20))
    sdk = rng.choice(("anthropic-py", "openai-py"))
    if v == "batches":  # throttled on /v1/messages, it moves to Message Batches
        sdk = "anthropic-py"
    ep = "/v1/messages" if sdk == "anthropic-py" else "/v1/chat/completions"
    model = MODELS[SDKS[sdk][0]][0]
    for a in range(s.hydra_accounts):
        if v == "batches" and a % 2:
            _hydra_batch(rng, w, Client(new_client(rng, sdk, ep).key, sdk, ep, model),
                         t0 + rng.uniform(0, span), rng.choice(w.exits).pick(rng))
            continue
        c = Client(new_client(rng, sdk, ep).key, sdk, ep, model)
        start = t0 + rng.uniform(0, span)
        pool = w.exits[(a // 4) * 3:(a // 4) * 3 + 3] if per_exit_groups else w.exits
        exits = rng.sample(pool, rng.choice((2, 3, 3)))
        t = start
        for x in exits:
            system, user = text.hydra_prompt(rng, rng.randrange(6), cot=v != "no-cot",
                                             paraphrased=v == "paraphrased")
            w.requests.append(request(c, t=t, pop="hydra", ip=x.pick(rng), system=system,
                                      user=user, max_tokens=8192,
                                      output=rng.randint(1200, 3500), stream=False))
            t += rng.uniform(1, 5)


def _hydra_batch(rng: random.Random, w: World, c: Client, t: float, ip: str) -> None:
    """One Message Batch of BATCH_SIZE templated prompts (max_tokens 8192 each): what a
    hydra account throttled on /v1/messages sends instead. The stand-in upstream runs every
    request of it; nobody reads its results through the proxy, so nothing is refunded."""
    reqs = []
    output = rng.randint(1200, 3500)
    for i in range(BATCH_SIZE):
        system, user = text.hydra_prompt(rng, rng.randrange(6), cot=True, paraphrased=False)
        one = request(c, t=t, pop="hydra", ip=ip, system=system, user=user, max_tokens=8192,
                      output=output, stream=False)
        reqs.append({"custom_id": f"h{i}", "params": json.loads(one.body)})
    body = json.dumps({"requests": reqs}).encode()
    w.requests.append(Request(t, "hydra", c.key, ip, BATCH_PATH, one.headers, body))


def _ordinary(rng: random.Random, w: World, pop: str, c: Client, ip: str, n: int, *,
              system: str | None = None,
              turn: Callable[[random.Random], str] = text.user_turn, stream_p: float = 0.1,
              max_tokens: int = 0, ips: list[str] | None = None) -> None:
    for t in _times(rng, n, w.duration):
        w.requests.append(request(
            c, t=t, pop=pop, ip=rng.choice(ips) if ips else ip, system=system, user=turn(rng),
            max_tokens=max_tokens or rng.choice((1024, 2048, 4096)),
            output=rng.randint(80, 1200), stream=rng.random() < stream_p))


def _home_ip(rng: random.Random, w: World, addr: Addresses) -> str:
    isp = rng.choice(w.networks["home"])
    return addr.take(isp.v6 if rng.random() < 0.2 else isp.v4)


def make_world(seed: int, variant: str, scale: str, refused_countries: list[str]) -> World:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r} (known: {', '.join(VARIANTS)})")
    s = SCALES[scale]
    span = s.hydra_span * (4 if variant == "slower" else 1)
    duration = s.duration + span - s.hydra_span
    refused = [cc for cc in refused_countries if cc in COUNTRIES]
    w = World(seed, variant, scale, duration, refused, _networks(refused))
    # the hydra depends on the variant; the legitimate populations only on seed and scale
    # (their times stretch with the duration)
    rng_h = random.Random(f"{seed}/{scale}/hydra/{variant}")
    addr_h = Addresses(rng_h)
    _hydra(rng_h, w, s, addr_h, 0.1 * s.duration, span)
    rng = random.Random(f"{seed}/{scale}/legit")
    addr = Addresses(rng, addr_h.used)

    mobile_pool = [addr.take(w.networks["mobile"][0].v4) for _ in range(max(4, s.ordinary // 12))]
    for i in range(s.ordinary):
        c = new_client(rng)
        r = rng.random()
        if r < 0.05:  # a developer repeating near-identical prompts
            base = text.user_turn(rng)
            it = iter(range(1000))
            _ordinary(rng, w, "ordinary", c, _home_ip(rng, w, addr), rng.randint(6, 12),
                      turn=lambda g, b=base, it=it: text.dev_turn(g, b, next(it)))
        elif r < 0.15:  # a phone on the mobile carrier's carrier-grade NAT
            _ordinary(rng, w, "ordinary", c, "", rng.randint(2, 8), ips=mobile_pool)
        else:
            system = "You are a helpful assistant." if i % 3 == 0 else None
            _ordinary(rng, w, "ordinary", c, _home_ip(rng, w, addr), rng.randint(2, 8),
                      system=system)
    tool = text.tool_system_prompt()
    for _ in range(s.same_tool):
        c = new_client(rng, "anthropic-js")
        _ordinary(rng, w, "same-tool", c, _home_ip(rng, w, addr), rng.randint(3, 10),
                  system=tool, stream_p=0.3, max_tokens=8192)
    resi_v4 = [x for x in w.exits if x.kind == "residential" and x.v6_64 is None]
    for i in range(s.neighbours):
        x = resi_v4[i % len(resi_v4)]
        net24 = ipaddress.ip_network(f"{x.address}/24", strict=False)
        _ordinary(rng, w, "neighbours", new_client(rng), addr.take(net24), rng.randint(2, 6))
    nat = addr.take(w.networks["office"][0].v4)
    for _ in range(s.office):
        _ordinary(rng, w, "office", new_client(rng), nat, rng.randint(3, 10))
    saas_ips = [addr.take(w.networks["cloud"][0].v4) for _ in range(3)]
    saas = text.saas_system_prompt()
    for _ in range(2):
        c = new_client(rng, "openai-py", "/v1/chat/completions")
        for _ in range(s.saas_per_key):
            w.requests.append(request(
                c, t=rng.uniform(0, duration - 1), pop="saas", ip=rng.choice(saas_ips),
                system=saas, user=text.saas_user_input(rng), max_tokens=1024,
                output=rng.randint(100, 500), stream=False))
    for i in range(s.refused if refused else 0):
        isp = w.networks["refused"][i % len(refused)]
        _ordinary(rng, w, "refused-country", new_client(rng), addr.take(isp.v4),
                  rng.randint(2, 5))
    w.requests.sort(key=lambda r: r.t)
    return w
