/*
 * relay: a TCP relay in C, one thread, epoll, non-blocking; the ceiling for
 * socketkit relay in benchmarks/relay.py (as echo_server is for the engine).
 *
 *   relay LISTEN_PORT TARGET_PORT        (127.0.0.1; LISTEN_PORT 0 = ephemeral)
 *
 * Per accepted client the upstream is connected (non-blocking); each
 * direction has a 256 KiB buffer: read while it has room, write while it
 * holds bytes, so a slow side stops the reads of the other (flow control).
 * An end of stream is passed on with shutdown(SHUT_WR) once the buffer is
 * written; the pair closes when both directions ended, or at the first
 * error. Prints "listening on port N" (flushed) once ready.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF (256 * 1024)

struct pair;
struct side {
    int fd;
    struct pair *pair;
    struct side *peer;
    char *buf; /* bytes read here, to be written to peer */
    size_t start, end;
    int eof;      /* read side ended */
    int shut;     /* peer's write side shut */
    int connecting;
};
struct pair {
    struct side a, b;
    int dead;
};

static int ep;
static struct sockaddr_in target;

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void raise_nofile(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void watch(struct side *s) {
    struct epoll_event ev = {0};
    if (s->connecting) {
        ev.events = EPOLLOUT;
    } else {
        if (!s->eof && s->end < BUF) ev.events |= EPOLLIN;
        if (s->peer->end > s->peer->start) ev.events |= EPOLLOUT;
    }
    ev.data.ptr = s;
    epoll_ctl(ep, EPOLL_CTL_MOD, s->fd, &ev);
}

static void close_pair(struct pair *p) {
    if (p->dead) return;
    p->dead = 1;
    close(p->a.fd);
    close(p->b.fd);
    free(p->a.buf);
    free(p->b.buf);
    /* freed at the end of the event batch by the caller */
}

/* move bytes from s (reading) towards s->peer (writing); 0 ok, -1 error */
static int pump(struct side *s) {
    struct side *out = s->peer;
    for (;;) {
        if (s->end > s->start) {
            ssize_t n = write(out->fd, s->buf + s->start, s->end - s->start);
            if (n < 0) {
                if (errno == EAGAIN) break;
                return -1;
            }
            s->start += (size_t)n;
            if (s->start == s->end) s->start = s->end = 0;
            continue;
        }
        if (s->eof) {
            if (!s->shut) {
                shutdown(out->fd, SHUT_WR);
                s->shut = 1;
            }
            break;
        }
        ssize_t n = read(s->fd, s->buf + s->end, BUF - s->end);
        if (n < 0) {
            if (errno == EAGAIN) break;
            return -1;
        }
        if (n == 0) {
            s->eof = 1;
            continue;
        }
        s->end += (size_t)n;
    }
    return 0;
}

static void service(struct pair *p) {
    if (p->a.connecting || p->b.connecting) return;
    if (pump(&p->a) < 0 || pump(&p->b) < 0) {
        close_pair(p);
        return;
    }
    if (p->a.shut && p->b.shut) {
        close_pair(p);
        return;
    }
    watch(&p->a);
    watch(&p->b);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: relay LISTEN_PORT TARGET_PORT\n");
        return 2;
    }
    raise_nofile();
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(ls, (struct sockaddr *)&sa, sizeof sa) < 0) die("bind");
    if (listen(ls, 4096) < 0) die("listen");
    socklen_t len = sizeof sa;
    getsockname(ls, (struct sockaddr *)&sa, &len);
    target = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    target.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    printf("listening on port %d\n", ntohs(sa.sin_port));
    fflush(stdout);
    struct epoll_event evs[256];
    struct pair *dead[512];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        int ndead = 0;
        for (int i = 0; i < n; i++) {
            struct side *s = evs[i].data.ptr;
            if (s == NULL) {
                for (;;) {
                    int c = accept4(ls, NULL, NULL, SOCK_NONBLOCK);
                    if (c < 0) break;
                    int u = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
                    if (u < 0) {
                        close(c);
                        break;
                    }
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    setsockopt(u, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct pair *p = calloc(1, sizeof *p);
                    p->a = (struct side){.fd = c, .pair = p, .peer = &p->b, .buf = malloc(BUF)};
                    p->b = (struct side){.fd = u, .pair = p, .peer = &p->a, .buf = malloc(BUF)};
                    int r = connect(u, (struct sockaddr *)&target, sizeof target);
                    if (r < 0 && errno != EINPROGRESS) {
                        close(c);
                        close(u);
                        free(p->a.buf);
                        free(p->b.buf);
                        free(p);
                        continue;
                    }
                    p->b.connecting = (r < 0);
                    struct epoll_event e1 = {.events = 0, .data.ptr = &p->a};
                    struct epoll_event e2 = {.events = 0, .data.ptr = &p->b};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &e1);
                    epoll_ctl(ep, EPOLL_CTL_ADD, u, &e2);
                    watch(&p->b);
                    if (!p->b.connecting) service(p);
                }
                continue;
            }
            struct pair *p = s->pair;
            if (p->dead) continue;
            if (s->connecting) {
                int err = 0;
                socklen_t el = sizeof err;
                getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &el);
                if (err) {
                    close_pair(p);
                } else {
                    s->connecting = 0;
                    watch(&p->a);
                    service(p);
                }
            } else {
                service(p);
            }
            if (p->dead && ndead < 512) dead[ndead++] = p;
        }
        for (int i = 0; i < ndead; i++) free(dead[i]);
    }
}
