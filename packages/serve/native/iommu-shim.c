/*
 * iommu-shim: an LD_PRELOAD library that sends the system calls a program makes on /dev/iommu and the VFIO
 * device nodes (/dev/vfio/devices/...) to an iommu-sim server over a Unix socket. Every other fd goes to libc.
 *
 * The socket path comes from IOMMU_SIM_SOCKET; without it the shim does nothing. Fds handed out by the server
 * carry the same number in this process: a /dev/null stand-in is dup'ed onto each, so the number stays reserved.
 * Memory is not sent: the server reads and writes this process through /proc/PID/mem (see
 * docs/serve-protocol.md). Calls are serialised by a mutex; if the server is gone they fail with EIO.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define PROTO_VERSION 2
#define HDR 16
#define MAX_FDS 4096

enum { OP_HELLO = 1, OP_OPEN, OP_CLOSE, OP_IOCTL, OP_READ, OP_WRITE, OP_MMAP, OP_MUNMAP, OP_POLL, OP_SHUTDOWN, OP_DUP };
enum { DUP_LOWEST = 0, DUP_ONTO = 1, DUP_FROM = 2 };

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int sock = -1;
static pid_t owner; /* the process that said HELLO; a forked child is not it */
static int broken;
static uint32_t seq;
static unsigned char simfd[MAX_FDS];

/* Raw system calls, so the shim never re-enters itself. */
static ssize_t raw_read(int fd, void *b, size_t n) { return syscall(SYS_read, fd, b, n); }
static int raw_close(int fd) { return (int)syscall(SYS_close, fd); }

static int is_sim(int fd) { return fd >= 0 && fd < MAX_FDS && simfd[fd]; }

static int sim_path(const char *p)
{
	return p && (strcmp(p, "/dev/iommu") == 0 || strncmp(p, "/dev/vfio/devices/", 18) == 0);
}

static int send_all(const void *b, size_t n)
{
	const char *c = b;
	while (n) {
		ssize_t r = send(sock, c, n, MSG_NOSIGNAL);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		c += r;
		n -= (size_t)r;
	}
	return 0;
}

static int recv_all(void *b, size_t n)
{
	char *c = b;
	while (n) {
		ssize_t r = raw_read(sock, c, n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		c += r;
		n -= (size_t)r;
	}
	return 0;
}

/* Give each fd the server installed a stand-in here (it was free when the call began). */
static void adopt_fd(int fd)
{
	if (fd < 0 || fd >= MAX_FDS)
		return;
	int tmp = (int)syscall(SYS_openat, AT_FDCWD, "/dev/null", O_RDWR | O_CLOEXEC);
	if (tmp < 0)
		return;
	if (tmp != fd) {
		syscall(SYS_dup3, tmp, fd, O_CLOEXEC);
		raw_close(tmp);
	}
	simfd[fd] = 1;
}

/* One request/reply. Returns the result (>= 0) or -errno; the lock must be held. */
static long call_locked(uint32_t op, const void *payload, uint32_t plen, int adopt)
{
	if (sock < 0 || broken)
		return -EIO;
	/* Header and payload in one send: one wakeup of the server per call. */
	unsigned char msg[HDR + 4096 + 8];
	uint32_t len = HDR + plen;
	uint32_t s = ++seq;
	if (plen > sizeof(msg) - HDR)
		return -E2BIG;
	memset(msg, 0, HDR);
	memcpy(msg, &len, 4);
	memcpy(msg + 4, &op, 4);
	memcpy(msg + 8, &s, 4);
	if (plen)
		memcpy(msg + HDR, payload, plen);
	if (send_all(msg, len))
		goto dead;
	unsigned char rh[HDR];
	if (recv_all(rh, HDR))
		goto dead;
	uint32_t rlen, nfds;
	int32_t result;
	memcpy(&rlen, rh, 4);
	memcpy(&result, rh + 4, 4);
	memcpy(&nfds, rh + 12, 4);
	if (rlen < HDR + 4 * nfds)
		goto dead;
	for (uint32_t i = 0; i < nfds; i++) {
		int32_t fd;
		if (recv_all(&fd, 4))
			goto dead;
		if (adopt)
			adopt_fd(fd);
	}
	for (uint32_t rest = rlen - HDR - 4 * nfds; rest;) {
		char junk[256];
		uint32_t n = rest < sizeof(junk) ? rest : sizeof(junk);
		if (recv_all(junk, n))
			goto dead;
		rest -= n;
	}
	return result;
dead:
	broken = 1;
	return -EIO;
}

static int connect_locked(void)
{
	uint32_t parent = 0;
	if (sock >= 0 && owner != getpid()) {
		/*
		 * A forked child: the socket is the parent's connection. Leave it to the parent and connect anew; if we
		 * inherited simulated fds, the server forks the parent's simulated process for us (shared open files).
		 */
		for (int i = 0; i < MAX_FDS && !parent; i++)
			if (simfd[i])
				parent = (uint32_t)owner;
		raw_close(sock);
		sock = -1;
		broken = 0;
	}
	if (sock >= 0)
		return broken ? -EIO : 0;
	const char *path = getenv("IOMMU_SIM_SOCKET");
	if (!path)
		return -ENODEV;
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return -errno;
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	strncpy(a.sun_path, path, sizeof(a.sun_path) - 1);
	if (connect(s, (struct sockaddr *)&a, sizeof(a)) < 0) {
		int e = errno;
		raw_close(s);
		return e == ENOENT || e == ECONNREFUSED ? -ENODEV : -e;
	}
	/* The server reads our memory through /proc/PID/mem; allow it where Yama restricts ptrace. */
	prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0);
	sock = s;
	owner = getpid();
	uint32_t hello[3] = { PROTO_VERSION, (uint32_t)getpid(), parent };
	long r = call_locked(OP_HELLO, hello, sizeof(hello), 0);
	if (r != PROTO_VERSION) {
		broken = 1;
		return r < 0 ? (int)r : -EPROTO;
	}
	return 0;
}

static long call(uint32_t op, const void *payload, uint32_t plen)
{
	pthread_mutex_lock(&lock);
	long r = connect_locked();
	if (r == 0)
		r = call_locked(op, payload, plen, 1);
	pthread_mutex_unlock(&lock);
	return r;
}

static long ret(long r)
{
	if (r < 0) {
		errno = (int)-r;
		return -1;
	}
	return r;
}

static int sim_open(const char *path, int flags)
{
	size_t n = strlen(path) + 1;
	unsigned char buf[4 + 4096];
	if (n > 4096)
		return (int)ret(-ENAMETOOLONG);
	uint32_t f = (uint32_t)flags;
	memcpy(buf, &f, 4);
	memcpy(buf + 4, path, n);
	return (int)ret(call(OP_OPEN, buf, (uint32_t)(4 + n)));
}

#define NEXT(name) ((__typeof__(&name))dlsym(RTLD_NEXT, #name))

int open(const char *path, int flags, ...)
{
	mode_t mode = 0;
	if (flags & (O_CREAT | O_TMPFILE)) {
		va_list ap;
		va_start(ap, flags);
		mode = va_arg(ap, mode_t);
		va_end(ap);
	}
	if (sim_path(path))
		return sim_open(path, flags);
	return NEXT(open)(path, flags, mode);
}

int open64(const char *path, int flags, ...)
{
	mode_t mode = 0;
	if (flags & (O_CREAT | O_TMPFILE)) {
		va_list ap;
		va_start(ap, flags);
		mode = va_arg(ap, mode_t);
		va_end(ap);
	}
	if (sim_path(path))
		return sim_open(path, flags);
	return NEXT(open64)(path, flags, mode);
}

int openat(int dirfd, const char *path, int flags, ...)
{
	mode_t mode = 0;
	if (flags & (O_CREAT | O_TMPFILE)) {
		va_list ap;
		va_start(ap, flags);
		mode = va_arg(ap, mode_t);
		va_end(ap);
	}
	if (sim_path(path))
		return sim_open(path, flags);
	return NEXT(openat)(dirfd, path, flags, mode);
}

int openat64(int dirfd, const char *path, int flags, ...)
{
	mode_t mode = 0;
	if (flags & (O_CREAT | O_TMPFILE)) {
		va_list ap;
		va_start(ap, flags);
		mode = va_arg(ap, mode_t);
		va_end(ap);
	}
	if (sim_path(path))
		return sim_open(path, flags);
	return NEXT(openat64)(dirfd, path, flags, mode);
}

int __open_2(const char *path, int flags)
{
	if (sim_path(path))
		return sim_open(path, flags);
	return NEXT(open)(path, flags);
}

int __open64_2(const char *path, int flags)
{
	if (sim_path(path))
		return sim_open(path, flags);
	return NEXT(open64)(path, flags);
}

int close(int fd)
{
	if (!is_sim(fd))
		return NEXT(close)(fd);
	int32_t f = fd;
	long r = call(OP_CLOSE, &f, 4);
	/* The fd is gone either way, as with close(2). */
	simfd[fd] = 0;
	raw_close(fd);
	return (int)ret(r);
}

int ioctl(int fd, unsigned long request, ...)
{
	va_list ap;
	va_start(ap, request);
	void *arg = va_arg(ap, void *);
	va_end(ap);
	if (!is_sim(fd))
		return NEXT(ioctl)(fd, request, arg);
	struct {
		int32_t fd;
		uint32_t cmd;
		uint64_t argp;
	} m = { fd, (uint32_t)request, (uint64_t)(uintptr_t)arg };
	return (int)ret(call(OP_IOCTL, &m, sizeof(m)));
}

struct rw_msg {
	int32_t fd;
	uint32_t pad;
	uint64_t buf;
	uint64_t count;
};

ssize_t read(int fd, void *buf, size_t count)
{
	if (!is_sim(fd))
		return NEXT(read)(fd, buf, count);
	struct rw_msg m = { fd, 0, (uint64_t)(uintptr_t)buf, count };
	return ret(call(OP_READ, &m, sizeof(m)));
}

ssize_t write(int fd, const void *buf, size_t count)
{
	if (!is_sim(fd))
		return NEXT(write)(fd, buf, count);
	struct rw_msg m = { fd, 0, (uint64_t)(uintptr_t)buf, count };
	return ret(call(OP_WRITE, &m, sizeof(m)));
}

/* One pass over the set without waiting: simulated fds ask the server, real ones ask libc. */
static int poll_once(struct pollfd *fds, nfds_t n)
{
	int ready = 0;
	for (nfds_t i = 0; i < n; i++) {
		fds[i].revents = 0;
		if (is_sim(fds[i].fd)) {
			int32_t m[2] = { fds[i].fd, fds[i].events };
			long r = call(OP_POLL, m, sizeof(m));
			fds[i].revents = (short)(r < 0 ? POLLERR : r);
		} else if (fds[i].fd >= 0) {
			NEXT(poll)(&fds[i], 1, 0);
		}
		ready += fds[i].revents != 0;
	}
	return ready;
}

int poll(struct pollfd *fds, nfds_t n, int timeout)
{
	nfds_t sim = 0;
	for (nfds_t i = 0; i < n; i++)
		sim += is_sim(fds[i].fd);
	if (sim == 0)
		return NEXT(poll)(fds, n, timeout);
	/*
	 * Readiness is the simulated file's poll at the moment of asking; there is no wakeup across the socket, so
	 * wait by asking again (every millisecond at first, backing off to 20 ms) until something is ready or the
	 * timeout passes.
	 */
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	long nap_us = 1000;
	for (;;) {
		int ready = poll_once(fds, n);
		if (ready || timeout == 0)
			return ready;
		struct timespec now;
		clock_gettime(CLOCK_MONOTONIC, &now);
		long elapsed_ms = (now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000;
		if (timeout > 0 && elapsed_ms >= timeout)
			return 0;
		struct timespec nap = { 0, nap_us * 1000 };
		nanosleep(&nap, NULL);
		if (nap_us < 20000)
			nap_us *= 2;
	}
}

/* Duplicate a simulated fd in the server; the reply's new fd gets its stand-in here. */
static int sim_dup(int fd, uint32_t kind, int arg)
{
	if (kind == DUP_ONTO && arg >= 0 && arg < MAX_FDS && !simfd[arg]) {
		if (arg == fd)
			return arg;
		/* dup2 over one of our own fds closes it first (the server only knows simulated fds). */
		raw_close(arg);
	}
	int32_t m[3] = { fd, (int32_t)kind, arg };
	long r = call(OP_DUP, m, sizeof(m));
	if (r >= 0 && r < MAX_FDS && !simfd[r])
		adopt_fd((int)r);
	return (int)ret(r);
}

int dup(int fd)
{
	if (!is_sim(fd))
		return NEXT(dup)(fd);
	return sim_dup(fd, DUP_LOWEST, 0);
}

int dup2(int fd, int fd2)
{
	if (!is_sim(fd)) {
		if (is_sim(fd2) && fd != fd2) {
			/* A real fd replaces a simulated one: close the simulated file first. */
			int32_t f = fd2;
			call(OP_CLOSE, &f, 4);
			simfd[fd2] = 0;
		}
		return NEXT(dup2)(fd, fd2);
	}
	return sim_dup(fd, DUP_ONTO, fd2);
}

int dup3(int fd, int fd2, int flags)
{
	if (!is_sim(fd)) {
		if (is_sim(fd2) && fd != fd2) {
			int32_t f = fd2;
			call(OP_CLOSE, &f, 4);
			simfd[fd2] = 0;
		}
		return NEXT(dup3)(fd, fd2, flags);
	}
	if (fd == fd2)
		return (int)ret(-EINVAL);
	return sim_dup(fd, DUP_ONTO, fd2);
}

int fcntl(int fd, int cmd, ...)
{
	va_list ap;
	va_start(ap, cmd);
	long arg = va_arg(ap, long);
	va_end(ap);
	if (is_sim(fd) && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC))
		return sim_dup(fd, DUP_FROM, (int)arg);
	return NEXT(fcntl)(fd, cmd, arg);
}

int fcntl64(int fd, int cmd, ...) __attribute__((alias("fcntl")));

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	if (!is_sim(fd))
		return NEXT(mmap)(addr, len, prot, flags, fd, off);
	/* A private anonymous stand-in the server fills with the simulated mapping's pages. */
	void *p = NEXT(mmap)(addr, len, prot | PROT_READ | PROT_WRITE,
			     (flags & MAP_FIXED) | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return p;
	struct {
		int32_t fd;
		uint32_t prot;
		uint32_t flags;
		uint32_t pad;
		uint64_t addr;
		uint64_t len;
		uint64_t off;
	} m = { fd, (uint32_t)prot, (uint32_t)flags, 0, (uint64_t)(uintptr_t)p, len, (uint64_t)off };
	long r = call(OP_MMAP, &m, sizeof(m));
	if (r < 0) {
		NEXT(munmap)(p, len);
		errno = (int)-r;
		return MAP_FAILED;
	}
	return p;
}

void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off) __attribute__((alias("mmap")));

int munmap(void *addr, size_t len)
{
	pthread_mutex_lock(&lock);
	int connected = sock >= 0 && !broken;
	pthread_mutex_unlock(&lock);
	if (connected) {
		uint64_t m[2] = { (uint64_t)(uintptr_t)addr, len };
		call(OP_MUNMAP, m, sizeof(m));
	}
	return NEXT(munmap)(addr, len);
}
