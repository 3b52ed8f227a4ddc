/* nono-reaper's parts (reaper.c: the init; reaper_guard.c: the creation guard). */
#ifndef NONO_REAPER_H
#define NONO_REAPER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* reaper_util.c */
int number(const char *s, long *out); /* a whole decimal int argument; -1 if it is not */
void put32(unsigned char *p, uint32_t v); /* little endian */
void write_all(int fd, const void *data, size_t len);
int send_fds(int sock, const void *data, size_t len, const int *fds, size_t n); /* n <= 4 */
void end_descendants(void);

/* The configuration the Python side serialized (little endian, strings length-prefixed). */
struct reader {
    const unsigned char *p, *end;
};
int take(struct reader *r, void *out, size_t n);
int take_u32(struct reader *r, uint32_t *v);
int take_u64(struct reader *r, uint64_t *v);
/* A count of entries of at least min_size bytes each: -1 if that many cannot fit in what is
 * left, so that no count is ever allocated for before the bytes it needs are there. */
int take_count(struct reader *r, size_t min_size, uint32_t *n);
char *take_str(struct reader *r);
char *take_path(struct reader *r); /* shorter than 4096, no NUL inside; NULL if not */

/* reaper_guard.c: the creation guard's state (the decisions of _createserve). */
struct names {
    size_t n;
    char **v; /* folded, ASCII */
};
struct guarded { /* a guarded directory by identity, and the names refused in it */
    dev_t dev;
    ino_t ino;
    struct names names;
};
struct bypath { /* the same by path */
    char *path;
    struct names names;
};
struct ident {
    dev_t dev;
    ino_t ino;
};
int take_names(struct reader *r, struct names *names); /* u32 count, each a str */
/* Serve listener_fd with this state (kept; ``r`` sorted here). */
void guard_set(struct guarded *g, size_t n_g, struct bypath *p, size_t n_p, struct ident *r,
               size_t n_r, int listener_fd);
/* reaper_create.c: the creation guard's pins, layer 2 and the program's confinement, for the
 * C init (the Python init's _createguard). */
struct creation {
    uint32_t n; /* guarded directories (0: no creation guard) */
    struct bypath *dirs;
    uint32_t n_roots;
    char **roots; /* where the first layer lets the session create entries */
};
struct prepared {
    int ruleset; /* layer 2, for the program */
    struct guarded *guarded;
    struct bypath *paths;
    struct ident *ruled;
    size_t n_guarded, n_paths, n_ruled, cap_ruled;
};
int creation_load(struct reader *r, struct creation *c);
int creation_pin(const struct creation *c);
int creation_prepare(const struct creation *c, uint32_t abi, struct prepared *p,
                     const char **detail);
int creation_confine(int ruleset, const unsigned char *prog, size_t len, int sock);
/* Read the creation guard's configuration from config_fd (closed) and serve listener_fd;
 * -1 if the configuration is unreadable. */
int guard_load(int config_fd, int listener_fd);
/* The program's first process: the root of the domain emulations are done for. */
void guard_program(pid_t pid);
/* The listener being served, or -1. */
int guard_listener(void);
/* Answer one notification; -1 when the listener is broken (then call guard_stop). */
int guard_serve_one(void);
void guard_stop(void);

/* nono-reaper --outer (reaper_outer.c): the launcher's outer process, the view guard. */
int outer_main(int argc, char **argv);
/* reaper_outer.c: a C init's view guard, handed to the fork server's hub (0, or -1). */
int adopt_guard(struct reader *state, const unsigned char *on_the_way, size_t len, int hub_fd);
/* nono-reaper --repair (reaper_outer.c): one round of the view guard, for the fork server. */
int repair_main(int argc, char **argv);

/* reaper.c: the init's life once its program runs (forward, reap, answer, report). */
_Noreturn void serve_init(pid_t program, int exit_fd, int control, int subreaper, int lifeline);
/* nono-reaper --init (reaper_init.c): the warm direct init from its first instruction. */
int init_main(int argc, char **argv);
/* nono-reaper --spawner (reaper_init.c): init_main's helper for every launcher, started once. */
int spawner_main(int argc, char **argv);
/* nono-reaper --exec (reaper_init.c): the Python init's spawned program, its limit its own. */
int exec_main(int argc, char **argv);
/* reaper_view.c: the session's root and view, before any plan (exit 126 on any failure). */
struct trees {
    int fds[64]; /* the idmapped trees (_mounts.idmapped_trees), for the IDMAP steps in order */
    size_t n, next;
};
int view_prepare(struct reader *config, int ns_flags, struct trees *trees);
/* reaper_confine.c: the launch's confinement; each returns 0 or an errno, with a detail. */
struct rule {
    char *path;
    uint64_t allowed;
    int is_file;
    dev_t dev; /* what the rule was put on; 0, 0: the path was gone */
    ino_t ino;
};
struct ruleset {
    uint32_t abi; /* 0: no Landlock */
    uint64_t fs, net, scoped;
    uint32_t n, n_ports;
    struct rule *rules;
    uint64_t (*ports)[2]; /* port, allowed */
    int fd;               /* built, not enforced; -1: none */
};
struct ruleset *ruleset_load(struct reader *config);
int ruleset_build(struct ruleset *rs, const char **detail);
int ruleset_current(const struct ruleset *rs);
int ruleset_enforce(struct ruleset *rs, const char **detail);
int drop_capabilities(void);
int session_rlimits(uint64_t max_processes);
int install_seccomp(const unsigned char *prog, size_t len);

#endif
