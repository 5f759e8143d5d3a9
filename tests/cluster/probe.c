/* A tiny static network probe for tests/cluster/podnet-smoke.sh (no registry is reachable, so
 * the image is built locally, like the pause image). Modes:
 *   probe sleep                      stay up (the pod's main process; exits on SIGTERM)
 *   probe addrs                      print this network namespace's IPv4 addresses
 *   probe connect HOST PORT [SECS]   TCP connect (default timeout 3 s); exit 0 if it succeeds
 *   probe api [SECS]                 connect to $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT
 *   probe serve IP PORT              accept TCP connections and close them (a host-side server)
 * Prints one line per result; exit status 0 = success, 1 = failure, 2 = usage. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void stop(int sig) { (void)sig; _exit(0); }

static int parse_addr(const char *host, const char *port, struct sockaddr_in *sa) {
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((unsigned short)atoi(port));
    return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -1;
}

static int do_connect(const char *host, const char *port, int secs) {
    struct sockaddr_in sa;
    if (!host || !port || parse_addr(host, port, &sa) != 0) {
        printf("connect %s:%s: not an IPv4 address and port\n", host ? host : "(unset)", port ? port : "(unset)");
        return 2;
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    int err = rc == 0 ? 0 : errno;
    if (rc != 0 && errno == EINPROGRESS) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int n = poll(&p, 1, secs * 1000);
        if (n == 0) {
            err = ETIMEDOUT;
        } else {
            socklen_t len = sizeof err;
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        }
    }
    close(fd);
    if (err == 0) {
        printf("connect %s:%s: ok\n", host, port);
        return 0;
    }
    printf("connect %s:%s: failed: %s%s\n", host, port, strerror(err), err == ETIMEDOUT && secs ? " (no answer)" : "");
    return 1;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGTERM, stop);
    signal(SIGINT, stop);
    const char *mode = argc > 1 ? argv[1] : "";
    if (strcmp(mode, "sleep") == 0) {
        for (;;) pause();
    }
    if (strcmp(mode, "addrs") == 0) {
        struct ifaddrs *ifs, *i;
        if (getifaddrs(&ifs) != 0) { perror("getifaddrs"); return 1; }
        for (i = ifs; i; i = i->ifa_next) {
            if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET) continue;
            char buf[INET_ADDRSTRLEN];
            inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, buf, sizeof buf);
            printf("%s %s\n", i->ifa_name, buf);
        }
        freeifaddrs(ifs);
        return 0;
    }
    if (strcmp(mode, "connect") == 0 && argc >= 4) {
        return do_connect(argv[2], argv[3], argc > 4 ? atoi(argv[4]) : 3);
    }
    if (strcmp(mode, "api") == 0) {
        return do_connect(getenv("KUBERNETES_SERVICE_HOST"), getenv("KUBERNETES_SERVICE_PORT"), argc > 2 ? atoi(argv[2]) : 3);
    }
    if (strcmp(mode, "serve") == 0 && argc == 4) {
        struct sockaddr_in sa;
        if (parse_addr(argv[2], argv[3], &sa) != 0) { fprintf(stderr, "serve: bad address\n"); return 2; }
        int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 16) != 0) { perror("serve"); return 1; }
        printf("serving on %s:%s\n", argv[2], argv[3]);
        for (;;) {
            struct sockaddr_in peer;
            socklen_t len = sizeof peer;
            int c = accept(fd, (struct sockaddr *)&peer, &len);
            if (c < 0) continue;
            char buf[INET_ADDRSTRLEN];
            inet_ntop(AF_INET, &peer.sin_addr, buf, sizeof buf);
            printf("accepted from %s\n", buf);
            close(c);
        }
    }
    fprintf(stderr, "usage: probe sleep | addrs | connect HOST PORT [SECS] | api [SECS] | serve IP PORT\n");
    return 2;
}
