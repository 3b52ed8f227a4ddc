/* nono-reaper --init, the confinement: the Landlock ruleset (built ahead, enforced at launch,
 * rebuilt if a rule's path names another file by then), the capability drop, the seccomp
 * filter the fork server compiled (_seccomp), the session's limits. What _landlock
 * (build_ruleset, rules_current, restrict_self), _libc.drop_all_capabilities,
 * _seccomp.install_filter and _launcher._rlimits do, with the same system calls.
 *
 * The ruleset's part of the config memfd ("NGV1", after the mount steps):
 *   u32 abi (0: no Landlock), u64 handled_fs, u64 handled_net, u64 scoped,
 *   u32 rules, each: str path, u64 allowed, u8 is_file;
 *   u32 port rules, each: u64 port, u64 allowed */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/landlock.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "reaper.h"

#define MAX_RULES 4096
#define MAX_PORT_RULES 4096

/* Landlock's rule attributes (packed; the net port rule is newer than some headers). */
#define RULE_NET_PORT 2
struct __attribute__((packed)) net_port_attr {
    uint64_t allowed_access;
    uint64_t port;
};

struct ruleset *ruleset_load(struct reader *r) {
    struct ruleset *rs = calloc(1, sizeof *rs);
    if (!rs || take_u32(r, &rs->abi) || take_u64(r, &rs->fs) || take_u64(r, &rs->net) ||
        take_u64(r, &rs->scoped) || take_u32(r, &rs->n) || rs->n > MAX_RULES)
        return NULL;
    rs->fd = -1;
    rs->rules = calloc(rs->n ? rs->n : 1, sizeof *rs->rules);
    if (!rs->rules)
        return NULL;
    for (uint32_t i = 0; i < rs->n; i++) {
        unsigned char is_file;
        struct rule *rule = &rs->rules[i];
        if (!(rule->path = take_path(r)) || take_u64(r, &rule->allowed) ||
            take(r, &is_file, 1) || is_file > 1)
            return NULL;
        rule->is_file = is_file;
    }
    if (take_u32(r, &rs->n_ports) || rs->n_ports > MAX_PORT_RULES)
        return NULL;
    rs->ports = calloc(rs->n_ports ? rs->n_ports : 1, sizeof *rs->ports);
    if (!rs->ports)
        return NULL;
    for (uint32_t i = 0; i < rs->n_ports; i++)
        if (take_u64(r, &rs->ports[i][0]) || take_u64(r, &rs->ports[i][1]))
            return NULL;
    return rs;
}

/* _landlock._open_rule_path: no symbolic link anywhere on the way. */
static int open_rule_path(const char *path) {
    struct open_how how = {.flags = O_PATH | O_CLOEXEC | O_NOFOLLOW,
                           .resolve = RESOLVE_NO_SYMLINKS};
    int fd = (int)syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof how);
    if (fd < 0 && errno == ENOSYS)
        fd = open(path, O_PATH | O_CLOEXEC | O_NOFOLLOW);
    return fd;
}

static size_t attr_size(uint32_t abi) {
    return abi >= 6 ? 24 : abi >= 4 ? 16 : 8;
}

/* _landlock.build_ruleset: 0, or an errno with ``detail`` (the rule's path, if any). */
int ruleset_build(struct ruleset *rs, const char **detail) {
    *detail = NULL;
    if (rs->fd >= 0)
        close(rs->fd);
    rs->fd = -1;
    if (!rs->abi)
        return 0;
    uint64_t attr[3] = {rs->fs, rs->net, rs->scoped};
    int fd = (int)syscall(SYS_landlock_create_ruleset, attr, attr_size(rs->abi), 0);
    if (fd < 0)
        return errno;
    for (uint32_t i = 0; i < rs->n; i++) {
        struct rule *rule = &rs->rules[i];
        rule->dev = 0;
        rule->ino = 0;
        int pfd = open_rule_path(rule->path);
        if (pfd < 0) {
            if (errno == ENOENT)
                continue; /* gone since the plan was made: no rule, no access */
            goto failed;
        }
        struct stat st;
        int err = 0;
        if (fstat(pfd, &st) < 0)
            err = errno;
        else if (S_ISLNK(st.st_mode))
            err = ELOOP;
        else if (rule->is_file && S_ISDIR(st.st_mode))
            err = EISDIR;
        else if (!rule->is_file && !S_ISDIR(st.st_mode))
            err = ENOTDIR;
        if (!err) {
            struct landlock_path_beneath_attr pb = {.allowed_access = rule->allowed,
                                                    .parent_fd = pfd};
            if (syscall(SYS_landlock_add_rule, fd, LANDLOCK_RULE_PATH_BENEATH, &pb, 0) < 0)
                err = errno;
        }
        close(pfd);
        if (err) {
            errno = err;
            goto failed;
        }
        rule->dev = st.st_dev;
        rule->ino = st.st_ino;
        continue;
    failed:
        err = errno;
        *detail = rule->path;
        close(fd);
        return err;
    }
    for (uint32_t i = 0; i < rs->n_ports; i++) {
        struct net_port_attr np = {.allowed_access = rs->ports[i][1],
                                            .port = rs->ports[i][0]};
        if (syscall(SYS_landlock_add_rule, fd, RULE_NET_PORT, &np, 0) < 0) {
            int err = errno;
            close(fd);
            return err;
        }
    }
    rs->fd = fd;
    return 0;
}

/* _landlock.rules_current: every rule's path still names what its rule was put on. */
int ruleset_current(const struct ruleset *rs) {
    for (uint32_t i = 0; i < rs->n; i++) {
        const struct rule *rule = &rs->rules[i];
        struct stat st;
        if (lstat(rule->path, &st) < 0) {
            if (rule->dev || rule->ino)
                return 0;
            continue;
        }
        if (st.st_dev != rule->dev || st.st_ino != rule->ino)
            return 0;
    }
    return 1;
}

/* Enforce the ruleset (rebuilt first unless current): 0 or an errno. */
int ruleset_enforce(struct ruleset *rs, const char **detail) {
    *detail = NULL;
    if (!rs->abi)
        return 0;
    if (rs->fd < 0 || !ruleset_current(rs)) {
        int err = ruleset_build(rs, detail);
        if (err)
            return err;
    }
    int err = syscall(SYS_landlock_restrict_self, rs->fd, 0) < 0 ? errno : 0;
    close(rs->fd);
    rs->fd = -1;
    return err;
}

/* _libc.drop_all_capabilities(bounding_dropped=True): ambient cleared, root locked out of
 * regaining capabilities at exec, every set emptied. */
int drop_capabilities(void) {
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 ||
        prctl(PR_SET_SECUREBITS, 0x3F | 0xC0, 0, 0, 0) < 0)
        return errno;
    struct __user_cap_header_struct head = {.version = _LINUX_CAPABILITY_VERSION_3};
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    return syscall(SYS_capset, &head, data) < 0 ? errno : 0;
}

/* _launcher._rlimits: no core dump, an eighth of the queued signals, the process cap. */
int session_rlimits(uint64_t max_processes) {
    struct rlimit lim = {1, 1};
    if (setrlimit(RLIMIT_CORE, &lim) < 0) {
        lim.rlim_cur = lim.rlim_max = 0;
        if (setrlimit(RLIMIT_CORE, &lim) < 0)
            return errno;
    }
    if (getrlimit(RLIMIT_SIGPENDING, &lim) < 0)
        return errno;
    rlim_t least = RLIM_INFINITY;
    if (lim.rlim_cur != RLIM_INFINITY)
        least = lim.rlim_cur;
    if (lim.rlim_max != RLIM_INFINITY && lim.rlim_max < least)
        least = lim.rlim_max;
    if (least != RLIM_INFINITY) {
        rlim_t share = least / 8 ? least / 8 : 1;
        if (share > least)
            share = least;
        lim.rlim_cur = lim.rlim_max = share;
        if (setrlimit(RLIMIT_SIGPENDING, &lim) < 0)
            return errno;
    }
    if (max_processes) {
        lim.rlim_cur = lim.rlim_max = (rlim_t)max_processes;
        if (setrlimit(RLIMIT_NPROC, &lim) < 0)
            return errno;
    }
    return 0;
}

/* _seccomp.install_filter(flags=0): the program as the fork server compiled it. */
int install_seccomp(const unsigned char *prog, size_t len) {
    if (len % sizeof(struct sock_filter) || !len || len / sizeof(struct sock_filter) > BPF_MAXINSNS)
        return EINVAL;
    struct sock_fprog fprog = {.len = (unsigned short)(len / sizeof(struct sock_filter)),
                               .filter = (struct sock_filter *)prog};
    return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fprog) < 0 ? errno : 0;
}
