/*
 * echo_server.c -- reference epoll echo server for socketkit's benchmarks.
 *
 *   echo_server --tcp PORT [--host ADDR]    TCP echo (port 0: kernel picks)
 *   echo_server --udp PORT [--host ADDR]    UDP echo, recvfrom/sendto
 *   echo_server --udp-mmsg PORT [--host ADDR]   UDP echo, recvmmsg/sendmmsg
 *                                              (up to 64 datagrams per call)
 *
 * Prints "listening on port N" (the actual port, flushed) once ready.
 *
 * TCP: one thread, level-triggered epoll, non-blocking sockets.  Each read is
 * written straight back; whatever the kernel does not accept is kept in a
 * per-connection buffer, reading from that connection stops (back-pressure)
 * and EPOLLOUT is armed until the buffer is drained.  Per-connection state is
 * allocated on accept and freed on close, so the idle-connection scenario
 * measures what a minimal C server costs per connection.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF_SIZE (256 * 1024)
#define MAX_EVENTS 1024
#define BACKLOG 4096

struct conn {
    int fd;
    char *pending;      /* bytes read but not yet written back */
    size_t pend_off;    /* first unwritten byte */
    size_t pend_len;    /* end of unwritten bytes */
};

static char buf[BUF_SIZE];
static volatile sig_atomic_t stop_flag;

static void on_signal(int sig) { (void)sig; stop_flag = 1; }

static void raise_nofile(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static int set_nonblock(int fd) {
    int fl = fcntl(fd, F_GETFL, 0);
    return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static void die(const char *what) {
    fprintf(stderr, "echo_server: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int make_socket(int type, const char *host, int port) {
    int fd = socket(AF_INET, type, 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)port);
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "echo_server: bad IPv4 address %s\n", host);
        exit(2);
    }
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("bind");
    if (type == SOCK_STREAM && listen(fd, BACKLOG) < 0) die("listen");
    if (set_nonblock(fd) < 0) die("fcntl");
    socklen_t len = sizeof sa;
    if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0) die("getsockname");
    printf("listening on port %d\n", ntohs(sa.sin_port));
    fflush(stdout);
    return fd;
}

static void close_conn(int ep, struct conn *c) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->pending);
    free(c);
}

static void arm(int ep, struct conn *c, unsigned events) {
    struct epoll_event ev;
    ev.events = events;
    ev.data.ptr = c;
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Flush pending bytes; returns 0 when drained, 1 when still pending, -1 on error. */
static int flush_pending(struct conn *c) {
    while (c->pend_off < c->pend_len) {
        ssize_t n = send(c->fd, c->pending + c->pend_off, c->pend_len - c->pend_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return 1;
            return -1;
        }
        c->pend_off += (size_t)n;
    }
    c->pend_off = c->pend_len = 0;
    return 0;
}

/* Read what is there and echo it.  Returns -1 when the connection is done. */
static int on_readable(int ep, struct conn *c) {
    for (int rounds = 0; rounds < 16; rounds++) {
        ssize_t n = recv(c->fd, buf, sizeof buf, 0);
        if (n == 0) return -1;
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
            return -1;
        }
        size_t off = 0;
        while (off < (size_t)n) {
            ssize_t w = send(c->fd, buf + off, (size_t)n - off, MSG_NOSIGNAL);
            if (w < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK) break;
                return -1;
            }
            off += (size_t)w;
        }
        if (off < (size_t)n) {
            /* Partial write: keep the rest, stop reading until it is out. */
            if (!c->pending && !(c->pending = malloc(BUF_SIZE))) return -1;
            memcpy(c->pending, buf + off, (size_t)n - off);
            c->pend_off = 0;
            c->pend_len = (size_t)n - off;
            arm(ep, c, EPOLLOUT);
            return 0;
        }
        if ((size_t)n < sizeof buf) return 0; /* drained the socket */
    }
    return 0; /* fairness: let other connections run, level-triggered brings us back */
}

static int run_tcp(const char *host, int port) {
    int lfd = make_socket(SOCK_STREAM, host, port);
    int ep = epoll_create1(0);
    if (ep < 0) die("epoll_create1");
    struct epoll_event ev, events[MAX_EVENTS];
    ev.events = EPOLLIN;
    ev.data.ptr = NULL; /* NULL marks the listener */
    if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) < 0) die("epoll_ctl");
    int one = 1;
    while (!stop_flag) {
        int n = epoll_wait(ep, events, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (c == NULL) {
                for (;;) {
                    int cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
                    if (cfd < 0) {
                        if (errno == EINTR || errno == ECONNABORTED) continue;
                        if (errno == EMFILE || errno == ENFILE)
                            fprintf(stderr, "echo_server: accept: %s\n", strerror(errno));
                        break;
                    }
                    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct conn *nc = calloc(1, sizeof *nc);
                    if (!nc) { close(cfd); continue; }
                    nc->fd = cfd;
                    struct epoll_event cev;
                    cev.events = EPOLLIN;
                    cev.data.ptr = nc;
                    if (epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &cev) < 0) { close(cfd); free(nc); }
                }
                continue;
            }
            unsigned evs = events[i].events;
            int rc = 0;
            if (c->pend_len > c->pend_off) {
                /* Waiting for EPOLLOUT; errors also surface through the send. */
                rc = flush_pending(c);
                if (rc == 0) { arm(ep, c, EPOLLIN); rc = 0; }
                else if (rc == 1) rc = 0;
            } else if (evs & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                rc = on_readable(ep, c);
            }
            if (rc < 0) close_conn(ep, c);
        }
    }
    return 0;
}

static int run_udp(const char *host, int port) {
    int fd = make_socket(SOCK_DGRAM, host, port);
    int ep = epoll_create1(0);
    if (ep < 0) die("epoll_create1");
    struct epoll_event ev, events[4];
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
    while (!stop_flag) {
        int n = epoll_wait(ep, events, 4, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (;;) {
            struct sockaddr_storage peer;
            socklen_t plen = sizeof peer;
            ssize_t r = recvfrom(fd, buf, 65536, 0, (struct sockaddr *)&peer, &plen);
            if (r < 0) {
                if (errno == EINTR) continue;
                break; /* EAGAIN, or an ICMP error from an earlier reply: go on */
            }
            /* A full socket buffer on the peer's side drops the reply: UDP. */
            sendto(fd, buf, (size_t)r, 0, (struct sockaddr *)&peer, plen);
        }
    }
    return 0;
}

#define MMSG_VLEN 64
#define MMSG_SIZE 65536

static int run_udp_mmsg(const char *host, int port) {
    int fd = make_socket(SOCK_DGRAM, host, port);
    int ep = epoll_create1(0);
    if (ep < 0) die("epoll_create1");
    struct epoll_event ev, events[4];
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
    static char bufs[MMSG_VLEN][MMSG_SIZE];
    static struct sockaddr_storage peers[MMSG_VLEN];
    static struct iovec iov[MMSG_VLEN], out_iov[MMSG_VLEN];
    static struct mmsghdr in[MMSG_VLEN], out[MMSG_VLEN];
    for (int i = 0; i < MMSG_VLEN; i++) {
        iov[i].iov_base = out_iov[i].iov_base = bufs[i];
        iov[i].iov_len = MMSG_SIZE;
        in[i].msg_hdr.msg_iov = &iov[i];
        in[i].msg_hdr.msg_iovlen = 1;
        in[i].msg_hdr.msg_name = out[i].msg_hdr.msg_name = &peers[i];
        out[i].msg_hdr.msg_iov = &out_iov[i];
        out[i].msg_hdr.msg_iovlen = 1;
    }
    while (!stop_flag) {
        int n = epoll_wait(ep, events, 4, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (;;) {
            for (int i = 0; i < MMSG_VLEN; i++) in[i].msg_hdr.msg_namelen = sizeof peers[i];
            int r = recvmmsg(fd, in, MMSG_VLEN, MSG_DONTWAIT, NULL);
            if (r < 0) {
                if (errno == EINTR) continue;
                break; /* EAGAIN, or an ICMP error from an earlier reply: go on */
            }
            for (int i = 0; i < r; i++) {
                out_iov[i].iov_len = in[i].msg_len;
                out[i].msg_hdr.msg_namelen = in[i].msg_hdr.msg_namelen;
            }
            /* A full socket buffer on the peer's side drops the replies: UDP. */
            sendmmsg(fd, out, (unsigned)r, MSG_DONTWAIT);
            if (r < MMSG_VLEN) break;
        }
    }
    return 0;
}

static void usage(void) {
    fprintf(stderr, "usage: echo_server (--tcp PORT | --udp PORT | --udp-mmsg PORT) [--host ADDR]\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1";
    int port = -1, udp = 0; /* 1: recvfrom, 2: recvmmsg */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--tcp") && i + 1 < argc) { port = atoi(argv[++i]); udp = 0; }
        else if (!strcmp(argv[i], "--udp") && i + 1 < argc) { port = atoi(argv[++i]); udp = 1; }
        else if (!strcmp(argv[i], "--udp-mmsg") && i + 1 < argc) { port = atoi(argv[++i]); udp = 2; }
        else if (!strcmp(argv[i], "--host") && i + 1 < argc) host = argv[++i];
        else usage();
    }
    if (port < 0 || port > 65535) usage();
    raise_nofile();
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    if (udp == 2) return run_udp_mmsg(host, port);
    return udp ? run_udp(host, port) : run_tcp(host, port);
}
