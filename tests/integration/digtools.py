"""Run the real `dig` (BIND) and `kdig` (Knot) against a server and read what they print.

Both print the message they finally accept last (after retrying with EDNS version 0 on
BADVERS, or over TCP on TC), so the parser reads the last header block; the lines
before it (`notes`) say what the tool retried.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field

from tests import debtools

TOOL_TIMEOUT = 20.0
TOOLS = ("dig", "kdig")


@dataclass(frozen=True, slots=True)
class Record:
    name: str  # as printed (case kept), absolute
    ttl: int
    rdclass: str
    rdtype: str
    rdata: str  # fields joined by one space

    def key(self) -> tuple[str, str, str, str]:
        """What a comparison of content needs: owner (lower-case), class, type, data."""
        return (self.name.lower(), self.rdclass, self.rdtype, self.rdata.lower())


@dataclass(slots=True)
class ToolOutput:
    tool: str
    text: str
    status: str = ""
    flags: frozenset[str] = frozenset()
    question: list[str] = field(default_factory=list)  # "<name> <class> <type>"
    answer: list[Record] = field(default_factory=list)
    authority: list[Record] = field(default_factory=list)
    additional: list[Record] = field(default_factory=list)
    edns_version: int | None = None
    edns_flags: frozenset[str] = frozenset()
    udp_size: int | None = None
    transport: str = ""  # "UDP" or "TCP"
    notes: list[str] = field(default_factory=list)  # lines before the last message

    def keys(self, section: str) -> set[tuple[str, str, str, str]]:
        records: list[Record] = getattr(self, section)
        return {r.key() for r in records}

    def types(self, section: str) -> list[str]:
        records: list[Record] = getattr(self, section)
        return [r.rdtype for r in records]


_HEADER = re.compile(r";; ->>HEADER<<- opcode: (\w+)[;,] status: (\w+)[;,] id: (\d+)")
_FLAGS = re.compile(r";; flags:([a-z ]*);", re.IGNORECASE)
_DIG_EDNS = re.compile(r"; EDNS: version: (\d+), flags:([a-z ]*); udp: (\d+)")
_KDIG_EDNS = re.compile(r";; Version: (\d+); flags:([a-z ]*); UDP size: (\d+) B")
_DIG_SERVER = re.compile(r";; SERVER: \S+ \((UDP|TCP)\)")
_KDIG_FROM = re.compile(r";; From \S+\((UDP|TCP)\)")
_SECTION = re.compile(r";; (QUESTION|ANSWER|AUTHORITY|ADDITIONAL) SECTION:")


def parse(tool: str, text: str) -> ToolOutput:
    """The last message `tool` printed in `text`."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if _HEADER.match(line)]
    assert starts, f"{tool} printed no DNS message:\n{text}"
    out = ToolOutput(tool, text, notes=[line for line in lines[: starts[-1]] if line.strip()])
    section = ""
    for line in lines[starts[-1] :]:
        if m := _HEADER.match(line):
            out.status = m.group(2)
        elif m := _FLAGS.match(line):
            out.flags = frozenset(m.group(1).split())
        elif m := (_DIG_EDNS.match(line) or _KDIG_EDNS.match(line)):
            out.edns_version = int(m.group(1))
            out.edns_flags = frozenset(m.group(2).split())
            out.udp_size = int(m.group(3))
        elif m := (_DIG_SERVER.match(line) or _KDIG_FROM.match(line)):
            out.transport = m.group(1)
        elif m := _SECTION.match(line):
            section = m.group(1).lower()
        elif not line.strip():
            section = ""
        elif section == "question":
            out.question.append(" ".join(line.lstrip(";").split()))
        elif section and not line.startswith(";"):
            name, ttl, rdclass, rdtype, *rdata = line.split()
            getattr(out, section).append(Record(name, int(ttl), rdclass, rdtype, " ".join(rdata)))
    return out


def run(tool: str, host: str, port: int, *args: str) -> ToolOutput:
    """`tool @host -p port ARGS`, one try per transport, bounded in time."""
    path = debtools.tool(tool)
    limits = ("+time=3", "+tries=2") if tool == "dig" else ("+time=3", "+retry=1")
    argv = [path, f"@{host}", "-p", str(port), *limits, *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False)
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    return parse(tool, done.stdout)
