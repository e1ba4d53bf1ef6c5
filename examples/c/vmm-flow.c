/*
 * A VMM's iommufd flow, unmodified C: bind a device through its VFIO cdev, allocate an IOAS, map guest RAM (this
 * process's memory), attach, let the device DMA into and out of guest RAM, then build a vIOMMU, a vDEVICE and a
 * nested HWPT, invalidate its IOTLB, and take a page fault through a fault queue and answer it.
 *
 * Under iommu-sim: LD_PRELOAD=libiommu-shim.so IOMMU_SIM_SOCKET=/path ./vmm-flow /dev/vfio/devices/vfio0
 * On a kernel with CONFIG_IOMMUFD_TEST and a mock device bound to vfio it is meant to behave the same.
 * Prints one "key value" line per result; exits 1 at the first unexpected result.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "iommufd-sim-uapi.h"

#define CHECK(cond)                                                                    \
	do {                                                                           \
		if (!(cond)) {                                                         \
			fprintf(stderr, "%s:%d: %s failed (errno %d: %s)\n", __FILE__, \
				__LINE__, #cond, errno, strerror(errno));              \
			exit(1);                                                       \
		}                                                                      \
	} while (0)

#define RAM_SIZE (64 * 1024)

int main(int argc, char **argv)
{
	const char *vfio = argc > 1 ? argv[1] : "/dev/vfio/devices/vfio0";
	int iommufd = open("/dev/iommu", O_RDWR);
	CHECK(iommufd >= 0);
	int devfd = open(vfio, O_RDWR);
	CHECK(devfd >= 0);

	struct vfio_device_bind_iommufd bind = { .argsz = sizeof(bind), .iommufd = iommufd };
	CHECK(ioctl(devfd, VFIO_DEVICE_BIND_IOMMUFD, &bind) == 0);
	printf("devid %u\n", bind.out_devid);

	struct iommu_ioas_alloc alloc = { .size = sizeof(alloc) };
	CHECK(ioctl(iommufd, IOMMU_IOAS_ALLOC, &alloc) == 0);
	uint32_t ioas = alloc.out_ioas_id;
	printf("ioas %u\n", ioas);

	/* An out array in this process's memory, filled by the kernel. */
	struct iommu_iova_range ranges[4];
	memset(ranges, 0xff, sizeof(ranges));
	struct iommu_ioas_iova_ranges r = {
		.size = sizeof(r), .ioas_id = ioas, .num_iovas = 4, .allowed_iovas = (uintptr_t)ranges
	};
	CHECK(ioctl(iommufd, IOMMU_IOAS_IOVA_RANGES, &r) == 0);
	printf("num_iovas %u\n", r.num_iovas);
	printf("range0 0x%llx-0x%llx\n", (unsigned long long)ranges[0].start, (unsigned long long)ranges[0].last);

	/* Guest RAM is ordinary memory of this process. */
	unsigned char *ram = mmap(NULL, RAM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(ram != MAP_FAILED);
	for (int i = 0; i < RAM_SIZE; i++)
		ram[i] = (unsigned char)i;
	struct iommu_ioas_map map = {
		.size = sizeof(map),
		.flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
		.ioas_id = ioas, .user_va = (uintptr_t)ram, .length = RAM_SIZE, .iova = MOCK_APERTURE_START,
	};
	CHECK(ioctl(iommufd, IOMMU_IOAS_MAP, &map) == 0);
	printf("mapped 0x%llx\n", (unsigned long long)map.iova);

	struct vfio_device_attach_iommufd_pt attach = { .argsz = sizeof(attach), .pt_id = ioas };
	CHECK(ioctl(devfd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &attach) == 0);
	uint32_t hwpt = attach.pt_id;
	printf("hwpt %u\n", hwpt);

	/* The device's page table maps exactly the guest RAM pages. */
	struct iommu_test_cmd check = { .size = sizeof(check), .op = IOMMU_TEST_OP_MD_CHECK_MAP, .id = hwpt };
	check.check_map.iova = MOCK_APERTURE_START;
	check.check_map.length = RAM_SIZE;
	check.check_map.uptr = (uintptr_t)ram;
	CHECK(ioctl(iommufd, IOMMU_TEST_CMD, &check) == 0);
	printf("md_check_map ok\n");

	/* DMA through an access object (an emulated device on the IOAS); its fd is an fd of this process. */
	struct iommu_test_cmd acc = { .size = sizeof(acc), .op = IOMMU_TEST_OP_CREATE_ACCESS, .id = ioas };
	CHECK(ioctl(iommufd, IOMMU_TEST_CMD, &acc) == 0);
	int access_fd = (int)acc.create_access.out_access_fd;
	CHECK(fcntl(access_fd, F_GETFD) >= 0);
	printf("access_fd valid\n");

	/* DMA write seen by this process. */
	char msg[] = "written by DMA";
	struct iommu_test_cmd rw = { .size = sizeof(rw), .op = IOMMU_TEST_OP_ACCESS_RW, .id = (uint32_t)access_fd };
	rw.access_rw.iova = MOCK_APERTURE_START + 0x1100;
	rw.access_rw.length = sizeof(msg);
	rw.access_rw.uptr = (uintptr_t)msg;
	rw.access_rw.flags = MOCK_ACCESS_RW_WRITE;
	CHECK(ioctl(iommufd, IOMMU_TEST_CMD, &rw) == 0);
	CHECK(memcmp(ram + 0x1100, msg, sizeof(msg)) == 0);
	printf("dma_write_seen %s\n", (char *)ram + 0x1100);

	/* This process's store seen by DMA. */
	strcpy((char *)ram + 0x2200, "stored by the CPU");
	char got[32] = { 0 };
	rw.access_rw.iova = MOCK_APERTURE_START + 0x2200;
	rw.access_rw.length = 18;
	rw.access_rw.uptr = (uintptr_t)got;
	rw.access_rw.flags = 0;
	CHECK(ioctl(iommufd, IOMMU_TEST_CMD, &rw) == 0);
	CHECK(strcmp(got, "stored by the CPU") == 0);
	printf("cpu_store_seen %s\n", got);
	CHECK(close(access_fd) == 0);

	/* Errors the kernel gives: a bad pointer is EFAULT, an unknown object is ENOENT. */
	CHECK(ioctl(iommufd, IOMMU_IOAS_ALLOC, (void *)8) == -1 && errno == EFAULT);
	printf("bad_pointer EFAULT\n");
	struct iommu_destroy bad = { .size = sizeof(bad), .id = 9999 };
	CHECK(ioctl(iommufd, IOMMU_DESTROY, &bad) == -1 && errno == ENOENT);
	printf("destroy_unknown ENOENT\n");

	/* Nesting: a parent paging HWPT, a vIOMMU on it, a vDEVICE, a nested HWPT, an invalidation. */
	struct iommu_hwpt_alloc parent = {
		.size = sizeof(parent), .flags = IOMMU_HWPT_ALLOC_NEST_PARENT, .dev_id = bind.out_devid, .pt_id = ioas
	};
	CHECK(ioctl(iommufd, IOMMU_HWPT_ALLOC, &parent) == 0);
	printf("parent_hwpt %u\n", parent.out_hwpt_id);
	struct iommu_viommu_alloc viommu = {
		.size = sizeof(viommu), .type = IOMMU_VIOMMU_TYPE_SELFTEST, .dev_id = bind.out_devid,
		.hwpt_id = parent.out_hwpt_id
	};
	CHECK(ioctl(iommufd, IOMMU_VIOMMU_ALLOC, &viommu) == 0);
	printf("viommu %u\n", viommu.out_viommu_id);
	struct iommu_vdevice_alloc vdev = {
		.size = sizeof(vdev), .viommu_id = viommu.out_viommu_id, .dev_id = bind.out_devid, .virt_id = 0x99
	};
	CHECK(ioctl(iommufd, IOMMU_VDEVICE_ALLOC, &vdev) == 0);
	printf("vdevice %u\n", vdev.out_vdevice_id);

	struct iommu_fault_alloc fault = { .size = sizeof(fault) };
	CHECK(ioctl(iommufd, IOMMU_FAULT_QUEUE_ALLOC, &fault) == 0);
	printf("fault %u\n", fault.out_fault_id);
	struct iommu_hwpt_selftest data = { .iotlb = IOMMU_TEST_IOTLB_DEFAULT };
	struct iommu_hwpt_alloc nested = {
		.size = sizeof(nested), .flags = IOMMU_HWPT_FAULT_ID_VALID, .dev_id = bind.out_devid,
		.pt_id = viommu.out_viommu_id, .data_type = IOMMU_HWPT_DATA_SELFTEST, .data_len = sizeof(data),
		.data_uptr = (uintptr_t)&data, .fault_id = fault.out_fault_id
	};
	CHECK(ioctl(iommufd, IOMMU_HWPT_ALLOC, &nested) == 0);
	printf("nested_hwpt %u\n", nested.out_hwpt_id);
	attach.pt_id = nested.out_hwpt_id;
	CHECK(ioctl(devfd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &attach) == 0);

	struct iommu_test_cmd iotlb = { .size = sizeof(iotlb), .op = IOMMU_TEST_OP_MD_CHECK_IOTLB,
					.id = nested.out_hwpt_id };
	iotlb.check_iotlb.iotlb = IOMMU_TEST_IOTLB_DEFAULT;
	CHECK(ioctl(iommufd, IOMMU_TEST_CMD, &iotlb) == 0);
	struct iommu_hwpt_invalidate_selftest inv_data[1] = { { .flags = IOMMU_TEST_INVALIDATE_FLAG_ALL } };
	struct iommu_hwpt_invalidate inv = {
		.size = sizeof(inv), .hwpt_id = nested.out_hwpt_id, .data_uptr = (uintptr_t)inv_data,
		.data_type = IOMMU_HWPT_INVALIDATE_DATA_SELFTEST, .entry_len = sizeof(inv_data[0]), .entry_num = 1
	};
	CHECK(ioctl(iommufd, IOMMU_HWPT_INVALIDATE, &inv) == 0);
	printf("invalidated %u\n", inv.entry_num);
	iotlb.check_iotlb.iotlb = 0;
	CHECK(ioctl(iommufd, IOMMU_TEST_CMD, &iotlb) == 0);
	printf("iotlb_cleared ok\n");

	/* A device page fault on the nested HWPT, read from the fault queue and answered. */
	struct iommu_test_cmd iopf = { .size = sizeof(iopf), .op = IOMMU_TEST_OP_TRIGGER_IOPF };
	iopf.trigger_iopf.dev_id = bind.out_devid;
	iopf.trigger_iopf.grpid = 0x2;
	iopf.trigger_iopf.perm = 1; /* IOMMU_PGFAULT_PERM_READ */
	iopf.trigger_iopf.addr = 0xdeadbeaf;
	CHECK(ioctl(iommufd, IOMMU_TEST_CMD, &iopf) == 0);
	int fault_fd = (int)fault.out_fault_fd;
	struct pollfd pfd = { .fd = fault_fd, .events = POLLIN };
	CHECK(poll(&pfd, 1, 1000) == 1);
	struct iommu_hwpt_pgfault pg;
	CHECK(read(fault_fd, &pg, sizeof(pg)) == sizeof(pg));
	printf("fault_read dev_id=%u grpid=%u addr=0x%llx\n", pg.dev_id, pg.grpid, (unsigned long long)pg.addr);
	struct iommu_hwpt_page_response resp = { .cookie = pg.cookie, .code = 0 };
	CHECK(write(fault_fd, &resp, sizeof(resp)) == sizeof(resp));
	printf("fault_answered ok\n");

	/* Tear down in the order a VMM does. */
	attach.pt_id = ioas;
	CHECK(ioctl(devfd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &attach) == 0);
	struct iommu_destroy d = { .size = sizeof(d), .id = nested.out_hwpt_id };
	CHECK(ioctl(iommufd, IOMMU_DESTROY, &d) == 0);
	d.id = vdev.out_vdevice_id;
	CHECK(ioctl(iommufd, IOMMU_DESTROY, &d) == 0);
	d.id = viommu.out_viommu_id;
	CHECK(ioctl(iommufd, IOMMU_DESTROY, &d) == 0);
	d.id = parent.out_hwpt_id;
	CHECK(ioctl(iommufd, IOMMU_DESTROY, &d) == 0);
	CHECK(close(fault_fd) == 0);
	struct vfio_device_detach_iommufd_pt detach = { .argsz = sizeof(detach) };
	CHECK(ioctl(devfd, VFIO_DEVICE_DETACH_IOMMUFD_PT, &detach) == 0);
	struct iommu_ioas_unmap unmap = { .size = sizeof(unmap), .ioas_id = ioas, .iova = MOCK_APERTURE_START,
					  .length = RAM_SIZE };
	CHECK(ioctl(iommufd, IOMMU_IOAS_UNMAP, &unmap) == 0);
	printf("unmapped 0x%llx\n", (unsigned long long)unmap.length);
	CHECK(close(devfd) == 0);
	CHECK(close(iommufd) == 0);
	CHECK(munmap(ram, RAM_SIZE) == 0);
	printf("done\n");
	return 0;
}
