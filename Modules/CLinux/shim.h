#ifndef FANOUT_CLINUX_SHIM_H
#define FANOUT_CLINUX_SHIM_H
// Linux calls the Glibc module does not export: epoll, eventfd, mallopt and malloc_trim, and two GNU extensions
// whose declarations need _GNU_SOURCE (declared here with glibc's exact signatures instead).
#include <malloc.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

struct sockaddr;
extern int accept4(int fd, struct sockaddr *address, unsigned int *length, int flags);
extern int pthread_setname_np(unsigned long thread, const char *name);

static inline int fanout_accept(int listener) {
    return accept4(listener, 0, 0, 02000000 /* SOCK_CLOEXEC */);
}
#endif
