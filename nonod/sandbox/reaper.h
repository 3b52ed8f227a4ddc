/* nono-reaper's parts (reaper.c: the init; reaper_guard.c: the creation guard). */
#ifndef NONO_REAPER_H
#define NONO_REAPER_H

#include <stddef.h>
#include <stdint.h>

/* reaper_util.c */
int number(const char *s, long *out); /* a whole decimal int argument; -1 if it is not */
void put32(unsigned char *p, uint32_t v); /* little endian */
void write_all(int fd, const void *data, size_t len);
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

/* Read the creation guard's configuration from config_fd (closed) and serve listener_fd;
 * -1 if the configuration is unreadable. */
int guard_load(int config_fd, int listener_fd);
/* The listener being served, or -1. */
int guard_listener(void);
/* Answer one notification; -1 when the listener is broken (then call guard_stop). */
int guard_serve_one(void);
void guard_stop(void);

/* nono-reaper --outer (reaper_outer.c): the launcher's outer process, the view guard. */
int outer_main(int argc, char **argv);
/* nono-reaper --repair (reaper_outer.c): one round of the view guard, for the fork server. */
int repair_main(int argc, char **argv);

#endif
