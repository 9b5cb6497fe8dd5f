/*
 * loadgen.c -- epoll load generator for socketkit's benchmarks.
 *
 * One thread, non-blocking sockets, level-triggered epoll.  Every byte that
 * comes back is compared with the byte that was sent: each connection (or
 * datagram) sends a slice of one pseudo-random pattern, starting at its own
 * offset, so a reply that is out of order, short, duplicated or from another
 * connection fails verification.
 *
 * Modes (common: --host ADDR (127.0.0.1) --port PORT):
 *   echo  --conns C --size S --depth D --duration T --warmup W
 *         each connection keeps D requests of S bytes in flight; a request
 *         completes when its S echoed bytes are back and verified.
 *   bulk  --bytes N      one connection, N bytes written and read back concurrently.
 *   udp   --sockets K --window W --size S --duration T --warmup W
 *         K connected UDP sockets, W datagrams in flight each; a socket that
 *         has heard nothing for --udp-timeout-ms resends its whole window
 *         (lost datagrams are counted, not fatal).
 *   idle  --conns N      open N connections, echo one byte on each, print
 *         "ready {json}" when all are up, hold them until stdin reaches EOF or
 *         SIGTERM/SIGINT arrives, then close them.  Each line on stdin meanwhile
 *         echoes one more byte on every held connection and prints
 *         "echoed {json}" (how many came back, how long the slowest took).
 *
 * Common: --socks5 ADDR:PORT makes --host/--port a SOCKS5 proxy (RFC 1928, no
 * authentication) and asks it, on every new connection, for a tunnel to
 * ADDR:PORT (IPv4) before any measured byte: blocking, once per connection,
 * in the connect phase.
 *
 * Echo results include fairness: "conns_without_replies" (live connections
 * that completed no request while counting) and "min_conn_requests".
 *
 * Results: one JSON object on stdout (for idle: the "ready" line, then the
 * JSON object at exit).  Exit status 0 unless the arguments are wrong or the
 * server cannot be reached at all.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define PATLEN 1048573u               /* prime: message boundaries drift through it */
#define MAXCHUNK (256u * 1024u)       /* largest single read or write */
#define MAX_EVENTS 1024

static unsigned char *pattern;        /* PATLEN + MAXCHUNK bytes, tail repeats head */
static unsigned char rbuf[MAXCHUNK];
static volatile sig_atomic_t stop_flag;
static struct sockaddr_in server;
/* The tunnel's target when --socks5 is given (sin_port 0: no proxy). */
static struct sockaddr_in socks_target;

/* ------------------------------------------------------------------ utils */

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void on_signal(int sig) { (void)sig; stop_flag = 1; }

static void raise_nofile(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void make_pattern(void) {
    pattern = malloc(PATLEN + MAXCHUNK);
    if (!pattern) { perror("malloc"); exit(1); }
    uint64_t x = 0x9E3779B97F4A7C15ull;   /* xorshift64* */
    for (size_t i = 0; i < PATLEN; i++) {
        x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
        pattern[i] = (unsigned char)((x * 0x2545F4914F6CDD1Dull) >> 56);
    }
    memcpy(pattern + PATLEN, pattern, MAXCHUNK);
}

/* Pattern bytes for stream offset `off` of a stream that starts at `base`. */
static inline const unsigned char *pat_at(uint64_t base, uint64_t off) {
    return pattern + (size_t)((base + off) % PATLEN);
}

static int tcp_socket(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static void ep_set(int ep, int op, int fd, unsigned events, uint64_t data) {
    struct epoll_event ev;
    ev.events = events;
    ev.data.u64 = data;
    if (epoll_ctl(ep, op, fd, &ev) < 0 && op != EPOLL_CTL_DEL) {
        perror("epoll_ctl");
        exit(1);
    }
}

/* ---------------------------------------------------------- latency histo */
/* Log-linear microsecond buckets: exact below 1024 us, then 64 per power of 2. */
#define HBUCKETS (1024 + 54 * 64)
static uint64_t histo[HBUCKETS];

static inline int hbucket(uint64_t us) {
    if (us < 1024) return (int)us;
    int msb = 63 - __builtin_clzll(us);
    int idx = 1024 + (msb - 10) * 64 + (int)((us >> (msb - 6)) & 63);
    return idx < HBUCKETS ? idx : HBUCKETS - 1;
}

static double hvalue(int idx) {
    if (idx < 1024) return idx;
    int msb = (idx - 1024) / 64 + 10, mant = (idx - 1024) % 64;
    return (double)((64ull + (uint64_t)mant) << (msb - 6));
}

static double hpercentile(double p) {
    uint64_t total = 0;
    for (int i = 0; i < HBUCKETS; i++) total += histo[i];
    if (!total) return 0;
    uint64_t want = (uint64_t)(p * (double)total);
    if (want >= total) want = total - 1;
    uint64_t seen = 0;
    for (int i = 0; i < HBUCKETS; i++) {
        seen += histo[i];
        if (seen > want) return hvalue(i);
    }
    return hvalue(HBUCKETS - 1);
}

/* ------------------------------------------------------------- arguments */

struct opts {
    const char *mode, *host;
    int port, conns, size, depth, sockets, window, udp_timeout_ms, connect_timeout;
    double duration, warmup;
    uint64_t bytes;
};

static void usage(void) {
    fprintf(stderr,
        "usage: loadgen MODE --port P [--host ADDR] [options]\n"
        "  echo --conns C --size S --depth D --duration T --warmup W\n"
        "  bulk --bytes N\n"
        "  udp  --sockets K --window W --size S --duration T --warmup W [--udp-timeout-ms MS]\n"
        "  idle --conns N\n"
        "  common: --connect-timeout SECONDS (default 30), --socks5 ADDR:PORT\n");
    exit(2);
}

/* ------------------------------------------------------- connect phase */

static int io_exact(int fd, unsigned char *buf, size_t n, int writing) {
    size_t done = 0;
    while (done < n) {
        ssize_t r = writing ? write(fd, buf + done, n - done) : read(fd, buf + done, n - done);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        done += (size_t)r;
    }
    return 0;
}

/*
 * The SOCKS5 CONNECT handshake on a connected socket, blocking with a 10 s
 * receive timeout, then back to non-blocking. 0 when the tunnel is open.
 * The reply is read whole: 10 bytes for an IPv4 bound address, 22 for IPv6.
 */
static int socks5_handshake(int fd) {
    int flags = fcntl(fd, F_GETFL);
    struct timeval tv = {10, 0};
    fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    unsigned char greet[3] = {5, 1, 0}, reply[22];
    unsigned char req[10] = {5, 1, 0, 1};
    memcpy(req + 4, &socks_target.sin_addr, 4);
    memcpy(req + 8, &socks_target.sin_port, 2);
    int ok = io_exact(fd, greet, 3, 1) == 0 && io_exact(fd, reply, 2, 0) == 0
        && reply[0] == 5 && reply[1] == 0
        && io_exact(fd, req, 10, 1) == 0 && io_exact(fd, reply, 4, 0) == 0
        && reply[1] == 0 && (reply[3] == 1 || reply[3] == 4)
        && io_exact(fd, reply + 4, reply[3] == 1 ? 6 : 18, 0) == 0;
    tv.tv_sec = 0;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    fcntl(fd, F_SETFL, flags);
    return ok ? 0 : -1;
}

struct conn {
    int fd;
    int state;             /* 0 connecting, 1 up, 2 dead */
    int out_armed;         /* EPOLLOUT is in the interest set */
    uint64_t base;         /* pattern offset of this stream */
    uint64_t sent, want, recvd;
    uint64_t *stamps;      /* send time of in-flight requests (ring of depth) */
    uint64_t counted;      /* requests completed while counting (fairness) */
};

/*
 * Connect all connections, at most `max_pending` handshakes at a time (so the
 * server's accept queue does not overflow and SYNs are not retried after 1 s).
 * Returns the number of established connections.
 */
static int connect_all(int ep, struct conn *cs, int n, int max_pending, double timeout_s,
                       int *failures) {
    int next = 0, pending = 0, up = 0, failed = 0;
    uint64_t deadline = now_ns() + (uint64_t)(timeout_s * 1e9);
    struct epoll_event evs[MAX_EVENTS];
    while (up + failed < n) {
        while (next < n && pending < max_pending) {
            struct conn *c = &cs[next];
            c->fd = tcp_socket();
            if (c->fd < 0) { c->state = 2; failed++; next++; continue; }
            int r = connect(c->fd, (struct sockaddr *)&server, sizeof server);
            if (r < 0 && errno != EINPROGRESS) {
                close(c->fd); c->fd = -1; c->state = 2; failed++; next++; continue;
            }
            c->state = 0;
            ep_set(ep, EPOLL_CTL_ADD, c->fd, EPOLLOUT, (uint64_t)next);
            pending++;
            next++;
        }
        if (pending == 0) break;
        uint64_t t = now_ns();
        if (t >= deadline || stop_flag) break;
        int k = epoll_wait(ep, evs, MAX_EVENTS, 100);
        for (int i = 0; i < k; i++) {
            struct conn *c = &cs[evs[i].data.u64];
            if (c->state != 0) continue;
            int err = 0;
            socklen_t len = sizeof err;
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
            pending--;
            if (!err && socks_target.sin_port && socks5_handshake(c->fd) < 0) err = EPROTO;
            if (err) {
                ep_set(ep, EPOLL_CTL_DEL, c->fd, 0, 0);
                close(c->fd); c->fd = -1; c->state = 2; failed++;
            } else {
                c->state = 1; up++;
                ep_set(ep, EPOLL_CTL_MOD, c->fd, 0, evs[i].data.u64); /* quiet until used */
            }
        }
    }
    for (int i = 0; i < n; i++) {
        if (i >= next) {                 /* never attempted (deadline or signal) */
            cs[i].fd = -1; cs[i].state = 2; failed++;
        } else if (cs[i].state == 0) {   /* handshake timed out */
            ep_set(ep, EPOLL_CTL_DEL, cs[i].fd, 0, 0);
            close(cs[i].fd);
            cs[i].fd = -1; cs[i].state = 2; failed++;
        }
    }
    *failures = failed;
    return up;
}

static void kill_conn(int ep, struct conn *c) {
    if (c->state == 2) return;
    ep_set(ep, EPOLL_CTL_DEL, c->fd, 0, 0);
    close(c->fd);
    c->fd = -1;
    c->state = 2;
}

/* Watch EPOLLOUT only while there is unsent data; no syscall when nothing changes. */
static void want_out(int ep, struct conn *c, int on, uint64_t data) {
    if (c->out_armed == on) return;
    c->out_armed = on;
    ep_set(ep, EPOLL_CTL_MOD, c->fd, on ? (EPOLLIN | EPOLLOUT) : EPOLLIN, data);
}

/* -------------------------------------------------------------- echo */

struct echo_stats {
    uint64_t requests, bytes, errors, verify_failures;
    int counting;
};

/* Write as much of [sent, want) as the socket takes. -1: error. */
static int pump_out(struct conn *c) {
    while (c->sent < c->want) {
        uint64_t n = c->want - c->sent;
        if (n > MAXCHUNK) n = MAXCHUNK;
        ssize_t w = send(c->fd, pat_at(c->base, c->sent), (size_t)n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return 1;
            return -1;
        }
        c->sent += (uint64_t)w;
    }
    return 0;
}

static int run_echo(struct opts *o) {
    int n = o->conns;
    uint64_t size = (uint64_t)o->size, depth = (uint64_t)o->depth;
    if (n <= 0 || size == 0 || depth == 0 || size * depth > 64ull * 1024 * 1024) usage();
    int ep = epoll_create1(0);
    struct conn *cs = calloc((size_t)n, sizeof *cs);
    uint64_t *stamps = calloc((size_t)n * depth, sizeof *stamps);
    if (!cs || !stamps) { perror("calloc"); return 1; }
    for (int i = 0; i < n; i++) {
        cs[i].base = ((uint64_t)i * 7919u * 131u) % PATLEN;
        cs[i].stamps = stamps + (size_t)i * depth;
    }
    int failures = 0;
    uint64_t t_conn = now_ns();
    int up = connect_all(ep, cs, n, 256, o->connect_timeout, &failures);
    double connect_s = (double)(now_ns() - t_conn) / 1e9;
    if (up == 0) {
        printf("{\"mode\":\"echo\",\"error\":\"no connection could be established\","
               "\"connect_failures\":%d}\n", failures);
        return 1;
    }
    struct echo_stats st = {0};
    uint64_t t0 = now_ns();
    uint64_t t_measure = t0 + (uint64_t)(o->warmup * 1e9);
    uint64_t t_end = t_measure + (uint64_t)(o->duration * 1e9);
    /* Fill every pipeline. */
    for (int i = 0; i < n; i++) {
        struct conn *c = &cs[i];
        if (c->state != 1) continue;
        c->want = depth * size;
        for (uint64_t k = 0; k < depth; k++) c->stamps[k] = t0;
        int r = pump_out(c);
        if (r < 0) { st.errors++; kill_conn(ep, c); continue; }
        c->out_armed = r;
        ep_set(ep, EPOLL_CTL_MOD, c->fd, r ? (EPOLLIN | EPOLLOUT) : EPOLLIN, (uint64_t)i);
    }
    struct epoll_event evs[MAX_EVENTS];
    int alive = up;
    uint64_t now = t0;
    while (!stop_flag && alive > 0) {
        now = now_ns();
        if (!st.counting && now >= t_measure) {
            st.counting = 1;
            memset(histo, 0, sizeof histo);
            t_measure = now;
            t_end = now + (uint64_t)(o->duration * 1e9);
        }
        if (now >= t_end) break;
        int k = epoll_wait(ep, evs, MAX_EVENTS, 50);
        if (k < 0 && errno != EINTR) { perror("epoll_wait"); break; }
        for (int e = 0; e < k; e++) {
            struct conn *c = &cs[evs[e].data.u64];
            if (c->state != 1) continue;
            int dead = 0;
            if (evs[e].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                /* Never read past what was sent: anything beyond is an error anyway. */
                uint64_t room = c->sent - c->recvd;
                if (room == 0) {
                    /* Data or EOF with nothing outstanding: peek to classify. */
                    ssize_t r = recv(c->fd, rbuf, 1, MSG_PEEK);
                    if (r > 0) { st.verify_failures++; dead = 1; }
                    else if (r == 0 || (errno != EAGAIN && errno != EINTR)) { st.errors++; dead = 1; }
                } else {
                    if (room > MAXCHUNK) room = MAXCHUNK;
                    ssize_t r = recv(c->fd, rbuf, (size_t)room, 0);
                    if (r == 0) { st.errors++; dead = 1; }
                    else if (r < 0) {
                        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                            st.errors++; dead = 1;
                        }
                    } else {
                        if (memcmp(rbuf, pat_at(c->base, c->recvd), (size_t)r) != 0) {
                            st.verify_failures++; dead = 1;
                        } else {
                            uint64_t before = c->recvd / size;
                            c->recvd += (uint64_t)r;
                            uint64_t done = c->recvd / size - before;
                            if (done) {
                                uint64_t t = now_ns();
                                if (st.counting) {
                                    c->counted += done;
                                    st.requests += done;
                                    st.bytes += done * size;
                                    for (uint64_t m = before; m < before + done; m++)
                                        histo[hbucket((t - c->stamps[m % depth]) / 1000)]++;
                                }
                                /* Issue as many new requests as completed. */
                                for (uint64_t m = c->want / size; m < c->want / size + done; m++)
                                    c->stamps[m % depth] = t;
                                c->want += done * size;
                                int w = pump_out(c);
                                if (w < 0) { st.errors++; dead = 1; }
                                else want_out(ep, c, w, evs[e].data.u64);
                            }
                        }
                    }
                }
            }
            if (!dead && (evs[e].events & EPOLLOUT) && c->state == 1) {
                int w = pump_out(c);
                if (w < 0) { st.errors++; dead = 1; }
                else if (w == 0) want_out(ep, c, 0, evs[e].data.u64);
            }
            if (dead) { kill_conn(ep, c); alive--; }
        }
    }
    double secs = st.counting ? (double)(now_ns() - t_measure) / 1e9 : 0.0;
    int starved = 0;
    uint64_t min_req = UINT64_MAX;
    for (int i = 0; i < n; i++) {
        if (cs[i].state != 1) continue;
        if (cs[i].counted == 0) starved++;
        if (cs[i].counted < min_req) min_req = cs[i].counted;
    }
    if (min_req == UINT64_MAX) min_req = 0;
    printf("{\"mode\":\"echo\",\"connections\":%d,\"connected\":%d,\"connect_failures\":%d,"
           "\"conns_without_replies\":%d,\"min_conn_requests\":%llu,"
           "\"connect_seconds\":%.3f,\"alive_at_end\":%d,\"size\":%d,\"depth\":%d,"
           "\"requests\":%llu,\"seconds\":%.6f,\"req_per_s\":%.1f,\"bytes\":%llu,"
           "\"MiB_per_s\":%.2f,\"errors\":%llu,\"verify_failures\":%llu,"
           "\"latency_us\":{\"p50\":%.0f,\"p99\":%.0f,\"p999\":%.0f}}\n",
           n, up, failures, starved, (unsigned long long)min_req,
           connect_s, alive, o->size, o->depth,
           (unsigned long long)st.requests, secs,
           secs > 0 ? (double)st.requests / secs : 0.0, (unsigned long long)st.bytes,
           secs > 0 ? (double)st.bytes / secs / 1048576.0 : 0.0,
           (unsigned long long)st.errors, (unsigned long long)st.verify_failures,
           hpercentile(0.50), hpercentile(0.99), hpercentile(0.999));
    return 0;
}

/* -------------------------------------------------------------- bulk */

static int run_bulk(struct opts *o) {
    uint64_t total = o->bytes;
    if (total == 0) usage();
    int ep = epoll_create1(0);
    struct conn c = {0};
    c.base = 12345;
    int failures = 0;
    if (connect_all(ep, &c, 1, 1, o->connect_timeout, &failures) != 1) {
        printf("{\"mode\":\"bulk\",\"error\":\"connection failed\",\"connect_failures\":1}\n");
        return 1;
    }
    uint64_t errors = 0, verify_failures = 0;
    uint64_t t0 = now_ns();
    c.want = total;
    ep_set(ep, EPOLL_CTL_MOD, c.fd, EPOLLIN | EPOLLOUT, 0);
    struct epoll_event evs[4];
    const char *why = "";
    uint64_t last_progress = t0, last_recvd = 0;
    while (!stop_flag && c.recvd < total) {
        int k = epoll_wait(ep, evs, 4, 1000);
        if (k < 0 && errno != EINTR) { errors++; why = "epoll_wait"; break; }
        uint64_t t = now_ns();
        if (c.recvd != last_recvd) { last_recvd = c.recvd; last_progress = t; }
        else if (t - last_progress > 30000000000ull) { errors++; why = "stalled for 30 s"; break; }
        for (int e = 0; e < k; e++) {
            if (evs[e].events & EPOLLOUT) {
                int w = pump_out(&c);
                if (w < 0) { errors++; why = "send failed"; goto out; }
                if (w == 0) ep_set(ep, EPOLL_CTL_MOD, c.fd, EPOLLIN, 0);
            }
            if (evs[e].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                for (int rounds = 0; rounds < 8 && c.recvd < total; rounds++) {
                    uint64_t room = c.sent - c.recvd;
                    if (room == 0) room = 1; /* detect EOF / extra data */
                    if (room > MAXCHUNK) room = MAXCHUNK;
                    ssize_t r = recv(c.fd, rbuf, (size_t)room, 0);
                    if (r == 0) { errors++; why = "server closed the connection"; goto out; }
                    if (r < 0) {
                        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) break;
                        errors++; why = "recv failed"; goto out;
                    }
                    if (c.recvd + (uint64_t)r > c.sent ||
                        memcmp(rbuf, pat_at(c.base, c.recvd), (size_t)r) != 0) {
                        verify_failures++; why = "echoed bytes differ"; goto out;
                    }
                    c.recvd += (uint64_t)r;
                }
            }
        }
    }
out:;
    double secs = (double)(now_ns() - t0) / 1e9;
    printf("{\"mode\":\"bulk\",\"bytes\":%llu,\"sent\":%llu,\"received\":%llu,\"seconds\":%.6f,"
           "\"MiB_per_s\":%.2f,\"errors\":%llu,\"verify_failures\":%llu,\"reason\":\"%s\"}\n",
           (unsigned long long)total, (unsigned long long)c.sent,
           (unsigned long long)c.recvd, secs,
           secs > 0 ? (double)c.recvd / secs / 1048576.0 : 0.0,
           (unsigned long long)errors, (unsigned long long)verify_failures, why);
    kill_conn(ep, &c);
    return 0;
}

/* --------------------------------------------------------------- udp */

struct usock {
    int fd;
    uint64_t seq;          /* next sequence number to send */
    int inflight;
    uint64_t last_progress;
};

#define UDP_MAX 65507

static void udp_fill(unsigned char *d, int size, uint64_t id) {
    memcpy(d, &id, 8 < size ? 8 : (size_t)size);
    if (size > 8) memcpy(d + 8, pattern + (id * 40503u) % PATLEN, (size_t)size - 8);
}

static int run_udp(struct opts *o) {
    int k = o->sockets, win = o->window, size = o->size;
    if (k <= 0 || win <= 0 || size < 8 || size > UDP_MAX) usage();
    int ep = epoll_create1(0);
    struct usock *us = calloc((size_t)k, sizeof *us);
    unsigned char *sbuf = malloc(UDP_MAX), *expect = malloc(UDP_MAX);
    if (!us || !sbuf || !expect) { perror("malloc"); return 1; }
    for (int i = 0; i < k; i++) {
        us[i].fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        if (us[i].fd < 0 || connect(us[i].fd, (struct sockaddr *)&server, sizeof server) < 0) {
            perror("udp socket");
            return 1;
        }
        ep_set(ep, EPOLL_CTL_ADD, us[i].fd, EPOLLIN, (uint64_t)i);
    }
    uint64_t replies = 0, sent = 0, lost = 0, resends = 0, verify_failures = 0, errors = 0;
    uint64_t m_replies = 0, m_bytes = 0;
    int counting = 0;
    uint64_t t0 = now_ns(), t_measure = t0 + (uint64_t)(o->warmup * 1e9);
    uint64_t t_end = t_measure + (uint64_t)(o->duration * 1e9);
    uint64_t tmo = (uint64_t)o->udp_timeout_ms * 1000000ull;
#define UDP_SEND(s) do { \
        uint64_t id_ = ((uint64_t)(s - us) << 48) | (s)->seq; \
        udp_fill(sbuf, size, id_); \
        if (send((s)->fd, sbuf, (size_t)size, 0) == size) { (s)->seq++; (s)->inflight++; sent++; } \
        else if (errno != EAGAIN && errno != ECONNREFUSED && errno != ENOBUFS) errors++; \
    } while (0)
    for (int i = 0; i < k; i++) {
        us[i].last_progress = t0;
        for (int j = 0; j < win; j++) UDP_SEND(&us[i]);
    }
    struct epoll_event evs[64];
    while (!stop_flag) {
        uint64_t now = now_ns();
        if (!counting && now >= t_measure) {
            counting = 1;
            t_measure = now;
            t_end = now + (uint64_t)(o->duration * 1e9);
        }
        if (now >= t_end) break;
        int n = epoll_wait(ep, evs, 64, 2);
        now = now_ns();
        for (int e = 0; e < n; e++) {
            struct usock *s = &us[evs[e].data.u64];
            for (;;) {
                ssize_t r = recv(s->fd, rbuf, sizeof rbuf, 0);
                if (r < 0) {
                    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
                    if (errno == EINTR || errno == ECONNREFUSED) continue;
                    errors++;
                    break;
                }
                uint64_t id = 0;
                if (r == size) memcpy(&id, rbuf, 8);
                if (r == size && (id >> 48) == (uint64_t)(s - us) && (id & 0xFFFFFFFFFFFFull) < s->seq) {
                    udp_fill(expect, size, id);
                    if (memcmp(expect, rbuf, (size_t)size) != 0) { verify_failures++; continue; }
                } else {
                    verify_failures++;
                    continue;
                }
                replies++;
                if (counting) { m_replies++; m_bytes += (uint64_t)size; }
                s->last_progress = now;
                if (s->inflight > 0) s->inflight--;
                if (s->inflight < win) UDP_SEND(s);
            }
        }
        for (int i = 0; i < k; i++) {
            struct usock *s = &us[i];
            if (now - s->last_progress > tmo) {
                /* Nothing heard for a while: assume the window was lost, resend it. */
                lost += (uint64_t)s->inflight;
                s->inflight = 0;
                resends++;
                s->last_progress = now;
                for (int j = 0; j < win; j++) UDP_SEND(s);
            }
        }
    }
    double secs = counting ? (double)(now_ns() - t_measure) / 1e9 : 0.0;
    printf("{\"mode\":\"udp\",\"sockets\":%d,\"window\":%d,\"size\":%d,\"datagrams\":%llu,"
           "\"seconds\":%.6f,\"datagrams_per_s\":%.1f,\"req_per_s\":%.1f,\"MiB_per_s\":%.2f,"
           "\"sent\":%llu,\"replies\":%llu,\"lost\":%llu,\"resends\":%llu,\"errors\":%llu,"
           "\"verify_failures\":%llu}\n",
           k, win, size, (unsigned long long)m_replies, secs,
           secs > 0 ? (double)m_replies / secs : 0.0, secs > 0 ? (double)m_replies / secs : 0.0,
           secs > 0 ? (double)m_bytes / secs / 1048576.0 : 0.0,
           (unsigned long long)sent, (unsigned long long)replies, (unsigned long long)lost,
           (unsigned long long)resends, (unsigned long long)errors,
           (unsigned long long)verify_failures);
    return 0;
}

/* -------------------------------------------------------------- idle */

/* One more byte each way on every held connection (idle mode, on a line of stdin):
 * proves the idle connections are still served; prints how long the slowest took. */
static void echo_all(int ep, struct conn *cs, int n, double timeout, int *closed) {
    uint64_t t0 = now_ns();
    int sent = 0, echoed = 0, failures = 0;
    for (int i = 0; i < n; i++) {
        struct conn *c = &cs[i];
        if (c->state != 1) continue;
        unsigned char b = (unsigned char)('a' + i % 26);
        if (send(c->fd, &b, 1, MSG_NOSIGNAL) != 1) { failures++; continue; }
        c->want = 1;
        sent++;
        ep_set(ep, EPOLL_CTL_MOD, c->fd, EPOLLIN | EPOLLRDHUP, (uint64_t)i);
    }
    uint64_t deadline = t0 + (uint64_t)(timeout * 1e9);
    struct epoll_event evs[MAX_EVENTS];
    while (echoed + failures < sent && now_ns() < deadline) {
        int k = epoll_wait(ep, evs, MAX_EVENTS, 100);
        for (int e = 0; e < k; e++) {
            if (evs[e].data.u64 == (uint64_t)-1) continue;
            int i = (int)evs[e].data.u64;
            struct conn *c = &cs[i];
            if (c->state != 1 || !c->want) continue;
            unsigned char b;
            ssize_t r = recv(c->fd, &b, 1, 0);
            if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            c->want = 0;
            if (r == 1 && b == (unsigned char)('a' + i % 26)) {
                echoed++;
                ep_set(ep, EPOLL_CTL_MOD, c->fd, EPOLLRDHUP, (uint64_t)i);
            } else {
                failures++;
                (*closed)++;
                kill_conn(ep, c);
            }
        }
    }
    printf("echoed {\"mode\":\"idle-echo\",\"sent\":%d,\"echoed\":%d,\"failures\":%d,"
           "\"seconds\":%.3f}\n", sent, echoed, failures, (double)(now_ns() - t0) / 1e9);
    fflush(stdout);
}

static int run_idle(struct opts *o) {
    int n = o->conns;
    if (n <= 0) usage();
    int ep = epoll_create1(0);
    struct conn *cs = calloc((size_t)n, sizeof *cs);
    if (!cs) { perror("calloc"); return 1; }
    uint64_t t0 = now_ns();
    int failures = 0;
    int up = connect_all(ep, cs, n, 256, o->connect_timeout, &failures);
    /* One byte each way proves the server accepted and serves the connection. */
    int echoed = 0, errors = 0, verify_failures = 0;
    for (int i = 0; i < n; i++) {
        struct conn *c = &cs[i];
        if (c->state != 1) continue;
        unsigned char b = (unsigned char)('A' + i % 26);
        if (send(c->fd, &b, 1, MSG_NOSIGNAL) != 1) { errors++; kill_conn(ep, c); continue; }
        ep_set(ep, EPOLL_CTL_MOD, c->fd, EPOLLIN, (uint64_t)i);
    }
    uint64_t deadline = now_ns() + (uint64_t)(o->connect_timeout * 1e9);
    struct epoll_event evs[MAX_EVENTS];
    while (!stop_flag && echoed + errors + verify_failures < up && now_ns() < deadline) {
        int k = epoll_wait(ep, evs, MAX_EVENTS, 100);
        for (int e = 0; e < k; e++) {
            int i = (int)evs[e].data.u64;
            struct conn *c = &cs[i];
            if (c->state != 1) continue;
            unsigned char b;
            ssize_t r = recv(c->fd, &b, 1, 0);
            if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            if (r == 1 && b == (unsigned char)('A' + i % 26)) {
                echoed++;
                ep_set(ep, EPOLL_CTL_MOD, c->fd, EPOLLRDHUP, (uint64_t)i); /* watch for close */
            } else {
                if (r == 1) verify_failures++; else errors++;
                kill_conn(ep, c);
            }
        }
    }
    double secs = (double)(now_ns() - t0) / 1e9;
    printf("ready {\"mode\":\"idle\",\"connections\":%d,\"connected\":%d,\"echoed\":%d,"
           "\"connect_failures\":%d,\"errors\":%d,\"verify_failures\":%d,\"seconds\":%.3f}\n",
           n, up, echoed, failures, errors, verify_failures, secs);
    fflush(stdout);
    /* Hold until stdin closes or a signal arrives. */
    ep_set(ep, EPOLL_CTL_ADD, 0, EPOLLIN, (uint64_t)-1);
    int closed_by_server = 0, done = 0;
    while (!stop_flag && !done) {
        int k = epoll_wait(ep, evs, MAX_EVENTS, 1000);
        for (int e = 0; e < k; e++) {
            if (evs[e].data.u64 == (uint64_t)-1) {
                char tmp[256];
                ssize_t r = read(0, tmp, sizeof tmp);
                if (r <= 0) done = 1;
                else echo_all(ep, cs, n, o->connect_timeout, &closed_by_server);
                continue;
            }
            struct conn *c = &cs[evs[e].data.u64];
            if (c->state == 1) { closed_by_server++; kill_conn(ep, c); }
        }
    }
    for (int i = 0; i < n; i++) if (cs[i].state == 1) close(cs[i].fd);
    printf("{\"mode\":\"idle\",\"closed_by_server\":%d}\n", closed_by_server);
    return 0;
}

/* -------------------------------------------------------------- main */

int main(int argc, char **argv) {
    struct opts o = {0};
    o.host = "127.0.0.1";
    o.port = -1;
    o.conns = 1; o.size = 64; o.depth = 1; o.sockets = 4; o.window = 16;
    o.udp_timeout_ms = 20; o.connect_timeout = 30;
    o.duration = 5; o.warmup = 1;
    if (argc < 2) usage();
    o.mode = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc) usage();
        const char *v = argv[++i];
        if (!strcmp(a, "--host")) o.host = v;
        else if (!strcmp(a, "--port")) o.port = atoi(v);
        else if (!strcmp(a, "--conns")) o.conns = atoi(v);
        else if (!strcmp(a, "--size")) o.size = atoi(v);
        else if (!strcmp(a, "--depth")) o.depth = atoi(v);
        else if (!strcmp(a, "--duration")) o.duration = atof(v);
        else if (!strcmp(a, "--warmup")) o.warmup = atof(v);
        else if (!strcmp(a, "--bytes")) o.bytes = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--sockets")) o.sockets = atoi(v);
        else if (!strcmp(a, "--window")) o.window = atoi(v);
        else if (!strcmp(a, "--udp-timeout-ms")) o.udp_timeout_ms = atoi(v);
        else if (!strcmp(a, "--connect-timeout")) o.connect_timeout = atoi(v);
        else if (!strcmp(a, "--socks5")) {
            char host[64];
            const char *colon = strrchr(v, ':');
            if (!colon || (size_t)(colon - v) >= sizeof host) usage();
            memcpy(host, v, (size_t)(colon - v));
            host[colon - v] = 0;
            socks_target.sin_family = AF_INET;
            socks_target.sin_port = htons((unsigned short)atoi(colon + 1));
            if (inet_pton(AF_INET, host, &socks_target.sin_addr) != 1 || !socks_target.sin_port)
                usage();
        }
        else usage();
    }
    if (o.port <= 0 || o.port > 65535) usage();
    memset(&server, 0, sizeof server);
    server.sin_family = AF_INET;
    server.sin_port = htons((unsigned short)o.port);
    if (inet_pton(AF_INET, o.host, &server.sin_addr) != 1) {
        fprintf(stderr, "loadgen: bad IPv4 address %s\n", o.host);
        return 2;
    }
    raise_nofile();
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    make_pattern();
    if (!strcmp(o.mode, "echo")) return run_echo(&o);
    if (!strcmp(o.mode, "bulk")) return run_bulk(&o);
    if (!strcmp(o.mode, "udp")) return run_udp(&o);
    if (!strcmp(o.mode, "idle")) return run_idle(&o);
    usage();
    return 2;
}
