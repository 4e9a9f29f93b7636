"""`controparte zone export`, run as the installed console script, checked by BIND's own
`named-checkzone` and read back with dnspython."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import dns.name
import dns.rdatatype
import dns.zone
import pytest

from controparte.service import Registry
from tests.conftest import StartServer
from tests.debtools import tool
from tests.processes import controparte_command

pytestmark = pytest.mark.integration

ZONE = "reg.example.test."

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def checkzone() -> str:
    return tool("named-checkzone")


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """Run `controparte ARGS --data DIR` with its settings in the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTROPARTE_")}
    env |= {
        "CONTROPARTE_ZONE": ZONE,
        "CONTROPARTE_NS": "ns1=192.0.2.53,2001:db8::53;ns2=198.51.100.53;ns.example.net.",
        "CONTROPARTE_ALLOW_NON_GLOBAL": "1",
        "CONTROPARTE_DATA": str(tmp_path / "data"),
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*controparte_command(), *args],
            env=env,
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done

    run("init")
    return run


def named_checkzone(checkzone: str, path: Path) -> str:
    """Run the strictest checks that need no network; return the output of a pass."""
    done = subprocess.run(
        [
            checkzone,
            "-k",
            "fail",
            "-n",
            "fail",
            "-m",
            "fail",
            "-M",
            "fail",
            "-r",
            "fail",
            "-S",
            "fail",
            "-i",
            "local",
            ZONE,
            str(path),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    plain = subprocess.run(
        [checkzone, ZONE, str(path)], check=False, capture_output=True, text=True, timeout=60
    )
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert plain.stdout.rstrip().endswith("OK")
    return plain.stdout


def serial_of(path: Path) -> int:
    zone = dns.zone.from_file(str(path), origin=ZONE, relativize=False)
    soa = zone.get_soa()
    return int(soa.serial)


def test_export_passes_named_checkzone_and_holds_every_record(
    cli: Cli, checkzone: str, tmp_path: Path
) -> None:
    run = cli
    run(
        "installation",
        "add",
        "A1",
        "--label",
        "alpha",
        "--ip",
        "192.0.2.1",
        "--ipv6",
        "2001:db8::1",
        "--port",
        "9001",
    )
    run("installation", "add", "B2", "--label", "beta", "--ip", "192.0.2.2")
    run(
        "installation",
        "add",
        "C3",
        "--label",
        "gamma",
        "--ipv6",
        "2001:db8::3",
        "--kind",
        "live",
        "--port",
        "9500",
    )
    run("installation", "add", "D4", "--label", "delta")  # publishes nothing
    out = tmp_path / "out" / "reg.zone"
    out.parent.mkdir()
    run("zone", "export", "--out", str(out))
    assert sorted(p.name for p in out.parent.iterdir()) == ["reg.zone"]  # no partial left

    report = named_checkzone(checkzone, out)
    assert f"loaded serial {serial_of(out)}" in report

    zone = dns.zone.from_file(str(out), origin=ZONE, relativize=False)
    origin = dns.name.from_text(ZONE)
    found = {
        (name.relativize(origin).to_text(), dns.rdatatype.to_text(rdata.rdtype), rdata.to_text())
        for name, _ttl, rdata in zone.iterate_rdatas()
        if rdata.rdtype != dns.rdatatype.SOA
    }
    assert found == {
        ("@", "NS", f"ns1.{ZONE}"),
        ("@", "NS", f"ns2.{ZONE}"),
        ("@", "NS", "ns.example.net."),
        ("ns1", "A", "192.0.2.53"),
        ("ns1", "AAAA", "2001:db8::53"),
        ("ns2", "A", "198.51.100.53"),
        ("alpha", "A", "192.0.2.1"),
        ("alpha", "AAAA", "2001:db8::1"),
        ("_mxserver._tcp.alpha", "SRV", f"0 0 9001 alpha.{ZONE}"),
        ("beta", "A", "192.0.2.2"),
        ("gamma", "AAAA", "2001:db8::3"),
        ("_mxserver._tcp.gamma", "SRV", f"0 0 9500 gamma.{ZONE}"),
    }
    soa = zone.get_soa()
    assert (soa.mname.to_text(), soa.rname.to_text(), soa.minimum) == (
        f"ns1.{ZONE}",
        f"hostmaster.{ZONE}",
        60,
    )


def test_stdout_export_of_an_empty_registry_passes_named_checkzone(
    cli: Cli, checkzone: str, tmp_path: Path
) -> None:
    run = cli
    run("installation", "add", "A1", "--label", "alpha")
    run("installation", "remove", "A1")
    path = tmp_path / "empty.zone"
    path.write_text(run("zone", "export").stdout)
    named_checkzone(checkzone, path)


def test_serial_increases_with_each_change_and_only_then(
    cli: Cli, checkzone: str, tmp_path: Path
) -> None:
    run = cli
    run("installation", "add", "A1", "--label", "alpha", "--ip", "192.0.2.1")
    serials = []
    for step, args in enumerate(
        [
            (),
            ("installation", "update", "A1", "--ip", "192.0.2.9"),
            ("installation", "update", "A1", "--kind", "live"),  # DNS serves nothing new
            ("import", str(_csv(tmp_path, "code,label,port\nB2,beta,9000\nC3,gamma,9001\n"))),
            ("installation", "remove", "B2"),
        ]
    ):
        if args:
            run(*args)
        out = tmp_path / f"step{step}.zone"
        run("zone", "export", "--out", str(out))
        named_checkzone(checkzone, out)
        serials.append(serial_of(out))
    first = serials[0]
    assert [s - first for s in serials] == [0, 1, 1, 2, 3]
    final = (tmp_path / "step4.zone").read_text()
    assert "192.0.2.9" in final
    assert "_mxserver._tcp.gamma" in final
    assert "beta" not in final


def _csv(directory: Path, text: str) -> Path:
    path = directory / "rows.csv"
    path.write_text(text)
    return path


def test_the_export_is_what_the_server_serves(start_server: StartServer, tmp_path: Path) -> None:
    """Every RRset of the file, asked of a real `controparte serve` with the same
    settings, comes back the same; and what the file leaves out, the server does too."""

    def seed(registry: Registry) -> None:
        registry.add("A1", "alpha", ipv4="192.0.2.1", ipv6="2001:db8::1", port=9001)
        registry.add("B2", "beta", ipv4="198.51.100.2")
        registry.add("C3", "gamma", ipv6="2001:db8::3", port=9500)
        registry.add("D4", "delta", port=9002)
        registry.add("E5", "epsilon")

    server = start_server(
        env={"CONTROPARTE_NS": "ns1=127.0.0.1,::1;ns2.example.net.", "CONTROPARTE_TTL": "300"},
        seed=seed,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTROPARTE_")}
    out = tmp_path / "served.zone"
    done = subprocess.run(
        [*controparte_command(), "zone", "export", "--out", str(out)],
        env=env | server.settings_env,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    zone = dns.zone.from_file(str(out), origin=server.zone, relativize=False)
    exported = {
        (name, rdataset.rdtype): (rdataset.ttl, {r.to_text() for r in rdataset})
        for name, node in zone.nodes.items()
        for rdataset in node.rdatasets
    }
    origin = dns.name.from_text(server.zone)
    asked = set(exported)
    for label in ("alpha", "beta", "gamma", "delta", "epsilon"):
        owner = dns.name.from_text(label, origin=origin)
        srv = dns.name.from_text(f"_mxserver._tcp.{label}", origin=origin)
        asked |= {(owner, dns.rdatatype.A), (owner, dns.rdatatype.AAAA)}
        asked.add((srv, dns.rdatatype.SRV))
    for name, rdtype in sorted(asked):
        response = server.query(name.to_text(), rdtype)
        served = {
            (rrset.ttl, frozenset(r.to_text() for r in rrset))
            for rrset in response.answer
            if rrset.name == name and rrset.rdtype == rdtype
        }
        want = exported.get((name, rdtype))
        expected = set() if want is None else {(want[0], frozenset(want[1]))}
        assert served == expected, (name.to_text(), dns.rdatatype.to_text(rdtype))
