/* nono-reaper --init, the creation guard's first two parts, as nonod/sandbox/_createguard.py
 * (the reference: its module docstring says why each is needed) does them in the Python init:
 *
 *   - before any plan, once the view is mounted: pin_dirs, each guarded directory and its
 *     ancestors below their mount bound onto themselves (creation_pin);
 *   - at launch, confined by the session's first layer (the walk sees what the session sees):
 *     prepare, the guarded directories opened and kept, layer 2 built on every writable root
 *     off the way to them and every directory off the way below those on it, but none that is
 *     on the way by identity (a second mount of it: the rule is on the inode) (creation_prepare);
 *   - in the program just before execve: confine_program, layer 2 enforced, the notifying
 *     filter installed with a listener, the listener sent to the init (creation_confine).
 *
 * The init then serves the listener with reaper_guard.c, from what creation_prepare found.
 *
 * The config's part ("NGV1", right after the mount steps, _cinit.creation_section):
 *   u32 guarded directories (0: no creation guard), each: str path (absolute, normalized),
 *   u32 names + each a str (refused in it, folded, ASCII);
 *   u32 writable roots, each: str path (absolute, normalized; the first layer lets the session
 *   create entries beneath it). */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/landlock.h>
#include <linux/seccomp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "reaper.h"

#define MAX_DIRS 4096
#define MAX_ROOTS 4096
#define MAX_WALK (1u << 20) /* directories listed or ruled: far beyond any real view */
#define DIR_FLAGS (O_PATH | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW)
#define AT_RECURSIVE_ 0x8000
#define ATTR_NOSUID 0x2ULL
#define ATTR_NODEV 0x4ULL
#define FLAG_WAIT_KILLABLE_RECV (1UL << 5) /* SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (5.19) */

/* _createguard.LAYER2_RIGHTS: the MAKE_* rights and REFER */
#define LAYER2_RIGHTS                                                                        \
    (LANDLOCK_ACCESS_FS_MAKE_CHAR | LANDLOCK_ACCESS_FS_MAKE_DIR |                            \
     LANDLOCK_ACCESS_FS_MAKE_REG | LANDLOCK_ACCESS_FS_MAKE_SOCK |                            \
     LANDLOCK_ACCESS_FS_MAKE_FIFO | LANDLOCK_ACCESS_FS_MAKE_BLOCK |                          \
     LANDLOCK_ACCESS_FS_MAKE_SYM | LANDLOCK_ACCESS_FS_REFER)

static int take_absolute(struct reader *r, char **out) {
    return !(*out = take_path(r)) || (*out)[0] != '/' ? -1 : 0;
}

int creation_load(struct reader *r, struct creation *c) {
    uint32_t n;
    if (take_count(r, 8, &n) || n > MAX_DIRS || !(c->dirs = calloc(n ? n : 1, sizeof *c->dirs)))
        return -1;
    for (c->n = 0; c->n < n; c->n++)
        if (take_absolute(r, &c->dirs[c->n].path) || take_names(r, &c->dirs[c->n].names) ||
            !c->dirs[c->n].names.n)
            return -1;
    if (take_count(r, 4, &n) || n > MAX_ROOTS || !(c->roots = calloc(n ? n : 1, sizeof *c->roots)))
        return -1;
    for (c->n_roots = 0; c->n_roots < n; c->n_roots++)
        if (take_absolute(r, &c->roots[c->n_roots]))
            return -1;
    return !c->n && c->n_roots ? -1 : 0;
}

/* ------------------------------------------------------------------------- the pins */

static int mount_id_of(const char *path, uint64_t *id) {
    struct statx stx;
    if (statx(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, STATX_MNT_ID, &stx) < 0)
        return -1;
    if (!(stx.stx_mask & STATX_MNT_ID))
        return errno = ENOSYS, -1;
    *id = stx.stx_mnt_id;
    return 0;
}

/* path's parent, in place ("/a" -> "/", "/a/b" -> "/a"). */
static void up(char *path) {
    char *slash = strrchr(path, '/');
    if (slash == path)
        slash[1] = '\0';
    else if (slash)
        *slash = '\0';
}

static int depth(const char *path) {
    int n = 0;
    for (; *path; path++)
        n += *path == '/';
    return n;
}

static int by_depth(const void *a, const void *b) {
    return depth(*(char *const *)a) - depth(*(char *const *)b);
}

static int known(char *const *list, size_t n, const char *path) {
    for (size_t i = 0; i < n; i++)
        if (!strcmp(list[i], path))
            return 1;
    return 0;
}

/* _createguard.pin_dirs: 0, or -1 with errno. */
int creation_pin(const struct creation *c) {
    size_t n = 0, cap = 0;
    char **pins = NULL;
    for (uint32_t i = 0; i < c->n; i++) {
        char path[4096], parent[4096];
        strcpy(path, c->dirs[i].path); /* take_path: shorter than 4096 */
        while (strcmp(path, "/") && !known(pins, n, path)) {
            uint64_t mine, above;
            strcpy(parent, path);
            up(parent);
            if (mount_id_of(path, &mine) < 0 || mount_id_of(parent, &above) < 0)
                return -1;
            if (mine != above)
                break; /* a mount root already (the grant itself, a read-only bind...) */
            if (n == cap) {
                char **more = realloc(pins, (cap = cap ? cap * 2 : 16) * sizeof *pins);
                if (!more)
                    return -1;
                pins = more;
            }
            if (!(pins[n++] = strdup(path)))
                return -1;
            strcpy(path, parent);
        }
    }
    if (n)
        qsort(pins, n, sizeof *pins, by_depth);
    uint64_t attr[4] = {ATTR_NOSUID | ATTR_NODEV, 0, 0, 0};
    for (size_t i = 0; i < n; i++) {
        if (mount(pins[i], pins[i], NULL, MS_BIND | MS_REC, NULL) < 0 ||
            syscall(SYS_mount_setattr, AT_FDCWD, pins[i], AT_RECURSIVE_, attr, sizeof attr) < 0)
            return -1;
        free(pins[i]);
    }
    free(pins);
    return 0;
}

/* ------------------------------------------------------------------------ layer 2 */

/* Whether path is a guarded directory or an ancestor of one (_createguard.on_the_way). */
static int on_the_way(const struct creation *c, const char *path) {
    size_t len = strlen(path);
    for (uint32_t i = 0; i < c->n; i++) {
        const char *d = c->dirs[i].path;
        if (!strcmp(path, "/") || (!strncmp(d, path, len) && (d[len] == '\0' || d[len] == '/')))
            return 1;
    }
    return 0;
}

struct list {
    char **v;
    size_t n, cap;
};

static int push(struct list *l, char *path) {
    if (!path)
        return -1;
    if (l->n == l->cap) {
        char **more = realloc(l->v, (l->cap = l->cap ? l->cap * 2 : 64) * sizeof *l->v);
        if (!more) {
            free(path);
            return -1;
        }
        l->v = more;
    }
    l->v[l->n++] = path;
    return 0;
}

/* _createguard.subdirectories: path's subdirectories (symbolic links excluded) pushed on
 * ``stack``; none when it cannot be listed. -1: out of memory or a name too long. */
static int subdirectories(const char *path, struct list *stack) {
    DIR *d = opendir(path);
    if (!d)
        return 0;
    struct dirent *e;
    int err = 0;
    while (!err && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        int is_dir = e->d_type == DT_DIR;
        if (e->d_type == DT_UNKNOWN) {
            struct stat st;
            is_dir = fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                     S_ISDIR(st.st_mode);
        }
        if (!is_dir)
            continue;
        char *child;
        if (asprintf(&child, "%s/%s", strcmp(path, "/") ? path : "", e->d_name) < 0)
            err = ENOMEM;
        else if (strlen(child) >= 4096)
            free(child), err = ENAMETOOLONG; /* os.open in prepare fails the same way */
        else if (push(stack, child) < 0)
            err = ENOMEM;
    }
    closedir(d);
    return err ? (errno = err, -1) : 0;
}

static int is_root(const struct creation *c, const char *path) {
    return known(c->roots, c->n_roots, path);
}

/* The directories on the way, by identity (_createguard._way_identities). */
struct idents {
    struct ident *v;
    size_t n, cap;
};

static int has_ident(const struct idents *w, const struct stat *st) {
    for (size_t i = 0; i < w->n; i++)
        if (w->v[i].dev == st->st_dev && w->v[i].ino == st->st_ino)
            return 1;
    return 0;
}

/* Each guarded directory and its ancestors that are directories, as the session sees them
 * (a Landlock rule is on an inode: one placed through a second mount of a directory on the
 * way would be met on the way too). 0, or an errno. */
static int way_idents(const struct creation *c, struct idents *w) {
    for (uint32_t i = 0; i < c->n; i++) {
        char path[4096];
        strcpy(path, c->dirs[i].path); /* take_path: shorter than 4096 */
        for (;;) {
            struct stat st;
            if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode) && !has_ident(w, &st)) {
                if (w->n == w->cap) {
                    size_t cap = w->cap ? w->cap * 2 : 64;
                    struct ident *more = realloc(w->v, cap * sizeof *more);
                    if (!more)
                        return ENOMEM;
                    w->v = more, w->cap = cap;
                }
                w->v[w->n++] = (struct ident){st.st_dev, st.st_ino};
            }
            if (!strcmp(path, "/"))
                break;
            up(path);
        }
    }
    return 0;
}

/* The rule on one directory off the way (_createguard.prepare's loop): 0, or an errno. */
static int rule_on(const struct creation *c, struct prepared *p, const struct idents *way,
                   const char *path) {
    int fd = open(path, DIR_FLAGS);
    if (fd < 0) {
        if (is_root(c, path))
            return errno; /* no rule on a writable root would refuse every creation under it */
        if (errno == ENOENT || errno == ELOOP || errno == ENOTDIR || errno == EACCES)
            return 0; /* gone or replaced since the listing: emulated if under a guard */
        return errno;
    }
    struct stat st;
    int err = 0;
    if (fstat(fd, &st) < 0) {
        err = errno;
    } else if (!has_ident(way, &st)) { /* else on the way, through another mount */
        struct landlock_path_beneath_attr pb = {.allowed_access = LAYER2_RIGHTS, .parent_fd = fd};
        if (syscall(SYS_landlock_add_rule, p->ruleset, LANDLOCK_RULE_PATH_BENEATH, &pb, 0) < 0) {
            err = errno;
        } else if (p->n_ruled == p->cap_ruled) {
            size_t cap = p->cap_ruled ? p->cap_ruled * 2 : 64;
            struct ident *more = realloc(p->ruled, cap * sizeof *more);
            if (!more)
                err = ENOMEM;
            else
                p->ruled = more, p->cap_ruled = cap;
        }
        if (!err)
            p->ruled[p->n_ruled++] = (struct ident){st.st_dev, st.st_ino};
    }
    close(fd);
    return err;
}

/* _createguard.layer2_dirs, each directory ruled as it is found. */
static int walk(const struct creation *c, struct prepared *p, const char **detail) {
    struct list stack = {0}, seen = {0};
    struct idents way = {0};
    int err = way_idents(c, &way);
    size_t steps = 0;
    for (uint32_t i = 0; !err && i < c->n_roots; i++) {
        if (push(&stack, strdup(c->roots[i])) < 0)
            err = ENOMEM;
        while (!err && stack.n) {
            char *path = stack.v[--stack.n];
            if (++steps > MAX_WALK) {
                err = E2BIG;
            } else if (!on_the_way(c, path)) {
                if ((err = rule_on(c, p, &way, path)))
                    *detail = strdup(path);
            } else if (known(seen.v, seen.n, path)) {
                /* listed already (a root under another's way) */
            } else if (subdirectories(path, &stack) < 0 || push(&seen, strdup(path)) < 0) {
                err = errno ? errno : ENOMEM;
            }
            free(path);
        }
    }
    for (size_t i = 0; i < stack.n; i++)
        free(stack.v[i]);
    for (size_t i = 0; i < seen.n; i++)
        free(seen.v[i]);
    free(stack.v);
    free(seen.v);
    free(way.v);
    return err;
}

/* _createguard.prepare: 0, or an errno (``detail``: the path, if any). The guarded
 * directories stay open for the session (their identities stay unique). */
int creation_prepare(const struct creation *c, uint32_t abi, struct prepared *p,
                     const char **detail) {
    *detail = NULL;
    *p = (struct prepared){.ruleset = -1};
    if (abi < 2) {
        *detail = "Landlock ABI < 2: the creation guard needs REFER (v2+)";
        return ENOTSUP;
    }
    if (!(p->guarded = calloc(c->n, sizeof *p->guarded)) ||
        !(p->paths = calloc(c->n, sizeof *p->paths)))
        return ENOMEM;
    for (uint32_t i = 0; i < c->n; i++) {
        struct stat st;
        int fd = open(c->dirs[i].path, DIR_FLAGS); /* kept: pins the inode */
        if (fd < 0 || fstat(fd, &st) < 0) {
            *detail = c->dirs[i].path;
            return errno;
        }
        p->guarded[p->n_guarded++] = (struct guarded){st.st_dev, st.st_ino, c->dirs[i].names};
        p->paths[p->n_paths++] = c->dirs[i];
    }
    uint64_t attr[3] = {LAYER2_RIGHTS, 0, 0};
    size_t size = abi >= 6 ? 24 : abi >= 4 ? 16 : 8;
    if ((p->ruleset = (int)syscall(SYS_landlock_create_ruleset, attr, size, 0)) < 0)
        return errno;
    int err = walk(c, p, detail);
    if (err) {
        close(p->ruleset);
        p->ruleset = -1;
    }
    return err;
}

/* ------------------------------------------------------------------- in the program */

/* _createguard.confine_program: 0, or an errno. */
int creation_confine(int ruleset, const unsigned char *prog, size_t len, int sock) {
    if (syscall(SYS_landlock_restrict_self, ruleset, 0) < 0)
        return errno;
    if (len % sizeof(struct sock_filter) || !len || len / sizeof(struct sock_filter) > BPF_MAXINSNS)
        return EINVAL;
    struct sock_fprog fprog = {.len = (unsigned short)(len / sizeof(struct sock_filter)),
                               .filter = (struct sock_filter *)prog};
    long listener = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER,
                            SECCOMP_FILTER_FLAG_NEW_LISTENER | FLAG_WAIT_KILLABLE_RECV, &fprog);
    if (listener < 0 && errno == EINVAL) /* before 5.19: a signal restarts a waiting call */
        listener = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER,
                           SECCOMP_FILTER_FLAG_NEW_LISTENER, &fprog);
    if (listener < 0)
        return errno;
    int fd = (int)listener, err = send_fds(sock, "L", 1, &fd, 1) < 0 ? errno : 0;
    close(fd);
    return err;
}
