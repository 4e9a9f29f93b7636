"""Three start-live brokers (`controparte broker serve`) on 127.0.0.1, .2 and .3, one port,
over one registry, with TLS verified against a lab CA (`controparte broker lab-ca`), and
the failover client (`agent/startlive.py`) in front of them: who may start whom, the
wake hook (its timeout, one wake at a time), the rate limit, and one broker killed in
the middle of a run while every request still succeeds."""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from controparte.agent.doctor import BrokerFinding
from controparte.agent.doctor_run import DoctorConfig, ask_brokers
from controparte.agent.startlive import StartLive, start_url, tls_context
from controparte.errors import (
    AuthError,
    ForbiddenError,
    NotFoundError,
    RateLimitedError,
    ValidationError,
)
from controparte.model import Kind
from controparte.plan.catalog import load_catalog
from controparte.plan.planner import Party
from controparte.service.labca import LabCa, make_lab_ca
from controparte.service.services import open_services
from controparte.settings import load_settings
from tests.clirunner import invoke_cli, ok, user_error
from tests.processes import (
    LoggedProcess,
    clean_env,
    controparte_command,
    free_tcp_port,
    remember_secret,
)

BROKERS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
RATE = 40
HOOK = """echo "$1" >> "$HOOK_LOG"
case "$1" in slow*) sleep 30;; nap*) sleep 0.5;; esac"""


@pytest.fixture(scope="session")
def lab_ca(tmp_path_factory: pytest.TempPathFactory) -> LabCa:
    """One lab CA and broker certificate for the session (the names and 127.0.0.1-3)."""
    return make_lab_ca(tmp_path_factory.mktemp("lab-ca"), ["start-live.controparte.test"], BROKERS)


@dataclass
class Farm:
    data: Path
    port: int
    ca: Path
    hook_log: Path
    tokens: dict[str, str]
    brokers: list[LoggedProcess]

    def client(self) -> StartLive:
        return StartLive(BROKERS, port=self.port, ca=self.ca)


GATEWAY = "name=gw1 ipv4=198.51.100.7 ports=9000-9099"
"""The farm's Live gateway (setting `live_gateways`), the same for the registry and the
brokers."""


def _registry(data: Path) -> dict[str, str]:
    """L1, NAP1, SLOW1 (Live, on gw1 at the ports given), POOL1 (Live, placed by the
    pool), C1 linked to all four, C2 linked to none, P1 on premises."""
    ok(invoke_cli("init", data=data))
    settings = load_settings(
        {"data": data, "allow_non_global": True, "live_gateways": GATEWAY}, env={}
    )
    services = open_services(settings)
    try:
        registry = services.registry
        for code, label, port in (
            ("L1", "l1", 9001),
            ("NAP1", "nap1", 9002),
            ("SLOW1", "slow1", 9003),
        ):
            registry.add(code, label, kind=Kind.LIVE, ipv4="198.51.100.7", port=port)
        registry.add("POOL1", "pool1", kind=Kind.LIVE)
        for code, label in (("C1", "c1"), ("C2", "c2"), ("P1", "p1")):
            registry.add(code, label, ipv4="203.0.113.9", port=4711)
        for live in ("L1", "NAP1", "SLOW1", "POOL1"):
            services.links.add("C1", live, ["einvoice"])
        return {
            code: remember_secret(services.access.issue_token(code))
            for code in ("L1", "C1", "C2", "P1")
        }
    finally:
        services.close()


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory, lab_ca: LabCa) -> Iterator[Farm]:
    base = tmp_path_factory.mktemp("farm")
    data = base / "data"
    tokens = _registry(data)
    port = free_tcp_port()
    hook_log = base / "hook.log"
    env = clean_env(
        CONTROPARTE_ALLOW_NON_GLOBAL="1", CONTROPARTE_LIVE_GATEWAYS=GATEWAY, HOOK_LOG=str(hook_log)
    )
    brokers = []
    for host in BROKERS:
        argv = [
            *controparte_command(),
            "broker",
            "serve",
            "--data",
            str(data),
            "--broker-https",
            f"{host}:{port}",
            "--broker-cert",
            str(lab_ca.cert),
            "--broker-key",
            str(lab_ca.key),
            "--broker-wake-command",
            f"sh -c '{HOOK}' hook",
            "--broker-wake-timeout",
            "1",
            "--broker-rate",
            str(RATE),
        ]
        brokers.append(LoggedProcess(argv, base / f"broker-{host}.log", env, name=host))
    try:
        for broker in brokers:
            broker.wait_log(r"start-live broker on https://")
        yield Farm(data, port, lab_ca.ca, hook_log, tokens, brokers)
    finally:
        for broker in brokers:
            broker.stop()


def test_the_lab_ca_command(tmp_path: Path) -> None:
    """`controparte broker lab-ca DIR`: the catalog's start-live names and each
    `--address` in the certificate, which the CA verifies; the key private."""
    out = ok(invoke_cli("broker", "lab-ca", str(tmp_path), "--address", "127.0.0.1"))
    assert out.stdout.split() == [str(tmp_path / f) for f in ("ca.pem", "broker.pem", "broker.key")]
    assert (tmp_path / "broker.key").stat().st_mode & 0o077 == 0
    cert = x509.load_pem_x509_certificate((tmp_path / "broker.pem").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == list(load_catalog().live.start_live_hosts)
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes())
    cert.verify_directly_issued_by(ca)


def test_the_broker_serves_https_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ok(invoke_cli("init", data=data))
    said = user_error(invoke_cli("broker", "serve", data=data), 2)
    assert "broker_cert, broker_key: the broker serves HTTPS only" in said
    said = user_error(
        invoke_cli(
            "broker",
            "serve",
            "--broker-cert",
            str(tmp_path / "none.pem"),
            "--broker-key",
            str(tmp_path / "none.key"),
            data=data,
        ),
        2,
    )
    assert said == f"error: broker_cert: cannot read {tmp_path / 'none.pem'}"


def test_a_linked_counterpart_and_the_live_installation_itself_get_the_placement(
    farm: Farm,
) -> None:
    with farm.client() as client:
        by_caller = client.start("l1", farm.tokens["C1"], caller="C1")
        itself = client.start("L1.bp.controparte.test.", farm.tokens["L1"])
    for started in (by_caller, itself):
        assert (started.gateway, started.port, started.ready) == ("198.51.100.7", 9001, True)
        assert started.broker == BROKERS[0]


def test_the_placement_is_the_pools(farm: Farm) -> None:
    """An installation the pool placed: the broker answers its gateway's address, the
    port allocated there (the one DNS serves) and the gateway's name."""
    settings = load_settings(
        {"data": farm.data, "allow_non_global": True, "live_gateways": GATEWAY}, env={}
    )
    services = open_services(settings)
    try:
        placed = services.registry.placement("POOL1")
    finally:
        services.close()
    assert placed.gateway == "gw1" and placed.port is not None and 9000 <= placed.port <= 9099
    with farm.client() as client:
        started = client.start("pool1", farm.tokens["C1"], caller="C1")
    assert (started.gateway, started.port) == ("198.51.100.7", placed.port)
    assert started.gateway_name == "gw1"


@pytest.mark.parametrize(
    ("label", "token_of", "caller", "error"),
    [
        ("l1", "C2", "C1", AuthError),  # another installation's token
        ("l1", "L1", "C1", AuthError),  # the Live installation's token, claiming C1
        ("l1", "C2", None, AuthError),  # C2's token as if it were L1's
        ("l1", "C2", "C2", ForbiddenError),  # a valid caller, not linked
        ("p1", "C1", "C1", ForbiddenError),  # not a Live installation
        ("nobody", "C1", "C1", NotFoundError),
    ],
)
def test_refusals_are_the_registrys_and_not_failed_over(
    farm: Farm, label: str, token_of: str, caller: str | None, error: type[Exception]
) -> None:
    with farm.client() as client, pytest.raises(error):
        client.start(label, farm.tokens[token_of], caller=caller)
    assert client.rotation.failed_at == {}


def test_the_certificate_is_verified(farm: Farm, tmp_path: Path) -> None:
    """A client that trusts another CA refuses the brokers' certificate."""
    other = make_lab_ca(tmp_path, ["elsewhere.test"], ["127.0.0.1"])
    with httpx.Client(verify=tls_context(other.ca)) as client, pytest.raises(httpx.ConnectError):
        client.post(start_url(BROKERS[0], farm.port, "l1"))
    with pytest.raises(ssl.SSLError):
        tls_context(None).load_verify_locations(cadata="not a certificate")


def test_a_wake_hook_over_its_timeout_answers_not_ready(farm: Farm) -> None:
    with farm.client() as client:
        started = client.start("slow1", farm.tokens["C1"], caller="C1")
    assert (started.gateway, started.port, started.ready) == ("198.51.100.7", 9003, False)
    assert "did not finish within 1 s" in started.detail


def test_a_second_start_joins_the_wake_under_way(farm: Farm) -> None:
    with farm.client() as client, ThreadPoolExecutor(2) as pool:
        both = list(pool.map(lambda _: client.start("nap1", farm.tokens["C1"], "C1"), range(2)))
    assert [s.ready for s in both] == [True, True]
    assert farm.hook_log.read_text().splitlines().count("nap1") == 1
    assert "joined a wake under way" in farm.brokers[0].log()


def test_starts_are_rate_limited_per_caller(farm: Farm) -> None:
    """Broker 3 alone (the others take the other tests' starts): L1's own token, RATE
    times, then 429."""
    url = start_url(BROKERS[2], farm.port, "l1")
    headers = {"Authorization": f"Bearer {farm.tokens['L1']}"}
    with httpx.Client(verify=tls_context(farm.ca), headers=headers) as client:
        statuses = [client.post(url).status_code for _ in range(RATE + 1)]
    assert statuses == [200] * RATE + [429]
    with farm.client() as failover, pytest.raises(RateLimitedError):
        failover.rotation.failed(BROKERS[0])
        failover.rotation.failed(BROKERS[1])
        failover.start("l1", farm.tokens["L1"])


def test_doctor_asks_the_brokers_and_says_which_answered(farm: Farm, tmp_path: Path) -> None:
    """`doctor_run.ask_brokers` (what `controparte doctor` does for a Live counterpart)
    over the catalog's start-live hosts: here the three brokers, on their port."""
    packaged = resources.files("controparte.plan").joinpath("features.toml").read_text()
    hosts = ", ".join(f'"{h}"' for h in BROKERS)
    features = tmp_path / "features.toml"
    features.write_text(
        re.sub(r"start_live_hosts = \[[^]]*\]", f"start_live_hosts = [{hosts}]", packaged).replace(
            "start_live_port = 443", f"start_live_port = {farm.port}"
        )
    )
    config = DoctorConfig(
        "C1", "http://127.0.0.1:9", load_catalog(features), farm.tokens["C1"], broker_ca=farm.ca
    )
    me = Party("C1", "c1", False, ("203.0.113.9",), 4711, None)
    live = Party("L1", "l1", True, ("198.51.100.7",), 9001, None)
    assert ask_brokers(config, me, live) == BrokerFinding(BROKERS[0], "198.51.100.7", 9001, True)
    refused = ask_brokers(replace(config, token=farm.tokens["C2"]), me, live)
    assert refused.broker is None and refused.refused is not None
    assert "wrong token" in refused.refused
    untrusted = make_lab_ca(tmp_path / "other", ["elsewhere.test"], BROKERS)
    unverified = ask_brokers(replace(config, broker_ca=untrusted.ca), me, live)
    assert unverified.broker is None, unverified
    assert [name for name, _why in unverified.skipped] == list(BROKERS)
    assert all("CERTIFICATE_VERIFY_FAILED" in why for _name, why in unverified.skipped)
    (tmp_path / "not.pem").write_text("not a certificate")
    with pytest.raises(ValidationError, match="broker_ca: cannot use"):
        ask_brokers(replace(config, broker_ca=tmp_path / "not.pem"), me, live)


def test_one_broker_killed_mid_run_every_request_succeeds(farm: Farm) -> None:
    """Last in the module: kills the first broker. 30 starts, the first broker killed
    after 10: each succeeds (within the client's deadline, or it would raise), the
    first after the kill fails over once, and the dead broker is skipped after that."""
    answers = []
    with farm.client() as client:
        for number in range(30):
            if number == 10:
                farm.brokers[0].kill()
            answers.append(client.start("l1", farm.tokens["C1"], caller="C1", deadline=5.0))
    assert all(a.ready and a.port == 9001 for a in answers)
    assert {a.broker for a in answers[:10]} == {BROKERS[0]}
    assert {a.broker for a in answers[10:]} == {BROKERS[1]}
    assert [a.skipped[0][0] for a in answers if a.skipped] == [BROKERS[0]]
