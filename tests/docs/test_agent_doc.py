"""The examples of docs/agent.md, executed against a real `controparte serve`.

Every fenced block preceded by `<!-- doc-test: NAME -->` is run here, after the
substitutions a reader makes too (the service's URL and DNS port, the token, the
directories; `sudo` dropped). In a `console` block, `$ ` lines are commands (a trailing
backslash continues one) and the lines after a command are its output, compared line
for line with timestamps masked. Blocks for other systems (systemd, Windows) are run
as far as this machine can: their agent command lines are executed with `--once`.

Nothing is skipped: every tool the examples use is one `make test` installs
(`tests/debtools.py`), and every feature they show exists, so an absent one fails.
"""

from __future__ import annotations

import base64
import http.server
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import dns.tsig
import dns.tsigkeyring
import dns.update
import pytest

import controparte
from controparte.service import Registry
from tests.agentproc import issue_token
from tests.conftest import StartServer
from tests.debtools import tool
from tests.httpstub import serving
from tests.processes import clean_env, controparte_command
from tests.realserver import ServerProcess

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "agent.md"
UNIT = ROOT / "docs" / "controparte-agent.service"
TESTED = {
    "agent-install",
    "token-file",
    "agent-once",
    "dig-check",
    "systemd-unit",
    "windows-nssm",
    "windows-task",
    "dyndns2-curl",
    "ddclient-conf",
    "ddclient-run",
    "tsig-key",
    "nsupdate-script",
    "nsupdate-run",
}
EXAMPLE_URL = "https://controparte.example.test"
EXAMPLE_TOKEN = "cpt_REPLACE_WITH_YOUR_TOKEN"
EXAMPLE_ADDRESS = "203.0.113.7"
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ", re.MULTILINE)
COMMAND_TIMEOUT = 60
INSTALL_TIMEOUT = 600  # building the wheel, and pip fetching the dependencies
ROOT = Path(__file__).resolve().parents[2]


# -- the guide's blocks -------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    name: str
    info: str
    text: str
    line: int


MARKED = re.compile(
    r"^<!-- doc-test: (?P<name>[\w-]+) -->\n```(?P<info>[^\n]*)\n(?P<text>.*?)^```$",
    re.MULTILINE | re.DOTALL,
)


def marked_blocks() -> dict[str, Block]:
    text = GUIDE.read_text()
    found: dict[str, Block] = {}
    for match in MARKED.finditer(text):
        name = match["name"]
        assert name not in found, f"docs/agent.md: two blocks named {name}"
        line = text.count("\n", 0, match.start()) + 1
        found[name] = Block(name, match["info"].strip(), match["text"], line)
    markers = re.findall(r"<!-- doc-test: ([\w-]+) -->", text)
    assert sorted(markers) == sorted(found), "a doc-test marker is not right before a fence"
    return found


BLOCKS = marked_blocks()


def block(name: str) -> Block:
    return BLOCKS[name]


@dataclass(frozen=True)
class Step:
    command: str
    output: tuple[str, ...]


def console_steps(text: str) -> list[Step]:
    """The commands of a console block, each with the output lines shown after it."""
    steps: list[Step] = []
    command: list[str] = []
    output: list[str] = []
    lines = iter(text.splitlines())
    for line in lines:
        if line.startswith("$ "):
            if command:
                steps.append(Step(" ".join(command), tuple(output)))
            command, output = [line[2:]], []
            while command[-1].endswith("\\"):
                command[-1] = command[-1][:-1].rstrip()
                command.append(next(lines).strip())
        elif line.strip():
            output.append(line)
    if command:
        steps.append(Step(" ".join(command), tuple(output)))
    return steps


def test_every_marked_block_is_tested() -> None:
    assert set(BLOCKS) == TESTED


def test_the_guide_shows_the_unit_file_as_it_is() -> None:
    assert block("systemd-unit").text == UNIT.read_text()


def test_console_blocks_parse() -> None:
    steps = console_steps(block("agent-once").text)
    assert len(steps) == 1
    assert steps[0].command.endswith("--token-file /etc/controparte/agent.token --once")
    assert len(steps[0].output) == 3


# -- the world the examples run in ------------------------------------------------------------


@dataclass
class World:
    server: ServerProcess
    token: str
    home: Path  # the working directory of the commands
    etc: Path  # stands for /etc/controparte

    @property
    def url(self) -> str:
        return self.server.http_url

    @property
    def dns_port(self) -> int:
        return self.server.port

    def substitutions(self) -> list[tuple[str, str]]:
        """What a reader puts in place of the guide's examples, in this order."""
        return [
            ("/opt/controparte/bin/controparte", "controparte"),
            (EXAMPLE_URL, self.url),
            (EXAMPLE_TOKEN, self.token),
            ("/etc/controparte", str(self.etc)),
            ("127.0.0.1 8053", f"127.0.0.1 {self.dns_port}"),
            ("-p 8053", f"-p {self.dns_port}"),
            ("dig +short", f"dig @127.0.0.1 -p {self.dns_port} +short"),
        ]

    def substitute(self, text: str) -> str:
        for old, new in self.substitutions():
            text = text.replace(old, new)
        return re.sub(r"(^|[;&|] *|\"|')sudo ", r"\1", text, flags=re.MULTILINE)

    def run(self, command: str, env: dict[str, str] | None = None) -> str:
        """Run one command of the guide (substituted) with bash; its combined output."""
        done = subprocess.run(
            ["bash", "-c", self.substitute(command)],
            cwd=self.home,
            env=env or clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        assert done.returncode == 0, (self.substitute(command), done.returncode, done.stdout)
        return done.stdout

    def run_steps(
        self,
        name: str,
        output_subs: tuple[tuple[str, str], ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        """Run every command of a console block and compare its output to the guide's."""
        for step in console_steps(block(name).text):
            actual = normalise(self.run(step.command, env))
            shown = self.substitute("\n".join(step.output))
            for old, new in output_subs:
                shown = shown.replace(old, new)
            assert actual == normalise(shown), f"docs/agent.md block {name}: {step.command}"

    def agent(self, args: list[str]) -> str:
        """`controparte agent ARGS` (already substituted); its log. Must exit 0."""
        done = subprocess.run(
            [*controparte_command(), *args],
            cwd=self.home,
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stderr


def normalise(text: str) -> list[str]:
    text = TIMESTAMP.sub("<time> ", text)
    text = text.replace("agent 0.1.0 ", f"agent {controparte.__version__} ")
    return [line.rstrip() for line in text.splitlines() if line.strip()]


@pytest.fixture
def world(start_server: StartServer, tmp_path: Path) -> World:
    def seed(registry: Registry) -> None:
        registry.add("ACME-0001", "shop-42")

    server = start_server(seed=seed)
    server.wait_http()
    home = tmp_path / "home"
    home.mkdir()
    return World(server, issue_token(server, "ACME-0001"), home, tmp_path / "etc-controparte")


def write_token(world: World) -> Path:
    """The token file, made by the guide's own commands."""
    world.run_steps("token-file")
    path = world.etc / "agent.token"
    assert path.stat().st_mode & 0o777 == 0o600
    assert world.etc.stat().st_mode & 0o777 == 0o700
    assert path.read_text() == world.token + "\n"
    return path


# -- the install -----------------------------------------------------------------------------


def test_the_agent_installs_as_the_guide_says(tmp_path: Path) -> None:
    """The guide's install commands, run in a copy of this source tree (a clone), with
    /opt/controparte in the test's directory: the wheel `make dist` builds installs, and
    its `controparte` runs. (Before, the guide said `pip install controparte`, which
    no public index has.)"""
    clone = tmp_path / "controparte"
    shutil.copytree(
        ROOT,
        clone,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "var", "build", "dist", "*cache*", "*.egg-info", "*.so"
        ),
    )
    # A host's shell: no PYTHONPATH leading to this tree (pip would take it as installed).
    env = {k: v for k, v in clean_env().items() if k != "PYTHONPATH"}
    opt = tmp_path / "opt"
    for step in console_steps(block("agent-install").text):
        command = step.command.replace("/opt/controparte", str(opt)).removeprefix("sudo ")
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=clone,
            env=env,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
            check=False,
        )
        assert done.returncode == 0, (command, done.stdout, done.stderr)
    installed = opt / "bin" / "controparte"
    version = subprocess.run(
        [installed, "--version"], capture_output=True, text=True, timeout=60, check=True, env=env
    )
    assert version.stdout == f"controparte {controparte.__version__}\n"
    usage = subprocess.run(
        [installed, "agent", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=env,
    )
    assert "--token-file" in usage.stdout


# -- the agent -------------------------------------------------------------------------------


def test_agent_once_then_dig(world: World) -> None:
    tool("dig")
    write_token(world)
    local = (EXAMPLE_ADDRESS, "127.0.0.1")  # the agent connects from loopback here
    world.run_steps("agent-once", (local,))
    world.run_steps("dig-check", (local,))


def unit_exec_start(text: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", text)
    (line,) = [x for x in joined.splitlines() if x.startswith("ExecStart=")]
    return shlex.split(line.removeprefix("ExecStart="))


def test_systemd_unit_runs_the_agent(world: World) -> None:
    token = write_token(world)
    unit = UNIT.read_text()
    assert "LoadCredential=token:/etc/controparte/agent.token" in unit
    # systemd copies the credential into %d; here a directory of our own stands for it
    credentials = world.home / "credentials"
    credentials.mkdir(mode=0o700)
    (credentials / "token").write_bytes(token.read_bytes())
    (credentials / "token").chmod(0o400)
    argv = unit_exec_start(world.substitute(unit).replace("%d", str(credentials)))
    assert argv[:2] == ["controparte", "agent"]
    log = world.agent([*argv[1:], "--once"])
    assert "this is how the world sees you: 127.0.0.1:9001" in log


def test_systemd_unit_is_valid_and_locked_down(tmp_path: Path) -> None:
    analyze = tool("systemd-analyze")
    script = Path(controparte_command()[0])
    assert script.name == "controparte", "the console script, installed with the package"
    unit = tmp_path / "controparte-agent.service"
    unit.write_text(UNIT.read_text().replace("/opt/controparte/bin/controparte", str(script)))
    verify = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, check=False, timeout=60
    )
    assert verify.returncode == 0, verify.stderr
    assert verify.stdout + verify.stderr == ""  # no warning: every key is known and valid
    security = subprocess.run(
        [analyze, "security", "--offline=true", str(unit)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for .*: ([\d.]+)", security.stdout)
    assert found is not None, security.stdout + security.stderr
    assert float(found[1]) <= 2.0, security.stdout


WINDOWS_TOKEN = r"C:\ProgramData\controparte\agent.token"
WINDOWS_EXE = r"C:\Program Files\controparte\Scripts\controparte.exe"


def windows_args(world: World, text: str, token: Path) -> list[str]:
    text = world.substitute(text).replace(WINDOWS_TOKEN, str(token))
    assert "\\" not in text, text  # every Windows path was one we know
    return shlex.split(text)


def test_windows_nssm_command_line_runs_the_agent(world: World) -> None:
    token = write_token(world)
    text = block("windows-nssm").text
    (install,) = [x for x in text.splitlines() if x.startswith("nssm install ")]
    install = install.replace(f'"{WINDOWS_EXE}"', "controparte.exe")
    argv = windows_args(world, install, token)
    assert argv[:4] == ["nssm", "install", "controparte-agent", "controparte.exe"]
    assert "controparte-agent AppExit Default Restart" in text
    log = world.agent([*argv[4:], "--once"])
    assert "this is how the world sees you: 127.0.0.1:9001" in log


def test_windows_scheduled_task_arguments_run_the_agent(world: World) -> None:
    token = write_token(world)
    text = block("windows-task").text
    exe = re.search(r"^\$exe = '([^']*)'$", text, re.MULTILINE)
    arguments = re.search(r"^\$arguments = '([^']*)'$", text, re.MULTILINE)
    assert exe is not None
    assert arguments is not None
    assert exe[1] == WINDOWS_EXE
    argv = windows_args(world, arguments[1], token)
    assert argv[0] == "agent"
    assert "--once" in argv  # a task runs one heartbeat per trigger
    log = world.agent(argv)
    assert "this is how the world sees you: 127.0.0.1:9001" in log


# -- DynDNS2 ------------------------------------------------------------------------------------


def test_dyndns2_by_hand(world: World) -> None:
    tool("curl")
    world.run_steps("dyndns2-curl")
    world.server.wait_for("shop-42", [EXAMPLE_ADDRESS])


class _CheckIp(http.server.BaseHTTPRequestHandler):
    """A what-is-my-IP page, as ddclient's `webv4` reads it."""

    address = "198.51.100.20"

    def do_GET(self) -> None:
        body = f"Current IP Address: {self.address}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def checkip() -> Iterator[str]:
    with serving(_CheckIp) as url:
        yield url + "/"


def test_ddclient(world: World, checkip: str) -> None:
    tool("ddclient")
    http = world.server.settings.http
    conf_text = world.substitute(block("ddclient-conf").text)
    for old, new in (
        ("ssl=yes", "ssl=no"),  # the test server speaks plain HTTP on loopback
        ("syslog=yes", "syslog=no"),
        ("server=controparte.example.test", f"server={http.host}:{http.port}"),
        ("webv4=ipify-ipv4", f"webv4={checkip}"),
    ):
        assert old in conf_text
        conf_text = conf_text.replace(old, new)
    conf = world.home / "ddclient.conf"
    conf.write_text(conf_text)
    conf.chmod(0o600)
    (step,) = console_steps(block("ddclient-run").text)
    command = step.command.replace(
        "-file /etc/ddclient.conf", f"-file {conf} -cache {world.home / 'ddclient.cache'}"
    )
    output = world.run(command)
    assert "SUCCESS" in output, output
    # Debian 12's ddclient (3.10) takes the guide's file without a complaint.
    assert [line for line in output.splitlines() if "WARNING" in line] == [], output
    world.server.wait_for("shop-42", [_CheckIp.address])


# -- nsupdate -----------------------------------------------------------------------------------


def test_nsupdate_with_a_tsig_key(world: World) -> None:
    tool("nsupdate")
    tool("dig")
    operator_env = clean_env(**world.server.settings_env)
    # the operator makes the key, on the server's host
    world.run_steps("tsig-key", env=operator_env)
    assert (world.home / "shop-42.key").stat().st_mode & 0o777 == 0o600
    (world.home / "update.txt").write_text(world.substitute(block("nsupdate-script").text))
    assert world.server.records("shop-42") == []
    world.run_steps("nsupdate-run")
    # what the guide says next: another name is refused, a wrong key is not authorised
    key = re.search(
        r'key "([^"]+)".*secret "([^"]+)"', (world.home / "shop-42.key").read_text(), re.S
    )
    assert key is not None
    other = world.server.name("other")
    with world.server.registry() as registry:
        registry.add("OTHER-2", "other")

    def update(secret: str) -> dns.message.Message:
        keyring = dns.tsigkeyring.from_text({key[1]: ("hmac-sha256", secret)})
        message = dns.update.UpdateMessage(world.server.zone, keyring=keyring)
        message.replace(other, 60, "A", "203.0.113.8")
        return dns.query.tcp(message, "127.0.0.1", port=world.dns_port, timeout=5)

    assert update(key[2]).rcode() == dns.rcode.REFUSED
    with pytest.raises(dns.tsig.PeerBadSignature):  # NOTAUTH with TSIG error BADSIG
        update(base64.b64encode(b"x" * 32).decode())
    assert world.server.records("other") == []
