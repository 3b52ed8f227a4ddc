/* nono-reaper --outer: the launcher's outer process once the session runs. The Python outer
 * (nonod/sandbox/_launcher.py, ``_guard_and_wait``) sets the view guard up: it receives the
 * guarded operations from the init, has the fork server's hub watch the directories on the
 * way, takes each mount's id; then it replaces itself with this, handing over that state in
 * the memfd CONFIG_FD (``_reaper.outer_config``). From then on this does what the Python loop
 * did, with ``_viewguard.ViewGuard`` and ``_mounts.cover`` as the reference:
 *
 *   argv: nono-reaper --outer INIT HUB_FD REPORT_FD SUBREAPER SERVER CONFIG_FD
 *
 *   - on the hub's "c" (a change on the way) or "k" (watched): every guarded path whose
 *     mount is gone is covered again, reported on REPORT_FD (REC_GUARD, restored); the
 *     directories are watched anew when one of them changed identity;
 *   - a path that cannot be covered again, or a hub that drops us or fails: reported
 *     (REC_GUARD, lost) and the init killed: the session must not go on unguarded;
 *   - when the init exits: wait for it; SUBREAPER "1" (no namespaces): end what is left of
 *     the session first, and kill the init when the fork server (SERVER) dies (SIGHUP, our
 *     parent-death signal there, arrives blocked and is taken here).
 *
 * HUB_FD and REPORT_FD are -1 when there is nothing to guard: then it only waits.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <linux/nsfs.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "reaper.h"

/* _mounts operation kinds */
#define READONLY 5
#define MASK_DIR 6
#define MASK_FILE 7
#define PIN 8
#define ANCHOR 9
#define PIN_DIR "/.nono-pins"
#define EMPTY_FILE "/.nono-empty"

#define REC_GUARD 5
#define GUARD_RESTORED 0
#define GUARD_LOST 1
#define ATTEMPTS 100
#define MAX_FDS 200
#define RECORD_MAX 4000 /* a record's detail, at most */

#ifndef MOUNT_ATTR_RDONLY
#define MOUNT_ATTR_RDONLY 0x1
#define MOUNT_ATTR_NOSUID 0x2
#define MOUNT_ATTR_NODEV 0x4
#define MOUNT_ATTR_NOEXEC 0x8
#endif
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif

struct op {
    uint32_t kind;
    int absent;
    char *target, *source;
    int64_t mount; /* the id of the mount we put there, -1: none */
};

static struct op *ops;
static size_t n_ops, n_dirs;
static char **dirs;
static uint64_t (*watched)[2];
static int hub = -1, report = -1;
static char lost_why[512];
static const char *lost_target = "";
static size_t *repaired, n_repaired; /* reported once a whole check succeeded */

/* ------------------------------------------------------------------ small helpers */

static void record(uint8_t kind, int32_t a, int32_t b, const char *detail, size_t len) {
    unsigned char buf[13 + RECORD_MAX];
    if (len > RECORD_MAX)
        len = RECORD_MAX;
    buf[0] = kind;
    put32(buf + 1, (uint32_t)a);
    put32(buf + 5, (uint32_t)b);
    put32(buf + 9, (uint32_t)len);
    memcpy(buf + 13, detail, len);
    write_all(report, buf, 13 + len);
}

/* (mount id, mode) of path, not following a final symlink; (-1, -1) if it names nothing we
 * can reach; -2 in *mnt on another error (errno set). */
static void current(const char *path, int64_t *mnt, int *mode) {
    struct statx sx;
    if (statx(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, STATX_MODE | STATX_MNT_ID, &sx) < 0) {
        *mode = -1;
        *mnt = (errno == ENOENT || errno == ENOTDIR || errno == EACCES) ? -1 : -2;
        return;
    }
    *mnt = (int64_t)sx.stx_mnt_id;
    *mode = sx.stx_mode;
}

static int setattr(const char *path, uint64_t set, int recursive) {
    struct mount_attr attr = {.attr_set = set};
    return (int)syscall(SYS_mount_setattr, AT_FDCWD, path, recursive ? AT_RECURSIVE : 0, &attr,
                        sizeof attr);
}

/* _mounts.cover: 1 mounted, 0 nothing to mount (a symlink), -1 errno, -2 cannot cover */
static int cover(const struct op *op, int mode, const char **why) {
    const char *t = op->target;
    if (S_ISLNK(mode)) {
        if (op->kind == MASK_DIR || op->kind == MASK_FILE ||
            (op->absent && (op->kind == READONLY || op->kind == ANCHOR)))
            return 0;
        *why = "became a symbolic link";
        return -2;
    }
    if (op->kind == PIN) {
        char src[4096];
        if (!S_ISREG(mode)) {
            *why = "is no longer a regular file";
            return -2;
        }
        snprintf(src, sizeof src, "%s/%s", PIN_DIR, op->source);
        if (mount(src, t, NULL, MS_BIND, NULL) < 0 ||
            setattr(t, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 0) < 0)
            return -1;
    } else if (op->kind == READONLY || op->kind == ANCHOR) {
        if (!S_ISREG(mode) && !S_ISDIR(mode)) {
            *why = "is no longer a file or directory";
            return -2;
        }
        if (mount(t, t, NULL, MS_BIND | MS_REC, NULL) < 0 ||
            setattr(t, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV |
                           (op->kind == READONLY ? MOUNT_ATTR_RDONLY : 0),
                    op->kind == READONLY) < 0)
            return -1;
    } else if (S_ISDIR(mode)) {
        if (mount("tmpfs", t, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=000,size=4k") < 0 ||
            setattr(t, MOUNT_ATTR_RDONLY, 0) < 0)
            return -1;
    } else {
        if (mount(EMPTY_FILE, t, NULL, MS_BIND, NULL) < 0 ||
            setattr(t, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOEXEC | MOUNT_ATTR_NODEV, 0) < 0)
            return -1;
    }
    return 1;
}

static void set_mount(const char *target, int64_t id) {
    for (size_t i = 0; i < n_ops; i++)
        if (!strcmp(ops[i].target, target))
            ops[i].mount = id;
}

/* ViewGuard._keep: 0 fine, -1 errno (lost), -2 lost (lost_target, lost_why) */
static int keep(struct op *op) {
    for (int attempt = 0; attempt < ATTEMPTS; attempt++) {
        int64_t before, after;
        int mode, ignored;
        const char *why = NULL;
        current(op->target, &before, &mode);
        if (before == -2) {
            lost_target = op->target;
            return -1;
        }
        if (before == op->mount || mode < 0)
            return 0; /* still ours, or nothing there */
        int mounted = cover(op, mode, &why);
        if (mounted == -2) {
            lost_target = op->target;
            snprintf(lost_why, sizeof lost_why, "%s", why);
            return -2;
        }
        if (mounted < 0) {
            if (errno == ENOENT || errno == ENOTDIR || errno == ESTALE)
                continue; /* replaced again under us: look again */
            lost_target = op->target;
            return -1;
        }
        if (!mounted) { /* a symbolic link: nothing of ours there */
            set_mount(op->target, -1);
            return 0;
        }
        current(op->target, &after, &ignored);
        if (after == -2) {
            lost_target = op->target;
            return -1;
        }
        if (after < 0)
            return 0;
        if (after != before) { /* ours: nobody else can mount in the session */
            set_mount(op->target, after);
            repaired[n_repaired++] = (size_t)(op - ops);
            return 0;
        }
    }
    lost_target = op->target;
    snprintf(lost_why, sizeof lost_why, "keeps changing faster than it can be covered");
    return -2;
}

static int check(void) {
    n_repaired = 0;
    for (size_t i = 0; i < n_ops; i++) {
        int rc = keep(&ops[i]);
        if (rc)
            return rc;
    }
    for (size_t i = 0; i < n_repaired; i++) {
        const struct op *op = &ops[repaired[i]];
        record(REC_GUARD, (int32_t)op->kind, GUARD_RESTORED, op->target, strlen(op->target));
    }
    return 0;
}

static void identity(const char *dir, uint64_t out[2]) {
    struct stat st;
    out[0] = out[1] = 0;
    if (stat(dir, &st) == 0 && S_ISDIR(st.st_mode) && access(dir, X_OK) == 0) {
        out[0] = (uint64_t)st.st_dev;
        out[1] = (uint64_t)st.st_ino;
    }
}

static int identities_changed(void) {
    for (size_t i = 0; i < n_dirs; i++) {
        uint64_t now[2];
        identity(dirs[i], now);
        if (now[0] != watched[i][0] || now[1] != watched[i][1])
            return 1;
    }
    return 0;
}

/* msgpack: an array of strings */
static size_t mp_header(unsigned char *p, uint32_t n, int is_str) {
    if (is_str) {
        if (n < 32) {
            p[0] = (unsigned char)(0xa0 | n);
            return 1;
        }
        if (n < 256) {
            p[0] = 0xd9;
            p[1] = (unsigned char)n;
            return 2;
        }
        p[0] = 0xda;
        p[1] = (unsigned char)(n >> 8);
        p[2] = (unsigned char)n;
        return 3;
    }
    if (n < 16) {
        p[0] = (unsigned char)(0x90 | n);
        return 1;
    }
    p[0] = 0xdc;
    p[1] = (unsigned char)(n >> 8);
    p[2] = (unsigned char)n;
    return 3;
}

/* ViewGuard.open_dirs + _hub_watch: have the hub watch the directories as they are now. */
static int hub_watch(void) {
    int fds[MAX_FDS];
    size_t n = 0, cap = 16;
    for (size_t i = 0; i < n_dirs; i++)
        cap += strlen(dirs[i]) + 3;
    unsigned char *msg = malloc(cap);
    const char **names = calloc(n_dirs ? n_dirs : 1, sizeof *names);
    if (!msg || !names)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < n_dirs; i++) {
        watched[i][0] = watched[i][1] = 0;
        if (access(dirs[i], X_OK) != 0)
            continue; /* not searchable: the program cannot reach anything in it either */
        int fd = open(dirs[i], O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) {
            if (errno == ENOENT || errno == ENOTDIR || errno == EACCES)
                continue;
            rc = -1;
            break;
        }
        if (n == MAX_FDS) {
            close(fd);
            errno = E2BIG;
            rc = -1;
            break;
        }
        struct stat st;
        if (fstat(fd, &st) < 0) {
            close(fd);
            rc = -1;
            break;
        }
        watched[i][0] = (uint64_t)st.st_dev;
        watched[i][1] = (uint64_t)st.st_ino;
        names[n] = dirs[i];
        fds[n++] = fd;
    }
    if (rc == 0) {
        size_t len = 0;
        msg[len++] = 'W';
        len += mp_header(msg + len, (uint32_t)n, 0);
        for (size_t i = 0; i < n; i++) {
            size_t l = strlen(names[i]);
            len += mp_header(msg + len, (uint32_t)l, 1);
            memcpy(msg + len, names[i], l);
            len += l;
        }
        struct iovec iov = {.iov_base = msg, .iov_len = len};
        size_t space = CMSG_SPACE(sizeof(int) * (n ? n : 1));
        char *control = calloc(1, space);
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
        if (!control) {
            rc = -1;
        } else {
            if (n) {
                mh.msg_control = control;
                mh.msg_controllen = CMSG_SPACE(sizeof(int) * n);
                struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(sizeof(int) * n);
                memcpy(CMSG_DATA(c), fds, sizeof(int) * n);
            }
            while ((rc = (int)sendmsg(hub, &mh, MSG_NOSIGNAL)) < 0 && errno == EINTR)
                ;
            rc = rc < 0 ? -1 : 0;
            free(control);
        }
    }
    for (size_t i = 0; i < n; i++)
        close(fds[i]);
    free(msg);
    free(names);
    return rc;
}

/* Whether our parent (the fork server) is exiting: its sockets close before the kernel
 * reparents us, so give it half a second to show (``_launcher._parent_gone``). */
static int parent_gone(pid_t parent) {
    for (int i = 0; i < 50; i++) {
        if (getppid() != parent)
            return 1;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

/* ------------------------------------------------------------------ the configuration */

/* The guard's state (``_reaper.outer_config``, "NGO1") from r, which it must fill exactly. */
static int load_state(struct reader *r) {
    char magic[4];
    uint32_t n;
    /* each operation: kind, absent, mount id and two lengths (24) */
    if (take(r, magic, 4) || memcmp(magic, "NGO1", 4) || take_count(r, 24, &n) || n > 4096)
        return -1;
    if (!(ops = calloc(n ? n : 1, sizeof *ops)) ||
        !(repaired = calloc(n ? n : 1, sizeof *repaired)))
        return -1;
    for (n_ops = 0; n_ops < n; n_ops++) {
        struct op *op = &ops[n_ops];
        uint32_t absent;
        uint64_t mount;
        if (take_u32(r, &op->kind) || take_u32(r, &absent) || take_u64(r, &mount) ||
            !(op->target = take_str(r)) || !(op->source = take_str(r)))
            return -1;
        op->absent = absent != 0;
        op->mount = (int64_t)mount;
    }
    if (take_count(r, 20, &n) || n > 65536 || !(dirs = calloc(n ? n : 1, sizeof *dirs)) ||
        !(watched = calloc(n ? n : 1, sizeof *watched)))
        return -1;
    for (n_dirs = 0; n_dirs < n; n_dirs++)
        if (!(dirs[n_dirs] = take_str(r)) || take_u64(r, &watched[n_dirs][0]) ||
            take_u64(r, &watched[n_dirs][1]))
            return -1;
    return r->p == r->end ? 0 : -1;
}

static int load(int fd) {
    struct stat st;
    if (fstat(fd, &st) < 0 || st.st_size <= 0 || st.st_size > (16 << 20))
        return -1;
    unsigned char *buf = malloc((size_t)st.st_size);
    if (!buf || pread(fd, buf, (size_t)st.st_size, 0) != st.st_size)
        return -1;
    struct reader r = {buf, buf + st.st_size};
    int rc = load_state(&r);
    free(buf);
    return rc;
}

/* ------------------------------------------------------------------ the outer's life */

/* The init's pidfd in a repair (--repair), which names it whatever our pid namespace. */
static int init_pidfd = -1;

/* Report the guard lost (target NUL why) and end the session: err's text, or lost_why. */
static void lose(pid_t init, int err) {
    char why[RECORD_MAX];
    int n = snprintf(why, sizeof why, "%s%c%s", lost_target, 0,
                     lost_why[0] ? lost_why : strerror(err ? err : EIO));
    /* n is what did not fit too: never send more than the buffer holds */
    record(REC_GUARD, 0, GUARD_LOST, why, n < 0 ? 0 : n >= (int)sizeof why ? sizeof why - 1
                                                                            : (size_t)n);
    if (init_pidfd >= 0)
        syscall(SYS_pidfd_send_signal, init_pidfd, SIGKILL, NULL, 0);
    else
        kill(init, SIGKILL);
}

int outer_main(int argc, char **argv) {
    long init, hub_fd, report_fd, subreaper, server, config;
    prctl(PR_SET_DUMPABLE, 0);
    prctl(PR_SET_NAME, "nono-outer");
    if (argc != 8 || number(argv[2], &init) || number(argv[3], &hub_fd) ||
        number(argv[4], &report_fd) || number(argv[5], &subreaper) ||
        number(argv[6], &server) || number(argv[7], &config))
        return 126;
    hub = (int)hub_fd;
    report = (int)report_fd;
    signal(SIGPIPE, SIG_IGN);
    if (hub >= 0 && load((int)config) < 0) {
        snprintf(lost_why, sizeof lost_why, "the view guard's state could not be read");
        lose((pid_t)init, 0);
        hub = -1;
    }
    if (config >= 0)
        close((int)config);
    sigset_t hup;
    sigemptyset(&hup);
    sigaddset(&hup, SIGHUP);
    sigprocmask(SIG_BLOCK, &hup, NULL);
    int sfd = subreaper ? signalfd(-1, &hup, SFD_CLOEXEC) : -1;
    if (subreaper && getppid() != (pid_t)server)
        kill((pid_t)init, SIGKILL); /* the fork server died before we could hear it */
    int pidfd = (int)syscall(SYS_pidfd_open, (pid_t)init, 0);
    pid_t parent = getppid();
    struct pollfd watch[3] = {{.fd = pidfd, .events = POLLIN},
                              {.fd = hub, .events = POLLIN}, /* -1: skipped */
                              {.fd = sfd, .events = POLLIN}};
    while (pidfd >= 0) {
        if (poll(watch, 3, -1) < 0)
            continue;
        if (watch[0].revents)
            break;
        if (watch[2].fd >= 0 && watch[2].revents) {
            struct signalfd_siginfo si;
            if (read(sfd, &si, sizeof si) == (ssize_t)sizeof si)
                kill((pid_t)init, SIGKILL); /* the fork server died: end the session */
        }
        if (watch[1].fd < 0 || !watch[1].revents)
            continue;
        char msg[64];
        ssize_t n;
        while ((n = recv(hub, msg, sizeof msg, 0)) < 0 && errno == EINTR)
            ;
        int rc = 0, err = 0;
        if (n <= 0) {
            if (parent_gone(parent))
                break; /* the fork server is exiting: PDEATHSIG ends us and the session */
            err = n < 0 ? errno : EPIPE; /* unwatched from now on: the session must not go on */
            snprintf(lost_why, sizeof lost_why, "the guard hub dropped this session");
            lost_target = "";
            rc = -1;
        } else if (msg[0] == 'E') {
            int32_t e = EIO;
            if (n >= 5)
                memcpy(&e, msg + 1, 4);
            err = e;
            snprintf(lost_why, sizeof lost_why, "the guard hub can no longer watch");
            lost_target = "";
            rc = -1;
        } else if (msg[0] == 'c' || msg[0] == 'k') {
            rc = check();
            if (rc == -1)
                err = errno;
            if (!rc && (msg[0] == 'c' || identities_changed()) && hub_watch() < 0) {
                err = errno;
                lost_target = "";
                rc = -1;
            }
        }
        if (rc) {
            lose((pid_t)init, rc == -1 ? (err ? err : EIO) : 0);
            watch[1].fd = -1;
            break;
        }
    }
    if (report >= 0)
        close(report);
    while (waitpid((pid_t)init, NULL, 0) < 0 && errno == EINTR)
        ;
    if (subreaper)
        end_descendants();
    _exit(0);
}

/* ------------------------------------------------------------------ a repair (--repair) */

enum { JOB_FD = 3, PIDFD = 3, HUB = 4, REPORT = 5, CONFIG = 6, MNTNS = 7 };
/* Exit status of a repair whose guard is lost, reported and the init killed (``_guardhub``:
 * any status but 0 and this one is a failure the fork server reports itself). */
enum { REPAIR_LOST = 42 };

static void put_str(unsigned char **p, const char *s) {
    size_t n = strlen(s);
    put32(*p, (uint32_t)n);
    memcpy(*p + 4, s, n);
    *p += 4 + n;
}

static void put64(unsigned char **p, uint64_t v) {
    put32(*p, (uint32_t)v);
    put32(*p + 4, (uint32_t)(v >> 32));
    *p += 8;
}

/* The state back into CONFIG_FD, as ``_reaper.outer_config`` wrote it, for the next repair. */
static int save(int fd) {
    size_t len = 8;
    for (size_t i = 0; i < n_ops; i++)
        len += 16 + 8 + strlen(ops[i].target) + strlen(ops[i].source);
    len += 4;
    for (size_t i = 0; i < n_dirs; i++)
        len += 4 + strlen(dirs[i]) + 16;
    unsigned char *buf = malloc(len), *p = buf;
    if (!buf)
        return -1;
    memcpy(p, "NGO1", 4);
    put32(p + 4, (uint32_t)n_ops);
    p += 8;
    for (size_t i = 0; i < n_ops; i++) {
        put32(p, ops[i].kind);
        put32(p + 4, (uint32_t)ops[i].absent);
        p += 8;
        put64(&p, (uint64_t)ops[i].mount);
        put_str(&p, ops[i].target);
        put_str(&p, ops[i].source);
    }
    put32(p, (uint32_t)n_dirs);
    p += 4;
    for (size_t i = 0; i < n_dirs; i++) {
        put_str(&p, dirs[i]);
        put64(&p, watched[i][0]);
        put64(&p, watched[i][1]);
    }
    int rc = ftruncate(fd, 0) == 0 && pwrite(fd, buf, len, 0) == (ssize_t)len ? 0 : -1;
    free(buf);
    return rc;
}

/* The hub's answer to hub_watch(): 'k' 0, 'E' its errno, gone -1 (the session ended). */
static int hub_reply(void) {
    char msg[64];
    ssize_t n;
    while ((n = recv(hub, msg, sizeof msg, 0)) < 0 && errno == EINTR)
        ;
    if (n <= 0)
        return -1;
    if (msg[0] == 'k')
        return 0;
    int32_t e = EIO;
    if (msg[0] == 'E' && n >= 5)
        memcpy(&e, msg + 1, 4);
    return e ? e : EIO;
}

/* The session's mount namespace, from its init (an adopted-ahead one, ``A``), or -1. */
static int session_mntns = -1;

/* Into the session's user and mount namespaces: 0, 1 (the session has ended meanwhile: nothing
 * to do) or -1. Through the init's mount namespace where it sent it (``A``): its image may have
 * been exec'd before its clone into the session's user namespace (the C init; a Python one
 * until it has become the reaper), and then the kernel refuses ``setns`` on its pidfd (a
 * ptrace access check) to a fork server without CAP_SYS_PTRACE in its own user namespace;
 * the namespace's own descriptor needs only the capabilities of its owner. */
static int enter(void) {
    if (session_mntns < 0) {
        if (syscall(SYS_setns, init_pidfd, CLONE_NEWUSER | CLONE_NEWNS) == 0)
            return 0;
        return errno == ESRCH ? 1 : -1;
    }
    struct pollfd ended = {.fd = init_pidfd, .events = POLLIN};
    int polled = poll(&ended, 1, 0);
    if (polled > 0) /* readable: the init has exited */
        return 1;
    if (polled < 0) /* not known to have ended: not repaired, so not guarded (fail closed) */
        return -1;
    int owner = ioctl(session_mntns, NS_GET_USERNS);
    int rc = owner >= 0 && setns(owner, CLONE_NEWUSER) == 0 &&
                     setns(session_mntns, CLONE_NEWNS) == 0
                 ? 0
                 : -1;
    if (owner >= 0)
        close(owner);
    return rc;
}

/* One repair, the four (or five) descriptors in hand. */
static int repair(void) {
    signal(SIGPIPE, SIG_IGN);
    if (load(CONFIG) < 0)
        return 2;
    int entered = enter();
    if (entered > 0)
        return 0;
    if (entered < 0) { /* not the session's view: it cannot be guarded, it must end */
        snprintf(lost_why, sizeof lost_why,
                 "the view guard's repair cannot enter the session: %s", strerror(errno));
        lose(0, 0);
        return REPAIR_LOST;
    }
    int rc = check(), err = rc == -1 ? errno : 0, watch = 1;
    while (!rc && watch) {
        if (hub_watch() < 0) {
            err = errno;
            lost_target = "";
            rc = -1;
            break;
        }
        int reply = hub_reply();
        if (reply < 0)
            return 0; /* the session has ended: nothing left to guard */
        if (reply > 0) {
            err = reply;
            snprintf(lost_why, sizeof lost_why, "the guard hub can no longer watch");
            lost_target = "";
            rc = -1;
            break;
        }
        /* what appeared between the last check and the new watches shows no event */
        rc = check();
        if (rc == -1)
            err = errno;
        watch = !rc && identities_changed();
    }
    if (rc) {
        lose(0, rc == -1 ? (err ? err : EIO) : 0);
        return REPAIR_LOST;
    }
    return save(CONFIG) < 0 ? 2 : 0;
}

/* A server's job: "J", the job's number (4 bytes, as the hub sent them) and the session's four
 * descriptors on JOB_FD (five: its mount namespace, for an init adopted ahead). 0 and the
 * descriptors in fds (n_fds of them); -1: the hub has gone or sent no job (nothing to do). */
static int take_job(int *fds, int *n_fds, uint32_t *job) {
    unsigned char msg[5];
    struct iovec iov = {.iov_base = msg, .iov_len = sizeof msg};
    union {
        char buf[CMSG_SPACE(5 * sizeof(int))];
        struct cmsghdr align;
    } u;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                        .msg_controllen = sizeof u.buf};
    ssize_t n;
    while ((n = recvmsg(JOB_FD, &mh, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR)
        ;
    struct cmsghdr *c = n > 0 ? CMSG_FIRSTHDR(&mh) : NULL;
    int count = !c ? 0 : c->cmsg_len == CMSG_LEN(4 * sizeof(int)) ? 4
                       : c->cmsg_len == CMSG_LEN(5 * sizeof(int)) ? 5 : 0;
    if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS && !count) {
        /* descriptors, but not four or five: close what came (we end anyway) */
        size_t got = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < got && i < 5; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            close(fd);
        }
    }
    if (!count || n != (ssize_t)sizeof msg || c->cmsg_level != SOL_SOCKET ||
        c->cmsg_type != SCM_RIGHTS || msg[0] != 'J' || (mh.msg_flags & (MSG_CTRUNC | MSG_TRUNC)))
        return -1;
    memcpy(fds, CMSG_DATA(c), (size_t)count * sizeof(int));
    memcpy(job, msg + 1, 4);
    *n_fds = count;
    return 0;
}

/* In the server's child: the job's descriptors onto 3 to 6 (7: the mount namespace), nothing
 * else of the server's kept, then one repair. */
static void run_job(const int *fds, int n_fds, pid_t server) {
    int high[5];
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != server)
        _exit(2); /* the server died before we could tie our life to it */
    for (int i = 0; i < n_fds; i++) /* above 7 first, so that no dup2 below hits a source */
        if ((high[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 10)) < 0)
            _exit(2);
    for (int i = 0; i < n_fds; i++)
        if (dup2(high[i], 3 + i) < 0)
            _exit(2);
    syscall(SYS_close_range, 3 + n_fds, ~0U, 0); /* the server's socket, signalfd, copies */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    session_mntns = n_fds == 5 ? MNTNS : -1;
    hub = HUB;
    report = REPORT;
    init_pidfd = PIDFD;
    _exit(repair());
}

/* The hub's answer for one job: "R", the job's number and the repair's wait status. */
static void answer(uint32_t job, int status) {
    unsigned char msg[9] = {'R'};
    memcpy(msg + 1, &job, 4);
    memcpy(msg + 5, &status, 4);
    while (send(JOB_FD, msg, sizeof msg, MSG_NOSIGNAL) < 0 && errno == EINTR)
        ;
}

/* A repair server (--serve): spawned by the hub ahead of need, it serves every session the
 * hub guards, one job after another as they come on JOB_FD: a fork each (not an exec: a
 * change beside many sessions costs a fork per session, in this small process, not a spawn
 * in the fork server's loop and an exec), whose wait status goes back as "R". It ends when
 * the hub closes its end or sends what is not a job (its children then die with it). */
static int serve(void) {
    pid_t self = getpid();
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, NULL);
    int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0)
        return 2;
    struct running {
        pid_t pid;
        uint32_t job;
    } *run = NULL;
    size_t n_run = 0, cap = 0;
    struct pollfd watch[2] = {{.fd = JOB_FD, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
    for (;;) {
        if (poll(watch, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            return 2;
        }
        if (watch[1].revents) {
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof si) > 0)
                ;
            int status;
            pid_t pid;
            while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
                for (size_t i = 0; i < n_run; i++)
                    if (run[i].pid == pid) {
                        answer(run[i].job, status);
                        run[i] = run[--n_run];
                        break;
                    }
        }
        if (!watch[0].revents)
            continue;
        int fds[5], n_fds;
        uint32_t job;
        if (take_job(fds, &n_fds, &job) < 0)
            return 0;
        if (n_run == cap) {
            size_t more = cap ? cap * 2 : 16;
            struct running *grown = realloc(run, more * sizeof *run);
            if (!grown)
                return 2; /* the hub ends the sessions of the jobs in flight */
            run = grown;
            cap = more;
        }
        pid_t pid = fork();
        if (pid == 0)
            run_job(fds, n_fds, self);
        for (int i = 0; i < n_fds; i++)
            close(fds[i]);
        if (pid < 0)
            answer(job, 2 << 8); /* as a repair that could not: the hub ends that session */
        else
            run[n_run++] = (struct running){pid, job};
    }
}

/* nono-reaper --repair SERVER [--serve]: what the outer launcher did on the hub's "c", for a
 * session whose outer has left (the fork server's hub runs it on each change, one at a time
 * per session). With the descriptors PIDFD (the init's), HUB (the session's hub socket),
 * REPORT (its exit pipe) and CONFIG (the guard's state) on 3 to 6; with --serve it is a
 * server spawned ahead of need, which takes jobs ("J", a number and those descriptors) on 3
 * and runs each in a child (``serve``), so that a change waits for neither a spawn nor an exec
 * (with a fifth, MNTNS, for an init adopted ahead). It enters the session's user and mount
 * namespaces (``enter``: through the init's pidfd, or MNTNS and its owner; with the
 * capabilities of their owner there), covers again what lost its mount, has the hub watch the
 * directories on the way anew, checks once more after each new watch, and writes the state
 * back to CONFIG. Exit 0: done (or nothing to do); REPAIR_LOST: the guard is lost (reported
 * on REPORT, the init killed); anything else: it could not (the fork server reports and ends
 * the session). It leaves by _exit: no atexit handler runs in the session's view. */
int repair_main(int argc, char **argv) {
    long server;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    prctl(PR_SET_DUMPABLE, 0);
    prctl(PR_SET_NAME, "nono-repair");
    int serving = argc == 4 && !strcmp(argv[3], "--serve");
    if ((argc != 3 && !serving) || number(argv[2], &server))
        return 2;
    if (getppid() != (pid_t)server)
        return 2; /* the fork server died before we could tie our life to it */
    syscall(SYS_close_range, serving ? JOB_FD + 1 : CONFIG + 1, ~0U, 0); /* anything else */
    if (serving)
        _exit(serve());
    hub = HUB;
    report = REPORT;
    init_pidfd = PIDFD;
    _exit(repair());
}

/* ------------------------------------------------------------------ a C init's guard */

/* The hub's ``expected`` answer, passing "c" (a change it woke us for: it repairs those
 * itself once it has the session): 0, or an errno (``_launcher._hub_answer``). */
static int hub_answer(char expected) {
    for (;;) {
        char msg[64];
        ssize_t n;
        while ((n = recv(hub, msg, sizeof msg, 0)) < 0 && errno == EINTR)
            ;
        if (n <= 0)
            return EPIPE;
        if (msg[0] == 'E' && n >= 5) {
            int32_t e;
            memcpy(&e, msg + 1, 4);
            return e ? e : EIO;
        }
        if (msg[0] == expected)
            return 0;
        if (msg[0] != 'c')
            return EPIPE;
    }
}

/* _launcher._adopt_ahead for the C init (reaper_init.c), its view built: ``state`` the
 * guard's operations and directories ("NGO1", no mount taken yet), ``on_the_way`` the "O"
 * message for the hub (the names a change must touch to matter). The hub watches the
 * directories, each mount's id is taken (ViewGuard.start) and what is gone covered again,
 * then the hub gets the init's pidfd, the state in a memfd, its socket and its mount
 * namespace ("A": the repairs enter through that, ``enter``) and guards the session from
 * then on. 0, or -1: the init must end before READY (fail closed). */
int adopt_guard(struct reader *state, const unsigned char *on_the_way, size_t len, int hub_fd) {
    hub = hub_fd;
    if (load_state(state) < 0 || send(hub, on_the_way, len, MSG_NOSIGNAL) != (ssize_t)len ||
        hub_watch() < 0 || hub_answer('k'))
        return -1;
    for (size_t i = 0; i < n_ops; i++) { /* ViewGuard.start */
        int64_t mount, parent;
        int mode;
        char dir[4096];
        snprintf(dir, sizeof dir, "%s", ops[i].target);
        char *slash = strrchr(dir, '/');
        if (!slash)
            return -1;
        slash[slash == dir] = '\0'; /* "/x" -> "/" */
        current(ops[i].target, &mount, &mode);
        current(dir, &parent, &mode);
        if (mount == -2 || parent == -2)
            return -1;
        ops[i].mount = mount != parent ? mount : -1;
    }
    if (check())
        return -1;
    int memfd = memfd_create("nono-view", MFD_CLOEXEC);
    int pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
    int mntns = open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC); /* for the repairs: enter */
    int rc = -1;
    if (memfd >= 0 && pidfd >= 0 && mntns >= 0 && save(memfd) == 0) {
        int fds[4] = {pidfd, memfd, hub, mntns};
        if (send_fds(hub, "A", 1, fds, 4) == 0 && hub_answer('h') == 0)
            rc = 0;
    }
    if (memfd >= 0)
        close(memfd);
    if (pidfd >= 0)
        close(pidfd);
    if (mntns >= 0)
        close(mntns);
    close(hub);
    hub = -1;
    return rc;
}
