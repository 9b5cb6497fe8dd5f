/*
 * tcp_client.c - the lecture's TCP client.
 *
 * Connects, sends "Hello from client" (no newline), reads the reply with a
 * single recv(), prints it and exits.
 *
 * usage: tcp_client [-U PATH] [HOST [PORT]]
 *   HOST     name or address to connect to (default 127.0.0.1; ::1 works)
 *   PORT     port to connect to (default 8080)
 *   -U PATH  connect to a Unix-domain stream socket at PATH instead
 *
 * The one deviation from the lecture's original: after sending, the client
 * calls shutdown(SHUT_WR). The bytes on the wire are the same, but a server
 * that reads a whole line (the Java one) now sees the end of the message.
 */
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define DEFAULT_HOST "127.0.0.1"
#define DEFAULT_PORT "8080"
#define BUFFER_SIZE 1024

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void usage(void)
{
    fprintf(stderr, "usage: tcp_client [-U PATH] [HOST [PORT]]\n");
    exit(1);
}

/* Connect to a Unix-domain stream socket at path. */
static int connect_unix(const char *path)
{
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    if (strlen(path) >= sizeof addr.sun_path) {
        fprintf(stderr, "tcp_client: socket path too long: %s\n", path);
        exit(1);
    }
    addr.sun_family = AF_UNIX;
    strcpy(addr.sun_path, path);

    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0)
        die("socket");
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0)
        die("connect");
    return fd;
}

/* Resolve host and port with getaddrinfo() (IPv4 or IPv6) and connect to
 * the first address that accepts. */
static int connect_tcp(const char *host, const char *port)
{
    struct addrinfo hints, *results, *ai;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;     /* IPv4 or IPv6, whatever HOST is */
    hints.ai_socktype = SOCK_STREAM; /* TCP */
    int err = getaddrinfo(host, port, &hints, &results);
    if (err != 0) {
        fprintf(stderr, "tcp_client: %s port %s: %s\n", host, port, gai_strerror(err));
        exit(1);
    }

    int fd = -1;
    for (ai = results; ai != NULL; ai = ai->ai_next) {
        /* socket(): an endpoint of the right family for this address. */
        fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        if (fd < 0)
            continue;
        /* connect(): the three-way handshake with the server. */
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(results);
    if (fd < 0)
        die("connect");
    return fd;
}

int main(int argc, char *argv[])
{
    const char *path = NULL;
    const char *host = DEFAULT_HOST;
    const char *port = DEFAULT_PORT;
    int opt;

    setvbuf(stdout, NULL, _IOLBF, 0);

    opterr = 0; /* report bad options with our own one-line usage */
    while ((opt = getopt(argc, argv, "U:")) != -1) {
        switch (opt) {
        case 'U': path = optarg; break;
        default: usage();
        }
    }
    int rest = argc - optind;
    if (rest > 2 || (path != NULL && rest > 0))
        usage();
    if (rest >= 1)
        host = argv[optind];
    if (rest == 2)
        port = argv[optind + 1];

    int fd = path != NULL ? connect_unix(path) : connect_tcp(host, port);

    /* send(): the message, without a newline, as in the original. */
    const char *message = "Hello from client";
    if (send(fd, message, strlen(message), 0) < 0)
        die("send");

    /* shutdown(SHUT_WR): "no more data from me" (the peer reads end of
     * stream); we can still receive the reply. */
    if (shutdown(fd, SHUT_WR) < 0)
        die("shutdown");

    /* recv(): ONE read of the reply (at most 1023 bytes). */
    char buffer[BUFFER_SIZE];
    ssize_t n = recv(fd, buffer, BUFFER_SIZE - 1, 0);
    if (n < 0)
        die("recv");
    buffer[n] = '\0';

    /* For display only: drop one trailing "\n" or "\r\n" (a line-oriented
     * server such as the Java one ends its reply with a newline). */
    if (n > 0 && buffer[n - 1] == '\n') {
        buffer[--n] = '\0';
        if (n > 0 && buffer[n - 1] == '\r')
            buffer[--n] = '\0';
    }
    printf("Received: %s\n", buffer);

    /* close(): release the connection. */
    close(fd);
    return 0;
}
