"""The macOS Seatbelt renderer, against golden profiles and structural checks.

Nothing here runs on a Mac: the goldens pin what we render, and the structural tests check
properties that must hold whatever the goldens say (deny default, denials after the allows they
narrow, no way out but the proxy, escaping). ``NONO_UPDATE_GOLDEN=1 pytest tests/sandbox/
test_seatbelt.py`` rewrites the goldens; review the diff before keeping it.
"""

from __future__ import annotations

import os
import posixpath
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nonod.errors import EnforcementUnavailable, PolicyError
from nonod.policy import Access, Denial, Grant, NetworkPolicy, ResolvedPolicy
from nonod.profiles import ResolveContext, _resolve, load_profile, resolve
from nonod.sandbox._seatbelt import apply_seatbelt, macos_path, render_sbpl, sbpl_string

GOLDEN = Path(__file__).parent / "seatbelt_golden"
HOME = "/Users/alice"
PROXY = 41234


# --- a tiny SBPL reader --------------------------------------------------------------------

@dataclass(frozen=True)
class Sym:
    name: str


@dataclass(frozen=True)
class Str:
    value: str
    regex: bool = False


Node = Sym | Str | int | list["Node"]


class SBPLSyntaxError(ValueError):
    pass


def _tokens(text: str) -> Iterator[object]:
    i = 0
    while i < len(text):
        ch = text[i]
        if ch in " \t\n":
            i += 1
        elif ch == ";":
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
        elif ch in "()":
            yield ch
            i += 1
        elif ch == '"' or text.startswith('#"', i):
            regex = ch == "#"
            i += 2 if regex else 1
            chars: list[str] = []
            while True:
                if i >= len(text):
                    raise SBPLSyntaxError("unterminated string")
                c = text[i]
                if c == "\\":
                    if i + 1 >= len(text) or text[i + 1] not in '\\"':
                        raise SBPLSyntaxError(f"unknown escape at {i}")
                    chars.append(text[i + 1])
                    i += 2
                elif c == '"':
                    i += 1
                    break
                elif c == "\n":
                    raise SBPLSyntaxError("newline inside a string")
                else:
                    chars.append(c)
                    i += 1
            yield Str("".join(chars), regex)
        else:
            start = i
            while i < len(text) and text[i] not in ' \t\n();"':
                i += 1
            word = text[start:i]
            yield int(word) if word.isdigit() else Sym(word)


def parse_sbpl(text: str) -> list[list[Node]]:
    """Every top-level form of ``text``; raises SBPLSyntaxError if it does not balance."""
    stack: list[list[Node]] = [[]]
    for token in _tokens(text):
        if token == "(":
            stack.append([])
        elif token == ")":
            if len(stack) == 1:
                raise SBPLSyntaxError("unbalanced )")
            done = stack.pop()
            stack[-1].append(done)
        else:
            stack[-1].append(token)  # type: ignore[arg-type]
    if len(stack) != 1:
        raise SBPLSyntaxError("unbalanced (")
    top = stack[0]
    for form in top:
        if not isinstance(form, list):
            raise SBPLSyntaxError(f"atom at top level: {form!r}")
    return top  # type: ignore[return-value]


@dataclass(frozen=True)
class Rule:
    index: int
    action: str  # allow | deny
    ops: tuple[str, ...]
    filters: tuple[list[Node], ...]

    def paths(self) -> list[tuple[str, str]]:
        """(kind, path) of each literal/subpath filter."""
        return [(f[0].name, f[1].value) for f in self.filters
                if isinstance(f[0], Sym) and f[0].name in ("literal", "subpath")
                and isinstance(f[1], Str)]


def rules(text: str) -> list[Rule]:
    out = []
    for index, form in enumerate(parse_sbpl(text)):
        head = form[0]
        assert isinstance(head, Sym)
        if head.name not in ("allow", "deny"):
            continue
        ops = tuple(x.name for x in form[1:] if isinstance(x, Sym))
        filters = tuple(x for x in form[1:] if isinstance(x, list))
        out.append(Rule(index, head.name, ops, filters))
    return out


def covers(kind: str, path: str, target: str) -> bool:
    if kind == "literal":
        return path == target
    return target == path or target.startswith(path.rstrip("/") + "/")


# --- policies ------------------------------------------------------------------------------

class FakeMacPath:
    """Enough of ``FsLook``'s questions (``os.path``'s) for the resolver to see a Mac: /tmp,
    /var and /etc are links into /private, and only the listed paths exist."""

    def __init__(self, dirs: set[str], files: set[str]) -> None:
        self.dirs = set(dirs)
        for path in [*dirs, *files]:
            parent = posixpath.dirname(path)
            while parent != "/":
                self.dirs.add(parent)
                parent = posixpath.dirname(parent)
        self.files = files

    def realpath(self, path: str, crossed: list[str] | None = None,
                 placed: list[tuple[str, int]] | None = None) -> str:
        # (``placed``: no name of another user on the way on this fake Mac)
        path = posixpath.normpath(path)
        for alias in ("/etc", "/tmp", "/var"):
            if path == alias or path.startswith(alias + "/"):
                if crossed is not None:  # the link followed, as ``FsLook.realpath`` reports it
                    crossed.append(alias)
                return "/private" + path
        return path

    def exists(self, path: str) -> bool:
        return path in self.dirs or path in self.files

    lexists = exists

    def isdir(self, path: str) -> bool:
        return path in self.dirs


@pytest.fixture
def fake_mac(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeMacPath(
        dirs={f"{HOME}/gitbot", f"{HOME}/.pyenv", f"{HOME}/.local/bin", f"{HOME}/.ssh",
              f"{HOME}/.aws", f"{HOME}/Library/Keychains", "/Library/Keychains",
              f"{HOME}/Library/Application Support/Google/Chrome", "/private/tmp"},
        files={"/private/etc/ssl/cert.pem", "/private/etc/resolv.conf", f"{HOME}/.zshrc",
               f"{HOME}/.bash_history"},
    )
    monkeypatch.setattr(_resolve, "FsLook", lambda: fake)  # what resolve() looks through


def gitbot_policy() -> ResolvedPolicy:
    ctx = ResolveContext(home=HOME, workdir=f"{HOME}/gitbot", uid=501, platform="macos")
    return resolve(load_profile("gitbot", user_dir=None), ctx)


def _grant(path: str, access: Access, is_file: bool = False) -> Grant:
    return Grant(path=path, access=access, is_file=is_file)


R, W, RW = Access.READ, Access.WRITE, Access.READWRITE
RESTRICTED = NetworkPolicy(restricted=True, allow_domain=("api.github.com",))

POLICIES: dict[str, ResolvedPolicy] = {
    "blocked_network": ResolvedPolicy(
        name="blocked",
        grants=(_grant(f"{HOME}/work", RW), _grant("/usr/local/bin", R)),
        denials=(),
        network=NetworkPolicy(restricted=True, block=True),
        writable_persistence=(f"{HOME}/work/.git/hooks", f"{HOME}/work/.git/config",
                              f"{HOME}/work/.gitmodules", f"{HOME}/work/.envrc",
                              f"{HOME}/work/.vscode", f"{HOME}/work/.idea"),
    ),
    "deny_inside_allow": ResolvedPolicy(
        name="home-reader",
        grants=(_grant(HOME, R), _grant(f"{HOME}/.ssh/known_hosts", R, True),
                _grant(f"{HOME}/notes.txt", RW, True)),
        denials=(Denial(path=f"{HOME}/.ssh"), Denial(path=f"{HOME}/.aws"),
                 Denial(path=f"{HOME}/.netrc", is_file=True),
                 Denial(path="/var/run/docker.sock", is_file=True)),
        signal_mode="allow_all",
        process_info_mode="allow_all",
    ),
    "persistence": ResolvedPolicy(
        name="persistence",
        grants=(_grant(HOME, RW), _grant(f"{HOME}/proj", RW)),
        denials=(Denial(path=f"{HOME}/.ssh"),),
        network=RESTRICTED,
        writable_persistence=(f"{HOME}/proj/.envrc",),
        ipc_mode="full",
    ),
    "unix_sockets": ResolvedPolicy(
        name="unix",
        grants=(_grant(f"{HOME}/svc", RW), _grant(f"{HOME}/run/agent.sock", RW, True),
                _grant("/opt/tools", R)),
        denials=(Denial(path=f"{HOME}/svc/secret"),),
        network=NetworkPolicy(restricted=True, allow_domain=("pypi.org",),
                              listen_ports=(8080,)),
        allow_unix_sockets=True,
    ),
    "escaping": ResolvedPolicy(
        name='quote"me\nplease',
        grants=(_grant('/Users/alice/My "Quoted" Project', RW),
                _grant("/Users/alice/back\\slash", R),
                _grant("/Users/alice/Ünïcode dir", R),
                _grant("/tmp/scratch", W)),
        denials=(Denial(path='/Users/alice/My "Quoted" Project/.secret'),),
        network=RESTRICTED,
    ),
}


def rendered(name: str) -> tuple[ResolvedPolicy, str]:
    policy = gitbot_policy() if name == "gitbot" else POLICIES[name]
    return policy, render_sbpl(policy, proxy_port=PROXY, home=HOME)


CASES = ["gitbot", *POLICIES]


# --- goldens -------------------------------------------------------------------------------

@pytest.mark.usefixtures("fake_mac")
@pytest.mark.parametrize("name", CASES)
def test_matches_golden(name: str) -> None:
    _, text = rendered(name)
    golden = GOLDEN / f"{name}.sb"
    if os.environ.get("NONO_UPDATE_GOLDEN") == "1":
        golden.write_text(text, encoding="utf-8")
    assert golden.is_file(), f"{golden} missing: run with NONO_UPDATE_GOLDEN=1"
    assert text == golden.read_text(encoding="utf-8")


def test_every_golden_parses() -> None:
    goldens = sorted(GOLDEN.glob("*.sb"))
    assert {g.stem for g in goldens} == set(CASES)
    for golden in goldens:
        forms = parse_sbpl(golden.read_text(encoding="utf-8"))
        assert forms[0] == [Sym("version"), 1], golden.name
        assert forms[1] == [Sym("deny"), Sym("default")], golden.name


@pytest.mark.parametrize("bad", ['(allow "x)', "(allow (x)", "(allow x))", '(a "\\n")'])
def test_reader_rejects_malformed(bad: str) -> None:
    with pytest.raises(SBPLSyntaxError):
        parse_sbpl(bad)


# --- structure, independent of the goldens -------------------------------------------------

@pytest.mark.usefixtures("fake_mac")
@pytest.mark.parametrize("name", CASES)
def test_structure(name: str) -> None:
    policy, text = rendered(name)
    found = rules(text)

    # Everything is refused unless allowed, and that comes before any allow.
    first_allow = min(r.index for r in found if r.action == "allow")
    assert any(r.action == "deny" and r.ops == ("default",) and r.index < first_allow
               for r in found)

    # Each denial of the policy is there, and after every allow that covers it.
    for denial in policy.denials:
        target = macos_path(denial.path)
        deny = [r for r in found if r.action == "deny" and ("subpath", target) in r.paths()]
        assert deny, f"no deny rule for {target}"
        assert {"file-read*", "file-write*", "network-outbound"} <= set(deny[0].ops)
        for allow in (r for r in found if r.action == "allow"):
            if any(covers(kind, path, target) for kind, path in allow.paths()):
                assert allow.index < deny[0].index, (allow, deny[0])

    # No allow is more specific than a denial that covers it: the deny wins under either
    # reading of Seatbelt's precedence (last match, or most specific match).
    denied = [macos_path(d.path) for d in policy.denials]
    for allow in (r for r in found if r.action == "allow"):
        for _, path in allow.paths():
            assert not any(covers("subpath", d, path) and d != path for d in denied), allow

    # Network: nothing but the proxy when restricted, nothing at all when blocked.
    outbound = [r for r in found if r.action == "allow" and "network-outbound" in r.ops]
    remote = [f for r in outbound for f in r.filters if f[0] == Sym("remote")]
    if policy.network.block:
        assert remote == []
    elif policy.network.restricted:
        assert remote == [[Sym("remote"), Sym("tcp"), Str(f"localhost:{PROXY}")]]
        assert all(r.filters for r in outbound), "unfiltered network-outbound"
    # Pathname sockets only when the profile opts in.
    path_outbound = [r for r in outbound if r.paths()]
    if policy.network.restricted:
        assert bool(path_outbound) == policy.allow_unix_sockets


@pytest.mark.usefixtures("fake_mac")
def test_gitbot_profile_as_resolved_on_a_mac() -> None:
    policy, text = rendered("gitbot")
    found = rules(text)
    allowed = {p for r in found if r.action == "allow" for p in r.paths()}
    assert ("literal", "/private/etc/ssl/cert.pem") in allowed
    assert ("subpath", f"{HOME}/gitbot") in allowed
    assert ("subpath", "/private/tmp") in allowed  # /tmp, as Seatbelt sees it
    denied = {p for r in found if r.action == "deny" for p in r.paths()}
    for path in (".ssh", ".aws", ".gnupg", "Library/Keychains"):
        assert ("subpath", f"{HOME}/{path}") in denied
    assert ("subpath", f"{HOME}/gitbot/.git/hooks") in denied
    assert 'com.apple.SecurityServer' not in text
    assert "com.apple.trustd" not in text  # it fetches URLs: not with a restricted network
    assert policy.network.restricted


def test_persistence_is_read_only_inside_writable_grants() -> None:
    _, text = rendered("persistence")
    found = rules(text)
    write = next(r for r in found if r.action == "allow" and "file-write*" in r.ops
                 and ("subpath", f"{HOME}/proj") in r.paths())
    for path in (f"{HOME}/proj/.git/hooks", f"{HOME}/proj/.git/config", f"{HOME}/.zshrc",
                 f"{HOME}/.config/fish"):
        deny = next(r for r in found if r.action == "deny" and ("subpath", path) in r.paths())
        assert deny.ops == ("file-write*",)
        assert deny.index > write.index
    # The directory on the way cannot be swapped for another one.
    assert any(("literal", f"{HOME}/proj/.git") in r.paths() for r in found
               if r.action == "deny")
    # Listed under writable_persistence: left writable.
    assert f"{HOME}/proj/.envrc" not in text


def test_grant_inside_a_denial_is_dropped() -> None:
    _, text = rendered("deny_inside_allow")
    assert "known_hosts" not in text
    base = ResolvedPolicy(name="t", grants=(), denials=(Denial(path="/usr/share"),))
    assert '(allow file-read* (subpath "/usr/share"))' not in render_sbpl(
        base, proxy_port=None, home=HOME)
    assert f'(literal "{HOME}/notes.txt")' in text
    assert '(subpath "/private/var/run/docker.sock")' in text


def test_unix_sockets_need_the_opt_in() -> None:
    policy = POLICIES["unix_sockets"]
    off = render_sbpl(ResolvedPolicy(**{**{f: getattr(policy, f) for f in policy.__struct_fields__},
                                        "allow_unix_sockets": False}),
                      proxy_port=PROXY, home=HOME)
    on = render_sbpl(policy, proxy_port=PROXY, home=HOME)
    assert f'(allow network-outbound (literal "{HOME}/run/agent.sock"))' in on
    assert f'(allow network-bind (subpath "{HOME}/svc"))' in on
    assert "/opt/tools" in on and '(allow network-bind (subpath "/opt/tools"))' not in on
    assert not any(r.paths() for r in rules(off) if "network-outbound" in r.ops
                   and r.action == "allow")


def test_quote_in_a_path_is_escaped_and_reads_back() -> None:
    _, text = rendered("escaping")
    assert r'(subpath "/Users/alice/My \"Quoted\" Project")' in text
    assert r'(subpath "/Users/alice/back\\slash")' in text
    paths = {p for r in rules(text) for _, p in r.paths()}
    assert '/Users/alice/My "Quoted" Project' in paths
    assert "/Users/alice/back\\slash" in paths
    assert '/Users/alice/My "Quoted" Project/.secret' in paths
    # The policy name is only ever a comment, and cannot end it early.
    assert "\nplease" not in text


@pytest.mark.parametrize("bad", ["/Users/alice/a\x00b", "/Users/alice/evil\n(allow default)",
                                 "/x\ry", "/x\ty", "/x\x7f", "/x\x85",
                                 "/x\udcff"])
def test_unnameable_paths_are_refused(bad: str) -> None:
    policy = ResolvedPolicy(name="t", grants=(_grant(bad, R),), denials=())
    with pytest.raises(PolicyError, match="cannot name"):
        render_sbpl(policy, proxy_port=None, home=HOME)


def test_control_character_in_a_denial_is_refused() -> None:
    policy = ResolvedPolicy(name="t", grants=(), denials=(Denial(path="/a\nb"),))
    with pytest.raises(PolicyError, match="control character 0x0a"):
        render_sbpl(policy, proxy_port=None, home=HOME)


@pytest.mark.parametrize("bad", ["relative/path", "/a/../b", "/a/", "//a"])
def test_non_canonical_paths_are_refused(bad: str) -> None:
    policy = ResolvedPolicy(name="t", grants=(_grant(bad, R),), denials=())
    with pytest.raises(PolicyError, match="Seatbelt rules need"):
        render_sbpl(policy, proxy_port=None, home=HOME)


def test_private_aliases() -> None:
    assert macos_path("/tmp") == "/private/tmp"
    assert macos_path("/etc/hosts") == "/private/etc/hosts"
    assert macos_path("/var/run/x.sock") == "/private/var/run/x.sock"
    assert macos_path("/private/var") == "/private/var"
    assert macos_path("/variable") == "/variable"


def test_restricted_network_needs_a_proxy_port() -> None:
    policy = ResolvedPolicy(name="t", grants=(), denials=(), network=RESTRICTED)
    with pytest.raises(PolicyError, match="no proxy port"):
        render_sbpl(policy, proxy_port=None, home=HOME)
    with pytest.raises(PolicyError, match="out of range"):
        render_sbpl(policy, proxy_port=70000, home=HOME)


def test_unrestricted_network_is_said_so() -> None:
    policy = ResolvedPolicy(name="t", grants=(), denials=())
    text = render_sbpl(policy, proxy_port=None, home=HOME)
    assert "; unrestricted: the profile has no network section" in text
    assert '(allow network-outbound (remote ip "*:*"))' in text


@given(st.text(max_size=40))
def test_any_string_escapes_or_is_refused(text: str) -> None:
    try:
        literal = sbpl_string(text)
    except PolicyError:
        assert any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or 0xD800 <= ord(c) <= 0xDFFF
                   for c in text)
        return
    assert parse_sbpl(f"(x {literal})") == [[Sym("x"), Str(text)]]


@pytest.mark.skipif(sys.platform == "darwin", reason="the real call is for a Mac")
def test_apply_refuses_off_macos() -> None:
    with pytest.raises(EnforcementUnavailable, match="only on macOS"):
        apply_seatbelt("(version 1)\n(deny default)\n")
