/* nono-reaper's half of the creation guard: the same decisions, one seccomp user
 * notification at a time, as nonod/sandbox/_createserve.py, whose module docstring is the
 * reference (what is emulated, what is continued into the kernel, and why continuing is
 * always safe). The Python init serializes what it prepared (``_reaper.guard_config``): the
 * guarded directories by identity with their refused names, the same by path, and the
 * directories that carry their own layer-2 rule.
 *
 * Names compare folded: canonically decomposed and case-folded (``_createserve.fold``). The
 * refused names handed over are ASCII (the init keeps the Python supervisor otherwise), so a
 * name is refused only if it folds to ASCII: ASCII letters lower-cased, plus the few
 * non-ASCII characters whose fold is ASCII (FOLDS, checked against Python's unicodedata by
 * tests/sandbox/test_reaper.py). Any other non-ASCII character makes a name that no refused
 * name can equal.
 *
 * Nested domains (_createserve's "Nested domains", class Domains): a creation is emulated
 * only for a thread known to be in the program's own Landlock domain. The notifying filter
 * also sends landlock_restrict_self, prctl(PR_SET_CHILD_SUBREAPER) and clone with
 * CLONE_PARENT here: the first marks the caller's thread group (pid, start time) before it is
 * let go, the second records a subreaper, the last fails with EPERM for a caller not known
 * to be in the program's domain. Once a process is marked, a caller's
 * ancestry must reach the program without a marked process or a subreaper on the way.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "reaper.h"

#define PATH_MAX_ 4096
#define PAGE 4096
#define MAX_DEPTH (PATH_MAX_ / 2)
#define DIR_FLAGS (O_PATH | O_DIRECTORY | O_CLOEXEC)

/* (code point, its fold): every non-ASCII character whose NFD + casefold is ASCII. */
static const struct {
    uint32_t cp;
    const char *fold;
} FOLDS[] = {
    {0x00DF, "ss"}, {0x017F, "s"}, {0x037E, ";"}, {0x1E9E, "ss"}, {0x1FEF, "`"},
    {0x212A, "k"}, {0xFB00, "ff"}, {0xFB01, "fi"}, {0xFB02, "fl"}, {0xFB03, "ffi"},
    {0xFB04, "ffl"}, {0xFB05, "st"}, {0xFB06, "st"},
};

#ifndef SYS_landlock_restrict_self
#define SYS_landlock_restrict_self 446
#endif
#define CLONE_PARENT_ 0x00008000
#define PR_SET_CHILD_SUBREAPER_ 36
#define MAX_MARKS 8192 /* of each kind, before the dead are swept (_createserve.MAX_MARKS) */
#define MAX_CHAIN 1024 /* parents before a chain counts as unknown */

static int listener = -1;
static size_t n_guarded, n_paths, n_ruled;
static struct guarded *guarded;
static struct bypath *paths;
static struct ident *ruled;

/* A process: the pid of a thread group and its start time (clock ticks since boot). */
struct proc {
    pid_t pid;
    uint64_t start;
};
struct marks {
    size_t n;
    struct proc v[MAX_MARKS];
};
static struct marks confined, subreapers;
static struct proc program = {-1, 0};
static pid_t init_pid = -1;
static int lost; /* a mark could not be taken: emulate for no one */

/* ------------------------------------------------------------------ the configuration */

int take_names(struct reader *r, struct names *names) {
    uint32_t n;
    if (take_count(r, 4, &n) || n > 65536) /* each a length and its bytes */
        return -1;
    names->n = n;
    names->v = calloc(n ? n : 1, sizeof *names->v);
    if (!names->v)
        return -1;
    for (uint32_t i = 0; i < n; i++)
        if (!(names->v[i] = take_str(r)))
            return -1;
    return 0;
}

static int cmp_ident(const void *a, const void *b) {
    const struct ident *x = a, *y = b;
    if (x->dev != y->dev)
        return x->dev < y->dev ? -1 : 1;
    return x->ino < y->ino ? -1 : x->ino > y->ino;
}

int guard_load(int config_fd, int listener_fd) {
    struct stat st;
    if (fstat(config_fd, &st) < 0 || st.st_size <= 0 || st.st_size > (64 << 20))
        return -1;
    unsigned char *buf = malloc((size_t)st.st_size);
    if (!buf || pread(config_fd, buf, (size_t)st.st_size, 0) != st.st_size)
        return -1;
    close(config_fd);
    struct reader r = {buf, buf + st.st_size};
    char magic[4];
    uint32_t n;
    if (take(&r, magic, 4) || memcmp(magic, "NGC2", 4))
        return -1;
    /* each guarded directory: its identity (16) and its names' count (4) */
    if (take_count(&r, 20, &n) || !(guarded = calloc(n ? n : 1, sizeof *guarded)))
        return -1;
    for (n_guarded = 0; n_guarded < n; n_guarded++) {
        uint64_t dev, ino;
        if (take_u64(&r, &dev) || take_u64(&r, &ino) ||
            take_names(&r, &guarded[n_guarded].names))
            return -1;
        guarded[n_guarded].dev = (dev_t)dev;
        guarded[n_guarded].ino = (ino_t)ino;
    }
    if (take_count(&r, 8, &n) || !(paths = calloc(n ? n : 1, sizeof *paths)))
        return -1;
    for (n_paths = 0; n_paths < n; n_paths++)
        if (!(paths[n_paths].path = take_str(&r)) || take_names(&r, &paths[n_paths].names))
            return -1;
    if (take_count(&r, 16, &n) || !(ruled = calloc(n ? n : 1, sizeof *ruled)))
        return -1;
    for (n_ruled = 0; n_ruled < n; n_ruled++) {
        uint64_t dev, ino;
        if (take_u64(&r, &dev) || take_u64(&r, &ino))
            return -1;
        ruled[n_ruled].dev = (dev_t)dev;
        ruled[n_ruled].ino = (ino_t)ino;
    }
    unsigned char was_lost;
    if (take(&r, &was_lost, 1) || was_lost > 1)
        return -1;
    lost = was_lost;
    struct marks *kinds[2] = {&confined, &subreapers};
    for (int k = 0; k < 2; k++) {
        if (take_count(&r, 16, &n) || n > MAX_MARKS)
            return -1;
        for (kinds[k]->n = 0; kinds[k]->n < n; kinds[k]->n++) {
            uint64_t pid, start;
            if (take_u64(&r, &pid) || take_u64(&r, &start) || pid == 0 || pid > INT32_MAX)
                return -1;
            kinds[k]->v[kinds[k]->n] = (struct proc){(pid_t)pid, start};
        }
    }
    if (r.p != r.end)
        return -1;
    free(buf);
    guard_set(guarded, n_guarded, paths, n_paths, ruled, n_ruled, listener_fd);
    return 0;
}

void guard_set(struct guarded *g, size_t n_g, struct bypath *p, size_t n_p, struct ident *r,
               size_t n_r, int listener_fd) {
    guarded = g;
    n_guarded = n_g;
    paths = p;
    n_paths = n_p;
    ruled = r;
    n_ruled = n_r;
    qsort(ruled, n_ruled, sizeof *ruled, cmp_ident);
    listener = listener_fd;
    umask(0); /* emulated creations apply the program's umask themselves */
}

int guard_listener(void) { return listener; }

/* ------------------------------------------------------------------ nested domains */

/* Parent pid and start time of process pid (/proc/<pid>/stat); -1 if unreadable, errno
 * ENOENT or ESRCH if it is not there (EIO for a line that does not parse). */
static int proc_stat(pid_t pid, pid_t *ppid, uint64_t *start) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    int err = n < 0 ? errno : EIO;
    close(fd);
    errno = err;
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the name may hold spaces and parens */
    if (!p || p[1] != ' ')
        return -1;
    p += 2;
    unsigned long long parent = 0, began = 0;
    for (int i = 0; i < 20; i++) { /* state, ppid, ... starttime (the 22nd field) */
        char *end = NULL;
        if (i == 1 || i == 19) {
            unsigned long long v = strtoull(p, &end, 10);
            if (end == p)
                return -1;
            if (i == 1)
                parent = v;
            else
                began = v;
        } else if (!(end = strchr(p, ' '))) {
            return -1;
        }
        if (*end != ' ') /* more fields follow the start time */
            return -1;
        p = end + 1;
    }
    if (parent > INT32_MAX)
        return -1;
    *ppid = (pid_t)parent;
    *start = began;
    return 0;
}

/* One number of /proc/<tid>/status, the line that starts with `name` ("\nTgid:"), read in
 * `base`: 0, or -1 when the file or the line cannot be read. Its Name: line is escaped by
 * the kernel, so no name a program gives itself starts a line of its own. */
static int status_number(pid_t tid, const char *name, int base, unsigned long *out) {
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%d/status", (int)tid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    char *line = strstr(buf, name);
    if (!line)
        return -1;
    char *start = line + strlen(name), *end;
    unsigned long v = strtoul(start, &end, base);
    if (end == start)
        return -1;
    *out = v;
    return 0;
}

static pid_t tgid_of(pid_t tid) {
    unsigned long v;
    if (status_number(tid, "\nTgid:", 10, &v) || v == 0 || v > INT32_MAX)
        return -1;
    return (pid_t)v;
}

static int in_marks(const struct marks *m, pid_t pid, uint64_t start) {
    for (size_t i = 0; i < m->n; i++)
        if (m->v[i].pid == pid && m->v[i].start == start)
            return 1;
    return 0;
}

/* Room for one more mark: the dead are swept when full (a process gone is nobody's parent,
 * nor a caller). A sweep comes just before a mark is added: once marked, confined is never
 * empty again. Only a process that is not there, or whose pid another took, is swept: one
 * that cannot be read (no descriptor left, no memory) stays marked, or its children would
 * be walked to the program (review24). */
static int room(struct marks *m) {
    if (m->n < MAX_MARKS)
        return 1;
    size_t kept = 0;
    for (size_t i = 0; i < m->n; i++) {
        pid_t ppid;
        uint64_t start;
        int got = proc_stat(m->v[i].pid, &ppid, &start);
        if (got == 0 ? start == m->v[i].start : errno != ENOENT && errno != ESRCH)
            m->v[kept++] = m->v[i];
    }
    m->n = kept;
    return m->n < MAX_MARKS;
}

void guard_program(pid_t pid) {
    pid_t ppid;
    init_pid = getpid();
    program.pid = pid;
    if (proc_stat(pid, &ppid, &program.start) < 0)
        lost = 1;
}

/* Record the thread group of tid, whose call waits (it has not run). A read that worked
 * needs no check after it: a waiting thread is alive, so its tid named it; a thread killed
 * meanwhile never runs its call, and a mark of whatever took its tid only refuses more. */
static void mark(struct marks *m, pid_t tid, uint64_t id) {
    pid_t pid = tgid_of(tid), ppid;
    uint64_t start;
    if (pid < 0 || proc_stat(pid, &ppid, &start) < 0) {
        if (ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &id) == 0)
            lost = 1; /* the caller is there and cannot be read: fail closed */
        return;
    }
    if (in_marks(m, pid, start))
        return;
    if (!room(m)) {
        lost = 1;
        return;
    }
    m->v[m->n++] = (struct proc){pid, start};
}

/* 1 if thread tid is known to be in the program's own domain, 0 if not or unknown. */
static int known(pid_t tid) {
    if (lost)
        return 0;
    if (!confined.n)
        return 1;
    pid_t pid = tgid_of(tid), ppid, up;
    uint64_t start, up_start;
    if (pid < 0 || proc_stat(pid, &ppid, &start) < 0)
        return 0;
    for (int depth = 0; depth < MAX_CHAIN; depth++) {
        if (in_marks(&confined, pid, start))
            return 0;
        if (pid == program.pid && start == program.start)
            return 1;
        if (ppid <= 0 || pid == init_pid)
            return 0; /* reparented to the init, or never the program's */
        pid_t again;
        uint64_t again_start;
        if (proc_stat(ppid, &up, &up_start) < 0 || proc_stat(pid, &again, &again_start) < 0 ||
            again != ppid || again_start != start)
            return 0; /* reparented while read: ppid may name another process */
        if (in_marks(&subreapers, ppid, up_start))
            return 0; /* it may have adopted an orphan of a confined process */
        pid = ppid;
        ppid = up;
        start = up_start;
    }
    return 0;
}

/* A call that may nest a domain or move a parent: 0 (continue) or an errno to answer. */
static int watch(const struct seccomp_notif *req) {
    const __u64 *a = req->data.args;
    pid_t tid = (pid_t)req->pid;
    switch (req->data.nr) {
    case SYS_landlock_restrict_self:
        mark(&confined, tid, req->id);
        return 0;
    case SYS_prctl:
        if ((a[0] & 0xFFFFFFFF) == PR_SET_CHILD_SUBREAPER_ && a[1])
            mark(&subreapers, tid, req->id);
        return 0;
    case SYS_clone:
        return (a[0] & CLONE_PARENT_) && !known(tid) ? EPERM : 0;
    default:
        return -1;
    }
}

void guard_stop(void) {
    /* The listener broke: closing it makes every creation syscall still to come fail
     * (ENOSYS) rather than wait forever. */
    close(listener);
    listener = -1;
}

/* ------------------------------------------------------------------------ one call */

enum { CONTINUE = -1 };
struct call {
    uint64_t id;
    pid_t tid;
    int mem;
    int fds[8];
    int n_fds;
};
struct result {
    enum { R_FD, R_RET, R_ERR } kind;
    int value;   /* the descriptor, or the errno */
    int cloexec; /* R_FD: the new descriptor is close-on-exec */
};

static int track(struct call *c, int fd) {
    if (fd < 0)
        return -1;
    if (c->n_fds == (int)(sizeof c->fds / sizeof *c->fds)) {
        close(fd);
        errno = EMFILE;
        return -1;
    }
    c->fds[c->n_fds++] = fd;
    return fd;
}

static int still_waiting(struct call *c) {
    uint64_t id = c->id;
    return ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &id) == 0;
}

/* The NUL-terminated string at addr (at most PATH_MAX_ bytes with the NUL), or NULL. */
static char *string_at(struct call *c, uint64_t addr, char *out) {
    size_t have = 0;
    while (have < PATH_MAX_) {
        size_t want = PAGE - addr % PAGE;
        if (want > PATH_MAX_ - have)
            want = PATH_MAX_ - have;
        ssize_t n = pread(c->mem, out + have, want, (off_t)addr);
        if (n <= 0)
            return NULL;
        char *nul = memchr(out + have, '\0', (size_t)n);
        if (nul)
            return out;
        have += (size_t)n;
        addr += (uint64_t)n;
    }
    return NULL; /* too long: the kernel answers ENAMETOOLONG */
}

static int umask_of(struct call *c, mode_t *out) {
    unsigned long v;
    if (status_number(c->tid, "\nUmask:", 8, &v))
        return -1;
    *out = (mode_t)v;
    return 0;
}

static int has_prefix(const char *s, const char *prefix) {
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* The directory path's last component is in (tracked), and that component (in place). */
static int parent_of(struct call *c, int dirfd, char *path, int dir_ok, uint64_t resolve,
                     char **name) {
    static char own[PATH_MAX_ + 64];
    size_t len = strlen(path);
    if (!len || (path[len - 1] == '/' && !dir_ok))
        return CONTINUE;
    while (len > 1 && path[len - 1] == '/')
        path[--len] = '\0';
    /* /proc/self and friends name the target, not the reaper that resolves them */
    static const char *const prefixes[] = {"/proc/self/", "/proc/thread-self/", "/dev/fd/"};
    for (int i = 0; i < 3; i++) {
        if (has_prefix(path, prefixes[i])) {
            snprintf(own, sizeof own, "/proc/%d/%s%s", (int)c->tid, i == 2 ? "fd/" : "",
                     path + strlen(prefixes[i]));
            if (strlen(own) >= PATH_MAX_)
                return CONTINUE;
            strcpy(path, own);
            break;
        }
    }
    char *slash = strrchr(path, '/');
    const char *head;
    if (slash) {
        *name = slash + 1;
        *slash = '\0';
        head = slash == path ? "/" : path;
    } else {
        *name = path;
        head = "";
    }
    if (!**name || !strcmp(*name, ".") || !strcmp(*name, ".."))
        return CONTINUE;
    int base = AT_FDCWD;
    if (!(head[0] == '/' && !resolve)) {
        char proc[64];
        if (dirfd == AT_FDCWD)
            snprintf(proc, sizeof proc, "/proc/%d/cwd", (int)c->tid);
        else
            snprintf(proc, sizeof proc, "/proc/%d/fd/%d", (int)c->tid, dirfd);
        if ((base = track(c, open(proc, DIR_FLAGS))) < 0)
            return CONTINUE;
    }
    int fd;
    if (resolve) {
        struct open_how how = {.flags = DIR_FLAGS, .resolve = resolve & ~RESOLVE_CACHED};
        fd = (int)syscall(SYS_openat2, base, *head ? head : ".", &how, sizeof how);
    } else {
        fd = openat(base, *head ? head : ".", DIR_FLAGS);
    }
    return track(c, fd) < 0 ? CONTINUE : fd;
}

static int is_guarded(dev_t dev, ino_t ino, const struct names **names) {
    for (size_t i = 0; i < n_guarded; i++) {
        if (guarded[i].dev == dev && guarded[i].ino == ino) {
            if (names)
                *names = &guarded[i].names;
            return 1;
        }
    }
    return 0;
}

static int is_ruled(dev_t dev, ino_t ino) {
    struct ident key = {dev, ino};
    return bsearch(&key, ruled, n_ruled, sizeof *ruled, cmp_ident) != NULL;
}

/* 1 if layer 2 refuses creating in the directory open on fd; 0 if not; -1: cannot tell */
static int needs_help(int fd) {
    int walked = -1, answer = 0;
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -1;
    for (int depth = 0; depth < MAX_DEPTH; depth++) {
        if (is_guarded(st.st_dev, st.st_ino, NULL)) {
            answer = 1;
            break;
        }
        if (is_ruled(st.st_dev, st.st_ino))
            break;
        int up = openat(walked >= 0 ? walked : fd, "..", DIR_FLAGS);
        if (walked >= 0)
            close(walked);
        walked = up;
        struct stat above;
        if (up < 0 || fstat(up, &above) < 0) {
            answer = -1;
            break;
        }
        if (above.st_dev == st.st_dev && above.st_ino == st.st_ino)
            break; /* the root */
        st = above;
    }
    if (walked >= 0)
        close(walked);
    return answer;
}

static int utf8_next(const unsigned char **p, uint32_t *cp) {
    const unsigned char *s = *p;
    int n;
    if (s[0] < 0x80) {
        *cp = s[0];
        n = 1;
    } else if ((s[0] & 0xE0) == 0xC0) {
        *cp = s[0] & 0x1F;
        n = 2;
    } else if ((s[0] & 0xF0) == 0xE0) {
        *cp = s[0] & 0x0F;
        n = 3;
    } else if ((s[0] & 0xF8) == 0xF0) {
        *cp = s[0] & 0x07;
        n = 4;
    } else {
        return -1;
    }
    for (int i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return -1;
        *cp = *cp << 6 | (s[i] & 0x3F);
    }
    /* What Python does not decode is not a name it folds (surrogate escapes): an overlong
     * form ("\xC0\xAE" for "."), a surrogate, past U+10FFFF. Decoding them would refuse
     * names that are not the refused one on any file system. */
    static const uint32_t least[] = {0, 0, 0x80, 0x800, 0x10000};
    if (*cp < least[n] || (*cp >= 0xD800 && *cp <= 0xDFFF) || *cp > 0x10FFFF)
        return -1;
    *p = s + n;
    return 0;
}

/* The fold of name into out if it is ASCII; -1 if it is not (then it equals no refused
 * name: they are all ASCII). */
static int fold_ascii(const char *name, char *out, size_t size) {
    const unsigned char *p = (const unsigned char *)name;
    size_t len = 0;
    while (*p) {
        uint32_t cp;
        const char *add = NULL;
        char one[2] = {0, 0};
        if (utf8_next(&p, &cp) < 0)
            return -1; /* undecodable: Python's surrogate escapes, never ASCII */
        if (cp < 0x80) {
            one[0] = (char)(cp >= 'A' && cp <= 'Z' ? cp + 32 : cp);
            add = one;
        } else {
            for (size_t i = 0; i < sizeof FOLDS / sizeof *FOLDS; i++)
                if (FOLDS[i].cp == cp)
                    add = FOLDS[i].fold;
            if (!add)
                return -1;
        }
        size_t n = strlen(add);
        if (len + n >= size)
            return -1;
        memcpy(out + len, add, n);
        len += n;
    }
    out[len] = '\0';
    return 0;
}

static int in_names(const struct names *names, const char *folded) {
    for (size_t i = 0; i < names->n; i++)
        if (!strcmp(names->v[i], folded))
            return 1;
    return 0;
}

/* Whether name is refused in the directory open on fd (1), or cannot tell (1: the kernel
 * then decides). */
static int refused(int fd, const char *name) {
    static char folded[PATH_MAX_ * 3 + 1];
    struct stat st;
    const struct names *names;
    if (fstat(fd, &st) < 0)
        return 1;
    if (fold_ascii(name, folded, sizeof folded) < 0)
        folded[0] = '\0'; /* equals no refused name (none is empty) */
    if (is_guarded(st.st_dev, st.st_ino, &names) && in_names(names, folded))
        return 1;
    char link[64], path[PATH_MAX_ + 1];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n < 0)
        return 1;
    path[n] = '\0';
    for (size_t i = 0; i < n_paths; i++)
        if (!strcmp(paths[i].path, path))
            return in_names(&paths[i].names, folded);
    return 0;
}

/* 0: absent; 1: exists; -1: cannot tell */
static int exists(int dirfd, const char *name) {
    struct stat st;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0)
        return 1;
    return errno == ENOENT ? 0 : -1;
}

/* Continue unless this creation is one the reaper must do. */
static int creatable(struct call *c, int fd, const char *name) {
    return needs_help(fd) == 1 && !refused(fd, name) && exists(fd, name) == 0 && known(c->tid)
               ? 0 : CONTINUE;
}

static int done(struct result *res, int err) {
    res->kind = err ? R_ERR : R_RET;
    res->value = err;
    return 0;
}

static int do_open(struct call *c, int dirfd, uint64_t addr, uint64_t flags, uint64_t mode,
                   uint64_t resolve, int with_how, struct result *res) {
    char buf[PATH_MAX_], *name;
    mode_t mask;
    if (!(flags & O_CREAT) || (flags & O_PATH))
        return CONTINUE; /* nothing is created (O_PATH ignores O_CREAT) */
    if (!string_at(c, addr, buf))
        return CONTINUE;
    int parent = parent_of(c, dirfd, buf, 0, resolve, &name);
    if (parent < 0 || creatable(c, parent, name) || umask_of(c, &mask))
        return CONTINUE;
    mode_t perm = (mode_t)(mode & 07777) & ~mask;
    if (!still_waiting(c))
        return CONTINUE;
    uint64_t mine = flags | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
    int fd;
    if (with_how) {
        struct open_how how = {.flags = mine, .mode = perm, .resolve = resolve & ~RESOLVE_CACHED};
        fd = (int)syscall(SYS_openat2, parent, name, &how, sizeof how);
    } else {
        fd = openat(parent, name, (int)mine, perm);
    }
    if (fd < 0) {
        if (errno == EEXIST && !(flags & O_EXCL))
            return CONTINUE; /* made meanwhile: an open of it creates nothing */
        return done(res, errno ? errno : EIO);
    }
    res->kind = R_FD;
    res->value = fd;
    res->cloexec = (flags & O_CLOEXEC) != 0;
    return 0;
}

static int do_openat2(struct call *c, int dirfd, uint64_t addr, uint64_t how_addr,
                      uint64_t size, struct result *res) {
    unsigned char raw[PAGE];
    struct open_how how;
    if (size < sizeof how || size > PAGE)
        return CONTINUE;
    if (pread(c->mem, raw, size, (off_t)how_addr) != (ssize_t)size)
        return CONTINUE;
    for (size_t i = sizeof how; i < size; i++)
        if (raw[i])
            return CONTINUE; /* fields this code does not know: the kernel says E2BIG */
    memcpy(&how, raw, sizeof how);
    return do_open(c, dirfd, addr, how.flags, how.mode, how.resolve, 1, res);
}

static int do_mkdir(struct call *c, int dirfd, uint64_t addr, uint64_t mode, struct result *res) {
    char buf[PATH_MAX_], *name;
    mode_t mask;
    if (!string_at(c, addr, buf))
        return CONTINUE;
    int parent = parent_of(c, dirfd, buf, 1, 0, &name);
    if (parent < 0 || creatable(c, parent, name) || umask_of(c, &mask) || !still_waiting(c))
        return CONTINUE;
    return done(res, mkdirat(parent, name, (mode_t)(mode & 01777) & ~mask) ? errno : 0);
}

static int do_mknod(struct call *c, int dirfd, uint64_t addr, uint64_t mode, struct result *res) {
    char buf[PATH_MAX_], *name;
    mode_t mask, kind = (mode_t)(mode & S_IFMT);
    if (kind != 0 && kind != S_IFREG && kind != S_IFIFO && kind != S_IFSOCK)
        return CONTINUE; /* devices: never on the reaper's behalf */
    if (!string_at(c, addr, buf))
        return CONTINUE;
    int parent = parent_of(c, dirfd, buf, 0, 0, &name);
    if (parent < 0 || creatable(c, parent, name) || umask_of(c, &mask) || !still_waiting(c))
        return CONTINUE;
    mode_t perm = (mode_t)(mode & 07777) & ~mask;
    return done(res, mknodat(parent, name, (kind ? kind : S_IFREG) | perm, 0) ? errno : 0);
}

static int do_symlink(struct call *c, uint64_t target_addr, int dirfd, uint64_t addr,
                      struct result *res) {
    char target[PATH_MAX_], buf[PATH_MAX_], *name;
    if (!string_at(c, target_addr, target) || !string_at(c, addr, buf))
        return CONTINUE;
    int parent = parent_of(c, dirfd, buf, 0, 0, &name);
    if (parent < 0 || creatable(c, parent, name) || !still_waiting(c))
        return CONTINUE;
    return done(res, symlinkat(target, parent, name) ? errno : 0);
}

/* Link and rename: emulated when layer 2 refuses on either side; never for a refused name. */
static int pair_ok(struct call *c, int src, const char *src_name, int dst, const char *dst_name,
                   int fresh) {
    if (refused(src, src_name) || refused(dst, dst_name))
        return CONTINUE;
    if (fresh && exists(dst, dst_name) != 0)
        return CONTINUE;
    int d = needs_help(dst), s = needs_help(src);
    if (d < 0 || s < 0 || !(d || s) || !known(c->tid))
        return CONTINUE;
    return 0;
}

static int do_pair(struct call *c, int olddir, uint64_t old_addr, int newdir, uint64_t new_addr,
                   uint64_t flags, int is_link, struct result *res) {
    char old[PATH_MAX_], new[PATH_MAX_], *src_name, *dst_name;
    if (is_link && (flags & AT_EMPTY_PATH))
        return CONTINUE;
    if (!string_at(c, old_addr, old) || !string_at(c, new_addr, new))
        return CONTINUE;
    int src = parent_of(c, olddir, old, !is_link, 0, &src_name);
    if (src < 0)
        return CONTINUE;
    int dst = parent_of(c, newdir, new, !is_link, 0, &dst_name);
    if (dst < 0 || pair_ok(c, src, src_name, dst, dst_name, is_link) || !still_waiting(c))
        return CONTINUE;
    if (is_link)
        return done(res, linkat(src, src_name, dst, dst_name,
                                (int)(flags & AT_SYMLINK_FOLLOW)) ? errno : 0);
    return done(res, renameat2(src, src_name, dst, dst_name, (unsigned)flags) ? errno : 0);
}

static int dirfd_arg(uint64_t v) { return (int)(int32_t)(uint32_t)v; }

static int handle(struct call *c, int nr, const __u64 *a, struct result *res) {
    switch (nr) {
#ifdef SYS_open
    case SYS_open:
        return do_open(c, AT_FDCWD, a[0], a[1] & 0xFFFFFFFF, a[2], 0, 0, res);
#endif
#ifdef SYS_creat
    case SYS_creat:
        return do_open(c, AT_FDCWD, a[0], O_CREAT | O_WRONLY | O_TRUNC, a[1], 0, 0, res);
#endif
    case SYS_openat:
        return do_open(c, dirfd_arg(a[0]), a[1], a[2] & 0xFFFFFFFF, a[3], 0, 0, res);
    case SYS_openat2:
        return do_openat2(c, dirfd_arg(a[0]), a[1], a[2], a[3], res);
#ifdef SYS_mkdir
    case SYS_mkdir:
        return do_mkdir(c, AT_FDCWD, a[0], a[1], res);
#endif
    case SYS_mkdirat:
        return do_mkdir(c, dirfd_arg(a[0]), a[1], a[2], res);
#ifdef SYS_mknod
    case SYS_mknod:
        return do_mknod(c, AT_FDCWD, a[0], a[1], res);
#endif
    case SYS_mknodat:
        return do_mknod(c, dirfd_arg(a[0]), a[1], a[2], res);
#ifdef SYS_symlink
    case SYS_symlink:
        return do_symlink(c, a[0], AT_FDCWD, a[1], res);
#endif
    case SYS_symlinkat:
        return do_symlink(c, a[0], dirfd_arg(a[1]), a[2], res);
#ifdef SYS_link
    case SYS_link:
        return do_pair(c, AT_FDCWD, a[0], AT_FDCWD, a[1], 0, 1, res);
#endif
    case SYS_linkat:
        return do_pair(c, dirfd_arg(a[0]), a[1], dirfd_arg(a[2]), a[3], a[4] & 0xFFFFFFFF, 1,
                       res);
#ifdef SYS_rename
    case SYS_rename:
        return do_pair(c, AT_FDCWD, a[0], AT_FDCWD, a[1], 0, 0, res);
#endif
#ifdef SYS_renameat
    case SYS_renameat:
        return do_pair(c, dirfd_arg(a[0]), a[1], dirfd_arg(a[2]), a[3], 0, 0, res);
#endif
    case SYS_renameat2:
        return do_pair(c, dirfd_arg(a[0]), a[1], dirfd_arg(a[2]), a[3], a[4] & 0xFFFFFFFF, 0,
                       res);
    default:
        return CONTINUE;
    }
}

static int send_resp(uint64_t id, int64_t val, int32_t error, uint32_t flags) {
    struct seccomp_notif_resp resp = {.id = id, .val = val, .error = error, .flags = flags};
    if (ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &resp) < 0 && errno != ENOENT)
        return -1; /* ENOENT: the target was killed meanwhile */
    return 0;
}

/* Receive one notification and answer it; -1 when the listener is broken. A call that
 * cannot be handled is continued into the kernel, which is always safe. */
int guard_serve_one(void) {
    struct seccomp_notif req;
    memset(&req, 0, sizeof req);
    if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, &req) < 0)
        return errno == ENOENT || errno == EINTR ? 0 : -1;
    int watched = watch(&req);
    if (watched >= 0)
        return send_resp(req.id, 0, watched ? -watched : 0,
                         watched ? 0 : SECCOMP_USER_NOTIF_FLAG_CONTINUE);
    struct call c = {.id = req.id, .tid = (pid_t)req.pid, .mem = -1};
    struct result res = {0};
    int rc = CONTINUE;
    char mem[64];
    snprintf(mem, sizeof mem, "/proc/%d/mem", (int)c.tid);
    c.mem = track(&c, open(mem, O_RDONLY | O_CLOEXEC));
    if (c.mem >= 0 && still_waiting(&c))
        rc = handle(&c, req.data.nr, req.data.args, &res);
    int out = 0;
    if (rc == CONTINUE) {
        out = send_resp(req.id, 0, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE);
    } else if (res.kind == R_FD) {
        /* Installed, our copy closed, then answered: answered first (ADDFD_FLAG_SEND), the
         * program ran on while the file was still open here for writing, and its exec of a
         * file it had just made and closed failed with ETXTBSY. The program cannot return
         * in between: it waits killably once the call is received (WAIT_KILLABLE_RECV). */
        struct seccomp_notif_addfd addfd = {
            .id = req.id, .flags = 0, .srcfd = (uint32_t)res.value,
            .newfd = 0, .newfd_flags = res.cloexec ? O_CLOEXEC : 0};
        int installed = ioctl(listener, SECCOMP_IOCTL_NOTIF_ADDFD, &addfd);
        int err = errno;
        close(res.value);
        if (installed >= 0)
            out = send_resp(req.id, installed, 0, 0);
        else if (err != ENOENT)
            out = send_resp(req.id, 0, -(err ? err : EIO), 0);
    } else if (res.kind == R_ERR) {
        out = send_resp(req.id, 0, -res.value, 0);
    } else {
        out = send_resp(req.id, 0, 0, 0);
    }
    for (int i = 0; i < c.n_fds; i++)
        close(c.fds[i]);
    return out;
}
