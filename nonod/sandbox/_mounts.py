"""The session's filesystem view: a new root built from the policy's grants.

``compile_mounts`` runs in the parent: it looks at the host (what exists, what is a file, where
symlinks are) and returns a flat, ordered tuple of ``MountOp``. ``apply_mounts`` runs in the
launcher child, inside fresh user and mount namespaces, and only executes those operations:

1. the host root goes private, a tmpfs becomes the new root, the host moves to ``/oldroot``;
2. each grant is bind-mounted at its own path (read-only unless it grants write), parents first
   (for a uid-0 session, the read-only ones under ``/etc`` are idmapped trees the fork server
   made: ``idmapped_trees``); a writable directory grant in the user's cache home is an
   overlay instead, the host's directory under a tmpfs of the session's own (``OVERLAY``:
   host tools run what their caches hold, so the session's writes must not reach them);
3. inside writable grants, the existing directories on the way to a guarded path (below) are
   bound onto themselves: a mount point cannot be renamed or removed, so the session cannot
   move ``.git`` aside and make a new one with its own hooks;
4. files that could run code outside the sandbox later (``.git/hooks``, rc files...) are
   re-bound read-only inside writable grants;
5. denied paths under visible grants are masked: an empty mode-000 tmpfs over a directory, an
   empty mode-000 file over a file, so access fails with EACCES;
6. fresh ``/proc`` (own pid namespace), a minimal ``/dev``, private ``/tmp`` and ``/dev/shm``;
7. the host tree is detached and the new root made read-only.

Nothing here writes to the host: a directory or file is created only in the sandbox's own
tmpfs root, never under a bound host directory. A guarded path (denied, or persistence) that
does not exist at launch cannot be mounted over (a mount needs a dentry); it is an ``absent``
operation: the launcher's view guard (``_viewguard``) watches the way to it and mounts the
mask or read-only bind in the session as soon as the host creates it, and the first missing
component of each one whose parent the session could write is in
``MountPlan.creation_refused``, for the creation guard (``_createguard``) to refuse.

Paths not granted do not exist in the session at all (ENOENT), which also closes what Landlock
does not check: ``stat``, ``chmod``, ``chown``, ``utime``, ``setxattr``, pathname sockets.
"""

from __future__ import annotations

import _thread
import errno
import os
import stat
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Final

import msgspec

from . import _libc, _mounttable
from ._hostevents import MountEvents, ProcTopEvents

if TYPE_CHECKING:  # (the policy's types: the fork server, which makes no plan, never loads them)
    from ..policy import Denial, Grant, ResolvedPolicy

BIND_DIR = 1
BIND_FILE = 2
TMPFS = 3
SYMLINK = 4
READONLY = 5
MASK_DIR = 6
MASK_FILE = 7
PIN = 8  # a verified file's bytes (plan.pinned[int(source)]) mounted read-only over target
ANCHOR = 9  # an existing directory bound onto itself (stays writable): it cannot be moved
IDMAP = 10  # a read-only BIND_DIR attached from a tree the host idmapped (``idmapped_trees``)
# A writable directory grant in the user's cache home: the host's directory (source) as the
# lower layer of an overlay whose upper layer is a tmpfs of the session's own (``_overlay``).
OVERLAY = 11
# Made in the upper layer of the OVERLAY that holds target, before it is mounted: an opaque
# directory (UPPER_DIR) or an empty file (UPPER_FILE) where a denied path is absent, so that
# what the host creates there later stays out of the session's view.
UPPER_DIR = 12
UPPER_FILE = 13
# A symbolic link bound onto itself (not what it points to): a mount point cannot be removed
# or renamed over, so the session keeps the link a denial was resolved through
# (``ResolvedPolicy.denial_links``). Applied by the Python init only (``_cinit.covers``).
LINK_ANCHOR = 14
# A file whose inode has a link outside the writable grants (a cache's, ``_linkscan``), or a
# directory holding only such files, bound onto itself read-only; ``source`` is the walk's
# ``device:inode`` of it, which the bind checks (``_linked``). Not guarded: a name the host
# replaces while the session runs is a new link, which no launch-time scan sees either.
LINKED = 15

OLD = "/oldroot"
PIN_DIR = "/.nono-pins"
LAYERS_DIR = "/.nono-layers"  # an overlay's upper and work directories, while it is made
# The user's cache home when the policy names none ($XDG_CACHE_HOME's default), below $HOME.
CACHE_HOME = ".cache"
# Caches kept outside the cache home, below $HOME, whose contents host tools run later
# without checking them again (the places each tool uses when its variable is not set): Go's
# module cache, Cargo's crate sources (``build.rs``), the jars of Maven and Gradle and
# Gradle's wrapper distributions, npm's cache (``npx`` runs what ``_npx`` holds), uv's
# Python installations and tools, pnpm's and Bun's stores, Yarn's, NuGet's, conda's
# packages, Dart's pub cache, pipx's virtual environments (the tools ~/.local/bin links to).
# Copy-on-write as the cache home is.
HOME_CACHES = (
    "go/pkg/mod", ".cargo/registry", ".cargo/git", ".m2/repository", ".gradle/caches",
    ".gradle/wrapper", ".npm", ".local/share/uv", ".local/share/pnpm", ".bun/install/cache",
    ".yarn/berry/cache", ".nuget/packages", ".conda/pkgs", ".pub-cache", ".local/share/pipx",
    ".local/pipx",
)
EMPTY_FILE = "/.nono-empty"
PRIVATE_TMP = ("/tmp", "/var/tmp", "/dev/shm")
DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
# System configuration trees that a session running as uid 0 sees only as any user would see
# them: what only root may read there (TLS and VPN private keys, cluster admin configurations,
# keytabs, opasswd) is masked. Root owns those files, so a uid 0 without capabilities still
# reads them by their owner bits.
ROOT_ONLY_TREES: Final = ("/etc",)
# At most this many entries are looked at per launch (a bound on the launch's cost).
ROOT_ONLY_SCAN_LIMIT: Final = 50_000
# sysfs for a session running as uid 0: a grant of /sys itself shows only these (where they
# exist). Elsewhere sysfs has thousands of files only root may read, some of which act when
# read: kernel heap state (/sys/kernel/slab, as /proc/slabinfo), firmware tables and
# serial numbers (/sys/firmware, .../dmi/id), PCI I/O ports (``resource*``), and
# /sys/class/zram-control/hot_add, which creates a block device on the host at each read.
# sysfs cannot be idmapped and walking all of it costs a launch most of a second, so only
# what programs read for their own tuning is kept: CPUs and NUMA nodes (nproc, lscpu,
# thread pools) and transparent huge pages (allocators, the JVM). The root-only walk covers
# these too. A grant of a deeper /sys path is kept as the profile gives it.
SYS_FOR_ROOT: Final = ("/sys/devices/system/cpu", "/sys/devices/system/node",
                       "/sys/kernel/mm/transparent_hugepage")
# Where the kernel can idmap these trees, the read-only directory grants in them are mounted
# with host uid and gid 0 shown as this id, which a uid-0 session's user namespace does not map
# (it maps 0 only): the session is then "other" on every root-owned file there, by the
# kernel's own permission check, and no capability can override that (the owner is unmapped).
# Every other id is unmapped in the idmap too (shown as the overflow id): "other" as well.
ROOT_ONLY_IDMAP_ID: Final = 65534
# More read-only grants than this in those trees fall back to the walk: each idmapped tree is
# a descriptor passed to the launcher with the plan (``_launcher.MAX_TREES``).
MAX_IDMAPPED: Final = 64
# Kernel interfaces mounted inside host directories (under /sys mostly: debugfs, tracefs,
# securityfs, bpffs, pstore, efivarfs...). Binds are recursive, so a grant of /sys (or of any
# directory holding such a mount) would bring them into the view; each one is masked instead.
KERNEL_FS_TYPES: Final = frozenset({
    "debugfs", "tracefs", "securityfs", "bpf", "pstore", "efivarfs", "configfs", "fusectl",
    "binfmt_misc", "cgroup", "cgroup2", "selinuxfs", "rpc_pipefs", "nfsd", "hugetlbfs",
    "mqueue", "autofs",
})
# What the sandbox's own /dev provides: grants of these are already satisfied.
#: Pseudo-terminals one session's ``/dev/pts`` may hold at once (devpts ``max=``). Every
#: devpts instance but the host's own draws from one pool for the whole host,
#: ``kernel.pty.max`` less ``kernel.pty.reserve`` (3,072 by default): without a share, one
#: session took all of it, and every other session and container got ``ENOSPC`` from
#: ``openpty`` (docs/security-model.md, thirty-first pass). ``reaper_view.c`` mounts the same.
PTY_MAX: Final = 128
PROVIDED_DEV = frozenset({*(f"/dev/{n}" for n in DEV_NODES), "/dev/pts", "/dev/ptmx",
                          "/dev/fd", "/dev/stdin", "/dev/stdout", "/dev/stderr"})
# Paths in a writable directory that make code run outside the sandbox later, when someone
# uses the directory (opens it in an editor, enters it with direnv, runs git, pushes to CI),
# without having chosen to run anything from it. Build files (Makefile, package.json,
# setup.py...) are not here: running them is running the project's code, which the session may
# edit. See docs/sandbox.md ("Persistence files") for each name and what was left out.
PERSISTENCE_NAMES = (
    ".git/hooks", ".git/config", ".git/info/attributes", ".gitmodules", ".hg/hgrc",
    # Per-worktree configuration (live once extensions.worktreeConfig is set, as
    # sparse-checkout does), and linked worktrees' administrative directories: their
    # commondir names the repository git uses there, configuration and hooks included.
    ".git/config.worktree", ".git/worktrees",
    ".envrc", ".vscode", ".idea", ".devcontainer", ".github/workflows", ".gitlab-ci.yml",
    ".pre-commit-config.yaml", ".husky",
    # Coding agents' project configuration: hooks and MCP servers are commands the agent
    # runs on the host when someone starts it in the directory (Claude Code's .claude
    # settings and .mcp.json, Gemini CLI, Cursor, aider's lint and test commands, Continue,
    # opencode).
    ".claude", ".mcp.json", ".gemini", ".cursor", ".aider.conf.yml", ".continue",
    "opencode.json", ".opencode",
    # Editors' project settings that start commands: a dev container's initializeCommand
    # runs on the host, Zed's and Helix's language servers are commands they start.
    ".devcontainer.json", ".zed", ".helix",
)
# In the working directory, wherever it lies in a writable grant: nono's project trust policy
# and its signature. A session that removed them made the next launch verify nothing (the
# user-level policy usually lists no files), so it could rewrite GEMINI.md in that session and
# have it read, unverified, by the one after.
TRUST_FILES = ("trust-policy.json", "trust-policy.json.bundle")
# Files of every session's fresh /proc that show the host's kernel keyrings: the type and
# description of every key the session's uid may view (the user's own keys added outside any
# session, Kerberos caches named after principals, network file system credentials) and the
# per-uid quota use. A session cannot use a key (seccomp refuses keyctl); it has no business
# listing them either.
PROC_KEYRINGS = ("/proc/keys", "/proc/key-users")
# The same in each submodule's git directory (``.git/modules/<name>``): git runs its hooks and
# reads its config (``core.fsmonitor``...) whenever someone uses git inside that submodule.
SUBMODULE_NAMES = ("hooks", "config", "info/attributes")
MAX_SUBMODULES = 64
# Names looked through under ``.git/modules`` to find them. The session may write there: past
# either bound the whole of ``.git/modules`` is kept read-only instead (fake git directories
# could hide a real one behind them, and a tree of millions of directories made the plan's
# walk, which runs in the daemon's event loop, stall every session for a minute).
MAX_LISTED = 4096
# Names under these are kept only when the directory exists at launch: a repository the session
# creates (``git init``) is its own, hooks included. A ``.git`` *file* (a worktree's pointer)
# is kept read-only itself.
REPO_DIRS = (".git", ".hg")
# In a writable $HOME: what shells, sessions, ssh and git read and run on the host.
HOME_RC_FILES = (
    ".bashrc", ".bash_profile", ".bash_login", ".bash_logout", ".bash_aliases", ".profile",
    ".zshrc", ".zprofile", ".zshenv", ".zlogin", ".config/fish", ".gitconfig", ".config/git",
    ".config/autostart", ".config/systemd", ".config/environment.d", ".local/share/applications",
    ".ssh/rc", ".ssh/config", ".ssh/authorized_keys", ".xprofile", ".xsessionrc",
    ".pam_environment", ".zlogout", ".bashrc.d", ".local/share/systemd",
    ".local/share/dbus-1", ".hgrc", ".config/hg", ".config/direnv", ".vimrc", ".vim",
    ".config/nvim", ".emacs", ".emacs.d", ".config/emacs", ".tmux.conf", ".config/tmux",
    ".ipython",
    # Read by every start of a program the user runs anywhere, not only in this directory:
    # readline's key macros (every interactive shell), X and desktop session scripts,
    # debuggers' and REPLs' start-up commands, build tools' wrappers and runners, editors'
    # plugins and settings, terminals' shells and Lua, window managers' exec lines.
    ".inputrc", ".xinitrc", ".xsession", ".config/plasma-workspace", ".config/autostart-scripts",
    ".gdbinit", ".config/gdb", ".lldbinit", ".pdbrc", ".Rprofile", ".irbrc", ".psqlrc",
    ".sqliterc", ".cargo/config.toml", ".cargo/config", ".config/mise", ".yarnrc",
    ".yarnrc.yml", ".local/share/nvim", ".config/Code/User", ".vscode-server", ".config/kitty",
    ".config/alacritty", ".config/wezterm", ".wezterm.lua", ".config/i3", ".config/sway",
    ".config/hypr",
    # The user's PATH and trust decisions kept as state: Nix's per-user profiles (on PATH
    # through ~/.nix-profile; since Nix 2.14 under ~/.local/state/nix) and channels, mise's
    # trusted configurations, direnv's allowed .envrc files (a nested .envrc the session
    # writes runs once it is listed there), Neovim's trusted exrc files, JetBrains IDEs'
    # trusted project paths (a trusted project's build scripts run on import) and plugins.
    ".nix-profile", ".nix-channels", ".nix-defexpr", ".local/state/nix", ".local/state/mise",
    ".local/share/direnv", ".local/state/nvim/trust", ".config/JetBrains",
    ".local/share/JetBrains",
    # Coding agents' user configuration, read by every start anywhere: hooks, MCP servers,
    # notification commands (their logins and state next to it stay the agent's).
    ".claude/settings.json", ".gemini/settings.json", ".codex/config.toml", ".cursor/mcp.json",
    ".aider.conf.yml", ".config/opencode", ".continue/config.yaml", ".continue/config.json",
    # Editors' extensions, loaded at every start (VS Code, VSCodium, Cursor, Windsurf).
    ".vscode/extensions", ".vscode/argv.json", ".vscode-oss/extensions", ".cursor/extensions",
    ".windsurf/extensions",
    # Build tools' and shells' user configuration that names a program or code they run at
    # every invocation anywhere: Go's env file (GOFLAGS=-toolexec=..., CC), Gradle's init
    # scripts and JVM options, `mvn`'s sourced .mavenrc, Bun's preloads, the prompt's custom
    # commands, other shells' rc files and the zsh/bash frameworks their rc files source,
    # Jupyter's Python configuration, Julia's and R's start-up, Terraform's provider
    # overrides, Docker's CLI plugins; and the package indexes the next install fetches code
    # from (pip, uv, conda).
    ".config/go/env", ".gradle/init.gradle", ".gradle/init.gradle.kts", ".gradle/init.d",
    ".gradle/gradle.properties", ".mavenrc", ".bunfig.toml", ".config/starship.toml",
    ".kshrc", ".mkshrc", ".cshrc", ".tcshrc", ".config/nushell", ".xonshrc", ".config/xonsh",
    ".config/elvish", ".oh-my-zsh", ".oh-my-bash", ".bash_it", ".zprezto",
    ".jupyter/jupyter_config.py", ".jupyter/jupyter_notebook_config.py",
    ".jupyter/jupyter_server_config.py", ".jupyter/jupyter_lab_config.py", ".julia/config",
    ".Renviron", ".terraformrc", ".docker/cli-plugins", ".config/pip", ".pip",
    ".config/uv/uv.toml", ".condarc",
    # Red team, nineteenth pass: the same kinds of file under other names. Logins the host
    # lets in as the user (sshd reads authorized_keys2 by default; Kerberos, rhosts and ssh's
    # user environment); mail delivery that pipes each message to a command; what an
    # interactive shell or the pager runs without being asked (bash-completion sources
    # ~/.bash_completion at every start and a command's user completion when it is
    # completed; Debian's lesspipe runs lessfilter on every file less opens, and a lesskey
    # file can set LESSOPEN); other editors' and REPLs' start-up code and language servers;
    # package managers' configuration naming a program they run (npm's script-shell, git and
    # node-options) or the index code is fetched from; Nix expressions every nix command
    # evaluates; Podman's hooks and quadlets (made user units at login); systemd's user
    # tmpfiles (run at login); the desktop's database of settings (custom shortcuts'
    # commands), shell extensions, service menus and session scripts; sound servers'
    # configuration that runs commands or loads modules; players', file managers' and
    # terminals' scripts and start commands; window managers' autostarts; version control
    # front ends' custom commands and aliases.
    ".ssh/authorized_keys2", ".ssh/environment", ".k5login", ".k5users", ".rhosts", ".shosts",
    ".forward", ".procmailrc", ".mailfilter", ".qmail", ".muttrc", ".config/mutt",
    ".neomuttrc", ".config/neomutt", ".mailcap",
    ".bash_completion", ".local/share/bash-completion", ".lessfilter", ".config/lessfilter",
    ".lesskey", ".config/lesskey", ".less", ".screenrc",
    ".exrc", ".gvimrc", ".config/vim", ".spacemacs", ".doom.d", ".config/doom", ".emacs.el",
    ".config/helix", ".config/zed", ".config/micro", ".config/kak", ".config/sublime-text",
    ".config/sublime-text-3", ".config/VSCodium/User", ".config/Cursor/User",
    ".config/Windsurf/User", ".config/Code - OSS/User",
    ".ghci", ".ghc/ghci.conf", ".ocamlinit", ".guile", ".sbclrc", ".octaverc", ".pryrc",
    ".config/irb", ".perldb", ".rdbgrc",
    ".npmrc", ".config/pnpm/rc", ".gemrc", ".m2/settings.xml", ".nuget/NuGet/NuGet.Config",
    ".config/pypoetry/config.toml", ".sbt/1.0/plugins", ".lein/profiles.clj",
    ".clojure/deps.edn", ".cabal/config", ".stack/config.yaml", ".R/Makevars",
    ".cpan/CPAN/MyConfig.pm", ".config/composer/config.json", ".composer/config.json",
    ".config/nixpkgs", ".nixpkgs",
    ".config/containers", ".docker/config.json", ".config/user-tmpfiles.d",
    ".local/share/user-tmpfiles.d",
    ".config/dconf", ".local/share/gnome-shell/extensions", ".local/share/kservices5",
    ".local/share/kio/servicemenus", ".local/share/plasma", ".local/share/kwin",
    ".local/share/nautilus-python", ".local/share/konsole", ".config/xfce4", ".config/lxsession",
    ".xinputrc", ".xbindkeysrc", ".Xresources", ".Xdefaults",
    ".config/pipewire", ".config/wireplumber", ".config/pulse", ".config/mpv",
    ".config/ranger", ".config/yazi", ".config/lf", ".config/zellij", ".config/ghostty",
    ".config/foot", ".config/terminator",
    ".config/openbox", ".config/awesome", ".config/bspwm", ".config/sxhkd", ".config/qtile",
    ".xmonad", ".config/xmonad", ".config/herbstluftwm", ".config/river", ".config/niri",
    ".config/labwc", ".config/wayfire.ini", ".config/waybar", ".config/polybar", ".config/eww",
    ".fluxbox", ".icewm",
    ".config/gh/config.yml", ".config/jj", ".jjconfig.toml", ".config/lazygit", ".tigrc",
    ".config/tig",
)


class MountOp(msgspec.Struct, frozen=True, array_like=True):
    kind: int
    target: str
    source: str = ""
    writable: bool = False
    absent: bool = False  # target did not exist at launch: applied if and when it appears
    device: bool = False  # BIND_*: device nodes stay usable (no nodev)


class MountPlan(msgspec.Struct, frozen=True, kw_only=True):
    ops: tuple[MountOp, ...]
    masked: tuple[str, ...]  # denials that are masked in this session
    skipped: tuple[str, ...]  # denials not visible in the session anyway
    protected: tuple[str, ...]  # persistence files made read-only
    absent: tuple[str, ...] = ()  # guarded paths missing at launch (the view guard watches)
    #: The first missing component of each absent guarded path whose parent directory exists
    #: and is writable in the session (or its user's own): what the creation guard must
    #: refuse to create.
    creation_refused: tuple[str, ...] = ()
    anchored: tuple[str, ...] = ()  # directories bound onto themselves so they cannot move


def _under(path: str, parent: str) -> bool:
    return path == parent or parent == "/" or path.startswith(parent.rstrip("/") + "/")


def _depth(path: str) -> int:
    return 0 if path == "/" else path.count("/")


def _lineage(path: str) -> list[str]:
    """``path``, then each directory above it up to ``/``: the paths ``p`` for which
    ``_under(path, p)`` holds (written as :func:`_key` writes them)."""
    out = [path]
    while path != "/":
        cut = path.rfind("/")
        if cut < 0:
            break
        path = path[:cut] or "/"
        out.append(path)
    return out


def _key(path: str) -> str:
    return path.rstrip("/") or "/"


class _Prefixes:
    """A set of paths that answers "is this path at or under one of them" in the path's depth
    (a lookup per directory above it) rather than the set's size."""

    def __init__(self, paths: Iterable[str] = ()) -> None:
        self._set = {_key(p) for p in paths}

    def add(self, path: str) -> None:
        self._set.add(_key(path))

    def covers(self, path: str) -> bool:
        return any(p in self._set for p in _lineage(path))


class ClosedBySession(Exception):
    """A path the plan must look at is hidden from the session's uid by a directory that uid
    owns (it took its own permissions away: ``chmod 000``). Taking it for absent would leave
    unprotected what lies there (a submodule's hooks, a ``core.hooksPath``) in a session
    that can ``chmod`` the directory back: the launch is refused instead."""

    def __init__(self, path: str, closed: str) -> None:
        super().__init__(path, closed)
        self.path, self.closed = path, closed


def _fs_uid() -> int:
    """The uid this thread opens files as (the session's while a plan is made for it)."""
    with open("/proc/thread-self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("Uid:"):
                return int(line.split()[4])
    return os.geteuid()


def _refuse_if_own(path: str, exc: OSError, *, itself: bool = False) -> None:
    """Raise :class:`ClosedBySession` if ``exc`` (met looking at ``path``) is a permission
    error caused by a directory this thread's uid owns: the deepest of ``path``'s
    directories (``path`` itself with ``itself``) that can still be looked at is the one
    that stops the look. A link to a place the session may not look into (another user's
    directory) is not that. Links on the way are followed as far as they can be read: the
    directory that stops the look may lie where one leads (``.git/modules/lib -> ../../mods``,
    ``mods`` closed), and the link itself, not being a directory, said nothing."""
    if not isinstance(exc, PermissionError):
        return
    if not itself:
        try:
            os.lstat(path)
            return  # reachable itself: what stopped the look lies past a symbolic link
        except OSError:
            pass
    uid = _fs_uid()
    closed = os.path.realpath(path if itself else os.path.dirname(path))
    while True:
        try:
            st = os.lstat(closed)
        except PermissionError:
            if closed in ("/", ""):
                return
            closed = os.path.dirname(closed)
            continue
        except OSError:
            return
        if uid != 0 and st.st_uid == uid and stat.S_ISDIR(st.st_mode):
            raise ClosedBySession(path, closed) from None
        return


def _may_create_in(path: str) -> bool:
    """Whether this thread's uid (the session's) may create entries in the directory
    ``path``: its permissions say so, or it owns the directory and may ``chmod`` it (a
    session that took away its own write bit on its workdir made the next launch refuse no
    name there, then gave the bit back and wrote ``.envrc``)."""
    if os.access(path, os.W_OK | os.X_OK, effective_ids=True):
        return True
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == _fs_uid()


def _kind(how: Callable[[str], os.stat_result], path: str) -> int | None:
    try:
        return stat.S_IFMT(how(path).st_mode)
    except OSError as exc:
        _refuse_if_own(path, exc)
        return None
    except ValueError:
        return None


# Each question a plan asks of the host, and how it is asked: what the answer is made of is
# all the plan uses of it (a path's file type, not its times: a directory written into is
# still the same directory to the plan).
(_LSTAT, _STAT, _LISTDIR, _READLINK, _REALPATH, _ACCESS, _MOUNTS, _PROC, _LISTSOME,
 _HOOKSPATH, _GITFILE, _ALIASES, _OWNER, _FILESYSTEM) = range(14)
#: The most of a git configuration file read for its ``core.hooksPath``.
MAX_GIT_CONFIG = 1 << 16


def git_hooks_path(text: str) -> str | None:
    """The last ``core.hooksPath`` of a git configuration file's text (what git uses), or
    None. Sections and keys are case-insensitive; a value may be quoted and may carry a
    ``#``/``;`` comment. Includes are not followed (:func:`git_config_paths` names them)."""
    return git_config_paths(text)[0]


def git_config_paths(text: str) -> tuple[str | None, tuple[str, ...]]:
    """The last ``core.hooksPath`` of a git configuration file's text, and the files it
    includes (``include.path`` and every ``includeIf.<condition>.path``, whatever the
    condition: it may hold where git runs), as written."""
    found: str | None = None
    includes: list[str] = []
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line[1:line.find("]")].split(None, 1)[0].lower() if "]" in line else ""
            line = line[line.find("]") + 1:].strip() if "]" in line else ""
        key, sep, value = line.partition("=")
        name = key.strip().lower()
        wanted = (section == "core" and name == "hookspath") or (
            section in ("include", "includeif") and name == "path")
        if not sep or not wanted:
            continue
        value = value.strip()
        if value.startswith('"'):
            end = value.find('"', 1)
            value = value[1:end] if end > 0 else value[1:]
        else:
            for mark in ("#", ";"):
                value = value.split(mark, 1)[0]
            value = value.strip()
        if section == "core":
            found = value or None
        elif value:
            includes.append(value)
    return found, tuple(includes)


def _small_file(path: str, limit: int) -> bytes | None:
    """At most ``limit`` bytes of the regular file ``path``, not through a link at its name;
    None if it is not one. Its kind is asked on a path-only descriptor (``O_PATH``) before
    it is opened to read: a name a session wrote (an included configuration, a client's
    ``GIT_CONFIG_GLOBAL``) can be a FIFO, which would block, or a device, whose driver's
    ``open`` acts (``/dev/watchdog`` arms the host's reboot timer)."""
    try:
        handle = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        _refuse_if_own(path, exc)
        return None
    try:
        if not stat.S_ISREG(os.fstat(handle).st_mode):
            return None
        fd = os.open(f"/proc/self/fd/{handle}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    finally:
        os.close(handle)
    try:
        return os.read(fd, limit)
    except OSError:
        return None
    finally:
        os.close(fd)


def _worktree_configs(dotgit: str) -> tuple[str, ...]:
    """The configuration files git reads in a linked worktree whose ``.git`` is the file
    ``dotgit`` (``gitdir: <repo>/.git/worktrees/<name>``): its repository's ``config`` (the
    one ``commondir`` names) and its own ``config.worktree``; none if it is not such a
    file."""
    data = _small_file(dotgit, 4096)
    line = data.decode("utf-8", "replace").strip() if data else ""
    if not line.startswith("gitdir:"):
        return ()
    gitdir = os.path.join(os.path.dirname(dotgit), line.removeprefix("gitdir:").strip())
    common = _small_file(os.path.join(gitdir, "commondir"), 4096)
    top = os.path.join(gitdir, common.decode("utf-8", "replace").strip()) if common else gitdir
    return (os.path.normpath(os.path.join(top, "config")),
            os.path.normpath(os.path.join(gitdir, "config.worktree")))


def _git_config(config: str) -> tuple[str | None, tuple[str, ...]] | None:
    """:func:`git_config_paths` of the file ``config``, read only if it is a regular file reached
    without following a link at its name (a session may have made a repository's
    ``.git/config`` a FIFO or a link: this runs in the daemon, which never blocks on an open
    and never reads on a session's behalf what that session could not)."""
    data = _small_file(config, MAX_GIT_CONFIG)
    return None if data is None else git_config_paths(data.decode("utf-8", "replace"))


def _list_some(path: str) -> tuple[str, ...]:
    """Up to ``MAX_LISTED + 1`` names of the directory (more than ``MAX_LISTED``: too many to
    look through), without reading the rest of a huge one."""
    names: list[str] = []
    try:
        listing = os.scandir(path)
    except OSError as exc:
        _refuse_if_own(path, exc, itself=True)
        raise
    with listing as entries:
        for entry in entries:
            names.append(entry.name)
            if len(names) > MAX_LISTED:
                break
    return tuple(sorted(names))


_QUESTIONS: Final[dict[int, Callable[[str], object]]] = {
    _LSTAT: lambda path: _kind(os.lstat, path),
    _STAT: lambda path: _kind(os.stat, path),
    _LISTDIR: lambda path: tuple(sorted(os.listdir(path))),
    _LISTSOME: _list_some,
    _HOOKSPATH: _git_config,
    _GITFILE: _worktree_configs,
    _READLINK: os.readlink,
    _REALPATH: os.path.realpath,
    # The thread's file identity (the session's while the plan is made for another user).
    _ACCESS: lambda path: _may_create_in(path),
    _MOUNTS: lambda _: _host_kernel_mounts(),
    _PROC: lambda _: _host_proc_root_only(),
    _ALIASES: lambda path: _host_aliases(path),
    _OWNER: lambda path: _owner(path),
    _FILESYSTEM: lambda path: _filesystem(path),
}


class _Look:
    """The host as one plan sees it: each question asked once (``lexists``, ``isdir`` and
    ``islink`` of a path are one ``lstat`` and one ``stat``) and its answer kept, so that a
    later launch can ask them all again (:meth:`unchanged`) instead of planning again."""

    def __init__(self) -> None:
        self._answers: dict[tuple[int, str], object] = {}
        # What :meth:`unchanged` asks, worked out at its first call (the answers are all in
        # by then: a look is kept only once its plan is made).
        self._checks: _Checks | None = None

    def _ask(self, what: int, path: str) -> object:
        key = (what, path)
        if key in self._answers:
            return self._answers[key]
        answer = self._answers[key] = _QUESTIONS[what](path)
        return answer

    def unchanged(self) -> bool:
        """Whether the host answers every question as it did (then the plan is the same:
        it is a function of the policy, its arguments and these answers). A file type the
        answers already asked imply is not asked again (:func:`_implied`); the others are
        asked by ``libnonolooks.so`` where it is built, in one call that gives up the GIL
        once (:class:`_Kinds`), else here, with the same answers."""
        checks = self._checks
        if checks is None:
            checks = self._checks = _checks(self._answers)
        kinds, others, native = checks
        if native is not None:
            if native.differ():
                return False
        else:
            lstat, stat_, ifmt = os.lstat, os.stat, stat.S_IFMT
            for nofollow, path, answer in kinds:
                # Most questions (~90 of ~100): ``_kind`` inlined, one call fewer each.
                try:
                    got: int | None = ifmt((lstat if nofollow else stat_)(path).st_mode)
                except (OSError, ValueError):
                    got = None
                if got != answer:
                    return False
        try:
            for what, asked, said in others:
                if _QUESTIONS[what](asked) != said:
                    return False
        except OSError:
            return False
        return True

    def lexists(self, path: str) -> bool:
        return self._ask(_LSTAT, path) is not None

    def islink(self, path: str) -> bool:
        return self._ask(_LSTAT, path) == stat.S_IFLNK

    def isdir(self, path: str) -> bool:
        return self._ask(_STAT, path) == stat.S_IFDIR

    def isfile(self, path: str) -> bool:
        return self._ask(_STAT, path) == stat.S_IFREG

    def exists(self, path: str) -> bool:
        return self._ask(_STAT, path) is not None

    def host_devices(self, path: str) -> bool:
        """Whether ``path`` is a device node, or a directory of the host's ``/dev`` file
        system (``/dev/dri``, ``/dev/net``; not a file system of its own mounted there, as
        ``/dev/hugepages``): what a grant reaches there is the host's device nodes."""
        kind = self._ask(_STAT, path)
        if kind in (stat.S_IFCHR, stat.S_IFBLK):
            return True
        return kind == stat.S_IFDIR and _under(path, "/dev") and \
            self._ask(_FILESYSTEM, path) is not None and \
            self._ask(_FILESYSTEM, path) == self._ask(_FILESYSTEM, "/dev")

    def listdir(self, path: str) -> tuple[str, ...]:
        return self._ask(_LISTDIR, path)  # type: ignore[return-value]

    def git_config(self, config: str) -> tuple[str | None, tuple[str, ...]] | None:
        """:func:`git_config_paths` of the git configuration file ``config`` (None if it is
        not a regular file)."""
        return self._ask(_HOOKSPATH, config)  # type: ignore[return-value]

    def worktree_configs(self, dotgit: str) -> tuple[str, ...]:
        """:func:`_worktree_configs` of the ``.git`` file ``dotgit``."""
        return self._ask(_GITFILE, dotgit)  # type: ignore[return-value]

    def list_some(self, path: str) -> tuple[str, ...]:
        """:func:`_list_some`: at most ``MAX_LISTED + 1`` names."""
        return self._ask(_LISTSOME, path)  # type: ignore[return-value]

    def readlink(self, path: str) -> str:
        return self._ask(_READLINK, path)  # type: ignore[return-value]

    def realpath(self, path: str) -> str:
        return self._ask(_REALPATH, path)  # type: ignore[return-value]

    def writable_dir(self, path: str) -> bool:
        return self._ask(_ACCESS, path) is True

    def owner(self, path: str) -> int | None:
        """The uid that owns ``path`` (not through a link at its name), None if not there."""
        return self._ask(_OWNER, path)  # type: ignore[return-value]

    def kernel_mounts(self) -> tuple[str, ...]:
        return self._ask(_MOUNTS, "")  # type: ignore[return-value]

    def aliases(self, paths: Sequence[str]) -> tuple[tuple[str, ...], ...]:
        """For each directory of ``paths``, the other paths the host's mount table shows it
        at (one question: one look at the table when a kept plan is checked)."""
        return self._ask(_ALIASES, "\0".join(paths))  # type: ignore[return-value]

    def proc_root_only(self) -> tuple[str, ...]:
        return self._ask(_PROC, "")  # type: ignore[return-value]


_Kind = tuple[bool, str, "int | None"]  # lstat (not stat), the path, the file type
_Checks = tuple[tuple[_Kind, ...], tuple[tuple[int, str, object], ...], "_Kinds | None"]


def _checks(answers: dict[tuple[int, str], object]) -> _Checks:
    """The questions :meth:`_Look.unchanged` asks again: the file types (``lstat`` or not,
    the path, the answer) but those :func:`_implied`, the rest, and the file types as
    ``libnonolooks.so`` takes them (None without it)."""
    lstats = {path: a for (what, path), a in answers.items() if what == _LSTAT}
    stats = {path: a for (what, path), a in answers.items() if what == _STAT}
    # Paths below which nothing can be found while they answer as they did: absent, or not a
    # directory (``lstat``: nor a link to one).
    blocked = {path for path, a in lstats.items() if a is None
               or (a != stat.S_IFDIR and a != stat.S_IFLNK)}
    blocked.update(path for path, a in stats.items() if a != stat.S_IFDIR)
    kinds: tuple[_Kind, ...] = tuple(
        (what == _LSTAT, path, answer) for (what, path), answer in answers.items()  # type: ignore[misc]
        if what <= _STAT and not _implied(what, path, answer, lstats, blocked))
    others = tuple((what, path, answer) for (what, path), answer in answers.items()
                   if what > _STAT)
    return kinds, others, _Kinds.of(kinds)


_MISSING: Final = -1  # looks.c's answer for a failed call
_no_native: list[bool] = []  # [True] once looked for and not there


def _native_kinds() -> Callable[..., int] | None:
    """``libnonolooks.so``'s ``nono_kinds_differ`` (nonod/profiles/looks.c), or None (not
    built, or built before it had the function)."""
    if _no_native:
        return None
    import ctypes

    # Beside nonod/profiles/_fslook.py, whose check it serves too (not imported: the fork
    # server plans without the profiles' modules).
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "profiles", "libnonolooks.so")
    try:
        lib = ctypes.CDLL(path) if os.path.isfile(path) else None
    except OSError:
        lib = None
    if lib is None or not hasattr(lib, "nono_kinds_differ"):
        _no_native.append(True)
        return None
    call: Callable[..., int] = lib.nono_kinds_differ
    call.argtypes = (ctypes.POINTER(ctypes.c_char_p),  # type: ignore[attr-defined]
                     ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int),
                     ctypes.c_long)
    call.restype = ctypes.c_long  # type: ignore[attr-defined]
    return call


class _Kinds:
    """A kept plan's file-type questions as ``looks.c`` takes them: made once, asked by any
    number of threads (nothing written in them)."""

    def __init__(self, call: Callable[..., int], kinds: tuple[_Kind, ...]) -> None:
        import ctypes

        n = self.n = len(kinds)
        self._call = call
        self._keep = [os.fsencode(path) for _, path, _ in kinds]
        self.paths = (ctypes.c_char_p * max(n, 1))(*self._keep)
        self.follow = (ctypes.c_int * max(n, 1))(*(0 if nofollow else 1
                                                  for nofollow, _, _ in kinds))
        self.recorded = (ctypes.c_int * max(n, 1))(*(_MISSING if a is None else a
                                                    for _, _, a in kinds))

    @staticmethod
    def of(kinds: tuple[_Kind, ...]) -> _Kinds | None:
        """None without the library, or for a path it cannot be given (a NUL byte: Python's
        look answers it ``ValueError``, no file type, and asks it the same way)."""
        if any("\0" in path for _, path, _ in kinds):
            return None
        call = _native_kinds()
        return None if call is None else _Kinds(call, kinds)

    def differ(self) -> bool:
        return bool(self._call(self.paths, self.follow, self.recorded, self.n) >= 0)


def _implied(what: int, path: str, answer: object, lstats: dict[str, object],
             blocked: set[str]) -> bool:
    """Whether the file type ``answer`` (of ``lstat`` or ``stat`` of ``path``) is what the
    host must still answer while the other questions (asked again) answer as they did:

    - ``stat`` of a path whose ``lstat`` answered the same and not a link: ``stat`` walks the
      same way and only follows a link at the end;
    - no answer (absent, or not reachable) below an ancestor in ``blocked``: the walk to
      ``path`` goes through the ancestor's name, where ``lstat`` (or ``stat``, which follows
      its link as the walk does) found nothing, or something that is not a directory (the
      walk stops there: ``ENOTDIR``). Only for plain absolute paths (no ``.``, ``..``, ``//``:
      the ancestors are the prefixes)."""
    if what == _STAT and path in lstats and lstats[path] == answer \
            and answer != stat.S_IFLNK:
        return True
    if answer is not None or not path.startswith("/") or path.startswith("//") \
            or os.path.normpath(path) != path:
        return False
    parent = os.path.dirname(path)
    while parent != "/":
        if parent in blocked:
            return True
        parent = os.path.dirname(parent)
    return False


# Plans by everything they were made from but the host (the policy, the home, the aliases,
# the root-only handling), each with its look; the least recently used goes first.
PLAN_CACHE_ENTRIES: Final = 16
_plans: OrderedDict[bytes, tuple[MountPlan, _Look]] = OrderedDict()
_plans_lock = _thread.allocate_lock()  # (threading: not loaded in the fork server)


def _cached(key: bytes) -> MountPlan | None:
    with _plans_lock:
        entry = _plans.get(key)
    if entry is None or not entry[1].unchanged():
        return None
    with _plans_lock:
        if key in _plans:
            _plans.move_to_end(key)
    return entry[0]


def _keep(key: bytes, plan: MountPlan, look: _Look) -> None:
    with _plans_lock:
        _plans[key] = (plan, look)
        _plans.move_to_end(key)
        while len(_plans) > PLAN_CACHE_ENTRIES:
            _plans.popitem(last=False)


def _symlink_ops(paths: Sequence[str], taken: set[str], look: _Look) -> list[MountOp]:
    """Recreate host symlinks that lie on the way to the bound paths (``/lib64``, ...)."""
    ops: list[MountOp] = []
    candidates: set[str] = set()
    for entry in look.listdir("/"):
        candidates.add("/" + entry)
    for path in paths:
        parts = path.split("/")
        for i in range(2, len(parts) + 1):
            candidates.add("/".join(parts[:i]))
    for link in sorted(candidates, key=_depth):
        if link in taken or not look.islink(link):
            continue
        if any(parent in taken for parent in _lineage(link)[1:]):
            continue  # already visible through a bound parent
        ops.append(MountOp(SYMLINK, link, look.readlink(link)))
        taken.add(link)
    return ops


def compile_mounts(
    policy: ResolvedPolicy,
    *,
    home: str,
    aliases: Sequence[tuple[str, str]] = (),
    hide_root_only: bool = False,
    idmap: bool = False,
    pinned: Sequence[str] = (),
) -> MountPlan:
    """Turn the policy into ordered mount operations. Looks at the host; does not change it.

    ``aliases`` are (path as written, canonical path) pairs; each symlink on the written path
    is recreated so that e.g. ``/etc/resolv.conf`` still leads to its target.
    ``hide_root_only`` (a session running as uid 0): mask what only root may read in the
    read-only grants of :data:`ROOT_ONLY_TREES`: with ``idmap`` (the kernel can idmap them:
    :func:`idmap_available`) those directory grants become :data:`IDMAP` operations, else
    each entry only root may read is masked (a walk of the trees at each launch).

    A plan is kept and given again while the host answers every question it asked as it did
    (:class:`_Look`), never with the walk (it reads the mode of every entry there).
    """
    walk = hide_root_only and not idmap
    key = None if walk else msgspec.msgpack.encode(
        (policy, home, tuple(aliases), hide_root_only, idmap, tuple(pinned)))
    if key is not None:
        plan = _cached(key)
        if plan is not None:
            return plan
    look = _Look()
    plan = _compile(policy, look, home=home, aliases=aliases, hide_root_only=hide_root_only,
                    idmap=idmap, pinned=pinned)
    if key is not None:
        _keep(key, plan, look)
    return plan


def _compile(policy: ResolvedPolicy, look: _Look, *, home: str,
             aliases: Sequence[tuple[str, str]], hide_root_only: bool, idmap: bool,
             pinned: Sequence[str] = ()) -> MountPlan:
    from ..policy import Denial

    binds: dict[str, MountOp] = {}
    tmp_writable: dict[str, bool] = {p: p == "/dev/shm" for p in PRIVATE_TMP}
    denied = [d.path for d in policy.denials]
    denied_under = _Prefixes(denied)
    grants = expand_root(policy.grants, look)
    if hide_root_only:  # a "/" grant's /sys (an explicit one is narrowed by ``narrow_sys``)
        grants = _narrow_sys(grants)
    for grant in grants:
        path = grant.path
        writes = grant.access.writes
        if path in tmp_writable:
            tmp_writable[path] = tmp_writable[path] or writes
            continue
        if path in ("/proc", "/dev") or _under(path, "/proc") or path in PROVIDED_DEV:
            continue  # provided fresh by the sandbox
        if denied_under.covers(path):
            continue  # deny wins over a grant inside it
        if not look.exists(path):
            continue
        kind = BIND_DIR if look.isdir(path) else BIND_FILE
        prev = binds.get(path)
        # The host's device nodes are bound read-only whatever the grant (review27): reading
        # and writing a device needs no writable mount, but changing its node does, and a
        # uid 0 session owns them (``chmod 0666 /dev/kvm`` for every user of the host).
        writable = (writes or bool(prev and prev.writable)) and not look.host_devices(path)
        binds[path] = MountOp(kind, path, path, writable, device=_under(path, "/dev"))
    _copy_on_write(binds, _cache_roots(policy, home, look), policy.shared_caches, look)
    trees = [path for path, op in binds.items() if _root_only_tree(op)]
    if hide_root_only and idmap and len(trees) <= MAX_IDMAPPED:
        for path in trees:
            binds[path] = msgspec.structs.replace(binds[path], kind=IDMAP)

    # Parents before children, private tmp mounts among them (a /var grant comes before
    # the private /var/tmp on top of it).
    tmp_ops = [MountOp(TMPFS, path, "", writable) for path, writable in tmp_writable.items()]
    ops: list[MountOp] = sorted([*tmp_ops, *binds.values()],
                                key=lambda op: (_depth(op.target), op.target))

    taken = set(binds) | set(PRIVATE_TMP) | {"/proc", "/dev"}
    alias_paths = [a for a, _ in aliases]
    ops[:0] = _symlink_ops(list(binds) + alias_paths, taken, look)

    view = _View(sorted(binds.values(), key=lambda op: _depth(op.target)), look)
    kept = _Prefixes(policy.shared_caches)
    written = (*(os.path.join(home, rel) for rel in (CACHE_HOME, *HOME_CACHES)),
               *policy.cache_dirs)
    for root in (*written, *_cache_roots(policy, home, look)):
        if not kept.covers(root):
            view.keep_cache_home(root)
    for op in binds.values():
        if op.kind == OVERLAY:
            view.keep_overlay(op.target)
    for path in _persistence_paths(view, home, set(policy.writable_persistence), denied, look,
                                   policy.workdir, policy.protected_files, policy.xdg_homes,
                                   policy.other_homes, policy.git_configs):
        view.guard(path, MountOp(READONLY, path))
    for denial in sorted(policy.denials, key=lambda d: _depth(d.path)):
        view.deny(denial)
    for link in policy.denial_links:
        view.keep_denial_link(link)
    bound = _Prefixes(binds)
    for point in look.kernel_mounts():
        if point not in binds and bound.covers(point):
            view.deny(Denial(path=point, source="kernel_fs"))
    if hide_root_only:
        for path in _root_only(view.binds):
            view.deny(Denial(path=path, source="root_only"))
        for path in look.proc_root_only():  # the session's own /proc, mounted fresh
            view.ops.append(MountOp(MASK_FILE, path))
            view.masked.append(path)
    view.ops += [MountOp(MASK_FILE, path) for path in PROC_KEYRINGS if look.lexists(path)]
    view.keep_aliases()  # (after the masks: a masked alias shows nothing)
    for path in pinned:  # the pins themselves are the plan's (``_plan``), after these
        view.anchor_way(path)
    anchors = [MountOp(ANCHOR, a, writable=True) for a in sorted(view.anchors, key=_depth)]
    anchors += [MountOp(LINK_ANCHOR, a) for a in sorted(view.link_anchors)]
    return MountPlan(ops=(*ops, *view.uppers, *anchors, *view.ops, *view.later),
                     masked=tuple(view.masked), skipped=tuple(view.skipped),
                     protected=tuple(view.protected), absent=tuple(op.target for op in view.later),
                     creation_refused=tuple(view.refused),
                     anchored=tuple(sorted(view.anchors | view.link_anchors)))


def _cache_roots(policy: ResolvedPolicy, home: str, look: _Look) -> list[str]:
    """Where host tools keep caches whose contents they run later: the cache home the
    policy was resolved with ($XDG_CACHE_HOME) and ``~/.cache`` (what a tool uses when the
    variable is not set where it runs), canonical, and where the links in them lead, and
    the grants named through a link in one (``policy.cache_links``): caches kept on
    another disk; and :data:`HOME_CACHES` and the caches the caller's environment moved
    (``policy.cache_dirs``), canonical. A cache home at or above ``home``
    (``XDG_CACHE_HOME=$HOME``) is left out: it would make the whole home copy-on-write."""
    real_home = look.realpath(home)
    homes = {look.realpath(os.path.join(home, CACHE_HOME))}
    if policy.cache_home:
        homes.add(policy.cache_home)
    roots = {*homes, *policy.cache_links,
             *(_home_cache(home, real_home, rel, look) for rel in HOME_CACHES),
             *(look.realpath(path) for path in policy.cache_dirs)}
    shared = _Prefixes(policy.shared_caches)
    for cache in homes:  # a cache kept elsewhere, however the grant names it
        if look.isdir(cache) and not shared.covers(cache):  # (a huge one's first names)
            links = (os.path.join(cache, name) for name in look.list_some(cache)[:MAX_LISTED])
            roots.update(look.realpath(link) for link in links
                         if look.islink(link) and not shared.covers(link))
    return sorted(root for root in roots if not _under(real_home, root))


def _home_cache(home: str, real_home: str, rel: str, look: _Look) -> str:
    """:data:`HOME_CACHES` entry ``rel`` of ``home``, canonical: below the canonical home
    unless a symbolic link lies on its way before the first absent name (most homes have few
    of them: an ``lstat`` per name, asked once in the plan, where a ``realpath`` would ask
    again from ``/`` at every launch of a kept plan)."""
    way = home
    for name in rel.split("/"):
        way = os.path.join(way, name)
        if not look.lexists(way):
            break
        if look.islink(way):
            return look.realpath(os.path.join(home, rel))
    return os.path.join(real_home, rel)


def _copy_on_write(binds: dict[str, MountOp], roots: Sequence[str], shared: Sequence[str],
                   look: _Look) -> None:
    """Make the writable grants in the cache ``roots`` copy-on-write, in ``binds``: a
    directory becomes an OVERLAY (the session reads the host's cache and writes its own
    copy), a file read-only (no overlay of a single file). A writable directory grant that
    holds a root (``$HOME``) gets an OVERLAY at the root. What lies at or under ``shared``
    (the profile's ``shared_caches``) stays the host's: a shared directory below an overlay
    is bound writable over it."""
    kept = _Prefixes(shared)
    caches = _Prefixes(roots)
    for path, op in list(binds.items()):
        if not op.writable or kept.covers(path) or not caches.covers(path):
            continue
        if op.kind == BIND_DIR:
            binds[path] = msgspec.structs.replace(op, kind=OVERLAY)
        elif op.kind == BIND_FILE:
            binds[path] = msgspec.structs.replace(op, writable=False)
    for root in roots:
        holder = _holder(binds, root)
        if root not in binds and holder is not None and holder.kind == BIND_DIR and \
                holder.writable and not kept.covers(root) and look.isdir(root):
            binds[root] = MountOp(OVERLAY, root, root, True)
    for path in shared:
        holder = _holder(binds, path)
        if path not in binds and look.isdir(path) and not look.islink(path) and \
                holder is not None and holder.kind == OVERLAY:
            binds[path] = MountOp(BIND_DIR, path, path, True)


def _holder(binds: dict[str, MountOp], path: str) -> MountOp | None:
    """The deepest of ``binds`` that ``path`` lies strictly under."""
    for parent in _lineage(path)[1:]:
        if parent in binds:
            return binds[parent]
    return None


def _owner(path: str) -> int | None:
    try:
        return os.lstat(path).st_uid
    except (OSError, ValueError):
        return None


def _filesystem(path: str) -> int | None:
    """The device number of the file system ``path`` (followed) lies on."""
    try:
        return os.stat(path).st_dev
    except (OSError, ValueError):
        return None


def _file_uid() -> int:
    """The uid this thread opens files as (``_callerfs.acting_as`` changes it: the session's
    while a plan is made for another user), from its ``Uid:`` line (real, effective, saved,
    file system)."""
    try:
        with open("/proc/thread-self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Uid:"):
                    return int(line.split()[4])
    except (OSError, IndexError, ValueError):
        pass
    return os.geteuid()


def _read_mountinfo() -> str:
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        return f.read()


_mount_events = MountEvents()
_kernel_points: tuple[str, ...] = ()
_table = _mounttable.Table(())
ALIAS_ANSWERS: Final = 256  # the most kept: one per set of guarded directories asked
_aliases: dict[str, tuple[tuple[str, ...], ...]] = {}  # asked of ``_table`` since its read
_table_lock = _thread.allocate_lock()


def _read_table() -> None:
    """Read and parse this process's mount table again if the kernel says it changed since
    the last read (``_hostevents``). The caller holds ``_table_lock``."""
    global _kernel_points, _table
    if _mount_events.changed():
        text = _read_mountinfo()
        _kernel_points = tuple(kernel_mounts(text))
        _table = _mounttable.Table(_mounttable.parse(text))
        _aliases.clear()


def _host_kernel_mounts() -> tuple[str, ...]:
    """:func:`kernel_mounts` of this process's mount table."""
    with _table_lock:
        _read_table()
        return _kernel_points


def _host_aliases(paths: str) -> tuple[tuple[str, ...], ...]:
    """For each directory in ``paths`` (joined by NUL), the other paths this process's mount
    table shows it at (:meth:`_mounttable.Table.aliases`)."""
    with _table_lock:
        _read_table()
        found = _aliases.get(paths)
        if found is None:
            if len(_aliases) >= ALIAS_ANSWERS:
                _aliases.clear()  # (a daemon whose table does not change, many workdirs)
            found = _aliases[paths] = tuple(_table.aliases(p) for p in paths.split("\0"))
        return found


def kernel_mounts(mountinfo: str) -> list[str]:
    """The mount points of :data:`KERNEL_FS_TYPES` file systems in ``mountinfo``."""
    points: list[str] = []
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if "-" not in fields[6:]:
            continue
        fstype = fields[fields.index("-", 6) + 1]
        if fstype in KERNEL_FS_TYPES:
            points.append(_mounttable.unescape(fields[4]))
    return points


def narrow_sys(policy: ResolvedPolicy) -> ResolvedPolicy:
    """The policy of a session running as uid 0: a grant of ``/sys`` itself becomes the
    :data:`SYS_FOR_ROOT` paths, for its view and its Landlock rules alike."""
    return msgspec.structs.replace(policy, grants=tuple(_narrow_sys(policy.grants)))


def _narrow_sys(grants: Sequence[Grant]) -> list[Grant]:
    """``grants`` with a grant of ``/sys`` itself replaced by the :data:`SYS_FOR_ROOT`
    paths (whoever binds them skips those that do not exist)."""
    out: list[Grant] = []
    for grant in grants:
        if grant.path == "/sys" and not grant.is_file:
            out += [msgspec.structs.replace(grant, path=path) for path in SYS_FOR_ROOT]
        else:
            out.append(grant)
    return out


def _root_only(binds: Sequence[MountOp]) -> list[str]:
    """Entries of the read-only directory grants under :data:`ROOT_ONLY_TREES` that others
    may not read: files without ``o+r``, directories without ``o+rx`` (not descended into).
    Symbolic links are judged where they lead, if that is in the view."""
    stack = sorted((op.target for op in binds if _root_only_tree(op) or (
        op.kind == BIND_DIR and any(_under(op.target, tree) for tree in SYS_FOR_ROOT))),
        reverse=True)
    found: list[str] = []
    seen = 0
    while stack and seen < ROOT_ONLY_SCAN_LIMIT:
        try:
            with os.scandir(stack.pop()) as entries:
                listed = list(entries)
        except OSError:
            continue
        for entry in listed:
            seen += 1
            try:
                mode = entry.stat(follow_symlinks=False).st_mode
            except OSError:
                continue
            if stat.S_ISLNK(mode):
                continue
            if stat.S_ISDIR(mode):
                if mode & (stat.S_IROTH | stat.S_IXOTH) == stat.S_IROTH | stat.S_IXOTH:
                    stack.append(entry.path)
                else:
                    found.append(entry.path)
            elif not mode & stat.S_IROTH:
                found.append(entry.path)
    return found


def _root_only_tree(op: MountOp) -> bool:
    """A read-only directory bind (not yet idmapped) in :data:`ROOT_ONLY_TREES`."""
    return op.kind == BIND_DIR and not op.writable and any(
        _under(op.target, tree) for tree in ROOT_ONLY_TREES)


def _idmap_userns() -> int:
    """An fd of a new user namespace that maps only id 0, to :data:`ROOT_ONLY_IDMAP_ID`.

    A child makes it (a process cannot leave its own user namespace); the fd keeps the
    namespace once the child is gone. Root in the initial namespaces only."""
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child only unshares and waits
        try:
            os.close(ready_r)
            os.close(done_w)
            _libc.unshare(_libc.CLONE_NEWUSER)
            os.write(ready_w, b"1")
            os.read(done_r, 1)
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(done_r)
    try:
        if os.read(ready_r, 1) != b"1":
            raise OSError(errno.EPERM, "cannot make a user namespace for the idmap")
        for name, text in (("uid_map", f"0 {ROOT_ONLY_IDMAP_ID} 1"), ("setgroups", "deny"),
                           ("gid_map", f"0 {ROOT_ONLY_IDMAP_ID} 1")):
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write(text)
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(ready_r)
        os.close(done_w)
        os.waitpid(pid, 0)


_userns: list[int] = []  # the idmap's namespace, made once per process


def idmapped_trees(ops: Sequence[MountOp]) -> list[int]:
    """For each :data:`IDMAP` operation of ``ops``, in order: a detached copy of its source's
    mount tree, idmapped (host 0 shown as :data:`ROOT_ONLY_IDMAP_ID`), read-only, nosuid and
    nodev, for the launcher to attach in the session's root. Runs as root in the initial
    user and mount namespaces (the fork server); raises OSError. The caller closes the fds."""
    wanted = [op.source for op in ops if op.kind == IDMAP]
    if not wanted:
        return []
    if not _userns:
        _userns.append(_idmap_userns())
    trees: list[int] = []
    try:
        for source in wanted:
            trees.append(_libc.open_tree_clone(source))
            _libc.idmap_tree(trees[-1], _libc.MOUNT_ATTR_RDONLY | _libc.MOUNT_ATTR_NOSUID
                             | _libc.MOUNT_ATTR_NODEV, _userns[0])
    except OSError:
        for fd in trees:
            os.close(fd)
        raise
    return trees


_available: list[bool] = []


def idmap_available() -> bool:
    """Whether the kernel idmaps every tree of :data:`ROOT_ONLY_TREES` for this process (root
    in the initial namespaces, file systems that allow it). Tried once per process, in a
    fresh interpreter: making the idmap's user namespace forks, and the daemon that asks is
    threaded (it must not fork); the fork server, which makes the trees, is not."""
    if not _available:
        import subprocess  # here: the launcher imports this module, and needs neither
        import sys

        try:
            done = subprocess.run(
                [sys.executable, "-I", "-c", "import sys\n"
                 "from nonod.sandbox._mounts import idmap_works\n"
                 "sys.exit(0 if idmap_works() else 1)"],
                stdin=subprocess.DEVNULL, capture_output=True, timeout=30, check=False,
                env={"PATH": os.defpath})  # not the daemon's env:// secrets
            _available.append(done.returncode == 0)
        except (OSError, subprocess.TimeoutExpired):
            _available.append(False)
    return _available[0]


def idmap_works() -> bool:
    """The probe itself (single-threaded callers only: it forks)."""
    ops = [MountOp(IDMAP, t, t) for t in ROOT_ONLY_TREES if os.path.isdir(t)]
    try:
        for fd in idmapped_trees(ops):
            os.close(fd)
    except OSError:
        return False
    return True


_proc_events = ProcTopEvents()
# The last listing (getdents64's records, None without them), its entries and its answer.
_proc_answer: tuple[bytes | None, tuple[tuple[str, int], ...], tuple[str, ...]] | None = None
_proc_lock = _thread.allocate_lock()


def _host_proc_root_only() -> tuple[str, ...]:
    """:func:`_proc_root_only`, each file's mode asked again only when ``/proc``'s listing
    differs from the last one (a module loaded or unloaded) or the kernel says a mode there
    changed since (``_hostevents``): one listing instead of ~40 ``lstat`` per launch. The
    listing's records the same bytes as the last: its entries are too, not parsed again."""
    global _proc_answer
    with _proc_lock:
        changed = _proc_events.changed()  # first: a chmod after it is reported next time
        raw = _proc_top_raw()
        last = _proc_answer
        if not changed and last is not None and raw is not None and raw == last[0]:
            return last[2]
        entries = tuple(_proc_top_entries(raw))
        if changed or last is None or last[1] != entries:
            _proc_answer = (raw, entries, tuple(_proc_root_only(entries)))
        else:
            _proc_answer = (raw, entries, last[2])
        return _proc_answer[2]


def _proc_root_only(entries: Iterable[tuple[str, int]] | None = None) -> list[str]:
    """The kernel's files at the top of ``/proc`` that only root may read (``slabinfo``,
    ``vmallocinfo``, ``timer_list``, ``kpageflags``...: heap layout, addresses and physical
    page state that exploits lean on). A session's fresh procfs has the same ones.
    ``entries``: ``_proc_top_entries()`` read already."""
    found: list[str] = []
    for name, d_type in _proc_top_entries() if entries is None else entries:
        if d_type != _DT_REG and d_type != _DT_UNKNOWN:
            continue
        path = "/proc/" + name
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            continue
        if stat.S_ISREG(mode) and not mode & stat.S_IROTH:
            found.append(path)
    return sorted(found)


_DT_UNKNOWN: Final = 0
_DT_REG: Final = 8
# getdents64's number where this reads /proc's top with it; elsewhere os.scandir.
_GETDENTS64: Final = {"x86_64": 217, "aarch64": 61}


def _proc_top_raw() -> bytes | None:
    """getdents64's records (struct linux_dirent64: ino, off, reclen, type, name) at the top of
    ``/proc`` before ``self``; None where it is not read so (``_GETDENTS64``).

    procfs lists its own entries first, then ``self``, ``thread-self`` and one directory per
    process (``proc_root_readdir``): reading stops at ``self``, so the cost does not grow with
    the host's processes (thousands with many sessions; listing them is most of the time)."""
    from ._syscalls import native_arch

    nr = _GETDENTS64.get(native_arch().name)
    if nr is None:
        return None
    import ctypes

    chunks: list[bytes] = []
    buf = ctypes.create_string_buffer(1024)  # little past `self`: few processes read
    fd = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        while True:
            size = _libc._check(_libc._syscall(nr, ctypes.c_int(fd), buf, ctypes.c_uint(
                len(buf))), "/proc")
            if size == 0:
                return b"".join(chunks)
            raw = buf.raw[:size]
            pos = 0
            while pos < size:
                if raw[pos + 19:pos + 24] == b"self\0":
                    chunks.append(raw[:pos])
                    return b"".join(chunks)
                pos += raw[pos + 16] | raw[pos + 17] << 8
            chunks.append(raw)
    finally:
        os.close(fd)


def _proc_top_entries(raw: bytes | None = None) -> list[tuple[str, int]]:
    """(name, d_type) of the entries at the top of ``/proc`` that are not processes: those of
    ``raw`` (``_proc_top_raw``'s, read now if not given), or of ``os.scandir`` where there is
    none."""
    if raw is None:
        raw = _proc_top_raw()
    if raw is None:
        with os.scandir("/proc") as listing:
            return [(e.name, _DT_REG if e.is_file(follow_symlinks=False) else -1)
                    for e in listing if not e.name.isdigit()]
    out: list[tuple[str, int]] = []
    pos, size = 0, len(raw)
    while pos < size:
        reclen = raw[pos + 16] | raw[pos + 17] << 8
        name = raw[pos + 19:pos + reclen].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        if name not in (".", "..") and not name.isdigit():
            out.append((name, raw[pos + 18]))
        pos += reclen
    return out


def _submodule_names(wdir: str, look: _Look) -> list[str] | None:
    """The names to keep of the submodules of ``wdir``'s repository, relative to ``wdir``:
    :data:`SUBMODULE_NAMES` of each git directory under ``.git/modules`` (a submodule's name
    may hold slashes; a submodule's own submodules are under its ``modules``), and ``HEAD``
    and ``config`` of each directory on the way to one. None when there are more than
    :data:`MAX_SUBMODULES` or more than :data:`MAX_LISTED` names to look through: then all of
    ``.git/modules`` is kept instead.

    A git directory is one holding a ``HEAD`` or a ``config`` file: the session may rename a
    ``HEAD`` away, never a kept ``config``. ``.git/modules`` and a git directory's
    ``modules`` are never git directories themselves, and the directories on the way may
    not be given a ``HEAD`` or a ``config``: a session that did either (or renamed a
    submodule's ``HEAD`` away, when only ``HEAD`` counted) made the next launch take its
    submodules for something else and keep none of their hooks."""
    found: list[str] = []
    tops = {".git/modules"}
    stack = [".git/modules"]
    listed = 0
    linked: set[str] = set()  # where the links walked through lead: each is walked once
    while stack:
        rel = stack.pop()
        path = os.path.join(wdir, rel)
        if not look.isdir(path):
            continue
        if look.islink(path):  # git follows it: so does the walk, where it leads, once
            real = look.realpath(path)
            if real in linked:
                continue
            linked.add(real)
        if rel not in tops and (look.lexists(os.path.join(path, "HEAD"))
                                or look.isfile(os.path.join(path, "config"))):
            if len(found) == MAX_SUBMODULES:
                return None
            found.append(rel)
            tops.add(rel + "/modules")
            stack.append(rel + "/modules")
            continue
        try:
            names = look.list_some(path)
        except OSError:
            continue
        listed += len(names)
        if listed > MAX_LISTED:
            return None
        stack += sorted((f"{rel}/{name}" for name in names), reverse=True)
    keep = [f"{gitdir}/{leaf}" for gitdir in found for leaf in SUBMODULE_NAMES]
    for gitdir in found:
        way = os.path.dirname(gitdir)
        while way and way not in tops:
            keep += [f"{way}/HEAD", f"{way}/config"]
            way = os.path.dirname(way)
    return list(dict.fromkeys(keep))


#: How deep included git configuration files are followed (git's own limit is 10).
MAX_GIT_INCLUDES = 10


def _hook_dirs(writable: Sequence[str], home: str, look: _Look,
               moved: Sequence[str] = ()) -> list[str]:
    """Where git takes hooks and configuration from besides ``.git/hooks`` and
    ``.git/config``: ``core.hooksPath`` of each writable grant's repository (relative to its
    working tree) and of the user's global configuration (absolute or ``~/``), and the files
    these configurations include (relative to the including file), followed to
    :data:`MAX_GIT_INCLUDES` levels, as absolute paths. An included file in a writable grant
    (``include.path = ../.gitconfig``, a project's shared settings) would let the session set
    ``core.fsmonitor`` or ``core.hooksPath`` for the user's next git command."""
    found: list[str] = []
    # ``.git`` may be a link to the repository (Android's repo tool lays checkouts out so):
    # git reads the configuration it leads to, and so does the plan.
    configs: list[tuple[str, str | None, int]] = [
        (os.path.join(wdir, ".git", "config"), wdir, 0) for wdir in writable
        if look.isdir(os.path.join(wdir, ".git"))]
    # A linked worktree (``.git`` a file): its repository's configuration, whose relative
    # ``core.hooksPath`` names a directory of this worktree.
    configs += [(config, wdir, 0) for wdir in writable
                if look.isfile(os.path.join(wdir, ".git"))
                and not look.islink(os.path.join(wdir, ".git"))
                for config in look.worktree_configs(os.path.join(wdir, ".git"))]
    configs += [(os.path.join(home, name), None, 0)
                for name in (".gitconfig", ".config/git/config")]
    configs += [(config, None, 0) for config in moved]  # ``policy.git_configs``
    seen: set[str] = set()
    while configs:
        config, top, depth = configs.pop(0)
        if config in seen:
            continue
        seen.add(config)
        paths = look.git_config(config)
        if paths is None:
            continue
        value, includes = paths
        for include in includes if depth < MAX_GIT_INCLUDES else ():
            named = _git_path(include, home, os.path.dirname(config))
            if named is not None:
                found.append(named)
                configs.append((named, top, depth + 1))
        if value is None:
            continue
        if not value.startswith(("~/", "/")) and top is None:
            continue  # relative to whichever repository runs it: nothing to pin here
        named = _git_path(value, home, top or "/")
        if named is not None:
            found.append(named)
    return found


def _git_path(value: str, home: str, base: str) -> str | None:
    """A path as git reads it in a configuration file: ``~/`` is ``home``, a relative one is
    below ``base``; None for a ``~user/`` path (another user's home: not the session's)."""
    if value.startswith("~/"):
        value = os.path.join(home, value[2:])
    elif value.startswith("~"):
        return None
    elif not value.startswith("/"):
        value = os.path.join(base, value)
    return os.path.normpath(value)


def _home_rc(home: str, moved: Sequence[tuple[str, str]] = ()) -> list[str]:
    """:data:`HOME_RC_FILES` in ``home``, and those under a base directory the caller's
    environment moved (``ResolvedPolicy.xdg_homes``) at its place as well."""
    out = [os.path.join(home, rc) for rc in HOME_RC_FILES]
    for rel, place in moved:
        out += [os.path.join(place, rc[len(rel) + 1:]) for rc in HOME_RC_FILES
                if rc.startswith(rel + "/")]
    return out


def _persistence_paths(view: _View, home: str, allowed: set[str],
                       denied: Sequence[str], look: _Look, workdir: str | None = None,
                       protected: Sequence[str] = (),
                       moved: Sequence[tuple[str, str]] = (),
                       others: Sequence[str] = (),
                       git_configs: Sequence[str] = ()) -> list[str]:
    """The persistence paths to keep in every writable directory grant: the names of
    :data:`PERSISTENCE_NAMES` (those under a repository directory only if it exists: a
    repository the session makes is its own), a ``.git`` *file* (a worktree's pointer to its
    repository), the :data:`HOME_RC_FILES` of ``home`` that lie inside (all of them when
    ``home`` does), :data:`TRUST_FILES` if ``workdir`` is, and the directories git's
    ``core.hooksPath`` names (:func:`_hook_dirs`) and the policy's ``protected`` files that
    lie inside. Minus those the profile lists in ``writable_persistence`` (or a parent of
    them) and those already denied."""
    out: list[str] = []
    seen: set[str] = set()
    kept_out = _Prefixes((*allowed, *denied))
    protected = (*protected, *_hook_dirs(view.writable_dirs(), home, look, git_configs))
    for wdir in view.writable_dirs():
        names = list(PERSISTENCE_NAMES)
        # $HOME's start-up files wherever the grant lies: all of them in a grant holding
        # $HOME, the ones below it in a grant inside $HOME (a writable ~/.config).
        names += [os.path.relpath(rc, wdir) for rc in _home_rc(home, moved) if _under(rc, wdir)]
        # Other accounts' homes a root session may write (``policy.other_homes``).
        names += [os.path.relpath(rc, wdir) for other in others
                  if _under(other, wdir) or _under(wdir, other)
                  for rc in _home_rc(other) if _under(rc, wdir)]
        if workdir is not None and _under(workdir, wdir):
            names += [os.path.relpath(os.path.join(workdir, f), wdir) for f in TRUST_FILES]
        names += [os.path.relpath(f, wdir) for f in protected if _under(f, wdir)]
        for repo in REPO_DIRS:
            top = os.path.join(wdir, repo)
            if look.isfile(top) and not look.islink(top):
                names.append(repo)
            if not look.isdir(top):
                names = [n for n in names if not n.startswith(repo + "/")]
        submodules = _submodule_names(wdir, look)
        # Too many to look through: all of them, read-only.
        names += [".git/modules"] if submodules is None else submodules
        for name in names:
            path = os.path.normpath(os.path.join(wdir, name))
            if path in seen or kept_out.covers(path):
                continue
            seen.add(path)
            out.append(path)
    return out


class _View:
    """What the session sees, for placing the masks and read-only binds in ``compile_mounts``:
    each guarded path that exists gets its operation; one that does not gets an ``absent``
    operation (the view guard applies it if the path appears) and, if the session could
    create it, its first missing component joins ``refused``; the existing directories on the
    way to it inside a writable grant are anchored (a mount point cannot be renamed or
    removed, so the session cannot move the way aside and build a new one)."""

    def __init__(self, binds: Sequence[MountOp], look: _Look) -> None:
        self.binds = binds
        self._look = look
        self._uid = _file_uid()  # the session's
        self._by_target = {_key(op.target): op for op in binds}
        self.ops: list[MountOp] = []
        self.later: list[MountOp] = []
        self.masked: list[str] = []
        self.skipped: list[str] = []
        self.protected: list[str] = []
        self.refused: list[str] = []
        self.anchors: set[str] = set()
        self.link_anchors: set[str] = set()  # LINK_ANCHOR: links bound onto themselves
        self.uppers: list[MountOp] = []  # UPPER_* operations (absent denied paths in overlays)
        self._covered = _Prefixes()  # denied paths (present or not): what is under is hidden
        self._protected = _Prefixes()  # ``protected``, for lookups

    def writable_dirs(self) -> list[str]:
        return [op.target for op in self.binds if op.writable and op.kind == BIND_DIR]

    def _innermost(self, path: str) -> MountOp | None:
        """The deepest bind ``path`` is at or under."""
        for parent in _lineage(path):
            op = self._by_target.get(parent)
            if op is not None:
                return op
        return None

    def deny(self, denial: Denial) -> None:
        path = denial.path
        if self._covered.covers(path):
            return  # inside a path already masked: hidden with it
        if self._innermost(path) is None:
            self.skipped.append(path)  # not in the session's view at all
            return
        look = self._look
        if look.lexists(path):
            is_dir = look.isdir(path) and not look.islink(path)
            op = MountOp(MASK_DIR if is_dir else MASK_FILE, path)
        else:
            op = MountOp(MASK_FILE if denial.is_file else MASK_DIR, path)
        placed = self.guard(path, op)
        if placed is None:
            self.skipped.append(path)
            return
        self._covered.add(path)
        self._covered.add(placed.target)
        if not placed.absent:
            self.masked.append(placed.target)

    def keep_aliases(self) -> None:
        """Refuse each refused name at every other path the host shows its directory at
        (a bind mount of it, or of an ancestor, below a writable grant, which the view binds
        with its mounts): layer 2 is built by path, so the walk must meet each such path as
        guarded (no rule on it or on the directories on its way), or a rule above it would
        grant the name there (``_mounttable``)."""
        names: dict[str, list[str]] = {}
        for path in self.refused:
            names.setdefault(os.path.dirname(path), []).append(os.path.basename(path))
        if not names:
            return
        for refused, aliases in zip(names.values(), self._look.aliases(list(names)), strict=True):
            for alias in aliases:
                bind = self._innermost(alias)
                if bind is None or not self._shown_writable(bind, alias):
                    continue
                walk = _walk(bind.target, alias, self._look)
                if walk is not None:  # (moved below a rule, the way would take it along)
                    self.anchors.update(walk[0][1:])
                for name in refused:
                    path = os.path.join(alias, name)
                    if path not in self.refused:
                        self.refused.append(path)

    def _could_write(self, directory: str) -> bool:
        """Whether the session may create entries in ``directory``, or could make it so: a
        directory its user owns but made read-only is its to ``chmod`` back (Landlock does not
        mediate ``chmod``), so its missing names are refused as a writable one's are."""
        return self._look.writable_dir(directory) or self._look.owner(directory) == self._uid

    def _shown_writable(self, bind: MountOp, path: str) -> bool:
        """Whether the session sees the host's ``path`` and may create there: below
        ``bind``, its innermost bind, a writable directory one (recursive: the host's mounts
        come along), neither masked nor under a private tmp mount placed over part of it."""
        if not (bind.writable and bind.kind == BIND_DIR) or self._covered.covers(path):
            return False
        return not any(_under(path, tmp) and _under(tmp, bind.target) for tmp in PRIVATE_TMP)

    def _refuse_once_gone(self, path: str, parent: str) -> None:
        """An existing guarded path in a directory the session may write: its name is
        refused to the creation guard too. Its mount keeps it while it is there; once the
        host removes it (``git checkout`` of a branch without ``.envrc``, a user's ``rm -rf
        ~/.aws``), the session made it again with its own content (or a symbolic link to
        its own directory), which the view guard then only bound read-only, or left as a
        link: kept on the host, for host tools to run or write through (the thirty-first
        pass)."""
        if self._look.isdir(parent) and self._could_write(parent) \
                and path not in self.refused:
            self.refused.append(path)

    def anchor_way(self, path: str) -> None:
        """Anchor the existing directories on the way to ``path`` inside a writable grant
        (a verified file's pin): moved aside, with a new directory and file of the session's
        own in their place, they had the program read its own text before the view guard
        covered the new file."""
        bind = self._innermost(path)
        if bind is None or not (bind.writable and bind.kind in (BIND_DIR, OVERLAY)):
            return
        walk = _walk(bind.target, path, self._look)
        if walk is not None and not self._protected.covers(walk[0][-1]):
            existing, missing = walk
            self.anchors.update(existing[1:] if missing else existing[1:-1])

    def keep_denial_link(self, path: str) -> None:
        """A symbolic link a denial was resolved through (``~/.aws -> dotfiles/aws``), in a
        writable directory grant: bound onto itself (``LINK_ANCHOR``) and the directories on
        its way anchored, so the session can neither remove it nor move its way aside, and
        the next launch's denial still names what it leads to."""
        bind = self._innermost(path)
        if bind is None or bind.target == path or not (bind.writable and bind.kind == BIND_DIR):
            return
        walk = _walk(bind.target, path, self._look)
        if walk is None or walk[1] is not None or not self._look.islink(path):
            return
        self.anchors.update(walk[0][1:-1])
        self.link_anchors.add(path)

    def keep_overlay(self, target: str) -> None:
        """Anchor the directories between a writable directory grant and an overlay below it
        (``~/go`` and ``~/go/pkg`` for ``~/go/pkg/mod`` in a writable home): the overlay's
        own directory is a mount point, the way to it is not, and moved aside (with the
        cache's path made again in its place) it let the session write the host's cache."""
        bind = self._innermost(os.path.dirname(target))
        if bind is None or not (bind.writable and bind.kind == BIND_DIR):
            return
        walk = _walk(bind.target, target, self._look)
        if walk is not None and walk[1] is None:
            self.anchors.update(walk[0][1:-1])

    def keep_cache_home(self, path: str) -> None:
        """A cache home (``path``) the session could make or re-point in a writable
        directory grant: absent at launch (no overlay can be placed: the session would make
        the host's cache home itself), or a symbolic link (the overlay is where it leads;
        the session could put its own directory in the link's place). Its name is refused
        to the creation guard and the directories on its way anchored, as for an absent
        guarded path: host tools would run what the session left there."""
        bind = self._innermost(path)
        if bind is None or not (bind.writable and bind.kind == BIND_DIR):
            return
        walk = _walk(bind.target, path, self._look)
        if walk is None or walk[1] is None:
            self._keep_link(bind, path)  # a link on the way or at the path (else: no-op)
            return
        existing, missing = walk
        parent = existing[-1]
        if missing is not None and not self._protected.covers(parent) \
                and self._look.isdir(parent) and self._could_write(parent) \
                and missing not in self.refused:
            self.refused.append(missing)
            self.anchors.update(existing[1:])

    def _keep_link(self, bind: MountOp, path: str) -> None:
        """The first symbolic link on the way to ``path`` (``path`` itself included), when it
        lies in a directory the session may write: a mount cannot be placed on a link, and the
        session could remove it (or rename a file over it) and put its own file or directory
        in its place (``~/.bashrc -> dotfiles/bashrc``, as GNU Stow makes them). Its name is
        refused to the creation guard instead, and the directories on its way are anchored;
        what it points to is guarded on its own (``guard`` follows it)."""
        if not (bind.writable and bind.kind == BIND_DIR):
            return
        look = self._look
        existing = [bind.target]
        for part in os.path.relpath(path, bind.target).split("/"):
            cur = os.path.join(existing[-1], part)
            if not look.lexists(cur):
                return
            if look.islink(cur):
                parent = existing[-1]
                if not self._protected.covers(parent) and self._could_write(parent) \
                        and cur not in self.refused:
                    self.refused.append(cur)
                    self.anchors.update(existing[1:])
                return
            existing.append(cur)

    def guard(self, path: str, op: MountOp) -> MountOp | None:
        """Place ``op`` for ``path`` and return it as placed (``absent`` if ``path`` does not
        exist); None if it cannot be guarded (out of the view). A symbolic link on the way
        (``~/.config`` pointing into a dotfiles repository), or at ``path`` itself for a
        read-only operation, is followed: the operation goes where the path leads (and the
        link's own name is kept, ``_keep_link``)."""
        bind = self._innermost(path)
        if bind is None:
            return None
        if bind.kind == OVERLAY and op.kind in (READONLY, ANCHOR):
            return None  # what the session writes there stays in its own upper layer
        look = self._look
        walk = _walk(bind.target, path, look)
        if walk is None:
            if op.kind == READONLY:
                self._keep_link(bind, path)
            real = os.path.join(look.realpath(os.path.dirname(path)), os.path.basename(path))
            if real == path:
                return None
            return self.guard(real, msgspec.structs.replace(op, target=real))
        existing, missing = walk
        if missing is not None and bind.kind == OVERLAY and op.kind in (MASK_DIR, MASK_FILE):
            # The host creating it later changes nothing the session sees: it is present in
            # the upper layer, opaque (the view guard would not see the host make it: its
            # watches are on the overlay's inodes), and masked as any present path.
            self.uppers.append(MountOp(UPPER_DIR if op.kind == MASK_DIR else UPPER_FILE, path))
            self.ops.append(op)
            return op
        if missing is None and op.kind == READONLY and look.islink(path):
            # A link cannot be mounted over: its name is kept by the creation guard, and what
            # it leads to (``.git/hooks -> ../githooks``: a shared hooks directory) is kept
            # at its real path, existing or not.
            self._keep_link(bind, path)
            real = look.realpath(path)
            return None if real == path else self.guard(
                real, msgspec.structs.replace(op, target=real))
        writable = bind.writable and bind.kind == BIND_DIR and \
            not self._protected.covers(existing[-1])
        if writable:
            self.anchors.update(existing[1:] if missing else existing[1:-1])
        if missing is None:
            if op.kind == READONLY:
                self.protected.append(path)
                self._protected.add(path)
            self.ops.append(op)
            if writable and len(existing) > 1:
                self._refuse_once_gone(path, existing[-2])
            return op
        later = msgspec.structs.replace(op, absent=True)
        self.later.append(later)
        parent = existing[-1]
        if writable and look.isdir(parent) and self._could_write(parent) \
                and missing not in self.refused:
            self.refused.append(missing)
        return later


def _walk(root: str, path: str, look: _Look) -> tuple[list[str], str | None] | None:
    """The existing paths from ``root`` down to ``path`` and the first one missing (None if
    ``path`` exists); None if a symbolic link lies on the way before ``path`` (or the way
    leaves ``root``)."""
    existing = [root]
    if path == root:
        return existing, None
    rel = os.path.relpath(path, root)
    if rel.startswith(".."):
        return None
    for part in rel.split("/"):
        cur = os.path.join(existing[-1], part)
        if not look.lexists(cur):
            return existing, cur
        if cur != path and look.islink(cur):
            return None
        existing.append(cur)
    return existing, None


def carried(path: str) -> bool:
    """Whether a path read from the host can be carried in a plan (UTF-8 on the wire): a
    name that is not UTF-8 (``os.listdir`` gives it surrogates) cannot, and is left out of
    what is granted one entry at a time (the session does not see it: never more)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def expand_root(grants: Sequence[Grant], look: _Look | None = None) -> list[Grant]:
    """A grant of ``/`` becomes one grant per top-level entry: the session's root itself must
    stay the sandbox's own (a bind of the host root over it would undo every other mount)."""
    out: list[Grant] = []
    for grant in grants:
        if grant.path != "/":
            out.append(grant)
            continue
        look = look or _Look()
        for entry in look.listdir("/"):
            path = "/" + entry
            if path in ("/proc", "/dev") or look.islink(path):
                continue  # fresh in the sandbox; top-level links are recreated
            if not carried(path):
                continue  # not UTF-8: not in the session's view (never more than asked)
            out.append(msgspec.structs.replace(grant, path=path,
                                               is_file=not look.isdir(path)))
    return out


# --- child side ----------------------------------------------------------------------------


# What the launcher makes in the session's own root has exactly the mode it asks for: the umask
# is inherited from the daemon (whatever it was when the fork server started), and a directory
# on the way to a grant that lost its search bit to it (umask 0177) cannot be crossed once the
# capabilities are dropped: the grant would be out of the program's reach.


def _mkdirs(path: str) -> None:
    parts = path.strip("/").split("/")
    cur = ""
    for part in parts:
        cur += "/" + part
        try:
            os.mkdir(cur, 0o755)
        except FileExistsError:
            continue
        os.chmod(cur, 0o755)  # noqa: S103 - in the session's own root, what mkdir asked for


def _create(path: str, mode: int, flags: int = 0) -> int:
    """A file at ``path`` (in the session's own root) with exactly ``mode``, open for
    writing."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | flags, mode)
    try:
        os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _touch(path: str, mode: int = 0o644) -> None:
    _mkdirs(os.path.dirname(path))
    os.close(_create(path, mode))


def _bind(source: str, target: str, *, writable: bool, nodev: bool = True) -> None:
    _libc.mount(source, target, None, _libc.MS_BIND | _libc.MS_REC)
    attrs = _libc.MOUNT_ATTR_NOSUID | (_libc.MOUNT_ATTR_NODEV if nodev else 0)
    if not writable:
        attrs |= _libc.MOUNT_ATTR_RDONLY
    _libc.mount_setattr(target, attrs, recursive=True)


def prepare_root(new_root_base: str = "/tmp") -> None:
    """The policy-independent part: a tmpfs root with the host under /oldroot, fresh /proc
    and a minimal /dev. A warm launcher does this before any plan arrives."""
    _libc.mount(None, "/", None, _libc.MS_REC | _libc.MS_PRIVATE)
    _libc.mount("tmpfs", new_root_base, "tmpfs", _libc.MS_NOSUID | _libc.MS_NODEV, "mode=0755")
    os.chdir(new_root_base)
    os.mkdir("oldroot", 0o700)
    _libc.pivot_root(".", "oldroot")
    os.chdir("/")
    _touch(EMPTY_FILE, 0o000)
    _mkdirs("/proc")
    _libc.mount("proc", "/proc", "proc", _libc.MS_NOSUID | _libc.MS_NODEV | _libc.MS_NOEXEC)
    _setup_dev()


def apply_mounts(ops: Sequence[MountOp], *, prepared: bool = False,
                 pinned: Sequence[bytes] = (), trees: Sequence[int] = ()) -> None:
    """Build the session's root. Runs in the launcher child; every failure raises OSError.

    ``pinned`` holds the bytes the daemon verified for each PIN operation: they are written to
    a file in the session's (private, soon read-only) root and that copy is mounted over the
    path, so changing the file on the host after verification changes nothing inside.

    A mount point is made only in the sandbox's own tmpfs: under a bound host directory the
    path must exist (it did when the plan was made), or the operation is refused (binds) or
    left out (a private tmp directory the host does not have).

    ``trees`` holds, for each IDMAP operation in order, the tree ``idmapped_trees`` made."""
    if not prepared:
        prepare_root()
    read_only_tmpfs: list[str] = []
    host: list[str] = []  # bound host directories: nothing is created under them
    idmapped = iter(trees)
    uppers = _upper_entries(ops)
    for op in ops:
        target = op.target
        on_host = any(_under(target, h) for h in host)
        if op.kind == BIND_DIR:
            _mountpoint(target, on_host, directory=True)
            _bind(OLD + op.source, target, writable=op.writable, nodev=not op.device)
            host.append(target)
        elif op.kind == OVERLAY:
            _mountpoint(target, on_host, directory=True)
            _overlay(op, uppers.get(target, ()))
            host.append(target)
        elif op.kind in (UPPER_DIR, UPPER_FILE):
            continue  # made with the overlay they lie in
        elif op.kind == IDMAP:
            tree = next(idmapped, None)
            if tree is None:
                raise OSError(errno.EBADF, "no idmapped tree for this mount", target)
            _mountpoint(target, on_host, directory=True)
            _libc.move_mount(tree, target)
            host.append(target)
        elif op.kind == BIND_FILE:
            _mountpoint(target, on_host, directory=False)
            _bind(OLD + op.source, target, writable=op.writable, nodev=not op.device)
        elif op.kind == TMPFS:
            if on_host and not os.path.isdir(target):
                continue  # the host has no such directory: nothing of its to hide
            _mountpoint(target, on_host, directory=True)
            _libc.mount("tmpfs", target, "tmpfs", _libc.MS_NOSUID | _libc.MS_NODEV, "mode=1777")
            if not op.writable:
                read_only_tmpfs.append(target)  # after the binds that need mountpoints in it
        elif op.kind == SYMLINK:
            if not on_host:
                _mkdirs(os.path.dirname(target))
                if not os.path.lexists(target):
                    os.symlink(op.source, target)
        elif op.kind == PIN:
            _pin(target, pinned[int(op.source)], int(op.source))
        elif op.kind == LINK_ANCHOR:
            if os.path.islink(target):  # gone since the plan: nothing of the host's to keep
                _libc.bind_link(target)
        elif op.kind == LINKED:
            _linked(op)
        elif op.kind in (MASK_DIR, MASK_FILE, READONLY, ANCHOR):
            try:
                mode = os.lstat(target).st_mode
            except OSError as exc:
                if op.absent and exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EACCES):
                    continue  # the view guard mounts it if the host makes it (and we can see)
                raise
            try:
                cover(op, mode)
            except CannotCover as exc:
                raise OSError(errno.ELOOP, exc.why, target) from None
        else:
            raise OSError(22, "unknown mount operation", target)

    for target in read_only_tmpfs:
        _libc.mount_setattr(target, _libc.MOUNT_ATTR_RDONLY, recursive=False)
    _libc.umount2(OLD, _libc.MNT_DETACH)
    os.rmdir(OLD)
    _libc.mount_setattr("/", _libc.MOUNT_ATTR_RDONLY, recursive=False)


def _upper_entries(ops: Sequence[MountOp]) -> dict[str, list[MountOp]]:
    """The UPPER_* operations of ``ops`` by the target of the OVERLAY each lies in (the
    deepest)."""
    overlays = {op.target for op in ops if op.kind == OVERLAY}
    out: dict[str, list[MountOp]] = {}
    for op in ops:
        if op.kind in (UPPER_DIR, UPPER_FILE):
            holder = next((p for p in _lineage(op.target)[1:] if p in overlays), None)
            if holder is None:
                raise OSError(errno.EINVAL, "not in a copy-on-write grant", op.target)
            out.setdefault(holder, []).append(op)
    return out


def _overlay(op: MountOp, entries: Sequence[MountOp]) -> None:
    """Mount at ``op.target`` the host's directory ``op.source`` under an upper layer of the
    session's own: a tmpfs mounted at :data:`LAYERS_DIR` while the overlay is made, then
    detached (the overlay keeps its own clone of it, private to this mount namespace). What
    the session writes there stays in that tmpfs (charged to the session's memory cgroup,
    as its private /tmp is) and goes with the session. ``entries``: the UPPER_* operations
    in this overlay, made in the upper layer first."""
    lower = OLD + op.source
    _mkdirs(LAYERS_DIR)
    _libc.mount("tmpfs", LAYERS_DIR, "tmpfs", _libc.MS_NOSUID | _libc.MS_NODEV, "mode=0700")
    try:
        upper, work = LAYERS_DIR + "/upper", LAYERS_DIR + "/work"
        os.mkdir(upper, 0o700)
        os.mkdir(work, 0o700)
        _same_as(lower, upper)  # the overlay's root takes its owner and mode from the upper
        for entry in entries:
            _upper_entry(lower, upper, os.path.relpath(entry.target, op.target), entry.kind)
        fd = _libc.overlay(lower, upper, work, _libc.MOUNT_ATTR_NOSUID | _libc.MOUNT_ATTR_NODEV)
        try:
            _libc.move_mount(fd, op.target)
        finally:
            os.close(fd)
    finally:
        _libc.umount2(LAYERS_DIR, _libc.MNT_DETACH)
        os.rmdir(LAYERS_DIR)


def _same_as(lower: str, upper: str) -> None:
    """Give the upper layer's directory ``upper`` the owner, mode and times of the host's
    ``lower`` (as a copy-up would); an owner this namespace does not map stays ours."""
    st = os.stat(lower)
    try:
        os.chown(upper, st.st_uid, st.st_gid)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EPERM):
            raise
    os.chmod(upper, stat.S_IMODE(st.st_mode))
    os.utime(upper, ns=(st.st_atime_ns, st.st_mtime_ns))


def _upper_entry(lower: str, upper: str, rel: str, kind: int) -> None:
    """``rel`` in the upper layer: the directories on the way (like the host's where it has
    them), then an opaque directory (UPPER_DIR) or an empty file (UPPER_FILE), mode 000."""
    parts = rel.split("/")
    for depth in range(1, len(parts)):
        way = "/".join(parts[:depth])
        made = os.path.join(upper, way)
        if os.path.isdir(made):
            continue
        os.mkdir(made, 0o755)
        try:
            host_dir = stat.S_ISDIR(os.lstat(os.path.join(lower, way)).st_mode)
        except OSError:
            host_dir = False
        if host_dir:
            _same_as(os.path.join(lower, way), made)
        else:
            os.chmod(made, 0o755)  # noqa: S103 - not the umask's: the way must be searchable
    last = os.path.join(upper, rel)
    if os.path.lexists(last):
        return
    if kind == UPPER_DIR:
        os.mkdir(last, 0o700)
        os.setxattr(last, "user.overlay.opaque", b"y")
        os.chmod(last, 0)
    else:
        os.close(_create(last, 0))


def _mountpoint(target: str, on_host: bool, *, directory: bool) -> None:
    """Make ``target`` in the sandbox's tmpfs root; under a host bind it must already exist."""
    if on_host:
        os.lstat(target)  # FileNotFoundError: the host changed since the plan was made
    elif directory:
        _mkdirs(target)
    elif not os.path.exists(target):
        _touch(target)


class CannotCover(Exception):
    """What a guarded path names now cannot carry its operation (a pin on a directory...)."""

    def __init__(self, target: str, why: str) -> None:
        super().__init__(target, why)
        self.target, self.why = target, why


def cover(op: MountOp, mode: int) -> bool:
    """Mount ``op`` (MASK_*, READONLY, PIN, ANCHOR) over what its target names now, ``mode``
    being its ``lstat`` mode; runs in the session's mount namespace (the launcher, then the
    view guard). A mask takes the form of what is there: a tmpfs over a directory, the empty
    file over anything else. False if nothing needs mounting: a symbolic link where a mask or
    a persistence path that was absent at launch is (it resolves inside the view, where its
    target is judged on its own). Raises :class:`CannotCover` otherwise."""
    kind, target = op.kind, op.target
    if stat.S_ISLNK(mode):
        if kind in (MASK_DIR, MASK_FILE) or (op.absent and kind in (READONLY, ANCHOR)):
            return False
        raise CannotCover(target, "became a symbolic link")
    if kind == PIN:
        if not stat.S_ISREG(mode):
            raise CannotCover(target, "is no longer a regular file")
        _libc.mount(f"{PIN_DIR}/{op.source}", target, None, _libc.MS_BIND)
        _libc.mount_setattr(target, _libc.MOUNT_ATTR_RDONLY | _libc.MOUNT_ATTR_NOSUID
                            | _libc.MOUNT_ATTR_NODEV, recursive=False)
    elif kind in (READONLY, ANCHOR):
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise CannotCover(target, "is no longer a file or directory")
        _libc.mount(target, target, None, _libc.MS_BIND | _libc.MS_REC)
        _libc.mount_setattr(target, _libc.MOUNT_ATTR_NOSUID | _libc.MOUNT_ATTR_NODEV
                            | (_libc.MOUNT_ATTR_RDONLY if kind == READONLY else 0),
                            recursive=kind == READONLY)
    elif stat.S_ISDIR(mode):
        _libc.mount("tmpfs", target, "tmpfs",
                    _libc.MS_NOSUID | _libc.MS_NODEV | _libc.MS_NOEXEC, "mode=000,size=4k")
        _libc.mount_setattr(target, _libc.MOUNT_ATTR_RDONLY, recursive=False)
    else:  # a file, fifo, socket or device node where a denied path is: hide it
        _libc.mount(EMPTY_FILE, target, None, _libc.MS_BIND)
        _libc.mount_setattr(target, _libc.MOUNT_ATTR_RDONLY | _libc.MOUNT_ATTR_NOEXEC
                            | _libc.MOUNT_ATTR_NODEV, recursive=False)
    return True


def _linked(op: MountOp) -> None:
    """``op.target`` (a LINKED operation) read-only: looked up once, with no symbolic link
    anywhere on the way, and bound only if it is still the inode the walk found
    (``op.source``, ``device:inode``). Moved since the walk (another session on the same
    project, or the host, renamed it, or put a link or another directory in its way): the
    launch fails rather than cover a decoy and leave the name's new place writable (so does
    the C init)."""
    dev, _, ino = op.source.partition(":")
    fd = _libc.open_path(op.target)
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (int(dev), int(ino)):
            raise OSError(errno.ESTALE, "not the file the walk for hard-linked files found "
                          "there (moved since)", op.target)
        _libc.bind_read_only(fd, op.target)
    finally:
        os.close(fd)


def _pin(target: str, data: bytes, index: int) -> None:
    if not os.path.isfile(target):
        raise OSError(2, "verified file is not in the session's view", target)
    _mkdirs(PIN_DIR)
    copy = f"{PIN_DIR}/{index}"
    # The copy keeps the read and execute bits of the file it covers (a tool's shim runs).
    mode = os.stat(target).st_mode & 0o555
    fd = _create(copy, mode, os.O_EXCL)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    _libc.mount(copy, target, None, _libc.MS_BIND)
    _libc.mount_setattr(target, _libc.MOUNT_ATTR_RDONLY | _libc.MOUNT_ATTR_NOSUID
                        | _libc.MOUNT_ATTR_NODEV, recursive=False)


def _setup_dev() -> None:
    _mkdirs("/dev/pts")
    for name in DEV_NODES:
        path = "/dev/" + name
        _touch(path)
        # Read-only: the host's own inodes, whose mode, times and attributes Landlock does
        # not guard (a uid 0 session owns them); a character device is written all the same
        # (the kernel takes no write access on the mount for one).
        _bind(OLD + path, path, writable=False, nodev=False)
    _libc.mount("devpts", "/dev/pts", "devpts", _libc.MS_NOSUID | _libc.MS_NOEXEC,
                f"newinstance,ptmxmode=0666,mode=620,max={PTY_MAX}")
    os.symlink("pts/ptmx", "/dev/ptmx")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, "/dev/" + name)


def base_grants() -> tuple[Grant, ...]:
    """Landlock grants every session needs for the sandbox's own /proc and /dev."""
    from ..policy import Access, Grant

    rw = Access.READWRITE
    files = tuple(Grant(path="/dev/" + n, access=rw, is_file=True, source="base")
                  for n in DEV_NODES)
    return (
        Grant(path="/proc", access=Access.READ, source="base"),
        Grant(path="/dev/pts", access=rw, source="base"),
        Grant(path="/dev/shm", access=rw, source="base"),
        *files,
    )
