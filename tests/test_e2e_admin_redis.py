"""End to end with real Redis: two `hydraguard run --admin` replicas share budget state, hydra
linking and operator overrides. Whichever replica's admin listener is asked shows the shared
clusters; an override set through one replica is enforced by the other."""

from __future__ import annotations

import uuid

import anthropic
import pytest

from hydraguard_dev.procs import proxy

from .redis_util import delete_prefix, require_redis, unique_prefix
from .test_e2e_admin import EXITS, LINKING, acct, acct_cluster, call, scrape, template_of, value

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

RULES = """
version: 1
settings:
  trusted_proxies: [127.0.0.1/32]
""" + LINKING.replace("{", "{{").replace("}", "}}") + """
state: {{backend: redis, redis_url: "{url}", prefix: {prefix}, replicas: 2}}
clusters:
  - id: linked
    when: {{client_ip: [198.51.100.0/24]}}
    key: [cluster]
    link: {{window: 600, evidence: [{{kind: ip, min_accounts: 3, max_accounts: 100}},
                                     {{kind: template}}]}}
  - id: acct
    key: [account]
budgets:
  - id: hydra
    clusters: [linked]
    windows: [{{per: day, tokens: 300}}]
    count: output
"""


@pytest.fixture(scope="module")
def replicas(stub, tmp_path_factory):
    url = require_redis()
    prefix = unique_prefix()
    rules = tmp_path_factory.mktemp("admin-redis") / "rules.yaml"
    rules.write_text(RULES.format(url=url, prefix=prefix))
    (rules.parent / "exits.txt").write_text(EXITS)
    try:
        with proxy(stub.url, rules, admin=True) as a, proxy(stub.url, rules, admin=True) as b:
            yield a, b
    finally:
        delete_prefix(url, prefix)


def test_each_replica_shows_the_shared_clusters(replicas):
    a, b = replicas
    exit_ip = "198.51.100.40"
    keys = [f"sk-rh-{uuid.uuid4().hex[:10]}-{i}" for i in range(5)]
    for i, k in enumerate(keys):
        call((a, b)[i % 2], k, ip=exit_ip)
    members = [acct(k) for k in keys]
    cid = acct_cluster(members[0])  # the first seen names the shared cluster
    tpl = template_of(a, keys[0])  # the module's first hydra: its 5 accounts hold it
    for p in (a, b):
        status, top = p.admin("GET", "/clusters?top=10")
        assert status == 200
        (mine,) = [c for c in top["clusters"] if c["id"] == cid]
        assert (mine["members"], mine["evidence"], mine["tokens"], mine["shared"]) == (
            5, {"ip": 1, "template": 1}, 80, True)
        assert mine["budgets"][0]["windows"][0]["used"] == 80
        status, doc = p.admin("GET", f"/clusters/{cid}")
        assert status == 200 and doc["members"] == members
        # evidence is stored as digests; each replica saw the exit and the template itself,
        # so names them
        assert [(e["kind"], e["value"], e["accounts"]) for e in doc["evidence"]] == [
            ("ip", exit_ip, 5), ("template", tpl, 5)]
        status, why = p.admin("GET", f"/accounts/{members[3]}")
        (link,) = why["links"]
        assert (link["cluster"], link["size"], link["shared"]) == (cid, 5, True)
        assert [(e["kind"], e["value"], e["linking"]) for e in link["evidence"]] == [
            ("ip", exit_ip, True), ("template", tpl, True)]
        assert link["link"]["age_s"] >= 0  # the shared why-record: joined through the 3rd
        assert {k: v for k, v in link["link"].items() if k != "age_s"} == {
            "members": 5, "score": 1.4, "kinds": {"ip": 1, "template": 1}, "flagged": True,
            "via": members[2]}
        m = scrape(p)
        assert value(m, "hydraguard_state_up", backend="redis") == 1
        assert value(m, "hydraguard_state_roundtrip_seconds_count", result="ok") > 0
        assert value(m, "hydraguard_clusters", definition="linked") >= 1


def test_overrides_set_on_one_replica_apply_on_the_other(replicas):
    a, b = replicas
    k = f"sk-rovr-{uuid.uuid4().hex}"
    who = acct(k)
    assert call(b, k).usage.output_tokens == 20
    status, _ = a.admin("POST", f"/accounts/{who}/deny", {"ttl": 600})
    assert status == 200
    # b's admin answer reads the shared overrides first, so from then on b enforces them
    status, doc = b.admin("GET", f"/accounts/{who}")
    assert status == 200 and doc["overrides"]["deny"]["by"] == "peer:127.0.0.1"
    with pytest.raises(anthropic.PermissionDeniedError):
        call(b, k)
    rec = [r for r in b.lines() if r["account"] == who][-1]
    assert (rec["rule"], rec["override"], rec["status"]) == ("admin_deny", "deny", 403)
    assert b.admin("DELETE", f"/accounts/{who}/deny")[0] == 200
    assert who not in {o["account"] for o in a.admin("GET", "/overrides")[1]["overrides"]}
    assert call(a, k).usage.output_tokens == 20
    # unlink through b; a sees it and charges the account under its own id
    exit_ip = "198.51.100.41"
    keys = [f"sk-ru-{uuid.uuid4().hex[:10]}-{i}" for i in range(4)]
    for i, key in enumerate(keys):
        call((a, b)[i % 2], key, ip=exit_ip)
    last = acct(keys[3])
    assert b.admin("POST", f"/accounts/{last}/unlink", {"ttl": 600})[0] == 200
    assert a.admin("GET", f"/accounts/{last}")[1]["overrides"]["detach"]
    call(a, keys[3], ip=exit_ip)
    rec = [r for r in a.lines() if r["account"] == last][-1]
    assert rec["cluster"] == f"linked:cluster={acct_cluster(last)}"
    status, doc = a.admin("GET", f"/clusters/{acct_cluster(acct(keys[0]))}")
    assert status == 200 and last not in doc["members"] and len(doc["members"]) == 3
