/*
 * The errors a C program gets from the simulated kernel through the shim, as the kernel gives them.
 * Prints one "case errno" line per case; exits 1 at the first unexpected result.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "iommufd-sim-uapi.h"

static int fails(int r, int want, const char *what)
{
	if (r != -1 || errno != want) {
		fprintf(stderr, "%s: got %d errno %d (%s), want errno %d\n", what, r, errno, strerror(errno), want);
		exit(1);
	}
	printf("%s %d\n", what, want);
	return 0;
}

int main(void)
{
	int fd = open("/dev/iommu", O_RDWR);
	if (fd < 0)
		return 1;
	/* A struct shorter than the command's minimum. */
	struct iommu_ioas_alloc a = { .size = 8 };
	fails(ioctl(fd, IOMMU_IOAS_ALLOC, &a), EINVAL, "short_struct");
	/* A longer struct whose extra bytes are not zero. */
	struct {
		struct iommu_ioas_alloc a;
		uint32_t extra;
	} big = { { .size = sizeof(big) }, 1 };
	fails(ioctl(fd, IOMMU_IOAS_ALLOC, &big), E2BIG, "oversized_struct");
	/* The same with zero extra bytes is accepted. */
	big.extra = 0;
	if (ioctl(fd, IOMMU_IOAS_ALLOC, &big) != 0)
		return 1;
	printf("oversized_zero_tail ok %u\n", big.a.out_ioas_id);
	/* The struct pointer and a pointer inside it outside this process's mappings. */
	fails(ioctl(fd, IOMMU_IOAS_ALLOC, (void *)16), EFAULT, "bad_struct_pointer");
	struct iommu_ioas_map map = {
		.size = sizeof(map), .flags = IOMMU_IOAS_MAP_READABLE, .ioas_id = big.a.out_ioas_id,
		.user_va = 0x10000, .length = 4096,
	};
	/* As in Linux, an IOAS without a domain or access pins nothing: the bad user_va is only recorded. */
	if (ioctl(fd, IOMMU_IOAS_MAP, &map) != 0)
		return 1;
	printf("unbacked_map_without_domain ok\n");
	struct iommu_ioas_iova_ranges r = {
		.size = sizeof(r), .ioas_id = big.a.out_ioas_id, .num_iovas = 1, .allowed_iovas = 0x20000
	};
	fails(ioctl(fd, IOMMU_IOAS_IOVA_RANGES, &r), EFAULT, "bad_out_array");
	/* An fd the program never opened, and an fd after close. */
	fails(ioctl(987, IOMMU_IOAS_ALLOC, &a), EBADF, "bad_fd");
	close(fd);
	fails(ioctl(fd, IOMMU_IOAS_ALLOC, &a), EBADF, "closed_fd");
	/* Tell the test we are ready, then wait for it to stop the server: the next call must fail, not hang. */
	int fd2 = open("/dev/iommu", O_RDWR);
	if (fd2 < 0)
		return 1;
	printf("ready\n");
	fflush(stdout);
	char c;
	if (read(0, &c, 1) != 1)
		return 1;
	struct iommu_ioas_alloc b = { .size = sizeof(b) };
	fails(ioctl(fd2, IOMMU_IOAS_ALLOC, &b), EIO, "server_gone");
	return 0;
}
