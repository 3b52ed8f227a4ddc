/* nono-reaper --init: a warm launcher's init in C from its first instruction (_cinit).
 *
 *   argv: nono-reaper --init NS_FLAGS PLAN_FD GO_FD CONFIG_FD HUB_FD [TREE_FD...]
 *
 * The fork server spawns this (posix_spawn: no copy of its address space), and it clones
 * the init into the session's namespaces (NS_FLAGS but the cgroup one) as a sibling
 * (CLONE_PARENT): the init is the fork server's child, as _libc.fork_into makes the Python
 * one. This process says "P" + the init's pid (u32) on GO_FD and exits. The init then does
 * what _launcher.run_direct and _warm_init do, in the same order, with the same system
 * calls:
 *
 *   - parent-death signal, dumpable until the fork server has written its id maps: "r" on
 *     GO_FD, and on with "g" (anything else: exit);
 *   - its own cgroup namespace; the root, /proc, /dev, lo, keyring, bounding set and the
 *     view's mounts (reaper_view.c), the creation guard's pins (reaper_create.c) and the
 *     Landlock ruleset (reaper_confine.c), from the flat form in the sealed memfd CONFIG_FD
 *     ("NGV1", _cinit.view_config); a view with
 *     something to guard has its guard handed to the fork server's hub on HUB_FD (-1:
 *     none), as _launcher._adopt_ahead (reaper_outer.c, adopt_guard);
 *   - "R" (READY) on PLAN_FD, then one launch message with six descriptors (stdin, stdout,
 *     stderr, the launch pipe, the exit pipe, the control socket): the records the fork
 *     server has for the launch pipe (u32 length + bytes, as for the Python init), then
 *     "NGL1" (_cinit.launch_message);
 *   - the launch's steps as _launcher.confine_and_run and _confined_tail, each failure a
 *     record (REC_ERROR, the step's index in _launcher.STEPS, errno, detail) on the launch
 *     pipe after the pending records, and exit 126: the program never runs unconfined;
 *   - the program (spawn_program, or fork for a controlling terminal or under the creation
 *     guard: layer 2 built here, confined in the program, its listener served by this
 *     init, reaper_create.c and reaper_guard.c), then serve_init.
 *
 * Any failure before READY: exit 126, and the fork server launches elsewhere (fail closed).
 * Every length and count read is bounded and the whole message must be consumed. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "reaper.h"

/* Indices in _launcher.STEPS (tests/sandbox/test_cinit.py checks them). */
enum {
    S_FORK = 0, S_SETSID = 6, S_LOOPBACK = 8, S_CHDIR = 10, S_RLIMITS = 11, S_STDIO = 12,
    S_CLOSE_FDS = 13, S_NO_NEW_PRIVS = 14, S_LANDLOCK = 15, S_CAPS = 16, S_SECCOMP = 17,
    S_EXEC = 18, S_CREATEGUARD = 21,
};
#define REC_ERROR 2
#define MAX_CONFIG (16u << 20)
#define MAX_PLAN ((1u << 20) + 4096u) /* _launcher.MAX_PLAN + MAX_PENDING */
#define MAX_PENDING 4096u
#define MAX_ARGS 65536u
#define FDS_PER_PLAN 6
#define FLAG_TTY 1u
#define FLAG_CWD_ID 2u /* _cinit.FLAG_CWD_ID: cwd_dev, cwd_ino follow the cwd */
#define CWD_REPLACED "is not the directory verified at launch: renamed or replaced since"

static const int forwarded[] = {SIGHUP, SIGINT, SIGQUIT, SIGTERM,
                                SIGUSR1, SIGUSR2, SIGWINCH, SIGCONT};

struct launch {
    uint32_t flags, proxy_port;
    uint64_t max_processes, nofile_cur, nofile_max;
    char *executable, *cwd;
    uint64_t cwd_dev, cwd_ino; /* with FLAG_CWD_ID: what the chdir must enter */
    char **argv, **envp;
    const unsigned char *seccomp, *creation_filter;
    uint32_t n_seccomp, n_creation_filter;
};

/* The fork server's records for the launch pipe (the init's pid...): written once, before
 * the program starts or before the first error, whichever comes first (_launcher._fail). */
static const unsigned char *pending;
static uint32_t n_pending;

static void write_pending(int launch_w) {
    write_all(launch_w, pending, n_pending);
    n_pending = 0;
}

static void report(int launch_w, int step, int err, const char *detail) {
    size_t len = detail ? strlen(detail) : 0;
    if (len > 4000)
        len = 4000;
    unsigned char rec[13 + 4000];
    rec[0] = REC_ERROR;
    put32(rec + 1, (uint32_t)step);
    put32(rec + 5, (uint32_t)err);
    put32(rec + 9, (uint32_t)len);
    memcpy(rec + 13, detail, len);
    write_pending(launch_w);
    write_all(launch_w, rec, 13 + len);
}

static _Noreturn void fail(int launch_w, int step, int err, const char *detail) {
    report(launch_w, step, err, detail ? detail : strerror(err));
    _exit(126);
}

/* A NULL-terminated array of ``n`` strings, no NUL inside any. */
static char **take_strings(struct reader *r) {
    uint32_t n;
    if (take_u32(r, &n) || n > MAX_ARGS)
        return NULL;
    char **out = calloc((size_t)n + 1, sizeof *out);
    for (uint32_t i = 0; out && i < n; i++) {
        struct reader peek = *r;
        uint32_t len;
        if (take_u32(&peek, &len) || (size_t)(peek.end - peek.p) < len ||
            memchr(peek.p, '\0', len) || !(out[i] = take_str(r)))
            return NULL;
    }
    return out;
}

static int parse_launch(struct reader *r, struct launch *l) {
    char magic[4];
    uint32_t n;
    if (take(r, magic, 4) || memcmp(magic, "NGL1", 4) || take_u32(r, &l->flags) ||
        l->flags & ~(FLAG_TTY | FLAG_CWD_ID) || take_u32(r, &l->proxy_port) ||
        l->proxy_port > 65535 || take_u64(r, &l->max_processes) ||
        take_u64(r, &l->nofile_cur) || take_u64(r, &l->nofile_max) ||
        !(l->executable = take_path(r)) || !(l->cwd = take_path(r)) ||
        (l->flags & FLAG_CWD_ID && (take_u64(r, &l->cwd_dev) || take_u64(r, &l->cwd_ino))) ||
        !(l->argv = take_strings(r)) || !l->argv[0] ||
        !(l->envp = take_strings(r)) || take_u32(r, &l->n_creation_filter) ||
        (size_t)(r->end - r->p) < l->n_creation_filter)
        return -1;
    l->creation_filter = r->p;
    r->p += l->n_creation_filter;
    if (take_u32(r, &n) || (size_t)(r->end - r->p) != n)
        return -1;
    l->seccomp = r->p;
    l->n_seccomp = n;
    r->p += n;
    return 0;
}

static void block_forwarded(int how) {
    sigset_t set;
    sigemptyset(&set);
    for (size_t i = 0; i < sizeof forwarded / sizeof *forwarded; i++)
        sigaddset(&set, forwarded[i]);
    sigprocmask(how, &set, NULL);
}

/* _launcher._hand_over_listener */
static int proxy_listener(int control, unsigned port) {
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return errno;
    int err = 0;
    if (bind(s, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(s, 512) < 0) {
        err = errno;
    } else {
        unsigned char tag[3] = {'L', (unsigned char)port, (unsigned char)(port >> 8)};
        if (send_fds(control, tag, sizeof tag, &s, 1) < 0)
            err = errno;
    }
    close(s);
    return err;
}

/* _launcher._program_limits: the program's descriptor limit, taken in the program alone
 * just before its execve (a forked one once it has passed its listener). The init keeps
 * the fork server's: its passes are not refused while another session of the user holds
 * its own limit's worth in flight. */
static int program_limits(const struct launch *l) {
    struct rlimit nofile = {(rlim_t)l->nofile_cur, (rlim_t)l->nofile_max};
    return setrlimit(RLIMIT_NOFILE, &nofile) < 0 ? errno : 0;
}

/* The program forked (_launcher._fork_program), for a controlling terminal or to confine
 * itself under the creation guard (``guard``: layer 2 and the socket its listener goes to
 * the init on; NULL: none): a child that reports its own failure on the launch pipe. */
static pid_t fork_program(const struct launch *l, int launch_w, int exit_w, const int *guard) {
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    close(exit_w);
    if (setsid() < 0)
        fail(launch_w, S_SETSID, errno, NULL);
    if ((l->flags & FLAG_TTY) && ioctl(0, TIOCSCTTY, 0) < 0)
        fail(launch_w, S_SETSID, errno, "tty");
    int err;
    if (guard && (err = creation_confine(guard[0], l->creation_filter, l->n_creation_filter,
                                         guard[1])))
        fail(launch_w, S_CREATEGUARD, err, NULL);
    if ((err = program_limits(l)))
        fail(launch_w, S_RLIMITS, err, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execve(l->executable, l->argv, l->envp);
    fail(launch_w, S_EXEC, errno, l->executable);
}

/* The listener the program sends once confined (creation_confine), or -1 (it failed and
 * said why on the launch pipe). */
static int receive_listener(int sock) {
    char tag;
    union {
        char buf[CMSG_SPACE(sizeof(int) * 4)];
        struct cmsghdr align;
    } u;
    struct iovec iov = {.iov_base = &tag, .iov_len = 1};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                         .msg_controllen = sizeof u.buf};
    ssize_t n;
    while ((n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR)
        ;
    int fd = -1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); n > 0 && c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; i++) {
            int got;
            memcpy(&got, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            if (fd < 0 && tag == 'L')
                fd = got;
            else
                close(got);
        }
    }
    return fd;
}

/* _launcher._fork_guarded: layer 2 built, the program forked to confine itself with it, and
 * its listener served by this init from then on (reaper_guard.c, in serve_init). */
static pid_t fork_guarded(const struct launch *l, const struct creation *c, uint32_t abi,
                          int launch_w, int exit_w) {
    struct prepared p;
    const char *detail;
    int err = creation_prepare(c, abi, &p, &detail), pair[2];
    if (err)
        fail(launch_w, S_CREATEGUARD, err, detail);
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0)
        fail(launch_w, S_CREATEGUARD, errno, "socketpair");
    int guard[2] = {p.ruleset, pair[1]};
    pid_t pid = fork_program(l, launch_w, exit_w, guard);
    close(pair[1]);
    close(p.ruleset);
    if (pid > 0) {
        int listener = receive_listener(pair[0]);
        if (listener >= 0)
            guard_set(p.guarded, p.n_guarded, p.paths, p.n_paths, p.ruled, p.n_ruled, listener);
    }
    close(pair[0]);
    return pid;
}

/* The spawned program's side of spawn_program, on the init's memory (CLONE_VM) until its
 * execve: only system calls, and what went wrong in ``spawned``. */
struct spawned {
    const struct launch *l;
    int step, err;
};

static int spawned_child(void *arg) {
    struct spawned *s = arg;
    const struct launch *l = s->l;
    sigset_t none;
    sigemptyset(&none);
    if (setsid() < 0) {
        s->step = S_SETSID, s->err = errno;
        _exit(127);
    }
    if ((s->err = program_limits(l))) { /* the child's only: the init keeps its own */
        s->step = S_RLIMITS;
        _exit(127);
    }
    sigprocmask(SIG_SETMASK, &none, NULL);
    execve(l->executable, l->argv, l->envp);
    s->step = S_EXEC, s->err = errno;
    _exit(127);
}

/* The program, as posix_spawn starts one (a vfork-style clone: no copy of our page tables;
 * we wait until it has exec'd or failed), but with its descriptor limit taken in the child
 * alone (known2): the init, and the nono-reaper it becomes, keep the fork server's, so their
 * passes of a forward's connected socket are not refused while another session of the user
 * holds the program's limit's worth of descriptors in flight. No handler to reset: the
 * init's dispositions are the defaults (init_run); every signal stays blocked in the child
 * until its execve. Returns -1 with ``*step`` and ``*err`` set. */
static pid_t spawn_program(const struct launch *l, int *step, int *err) {
    static char stack[64 * 1024] __attribute__((aligned(16)));
    struct spawned s = {.l = l, .step = S_EXEC, .err = 0};
    sigset_t all, before;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, &before);
    pid_t pid = clone(spawned_child, stack + sizeof stack, CLONE_VM | CLONE_VFORK | SIGCHLD, &s);
    int cloned = errno;
    sigprocmask(SIG_SETMASK, &before, NULL);
    if (pid < 0) {
        *step = S_EXEC, *err = cloned;
        return -1;
    }
    if (s.err) { /* it exited: reaped here, not counted as the program's end */
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
        *step = s.step, *err = s.err;
        return -1;
    }
    return pid;
}

/* nono-reaper --exec LAUNCH_W SOFT HARD PATH ARG0 [ARG]...: the Python init's program
 * (_launcher._spawn_program), spawned as this (posix_spawn cannot set a limit in the child):
 * it takes the program's descriptor limit, its own alone, and execs PATH with ARG0... and its
 * environment. A failure is the launch's (a record on LAUNCH_W, exit 126), as the C init's;
 * LAUNCH_W closes at the exec, as the daemon expects of a program that runs. */
int exec_main(int argc, char **argv) {
    long launch_w;
    char *end_soft, *end_hard;
    if (argc < 7 || number(argv[2], &launch_w) || launch_w < 3)
        return 126;
    errno = 0;
    unsigned long long soft = strtoull(argv[3], &end_soft, 10);
    unsigned long long hard = strtoull(argv[4], &end_hard, 10);
    if (errno || *end_soft || *end_hard || end_soft == argv[3] || end_hard == argv[4])
        fail((int)launch_w, S_RLIMITS, EINVAL, "the program's descriptor limit");
    if (fcntl((int)launch_w, F_SETFD, FD_CLOEXEC) < 0)
        return 126;
    struct rlimit nofile = {(rlim_t)soft, (rlim_t)hard};
    if (setrlimit(RLIMIT_NOFILE, &nofile) < 0)
        fail((int)launch_w, S_RLIMITS, errno, NULL);
    extern char **environ;
    execve(argv[5], argv + 6, environ);
    fail((int)launch_w, S_EXEC, errno, argv[5]);
}

/* Copy ``fds`` (-1 stays -1) onto 0, 1, 2... in order (those from 3 close-on-exec):
 * _launcher._stdio. */
static int place(int *fds, size_t n) {
    int copies[16];
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (fds[i] < 0)
            continue;
        if ((copies[k++] = fcntl(fds[i], F_DUPFD_CLOEXEC, (int)n)) < 0) /* above every target */
            return -1;
    }
    k = 0;
    for (size_t i = 0; i < n; i++) {
        if (fds[i] < 0)
            continue;
        int target = (int)k;
        if (dup3(copies[k], target, target < 3 ? 0 : O_CLOEXEC) < 0)
            return -1;
        fds[i] = target;
        k++;
    }
    return 0;
}

/* At launch: the steps, the program, the init's life. */
static _Noreturn void launch(struct launch *l, int *fds, int plan_fd, struct ruleset *rs,
                             const struct creation *c) {
    int launch_w = fds[3];
    const char *detail;
    int err;
    if (chdir(l->cwd) < 0)
        fail(launch_w, S_CHDIR, errno, l->cwd);
    if (l->flags & FLAG_CWD_ID) { /* _launcher.enter_cwd */
        struct stat st;
        if (stat(".", &st) < 0)
            fail(launch_w, S_CHDIR, errno, l->cwd);
        if ((uint64_t)st.st_dev != l->cwd_dev || (uint64_t)st.st_ino != l->cwd_ino) {
            char detail[4000];
            snprintf(detail, sizeof detail, "%s %s", l->cwd, CWD_REPLACED);
            fail(launch_w, S_CHDIR, ESTALE, detail);
        }
    }
    if ((err = session_rlimits(l->max_processes)))
        fail(launch_w, S_RLIMITS, err, NULL);
    int placed[8] = {fds[0], fds[1], fds[2], fds[3], fds[4], fds[5], plan_fd, rs->fd};
    if (place(placed, 8) < 0)
        fail(launch_w, S_STDIO, errno, "dup2");
    launch_w = placed[3];
    int exit_w = placed[4], control = placed[5], done = placed[6];
    rs->fd = placed[7];
    int last = rs->fd > done ? rs->fd : done;
    if (syscall(SYS_close_range, (unsigned)last + 1, ~0U, 0) < 0)
        fail(launch_w, S_CLOSE_FDS, errno, NULL);
    if (l->proxy_port && (err = proxy_listener(control, l->proxy_port)))
        fail(launch_w, S_LOOPBACK, err, NULL);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        fail(launch_w, S_NO_NEW_PRIVS, errno, NULL);
    if ((err = ruleset_enforce(rs, &detail)))
        fail(launch_w, S_LANDLOCK, err, detail);
    if ((err = drop_capabilities()))
        fail(launch_w, S_CAPS, err, NULL);
    if (l->n_seccomp && (err = install_seccomp(l->seccomp, l->n_seccomp)))
        fail(launch_w, S_SECCOMP, err, NULL);
    block_forwarded(SIG_BLOCK); /* until serve_init's signalfd: see _confined_tail */
    write_pending(launch_w);
    pid_t pid;
    if (c->n || l->flags & FLAG_TTY) {
        pid = c->n ? fork_guarded(l, c, rs->abi, launch_w, exit_w)
                   : fork_program(l, launch_w, exit_w, NULL);
        if (pid < 0) {
            report(launch_w, S_EXEC, errno, "fork");
            _exit(126);
        }
    } else {
        int step;
        if ((pid = spawn_program(l, &step, &err)) < 0) {
            report(launch_w, step, err, step == S_EXEC ? l->executable : NULL);
            _exit(126);
        }
    }
    close(launch_w);
    close(done);
    for (int fd = 0; fd < 3; fd++)
        close(fd);
    serve_init(pid, exit_w, control, 0, -1);
}

static int read_config(int fd, struct reader *r) {
    struct stat st;
    if (fstat(fd, &st) < 0 || st.st_size < 4 || (uint64_t)st.st_size > MAX_CONFIG)
        return -1;
    unsigned char *buf = malloc((size_t)st.st_size);
    if (!buf || pread(fd, buf, (size_t)st.st_size, 0) != st.st_size)
        return -1;
    close(fd);
    r->p = buf;
    r->end = buf + st.st_size;
    return memcmp(buf, "NGV1", 4) ? -1 : (r->p += 4, 0);
}

static int by_number(const void *a, const void *b) {
    return *(const int *)a - *(const int *)b;
}

/* Close every descriptor from 3 up but these (-1: none) and the trees. */
static void close_except(int a, int b, int c, int d, const struct trees *trees) {
    int keep[4 + 64] = {a, b, c, d < 0 ? a : d};
    size_t n = 4;
    for (size_t i = 0; i < trees->n; i++)
        keep[n++] = trees->fds[i];
    qsort(keep, n, sizeof *keep, by_number);
    unsigned low = 3;
    for (size_t i = 0; i < n; i++) {
        if ((unsigned)keep[i] > low)
            syscall(SYS_close_range, low, (unsigned)keep[i] - 1, 0);
        if ((unsigned)keep[i] >= low)
            low = (unsigned)keep[i] + 1;
    }
    syscall(SYS_close_range, low, ~0U, 0);
}

/* The init, in its namespaces; returns only to exit 126. */
/* The guard's part of the config: u32 length + the guard's state ("NGO1", empty: nothing to
 * guard), u32 length + the hub's "O" message. */
static int guard_ahead(struct reader *config, int hub_fd) {
    uint32_t n, m;
    if (take_u32(config, &n) || (size_t)(config->end - config->p) < n)
        return -1;
    struct reader state = {config->p, config->p + n};
    config->p += n;
    if (take_u32(config, &m) || (size_t)(config->end - config->p) < m)
        return -1;
    const unsigned char *on_the_way = config->p;
    config->p += m;
    if (!n)
        return hub_fd < 0 && !m ? 0 : -1;
    return hub_fd >= 0 && m ? adopt_guard(&state, on_the_way, m, hub_fd) : -1;
}

static void init_run(int ns_flags, int plan_fd, int go_fd, int config_fd, int hub_fd,
                     struct trees *trees) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    prctl(PR_SET_DUMPABLE, 1); /* until the fork server has written our maps */
    prctl(PR_SET_NAME, "nono-reaper");
    for (int sig = 1; sig < 65; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            signal(sig, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    char word = 0;
    if (send(go_fd, "r", 1, MSG_NOSIGNAL) != 1 || recv(go_fd, &word, 1, 0) != 1 || word != 'g')
        return;
    close(go_fd);
    if ((ns_flags & CLONE_NEWCGROUP) && unshare(CLONE_NEWCGROUP) < 0)
        return;
    struct reader config;
    struct creation creation = {0};
    if (read_config(config_fd, &config) < 0 || view_prepare(&config, ns_flags, trees) < 0 ||
        creation_load(&config, &creation) < 0 || (creation.n && creation_pin(&creation) < 0))
        return;
    struct ruleset *rs = ruleset_load(&config);
    const char *detail;
    if (!rs || ruleset_build(rs, &detail) || guard_ahead(&config, hub_fd) < 0 ||
        config.p != config.end)
        return;
    if (send(plan_fd, "R", 1, MSG_NOSIGNAL) != 1)
        return;

    unsigned char *buf = malloc(MAX_PLAN);
    union {
        char buf[CMSG_SPACE(sizeof(int) * (FDS_PER_PLAN + 64))];
        struct cmsghdr align;
    } u;
    struct iovec iov = {.iov_base = buf, .iov_len = MAX_PLAN};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                         .msg_controllen = sizeof u.buf};
    ssize_t n;
    if (!buf)
        return;
    while ((n = recvmsg(plan_fd, &msg, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR)
        ;
    int fds[FDS_PER_PLAN + 64];
    size_t n_fds = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); n >= 0 && c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k && n_fds < sizeof fds / sizeof *fds; i++)
            memcpy(&fds[n_fds++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
    }
    if (n < 4 || n_fds < FDS_PER_PLAN || msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC))
        return; /* (the fork server's end closed: it has gone) */
    struct reader r = {buf, buf + n};
    struct launch l = {0};
    if (take_u32(&r, &n_pending) || n_pending > MAX_PENDING ||
        (size_t)(r.end - r.p) < n_pending)
        return;
    pending = r.p;
    r.p += n_pending;
    if (n_fds != FDS_PER_PLAN || parse_launch(&r, &l) < 0 || r.p != r.end)
        fail(fds[3], S_FORK, EINVAL, "malformed launch message for the C init");
    if (!creation.n != !l.n_creation_filter)
        fail(fds[3], S_FORK, EINVAL, "the launch's creation filter is not its view's");
    launch(&l, fds, plan_fd, rs, &creation);
}

/* Make the init as init_main's helper does, from a process whose descriptors are ``plan``,
 * ``go``, ``config``, ``hub`` (-1: none) and the trees, plus those of the caller that the
 * child closes first (close_except): the parent gets the init's pid (or -1), the child never
 * returns. */
static pid_t clone_init(long ns_flags, int plan_fd, int go_fd, int config_fd, int hub_fd,
                        struct trees *trees) {
    long flags = CLONE_PARENT | (ns_flags & ~(long)CLONE_NEWCGROUP);
    pid_t pid = (pid_t)syscall(SYS_clone, flags, 0, NULL, NULL, 0);
    if (pid != 0)
        return pid < 0 ? -1 : pid;
    close_except(plan_fd, go_fd, config_fd, hub_fd, trees);
    init_run((int)ns_flags, plan_fd, go_fd, config_fd, hub_fd, trees);
    _exit(126);
}

static int said_pid(int go_fd, pid_t pid) {
    unsigned char said[5] = {'P'};
    put32(said + 1, (uint32_t)pid);
    return send(go_fd, said, sizeof said, MSG_NOSIGNAL) == (ssize_t)sizeof said ? 0 : -1;
}

#define KNOWN_NS (CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | \
                  CLONE_NEWUTS | CLONE_NEWCGROUP)

/* nono-reaper --spawner SOCK: init_main's helper for every launcher, started once by the fork
 * server (_cinit.Spawner), so that each launcher's spawn neither copies the fork server's
 * descriptor table (five per live session) nor holds its loop while the kernel forks. Each
 * request on SOCK (SEQPACKET) is "NGS1", u32 NS_FLAGS, u32 TAG, u8 HAS_HUB, u8 N_TREES, with
 * the descriptors PLAN, GO, CONFIG, [HUB], TREES... in order: the init is cloned as the fork
 * server's child (CLONE_PARENT) and says "P" + its pid on GO, as init_main's does; a request
 * that does not check out makes nothing (the fork server sees GO end). A TAG (not 0) is lent
 * as the fork server lends it to a helper (_loginuid): our loginuid set to it for the clone
 * alone, so that the init carries it and a fresh audit session, then unset again; a tag
 * that cannot be set makes nothing, and one that cannot be taken back ends this process
 * (what it made later would carry it). The end of SOCK (the fork server gone, or renewed)
 * ends this process. */
int spawner_main(int argc, char **argv) {
    long sock;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    prctl(PR_SET_NAME, "nono-spawner");
    if (argc != 3 || number(argv[2], &sock) || sock < 3 || sock > INT32_MAX)
        return 126;
    struct trees none = {.n = 0};
    close_except((int)sock, (int)sock, (int)sock, -1, &none);
    /* Our table is a copy of the fork server's, as large as its highest descriptor, ours
     * among them: moved low, the inits' copies of our table span a few numbers alone. */
    int low = fcntl((int)sock, F_DUPFD_CLOEXEC, 3);
    if (low < 0)
        return 126;
    if (low < sock) {
        close((int)sock);
        sock = low;
    } else {
        close(low);
    }
    int loginuid = open("/proc/self/loginuid", O_RDWR | O_CLOEXEC); /* -1: no tag lent */
    for (;;) {
        unsigned char head[14];
        union {
            char buf[CMSG_SPACE(sizeof(int) * (4 + 64))];
            struct cmsghdr align;
        } u;
        struct iovec iov = {.iov_base = head, .iov_len = sizeof head};
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                             .msg_controllen = sizeof u.buf};
        ssize_t n;
        while ((n = recvmsg((int)sock, &msg, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR)
            ;
        if (n <= 0)
            return 0;
        int fds[4 + 64];
        size_t n_fds = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
                continue;
            size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < k && n_fds < sizeof fds / sizeof *fds; i++)
                memcpy(&fds[n_fds++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        }
        uint32_t ns_flags = 0, tag = 0;
        if (n == (ssize_t)sizeof head) {
            memcpy(&ns_flags, head + 4, 4);
            memcpy(&tag, head + 8, 4);
        }
        unsigned has_hub = n == (ssize_t)sizeof head ? head[12] : 2, n_trees = head[13];
        int ok = n == (ssize_t)sizeof head && !memcmp(head, "NGS1", 4) && has_hub <= 1 &&
                 !(ns_flags & ~(uint32_t)KNOWN_NS) && n_trees <= 64 &&
                 n_fds == 3 + has_hub + n_trees && !(msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC));
        for (size_t i = 0; ok && i < n_fds; i++)
            ok = fds[i] >= 3 && fcntl(fds[i], F_SETFD, 0) == 0; /* as the helper has them */
        char lent[16];
        int n_lent = snprintf(lent, sizeof lent, "%u", (unsigned)tag);
        if (ok && tag && (tag == UINT32_MAX || loginuid < 0 ||
                          pwrite(loginuid, lent, (size_t)n_lent, 0) != n_lent))
            ok = 0;
        pid_t pid = -1;
        if (ok) {
            struct trees trees = {.n = n_trees};
            memcpy(trees.fds, fds + 3 + has_hub, n_trees * sizeof *fds);
            pid = clone_init((long)ns_flags, fds[0], fds[1], fds[2], has_hub ? fds[3] : -1,
                             &trees);
        }
        int kept = !(ok && tag) || pwrite(loginuid, "4294967295", 10, 0) == 10;
        if (pid > 0)
            said_pid(fds[1], pid);
        for (size_t i = 0; i < n_fds; i++)
            close(fds[i]);
        if (!kept)
            return 70; /* _loginuid.EXIT_STUCK */
    }
}

int init_main(int argc, char **argv) {
    long ns_flags, plan_fd, go_fd, config_fd, hub_fd;
    struct trees trees = {.n = 0};
    const long known = KNOWN_NS;
    if (argc < 7 || argc > 7 + 64 || number(argv[2], &ns_flags) || number(argv[3], &plan_fd) ||
        number(argv[4], &go_fd) || number(argv[5], &config_fd) || number(argv[6], &hub_fd) ||
        ns_flags & ~known || plan_fd < 3 || go_fd < 3 || config_fd < 3 || hub_fd < -1 ||
        (hub_fd >= 0 && hub_fd < 3) || plan_fd > INT32_MAX || go_fd > INT32_MAX ||
        config_fd > INT32_MAX || hub_fd > INT32_MAX)
        return 126;
    /* only ours from here: the fork server's others are close-on-exec, but make sure */
    for (int i = 7; i < argc; i++) { /* at most 64: argc is bounded above */
        long fd;
        if (number(argv[i], &fd) || fd < 3 || fd > INT32_MAX)
            return 126;
        trees.fds[trees.n++] = (int)fd;
    }
    close_except((int)plan_fd, (int)go_fd, (int)config_fd, (int)hub_fd, &trees);
    pid_t pid = clone_init(ns_flags, (int)plan_fd, (int)go_fd, (int)config_fd, (int)hub_fd,
                           &trees);
    return pid > 0 && said_pid((int)go_fd, pid) == 0 ? 0 : 126;
}
