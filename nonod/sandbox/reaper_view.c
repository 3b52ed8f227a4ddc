/* nono-reaper --init, the preparation: the session's root and the view's mounts, what
 * _launcher.prepare_init and _launcher._prepare_view (_mounts.prepare_root, apply_mounts with
 * prepared=True) do in Python, step for step, for the operations the fork server's flat form
 * covers (_cinit.view_config). Runs before any plan exists: a failure makes the init exit
 * (126), and the fork server launches on another launcher or cold, as for the Python init.
 *
 * The mount steps come from the fork server (config memfd, "NGV1"): each is
 *   u8 step (STEP_*), u8 kind (_mounts' MountOp kind), u8 flags (F_*), str target, str source
 * (a pin: then u32 length + the verified bytes, its source being their index; an overlay:
 * then u32 count + its upper layer's entries, each u8 kind and str path relative to it)
 * with whether the target lies under an earlier host bind ("on_host") worked out by the
 * fork server from the operations' order, as apply_mounts does while it goes. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/keyctl.h>
#include <linux/openat2.h>
#include <net/if.h>
#include <sched.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "reaper.h"

#define OLD "/oldroot"
#define EMPTY_FILE "/.nono-empty"
#define PIN_DIR "/.nono-pins"
#define LAYERS_DIR "/.nono-layers"
#define MAX_ENTRIES 4096
#define MAX_STEPS 4096

/* struct mount_attr, and the attributes (linux/mount.h; not included: glibc's sys/mount.h
 * may define them too) */
#define ATTR_RDONLY 0x1ULL
#define ATTR_NOSUID 0x2ULL
#define ATTR_NODEV 0x4ULL
#define ATTR_NOEXEC 0x8ULL
#define AT_RECURSIVE_ 0x8000
#define MOVE_MOUNT_F_EMPTY_PATH_ 0x4
#define MOVE_MOUNT_T_EMPTY_PATH_ 0x40
#define OPEN_TREE_CLONE_ 1

/* The flat form's steps (_cinit) and the MountOp kinds a cover step carries (_mounts). */
enum {
    STEP_BIND = 1, STEP_TMPFS = 2, STEP_SYMLINK = 3, STEP_COVER = 4, STEP_IDMAP = 5,
    STEP_PIN = 6, STEP_OVERLAY = 7,
};
enum { K_UPPER_DIR = 12, K_UPPER_FILE = 13 }; /* an overlay's entries (_mounts.UPPER_*) */
enum { K_READONLY = 5, K_MASK_DIR = 6, K_MASK_FILE = 7, K_ANCHOR = 9 };
enum { F_WRITABLE = 1, F_DEVICE = 2, F_ON_HOST = 4, F_FILE = 8, F_ABSENT = 16, F_LINKED = 32 };

static int setattr(const char *path, uint64_t set, int recursive) {
    uint64_t attr[4] = {set, 0, 0, 0}; /* attr_set, attr_clr, propagation, userns_fd */
    return (int)syscall(SYS_mount_setattr, AT_FDCWD, path, recursive ? AT_RECURSIVE_ : 0,
                        attr, sizeof attr);
}

/* _mounts._mkdirs of the first ``len`` bytes of ``path``: each component made 0755
 * (chmod'ed so, whatever the umask) unless there. */
static int mkdirs_n(const char *path, size_t len) {
    char cur[4096];
    if (len >= sizeof cur)
        return errno = ENAMETOOLONG, -1;
    memcpy(cur, path, len);
    cur[len] = '\0';
    for (size_t i = 1; i <= len; i++) {
        if (cur[i] != '/' && cur[i] != '\0')
            continue;
        char c = cur[i];
        cur[i] = '\0';
        if (mkdir(cur, 0755) == 0) {
            if (chmod(cur, 0755) < 0)
                return -1;
        } else if (errno != EEXIST) {
            return -1;
        }
        cur[i] = c;
    }
    return 0;
}

static int mkdirs(const char *path) {
    return mkdirs_n(path, strlen(path));
}

static int parent_dirs(const char *path) {
    const char *slash = strrchr(path, '/');
    return !slash || slash == path ? 0 : mkdirs_n(path, (size_t)(slash - path));
}

/* _mounts._touch: the file with exactly ``mode``, its directories made first. */
static int touch(const char *path, mode_t mode) {
    if (parent_dirs(path) < 0)
        return -1;
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, mode);
    if (fd < 0)
        return -1;
    int r = fchmod(fd, mode);
    close(fd);
    return r;
}

/* _mounts._bind: a recursive bind of the host's ``source`` (under OLD), then nosuid
 * (and nodev, read-only as asked) on the whole tree. */
static int bind_host(const char *source, const char *target, int writable, int nodev) {
    char src[4200];
    if ((size_t)snprintf(src, sizeof src, "%s%s", OLD, source) >= sizeof src)
        return errno = ENAMETOOLONG, -1;
    if (mount(src, target, NULL, MS_BIND | MS_REC, NULL) < 0)
        return -1;
    return setattr(target, ATTR_NOSUID | (nodev ? ATTR_NODEV : 0) | (writable ? 0 : ATTR_RDONLY),
                   1);
}

/* _mounts.PTY_MAX: the session's share of the host's one pool of pseudo-terminals. */
#define PTY_MAX "128"

static const char *const dev_nodes[] = {"null", "zero", "full", "random", "urandom", "tty"};

/* _mounts.prepare_root and _setup_dev: a tmpfs root with the host under OLD, a fresh /proc,
 * a minimal /dev. */
static int prepare_root(void) {
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
        mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") < 0 ||
        chdir("/tmp") < 0 || mkdir("oldroot", 0700) < 0 ||
        syscall(SYS_pivot_root, ".", "oldroot") < 0 || chdir("/") < 0 || touch(EMPTY_FILE, 0) < 0 ||
        mkdirs("/proc") < 0 ||
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0 ||
        mkdirs("/dev/pts") < 0)
        return -1;
    for (size_t i = 0; i < sizeof dev_nodes / sizeof *dev_nodes; i++) {
        char path[32];
        snprintf(path, sizeof path, "/dev/%s", dev_nodes[i]);
        /* read-only: the host's inodes (_mounts._setup_dev) */
        if (touch(path, 0644) < 0 || bind_host(path, path, 0, 0) < 0)
            return -1;
    }
    if (mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
              "newinstance,ptmxmode=0666,mode=620,max=" PTY_MAX) < 0 ||
        symlink("pts/ptmx", "/dev/ptmx") < 0 || symlink("/proc/self/fd", "/dev/fd") < 0 ||
        symlink("/proc/self/fd/0", "/dev/stdin") < 0 ||
        symlink("/proc/self/fd/1", "/dev/stdout") < 0 ||
        symlink("/proc/self/fd/2", "/dev/stderr") < 0)
        return -1;
    return 0;
}

static int write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t len = strlen(text);
    ssize_t n = write(fd, text, len);
    close(fd);
    return n == (ssize_t)len ? 0 : (errno = n < 0 ? errno : EIO, -1);
}

/* _launcher.limit_inotify, through the fresh /proc. */
static int limit_inotify(void) {
    return write_file("/proc/sys/user/max_inotify_instances", "32") < 0 ||
                   write_file("/proc/sys/user/max_inotify_watches", "16384") < 0
               ? -1
               : 0;
}

/* _libc.set_loopback_up */
static int loopback_up(void) {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return -1;
    struct ifreq req;
    memset(&req, 0, sizeof req);
    memcpy(req.ifr_name, "lo", 3);
    int r = ioctl(s, SIOCGIFFLAGS, &req);
    if (r == 0) {
        req.ifr_flags |= IFF_UP;
        r = ioctl(s, SIOCSIFFLAGS, &req);
    }
    close(s);
    return r;
}

/* _libc.drop_bounding_set (in a user namespace of our own: every drop is allowed) */
static int drop_bounding_set(void) {
    for (int cap = 0; cap < 64; cap++)
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
            return -1;
    return 0;
}

/* _mounts._mountpoint */
static int mountpoint(const char *target, int on_host, int directory) {
    struct stat st;
    if (on_host)
        return lstat(target, &st);
    if (directory)
        return mkdirs(target);
    if (stat(target, &st) == 0)
        return 0;
    return touch(target, 0644);
}

/* _mounts.cover, for the kinds a flat form carries (a pin falls back to Python). */
static int cover(int kind, const char *target, int absent) {
    struct stat st;
    if (lstat(target, &st) < 0) {
        if (absent && (errno == ENOENT || errno == ENOTDIR || errno == EACCES))
            return 0; /* the view guard would mount it if it appears: not a C init's view */
        return -1;
    }
    if (S_ISLNK(st.st_mode)) {
        if (kind == K_MASK_DIR || kind == K_MASK_FILE || absent)
            return 0;
        return errno = ELOOP, -1;
    }
    if (kind == K_READONLY || kind == K_ANCHOR) {
        if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode))
            return errno = ELOOP, -1;
        if (mount(target, target, NULL, MS_BIND | MS_REC, NULL) < 0)
            return -1;
        return setattr(target,
                       ATTR_NOSUID | ATTR_NODEV | (kind == K_READONLY ? ATTR_RDONLY : 0),
                       kind == K_READONLY);
    }
    if (S_ISDIR(st.st_mode)) {
        if (mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                  "mode=000,size=4k") < 0)
            return -1;
        return setattr(target, ATTR_RDONLY, 0);
    }
    if (mount(EMPTY_FILE, target, NULL, MS_BIND, NULL) < 0)
        return -1;
    return setattr(target, ATTR_RDONLY | ATTR_NOEXEC | ATTR_NODEV, 0);
}

/* _mounts._linked: ``target`` looked up once with no symbolic link on the way, and bound
 * read-only onto itself only if it is still the inode the walk found (``id``,
 * "device:inode"); moved since, the launch fails (ESTALE) rather than cover a decoy. */
static int linked(const char *target, const char *id) {
    unsigned long long dev, ino;
    char extra;
    if (sscanf(id, "%llu:%llu%c", &dev, &ino, &extra) != 2)
        return errno = EINVAL, -1;
    struct open_how how = {.flags = O_PATH | O_CLOEXEC, .resolve = RESOLVE_NO_SYMLINKS};
    int fd = (int)syscall(SYS_openat2, AT_FDCWD, target, &how, sizeof how);
    if (fd < 0)
        return -1;
    struct stat st;
    int tree = -1, rc = -1;
    uint64_t attr[4] = {ATTR_RDONLY | ATTR_NOSUID | ATTR_NODEV, 0, 0, 0};
    if (fstat(fd, &st) < 0)
        goto out;
    if ((unsigned long long)st.st_dev != dev || (unsigned long long)st.st_ino != ino) {
        errno = ESTALE;
        goto out;
    }
    tree = (int)syscall(SYS_open_tree, fd, "",
                        OPEN_TREE_CLONE_ | O_CLOEXEC | AT_EMPTY_PATH | AT_RECURSIVE_);
    if (tree < 0 ||
        syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH | AT_RECURSIVE_, attr, sizeof attr) < 0)
        goto out;
    rc = (int)syscall(SYS_move_mount, tree, "", fd, "",
                      MOVE_MOUNT_F_EMPTY_PATH_ | MOVE_MOUNT_T_EMPTY_PATH_);
out:;
    int err = errno;
    if (tree >= 0)
        close(tree);
    close(fd);
    errno = err;
    return rc;
}

/* _mounts._pin: the verified bytes in a file of the session's root (the read and execute
 * bits of what it covers), bound read-only over ``target``. */
static int pin(const char *target, const char *index, const unsigned char *data, size_t len) {
    struct stat st;
    char copy[64];
    if (stat(target, &st) < 0 || !S_ISREG(st.st_mode))
        return errno = ENOENT, -1; /* "verified file is not in the session's view" */
    if ((size_t)snprintf(copy, sizeof copy, "%s/%s", PIN_DIR, index) >= sizeof copy ||
        mkdirs(PIN_DIR) < 0)
        return errno = errno ? errno : EINVAL, -1;
    int fd = open(copy, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, st.st_mode & 0555);
    if (fd < 0)
        return -1;
    int ok = fchmod(fd, st.st_mode & 0555) == 0;
    while (ok && len) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        ok = n > 0;
        data += ok ? n : 0;
        len -= ok ? (size_t)n : 0;
    }
    close(fd);
    if (!ok || mount(copy, target, NULL, MS_BIND, NULL) < 0)
        return -1;
    return setattr(target, ATTR_RDONLY | ATTR_NOSUID | ATTR_NODEV, 0);
}

/* _mounts._same_as: the upper layer's ``upper`` takes the owner (where this namespace maps
 * it), mode and times of the host's ``lower``, as a copy-up would. */
static int same_as(const char *lower, const char *upper) {
    struct stat st;
    if (stat(lower, &st) < 0)
        return -1;
    if (chown(upper, st.st_uid, st.st_gid) < 0 && errno != EINVAL && errno != EPERM)
        return -1;
    struct timespec times[2] = {st.st_atim, st.st_mtim};
    if (chmod(upper, st.st_mode & 07777) < 0 || utimensat(AT_FDCWD, upper, times, 0) < 0)
        return -1;
    return 0;
}

static int join(char *out, const char *a, const char *b) {
    return (size_t)snprintf(out, 4096, "%s/%s", a, b) >= 4096 ? (errno = ENAMETOOLONG, -1) : 0;
}

/* _mounts._upper_entry: ``rel`` in the upper layer: the directories on the way (like the
 * host's where it has them), then an opaque directory or an empty file, mode 000. */
static int upper_entry(const char *lower, const char *upper, const char *rel, int kind) {
    char way[4096], made[4096], host[4096], last[4096];
    struct stat st;
    for (const char *slash = strchr(rel, '/'); slash; slash = strchr(slash + 1, '/')) {
        size_t n = (size_t)(slash - rel);
        memcpy(way, rel, n);
        way[n] = '\0';
        if (join(made, upper, way) < 0)
            return -1;
        if (stat(made, &st) == 0 && S_ISDIR(st.st_mode))
            continue;
        if (mkdir(made, 0755) < 0 || join(host, lower, way) < 0)
            return -1;
        if (lstat(host, &st) == 0 && S_ISDIR(st.st_mode)) {
            if (same_as(host, made) < 0)
                return -1;
        } else if (chmod(made, 0755) < 0) {
            return -1;
        }
    }
    if (join(last, upper, rel) < 0)
        return -1;
    if (lstat(last, &st) == 0)
        return 0;
    if (kind == K_UPPER_DIR)
        return mkdir(last, 0700) < 0 || setxattr(last, "user.overlay.opaque", "y", 1, 0) < 0 ||
                       chmod(last, 0) < 0
                   ? -1
                   : 0;
    int fd = open(last, O_WRONLY | O_CREAT | O_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int r = fchmod(fd, 0);
    close(fd);
    return r;
}

/* _libc.overlay: a detached overlay (userxattr: made in a user namespace) of ``lower``
 * under ``upper``, nosuid and nodev, as a descriptor for move_mount. */
static int overlay_fd(const char *lower, const char *upper, const char *work) {
    int fs = (int)syscall(SYS_fsopen, "overlay", 1 /* FSOPEN_CLOEXEC */);
    if (fs < 0)
        return -1;
    int mnt = -1;
    if (syscall(SYS_fsconfig, fs, 1 /* SET_STRING */, "lowerdir+", lower, 0) == 0 &&
        syscall(SYS_fsconfig, fs, 1, "upperdir", upper, 0) == 0 &&
        syscall(SYS_fsconfig, fs, 1, "workdir", work, 0) == 0 &&
        syscall(SYS_fsconfig, fs, 0 /* SET_FLAG */, "userxattr", NULL, 0) == 0 &&
        syscall(SYS_fsconfig, fs, 6 /* CMD_CREATE */, NULL, NULL, 0) == 0)
        mnt = (int)syscall(SYS_fsmount, fs, 1 /* FSMOUNT_CLOEXEC */, ATTR_NOSUID | ATTR_NODEV);
    int err = errno;
    close(fs);
    errno = err;
    return mnt;
}

/* _mounts._overlay: the host's ``source`` at ``target`` under an upper layer of the
 * session's own (a tmpfs at LAYERS_DIR while it is made, detached after), its entries
 * (``config``: u32 count, then u8 kind + str path each) made in the upper layer first. */
static int overlay(struct reader *config, const char *target, const char *source) {
    char lower[4096], upper[] = LAYERS_DIR "/upper", work[] = LAYERS_DIR "/work";
    uint32_t n;
    if (join(lower, OLD, source[0] == '/' ? source + 1 : source) < 0 ||
        take_u32(config, &n) || n > MAX_ENTRIES)
        return errno = errno ? errno : EINVAL, -1;
    if (mkdirs(LAYERS_DIR) < 0 ||
        mount("tmpfs", LAYERS_DIR, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0700") < 0)
        return -1;
    int rc = mkdir(upper, 0700) < 0 || mkdir(work, 0700) < 0 || same_as(lower, upper) < 0;
    for (uint32_t i = 0; !rc && i < n; i++) {
        unsigned char kind;
        char *rel;
        if (take(config, &kind, 1) || !(rel = take_path(config)) || !rel[0] || rel[0] == '/' ||
            (kind != K_UPPER_DIR && kind != K_UPPER_FILE)) {
            errno = EINVAL;
            rc = 1;
            break;
        }
        rc = upper_entry(lower, upper, rel, kind) < 0;
        free(rel);
    }
    if (!rc) {
        int mnt = overlay_fd(lower, upper, work);
        rc = mnt < 0 || syscall(SYS_move_mount, mnt, "", AT_FDCWD, target,
                                MOVE_MOUNT_F_EMPTY_PATH_) < 0;
        if (mnt >= 0)
            close(mnt);
    }
    int err = errno;
    if (umount2(LAYERS_DIR, MNT_DETACH) < 0 || rmdir(LAYERS_DIR) < 0)
        return -1;
    errno = err;
    return rc ? -1 : 0;
}

/* One step of the view; 0, or -1 with errno. */
static int view_step(int step, int kind, int flags, const char *target, const char *source,
                     const char **ro_tmpfs, size_t *n_ro, struct trees *trees) {
    int on_host = (flags & F_ON_HOST) != 0;
    struct stat st;
    switch (step) {
    case STEP_BIND:
        if (mountpoint(target, on_host, !(flags & F_FILE)) < 0)
            return -1;
        return bind_host(source, target, flags & F_WRITABLE, !(flags & F_DEVICE));
    case STEP_TMPFS:
        if (on_host && (stat(target, &st) < 0 || !S_ISDIR(st.st_mode)))
            return 0; /* the host has no such directory: nothing of its to hide */
        if (mountpoint(target, on_host, 1) < 0 ||
            mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777") < 0)
            return -1;
        if (!(flags & F_WRITABLE))
            ro_tmpfs[(*n_ro)++] = target;
        return 0;
    case STEP_SYMLINK:
        if (on_host)
            return 0;
        if (parent_dirs(target) < 0)
            return -1;
        if (lstat(target, &st) == 0)
            return 0;
        return symlink(source, target);
    case STEP_IDMAP: /* the next tree the fork server idmapped for this launcher */
        if (trees->next >= trees->n)
            return errno = EBADF, -1;
        if (mountpoint(target, on_host, 1) < 0)
            return -1;
        return (int)syscall(SYS_move_mount, trees->fds[trees->next++], "", AT_FDCWD, target,
                            MOVE_MOUNT_F_EMPTY_PATH_);
    case STEP_COVER:
        if (kind != K_READONLY && kind != K_MASK_DIR && kind != K_MASK_FILE && kind != K_ANCHOR)
            return errno = EINVAL, -1;
        if (flags & F_LINKED)
            return kind == K_READONLY ? linked(target, source) : (errno = EINVAL, -1);
        return cover(kind, target, flags & F_ABSENT);
    default:
        return errno = EINVAL, -1;
    }
}

/* The view's mounts from ``config`` (apply_mounts after prepare_root), then the old root
 * detached and the new one read-only. */
static int view_mounts(struct reader *config, struct trees *trees) {
    uint32_t n;
    if (take_u32(config, &n) || n > MAX_STEPS)
        return errno = EINVAL, -1;
    const char **ro_tmpfs = calloc(n ? n : 1, sizeof *ro_tmpfs);
    if (!ro_tmpfs)
        return -1;
    size_t n_ro = 0;
    for (uint32_t i = 0; i < n; i++) {
        unsigned char head[3];
        char *target, *source = NULL;
        if (take(config, head, 3) || !(target = take_path(config)) ||
            !(source = take_path(config)) || target[0] != '/')
            return errno = EINVAL, -1;
        if (head[0] == STEP_OVERLAY) {
            if (mountpoint(target, head[2] & F_ON_HOST, 1) < 0 ||
                overlay(config, target, source) < 0)
                return -1;
        } else if (head[0] == STEP_PIN) {
            uint32_t len;
            if (take_u32(config, &len) || (size_t)(config->end - config->p) < len ||
                strspn(source, "0123456789") != strlen(source) || !source[0])
                return errno = EINVAL, -1;
            const unsigned char *data = config->p;
            config->p += len;
            if (pin(target, source, data, len) < 0)
                return -1;
        } else if (view_step(head[0], head[1], head[2], target, source, ro_tmpfs, &n_ro,
                             trees) < 0) {
            return -1;
        }
        free(source); /* the target may be kept in ro_tmpfs: the process is short of none */
    }
    for (size_t i = 0; i < trees->n; i++)
        close(trees->fds[i]);
    for (size_t i = 0; i < n_ro; i++)
        if (setattr(ro_tmpfs[i], ATTR_RDONLY, 0) < 0)
            return -1;
    if (umount2(OLD, MNT_DETACH) < 0 || rmdir(OLD) < 0 || setattr("/", ATTR_RDONLY, 0) < 0)
        return -1;
    return 0;
}

int view_prepare(struct reader *config, int ns_flags, struct trees *trees) {
    if (setsid() < 0 || prepare_root() < 0 || limit_inotify() < 0)
        return -1;
    prctl(PR_SET_DUMPABLE, 0); /* the program (same uid) must not read our memory */
    if ((ns_flags & CLONE_NEWNET) && loopback_up() < 0)
        return -1;
    if (syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, NULL) < 0 || drop_bounding_set() < 0)
        return -1;
    return view_mounts(config, trees);
}
