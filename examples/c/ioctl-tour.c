/*
 * Every iommufd ioctl the vmm-flow example does not issue, once each, printing "name rc field=value ..." (rc is 0
 * or -errno) so a test can compare the lines with the same sequence issued from TypeScript.
 * Usage: ioctl-tour /dev/vfio/devices/vfioN
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "iommufd-sim-uapi.h"

#define RAM_SIZE (64 * 1024)

static int rc(int r) { return r == 0 ? 0 : -errno; }

int main(int argc, char **argv)
{
	int fd = open("/dev/iommu", O_RDWR);
	int devfd = open(argc > 1 ? argv[1] : "/dev/vfio/devices/vfio0", O_RDWR);
	if (fd < 0 || devfd < 0)
		return 1;
	struct vfio_device_bind_iommufd bind = { .argsz = sizeof(bind), .iommufd = fd };
	if (ioctl(devfd, VFIO_DEVICE_BIND_IOMMUFD, &bind))
		return 1;
	uint32_t dev = bind.out_devid;
	struct iommu_ioas_alloc alloc = { .size = sizeof(alloc) };
	ioctl(fd, IOMMU_IOAS_ALLOC, &alloc);
	uint32_t ioas = alloc.out_ioas_id;

	struct iommu_test_hw_info hw = { 0 };
	struct iommu_hw_info info = { .size = sizeof(info), .dev_id = dev, .data_len = sizeof(hw), .data_uptr = (uintptr_t)&hw };
	int r = rc(ioctl(fd, IOMMU_GET_HW_INFO, &info));
	printf("get_hw_info %d type=%u data_len=%u test_reg=%u pasid_log2=%u caps=%llu\n", r, info.out_data_type,
	       info.data_len, hw.test_reg, info.out_max_pasid_log2, (unsigned long long)info.out_capabilities);

	struct iommu_iova_range allow = { MOCK_APERTURE_START, MOCK_APERTURE_START + (1 << 20) - 1 };
	struct iommu_ioas_allow_iovas aw = { .size = sizeof(aw), .ioas_id = ioas, .num_iovas = 1, .allowed_iovas = (uintptr_t)&allow };
	printf("allow_iovas %d\n", rc(ioctl(fd, IOMMU_IOAS_ALLOW_IOVAS, &aw)));
	struct iommu_ioas_iova_ranges ranges = { .size = sizeof(ranges), .ioas_id = ioas, .num_iovas = 0 };
	r = rc(ioctl(fd, IOMMU_IOAS_IOVA_RANGES, &ranges));
	printf("iova_ranges_too_small %d num_iovas=%u\n", r, ranges.num_iovas);

	unsigned char *ram = mmap(NULL, RAM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	memset(ram, 0x5a, RAM_SIZE);
	struct iommu_ioas_map map = { .size = sizeof(map), .ioas_id = ioas, .user_va = (uintptr_t)ram, .length = RAM_SIZE,
		.flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE, .iova = MOCK_APERTURE_START };
	printf("ioas_map %d\n", rc(ioctl(fd, IOMMU_IOAS_MAP, &map)));
	struct iommu_ioas_alloc alloc2 = { .size = sizeof(alloc2) };
	ioctl(fd, IOMMU_IOAS_ALLOC, &alloc2);
	struct iommu_ioas_copy copy = { .size = sizeof(copy), .dst_ioas_id = alloc2.out_ioas_id, .src_ioas_id = ioas,
		.flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
		.length = RAM_SIZE, .dst_iova = MOCK_APERTURE_START, .src_iova = MOCK_APERTURE_START };
	printf("ioas_copy %d dst=%u\n", rc(ioctl(fd, IOMMU_IOAS_COPY, &copy)), alloc2.out_ioas_id);

	struct iommu_option opt = { .size = sizeof(opt), .option_id = IOMMU_OPTION_RLIMIT_MODE, .op = IOMMU_OPTION_OP_GET };
	r = rc(ioctl(fd, IOMMU_OPTION, &opt));
	printf("option_rlimit_mode %d val64=%llu\n", r, (unsigned long long)opt.val64);

	struct iommu_vfio_ioas vi = { .size = sizeof(vi), .op = IOMMU_VFIO_IOAS_GET };
	printf("vfio_ioas_get_unset %d\n", rc(ioctl(fd, IOMMU_VFIO_IOAS, &vi)));
	vi.op = IOMMU_VFIO_IOAS_SET;
	vi.ioas_id = ioas;
	printf("vfio_ioas_set %d\n", rc(ioctl(fd, IOMMU_VFIO_IOAS, &vi)));
	vi.op = IOMMU_VFIO_IOAS_GET;
	vi.ioas_id = 0;
	r = rc(ioctl(fd, IOMMU_VFIO_IOAS, &vi));
	printf("vfio_ioas_get %d ioas_id=%u\n", r, vi.ioas_id);

	struct iommu_hwpt_alloc parent = { .size = sizeof(parent), .dev_id = dev, .pt_id = ioas,
		.flags = IOMMU_HWPT_ALLOC_NEST_PARENT | IOMMU_HWPT_ALLOC_DIRTY_TRACKING };
	r = rc(ioctl(fd, IOMMU_HWPT_ALLOC, &parent));
	printf("hwpt_alloc_dirty %d id=%u\n", r, parent.out_hwpt_id);
	struct vfio_device_attach_iommufd_pt at = { .argsz = sizeof(at), .pt_id = parent.out_hwpt_id };
	printf("attach %d\n", rc(ioctl(devfd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &at)));
	struct iommu_hwpt_set_dirty_tracking dt = { .size = sizeof(dt), .flags = IOMMU_HWPT_DIRTY_TRACKING_ENABLE,
		.hwpt_id = parent.out_hwpt_id };
	printf("set_dirty_tracking %d\n", rc(ioctl(fd, IOMMU_HWPT_SET_DIRTY_TRACKING, &dt)));
	uint64_t mark = 0x5; /* pages 0 and 2 */
	struct iommu_test_cmd dirty = { .size = sizeof(dirty), .op = IOMMU_TEST_OP_DIRTY, .id = parent.out_hwpt_id };
	dirty.dirty.iova = MOCK_APERTURE_START;
	dirty.dirty.length = RAM_SIZE;
	dirty.dirty.page_size = 4096;
	dirty.dirty.uptr = (uintptr_t)&mark;
	r = rc(ioctl(fd, IOMMU_TEST_CMD, &dirty));
	printf("test_dirty %d nr=%llu\n", r, (unsigned long long)dirty.dirty.out_nr_dirty);
	uint64_t bitmap = 0;
	struct iommu_hwpt_get_dirty_bitmap gd = { .size = sizeof(gd), .hwpt_id = parent.out_hwpt_id,
		.iova = MOCK_APERTURE_START, .length = RAM_SIZE, .page_size = 4096, .data = (uintptr_t)&bitmap };
	r = rc(ioctl(fd, IOMMU_HWPT_GET_DIRTY_BITMAP, &gd));
	printf("get_dirty_bitmap %d bitmap=%llu\n", r, (unsigned long long)bitmap);

	struct iommu_viommu_alloc va = { .size = sizeof(va), .type = IOMMU_VIOMMU_TYPE_SELFTEST, .dev_id = dev,
		.hwpt_id = parent.out_hwpt_id };
	r = rc(ioctl(fd, IOMMU_VIOMMU_ALLOC, &va));
	printf("viommu_alloc %d id=%u\n", r, va.out_viommu_id);
	struct iommu_vdevice_alloc vd = { .size = sizeof(vd), .viommu_id = va.out_viommu_id, .dev_id = dev, .virt_id = 0x99 };
	r = rc(ioctl(fd, IOMMU_VDEVICE_ALLOC, &vd));
	printf("vdevice_alloc %d id=%u\n", r, vd.out_vdevice_id);
	struct iommu_veventq_alloc vq = { .size = sizeof(vq), .viommu_id = va.out_viommu_id,
		.type = IOMMU_VEVENTQ_TYPE_SELFTEST, .veventq_depth = 2 };
	r = rc(ioctl(fd, IOMMU_VEVENTQ_ALLOC, &vq));
	printf("veventq_alloc %d id=%u\n", r, vq.out_veventq_id);
	struct iommu_hwpt_selftest data = { .iotlb = IOMMU_TEST_IOTLB_DEFAULT };
	struct iommu_hwpt_alloc nested = { .size = sizeof(nested), .dev_id = dev, .pt_id = va.out_viommu_id,
		.data_type = IOMMU_HWPT_DATA_SELFTEST, .data_len = sizeof(data), .data_uptr = (uintptr_t)&data };
	r = rc(ioctl(fd, IOMMU_HWPT_ALLOC, &nested));
	printf("nested_alloc %d id=%u\n", r, nested.out_hwpt_id);
	at.pt_id = nested.out_hwpt_id;
	printf("attach_nested %d\n", rc(ioctl(devfd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &at)));
	struct iommu_test_cmd ev = { .size = sizeof(ev), .op = IOMMU_TEST_OP_TRIGGER_VEVENT };
	ev.trigger_vevent.dev_id = dev;
	/* poll reflects the queue: nothing to read before the event, POLLIN after it. */
	struct pollfd pfd = { .fd = (int)vq.out_veventq_fd, .events = POLLIN };
	int pr = poll(&pfd, 1, 0);
	printf("poll_empty %d revents=%d\n", pr, pfd.revents);
	printf("trigger_vevent %d\n", rc(ioctl(fd, IOMMU_TEST_CMD, &ev)));
	pr = poll(&pfd, 1, 1000);
	printf("poll_event %d revents=%d\n", pr, pfd.revents);
	struct {
		struct iommufd_vevent_header h;
		uint32_t virt_id;
	} rec = { 0 };
	/* A dup of the vEVENTQ fd is the same simulated file. */
	int qdup = fcntl((int)vq.out_veventq_fd, F_DUPFD_CLOEXEC, 3);
	ssize_t n = read(qdup, &rec, sizeof(rec));
	printf("veventq_read %zd flags=%u sequence=%u virt_id=%u\n", n < 0 ? -errno : n, rec.h.flags, rec.h.sequence,
	       rec.virt_id);

	struct iommu_hw_queue_alloc hq = { .size = sizeof(hq), .viommu_id = va.out_viommu_id,
		.type = IOMMU_HW_QUEUE_TYPE_SELFTEST, .index = 0, .nesting_parent_iova = MOCK_APERTURE_START, .length = 4096 };
	r = rc(ioctl(fd, IOMMU_HW_QUEUE_ALLOC, &hq));
	printf("hw_queue_alloc %d id=%u\n", r, hq.out_hw_queue_id);

	printf("poll_drained %d\n", poll(&pfd, 1, 0));
	close(qdup);

	/* A memfd of this process: the server shadows it with a simulated memfd backed by the same file. */
	int mfd = memfd_create("guest", 0);
	ftruncate(mfd, RAM_SIZE);
	struct iommu_ioas_map_file mf = { .size = sizeof(mf), .ioas_id = alloc2.out_ioas_id, .fd = mfd, .length = RAM_SIZE,
		.flags = IOMMU_IOAS_MAP_READABLE };
	r = rc(ioctl(fd, IOMMU_IOAS_MAP_FILE, &mf));
	printf("ioas_map_file_memfd %d iova=0x%llx\n", r, (unsigned long long)mf.iova);
	close(mfd);

	/* VFIO type1 compatibility on /dev/iommu: ioctls whose argument is a value. */
	printf("vfio_api_version %d\n", ioctl(fd, VFIO_GET_API_VERSION));
	printf("vfio_check_type1v2 %d\n", ioctl(fd, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU));

	struct iommu_ioas_change_process cp = { .size = sizeof(cp) };
	printf("ioas_change_process %d\n", rc(ioctl(fd, IOMMU_IOAS_CHANGE_PROCESS, &cp)));

	close((int)vq.out_veventq_fd);
	close(devfd);
	close(fd);
	printf("done\n");
	return 0;
}
