"""The strace reader on captured lines: no strace, no kernel."""
# ruff: noqa: E501 - captured strace lines are kept whole, as strace printed them

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nonod.learn._strace import Call, StraceParser, split_call, strace_argv, unescape
from nonod.learn._trace import TraceRecorder, Use, read_observations


def observe(text: str, cwd: str = "/work") -> dict[str, tuple[Use, Use]]:
    obs = read_observations(text.strip("\n").splitlines(), cwd)
    return {path: (rec.ok, rec.failed) for path, rec in obs.paths.items()}


# -- lines to calls ------------------------------------------------------------------------------


def test_split_call_respects_strings_decorations_and_brackets() -> None:
    name, args, result = split_call(
        'openat(AT_FDCWD</a,b>, "/x, y(\\")", O_RDONLY|O_CLOEXEC) = 3</x, y(")>') or ("", (), "")
    assert name == "openat"
    assert args == ("AT_FDCWD</a,b>", '"/x, y(\\")"', "O_RDONLY|O_CLOEXEC")
    assert result == '3</x, y(")>'
    parts = split_call('newfstatat(3</etc/hosts>, "", {st_mode=S_IFREG|0644, st_size=49, ...}, '
                       'AT_EMPTY_PATH) = 0')
    assert parts is not None and len(parts[1]) == 4 and parts[2] == "0"
    assert split_call("execve(\"/bin/sh\", [\"sh\", \"-c\", \"a,b\"], 0x7ff /* 3 vars */) = 0"
                      ) == ("execve", ('"/bin/sh"', '["sh", "-c", "a,b"]', "0x7ff /* 3 vars */"),
                            "0")
    assert split_call("fork() = 12") == ("fork", (), "12")
    assert split_call("openat(AT_FDCWD, \"/trunc") is None  # truncated: no closing paren
    assert split_call("+++ exited with 0 +++") is None


def test_call_results() -> None:
    ok = Call(pid=1, name="openat", args=(), result="3</etc/ho\\76sts (deleted)>")
    assert ok.ok and ok.value == 3 and ok.result_path == "/etc/ho>sts"
    failed = Call(pid=1, name="openat", args=(), result="-1 ENOENT (No such file or directory)")
    assert not failed.ok and failed.errno == "ENOENT" and failed.result_path is None
    unknown = Call(pid=1, name="exit_group", args=(), result="?")
    assert unknown.value is None and not unknown.ok
    socket = Call(pid=1, name="accept", args=(), result="4<socket:[991]>")
    assert socket.ok and socket.result_path is None


def test_unescape() -> None:
    assert unescape(r'we\"ird\nname\74x\76') == 'we"ird\nname<x>'
    assert unescape(r"caf\303\251") == "café"
    assert unescape(r"\x41\t\\") == "A\t\\"
    # bytes that are not UTF-8 survive as surrogates, so the path round-trips
    assert unescape(r"\377").encode("utf-8", "surrogateescape") == b"\xff"


def test_unfinished_and_resumed_calls_are_joined_per_pid() -> None:
    parser = StraceParser()
    lines = [
        "10    vfork( <unfinished ...>",
        '11    execve("/bin/cat", ["cat", "x"], 0x55 /* 2 vars */ <unfinished ...>',
        "10    <... vfork resumed>)              = 11",
        "11    <... execve resumed>)             = 0",
        "10    wait4(11,  <unfinished ...>",
        "10    <... wait4 resumed>[{WIFEXITED(s) && WEXITSTATUS(s) == 0}], 0, NULL) = 11",
        "[pid    12] chdir(\"/x\") = 0",
    ]
    calls = parser.feed_all(lines)
    assert [(c.pid, c.name, c.result) for c in calls] == [
        (10, "vfork", "11"), (11, "execve", "0"), (10, "wait4", "11"), (12, "chdir", "0")]
    assert calls[1].args[0] == '"/bin/cat"'
    assert calls[2].args == ("11", "[{WIFEXITED(s) && WEXITSTATUS(s) == 0}]", "0", "NULL")


def test_noise_is_skipped() -> None:
    parser = StraceParser()
    assert parser.feed("12 +++ exited with 0 +++") is None
    assert parser.feed("12 --- SIGCHLD {si_signo=SIGCHLD, si_code=CLD_EXITED} ---") is None
    assert parser.feed("") is None
    assert parser.feed("garbage") is None
    assert parser.feed("13 <... read resumed>) = 0") is None  # no first half seen
    assert parser.feed('14 openat(AT_FDCWD, "/cut') is None
    assert parser.exits == [12]
    assert parser.skipped == 3


@given(st.text(alphabet=st.sampled_from(list('0123456789 abz_(){}[]<>,="\\.-/|?+')),
               max_size=80))
def test_any_line_parses_or_is_skipped(line: str) -> None:
    parser = StraceParser()
    recorder = TraceRecorder("/w")
    for candidate in (line, "7 " + line, "7 openat(" + line, "7 " + line + " <unfinished ...>",
                      "7 <... openat resumed>" + line):
        call = parser.feed(candidate)
        if call is not None:
            recorder.feed(call)
    recorder.finish()


# -- calls to observations -----------------------------------------------------------------------


def test_decorated_opens_use_the_kernels_path() -> None:
    seen = observe('''
5  openat(AT_FDCWD</tmp/lx>, "/lib/x86_64-linux-gnu/libc.so.6", O_RDONLY|O_CLOEXEC) = 3</usr/lib/x86_64-linux-gnu/libc.so.6>
5  openat(AT_FDCWD</srv>, "../etc/localtime", O_RDONLY) = 3</usr/share/zoneinfo/Etc/UTC>
5  openat(AT_FDCWD</srv>, "missing", O_RDONLY) = -1 ENOENT (No such file or directory)
5  openat(AT_FDCWD</srv>, "out.log", O_WRONLY|O_CREAT|O_APPEND, 0666) = 4</srv/out.log>
5  openat(AT_FDCWD</srv>, "db", O_RDWR) = 5</srv/db>
5  openat(AT_FDCWD</srv>, "p", O_RDONLY|O_PATH) = 6</srv/p>
''')
    assert seen["/usr/lib/x86_64-linux-gnu/libc.so.6"] == (Use.READ, Use.NONE)
    assert seen["/usr/share/zoneinfo/Etc/UTC"] == (Use.READ, Use.NONE)
    assert seen["/srv/missing"] == (Use.NONE, Use.READ)
    assert seen["/srv/out.log"] == (Use.WRITE | Use.CREATE, Use.NONE)
    assert seen["/srv/db"] == (Use.READ | Use.WRITE, Use.NONE)
    assert seen["/srv/p"] == (Use.STAT, Use.NONE)
    assert "/lib/x86_64-linux-gnu/libc.so.6" not in seen


def test_relative_paths_follow_chdir_without_decorations() -> None:
    seen = observe('''
5  chdir("sub") = 0
5  open("a", O_RDONLY) = 3
5  mkdir("../cache", 0777) = 0
5  rename("../cache/f.tmp", "../cache/f") = 0
5  unlink("old") = 0
5  chdir("/nope") = -1 ENOENT (No such file or directory)
5  stat("still-in-sub", 0x7ffe) = 0
5  readlink("/bin", "usr/bin", 4096) = 7
''', cwd="/w")
    assert seen["/w/sub/a"] == (Use.READ, Use.NONE)
    assert seen["/w/sub/../cache"] == (Use.CREATE, Use.NONE)
    assert seen["/w/sub/../cache/f.tmp"] == (Use.REMOVE, Use.NONE)
    assert seen["/w/sub/../cache/f"] == (Use.CREATE | Use.WRITE, Use.NONE)
    assert seen["/w/sub/old"] == (Use.REMOVE, Use.NONE)
    assert seen["/w/sub/still-in-sub"] == (Use.STAT, Use.NONE)
    assert seen["/bin"] == (Use.STAT, Use.NONE)
    assert "usr/bin" not in "".join(seen)  # readlink's buffer is output, not a path


def test_directory_listing_and_fchdir_through_the_descriptor_table() -> None:
    seen = observe('''
5  openat(AT_FDCWD, "/etc/ssl", O_RDONLY|O_NONBLOCK|O_CLOEXEC|O_DIRECTORY) = 3
5  getdents64(3, 0x303e8d70 /* 5 entries */, 32768) = 144
5  getdents64(7</var/lib/x>, 0x30 /* 2 entries */, 32768) = 48
5  fchdir(3) = 0
5  openat(AT_FDCWD, "certs/ca.pem", O_RDONLY) = 4
5  openat(3, "openssl.cnf", O_RDONLY) = 5
''')
    assert seen["/etc/ssl"] == (Use.LIST, Use.NONE)
    assert seen["/var/lib/x"] == (Use.LIST, Use.NONE)
    assert seen["/etc/ssl/certs/ca.pem"] == (Use.READ, Use.NONE)
    assert seen["/etc/ssl/openssl.cnf"] == (Use.READ, Use.NONE)


def test_children_start_from_their_parents_state() -> None:
    # The child's calls come before the parent's clone returns: held back, then replayed
    # with the parent's working directory (fork copies it, CLONE_FS shares it).
    seen = observe('''
5  chdir("/srv/app") = 0
5  vfork( <unfinished ...>
6  execve("./tool", ["./tool"], 0x55 /* 2 vars */ <unfinished ...>
5  <... vfork resumed>) = 6
6  <... execve resumed>) = 0
6  chdir("/elsewhere") = 0
5  open("after-child-chdir", O_RDONLY) = 3
5  clone(child_stack=0x7f, flags=CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_THREAD|CLONE_SIGHAND) = 7
7  chdir("/shared") = 0
5  open("after-thread-chdir", O_RDONLY) = 4
6  execve("tool", ["tool"], 0x55 /* 2 vars */) = -1 ENOENT (No such file or directory)
''', cwd="/start")
    assert seen["/srv/app/./tool"] == (Use.EXEC | Use.READ, Use.NONE)
    assert seen["/srv/app/after-child-chdir"] == (Use.READ, Use.NONE)
    assert seen["/shared/after-thread-chdir"] == (Use.READ, Use.NONE)
    assert seen["/elsewhere/tool"] == (Use.NONE, Use.EXEC | Use.READ)


def test_a_child_whose_creation_was_not_seen_keeps_absolute_paths() -> None:
    seen = observe('''
5  openat(AT_FDCWD, "/a", O_RDONLY) = 3
9  openat(AT_FDCWD, "/b", O_RDONLY) = 3
9  openat(AT_FDCWD, "relative", O_RDONLY) = 4
9  openat(AT_FDCWD</known>, "decorated", O_RDONLY) = 5
''')
    assert set(seen) == {"/a", "/b", "/known/decorated"}


def test_pid_reuse_after_exit() -> None:
    seen = observe('''
5  clone(child_stack=NULL, flags=SIGCHLD) = 6
6  chdir("/old") = 0
6  exit_group(0) = ?
5  chdir("/parent") = 0
5  clone(child_stack=NULL, flags=SIGCHLD) = 6
6  open("x", O_RDONLY) = 3
''', cwd="/")
    assert "/parent/x" in seen and "/old/x" not in seen


def test_quoted_paths_with_escapes() -> None:
    seen = observe(r'''
5  openat(AT_FDCWD</usr>, "/tmp/we\"ird\nname<x>", O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC, 0666) = 6</tmp/we\"ird\nname\74x\76>
5  openat(AT_FDCWD</usr>, "/srv/caf\303\251", O_RDONLY) = -1 ENOENT (No such file or directory)
''')
    assert seen['/tmp/we"ird\nname<x>'] == (Use.WRITE | Use.CREATE, Use.NONE)
    assert "/srv/café" in seen


def test_openat2_and_fd_stats() -> None:
    seen = observe('''
5  openat2(AT_FDCWD</w>, "conf", {flags=O_RDWR|O_CLOEXEC, mode=0, resolve=RESOLVE_NO_SYMLINKS}, 24) = 3</w/conf>
5  newfstatat(3</w/conf>, "", {st_mode=S_IFREG|0644, st_size=1, ...}, AT_EMPTY_PATH) = 0
5  statx(AT_FDCWD</w>, "info", AT_STATX_SYNC_AS_STAT, STATX_ALL, {stx_mask=STATX_ALL}) = 0
5  utimensat(AT_FDCWD</w>, "touched", NULL, 0) = 0
''')
    assert seen == {"/w/conf": (Use.READ | Use.WRITE, Use.NONE),
                    "/w/info": (Use.STAT, Use.NONE),
                    "/w/touched": (Use.WRITE, Use.NONE)}


def test_listening_ports_and_direct_connections() -> None:
    obs = read_observations('''
5  bind(4<socket:[843335]>, {sa_family=AF_INET, sin_port=htons(5077), sin_addr=inet_addr("127.0.0.1")}, 16) = 0
5  listen(4<socket:[843335]>, 128) = 0
5  bind(5<socket:[843336]>, {sa_family=AF_INET6, sin6_port=htons(5078), sin6_flowinfo=htonl(0), inet_pton(AF_INET6, "::1", &sin6_addr), sin6_scope_id=0}, 28) = 0
5  listen(5<socket:[843336]>, 128) = 0
5  bind(6<socket:[1]>, {sa_family=AF_INET, sin_port=htons(0), sin_addr=inet_addr("0.0.0.0")}, 16) = 0
5  listen(6<socket:[1]>, 5) = 0
5  listen(7<socket:[2]>, 5) = 0
5  bind(8<socket:[3]>, {sa_family=AF_INET, sin_port=htons(53), sin_addr=inet_addr("0.0.0.0")}, 16) = 0
5  connect(9<socket:[4]>, {sa_family=AF_INET, sin_port=htons(443), sin_addr=inet_addr("140.82.112.3")}, 16) = -1 ENETUNREACH (Network is unreachable)
5  connect(10<socket:[5]>, {sa_family=AF_INET, sin_port=htons(31000), sin_addr=inet_addr("127.0.0.1")}, 16) = 0
5  connect(11<socket:[6]>, {sa_family=AF_UNIX, sun_path="/run/x.sock"}, 110) = -1 ENOENT (No such file or directory)
'''.strip().splitlines(), "/")
    assert obs.listening == {("127.0.0.1", 5077): 1, ("::1", 5078): 1}
    assert obs.direct == {("140.82.112.3", 443): 1}


def test_strace_argv() -> None:
    argv = strace_argv("/usr/bin/strace", "/t/trace", ["python3", "-c", "x"])
    assert argv[0] == "/usr/bin/strace"
    assert argv[argv.index("-o") + 1] == "/t/trace"
    assert argv[-4:] == ("--", "python3", "-c", "x")
    for flag in ("-f", "-qq", "-y"):
        assert flag in argv
    trace = argv[argv.index("-e", argv.index("signal=none")) + 1]
    assert trace.startswith("trace=%file,%process") and "getdents64" in trace


@pytest.mark.parametrize("line", [
    "5  exit_group(0)                     = ?",
    "5  execve(\"/x\", [], 0x0 /* 0 vars */) = ? <unavailable>",
])
def test_calls_without_a_value(line: str) -> None:
    call = StraceParser().feed(line)
    assert call is not None and call.value is None and not call.ok
