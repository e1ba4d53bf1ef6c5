/*
 * The iommufd, VFIO-cdev and selftest uAPI used by the examples, written out here because distribution headers
 * often predate it (linux/iommufd.h appeared in v6.2; vIOMMU and vDEVICE in v6.13). Field names and numbers are
 * the kernel's (include/uapi/linux/iommufd.h, include/uapi/linux/vfio.h, drivers/iommu/iommufd/iommufd_test.h);
 * a program built against a new enough kernel's headers needs none of this.
 */
#ifndef IOMMUFD_SIM_UAPI_H
#define IOMMUFD_SIM_UAPI_H
#include <stdint.h>
#include <sys/ioctl.h>

#define IOMMUFD_TYPE (';')
#define IOMMUFD_CMD(nr) _IO(IOMMUFD_TYPE, 0x80 + (nr))
#define IOMMU_DESTROY IOMMUFD_CMD(0x00)
#define IOMMU_IOAS_ALLOC IOMMUFD_CMD(0x01)
#define IOMMU_IOAS_ALLOW_IOVAS IOMMUFD_CMD(0x02)
#define IOMMU_IOAS_COPY IOMMUFD_CMD(0x03)
#define IOMMU_IOAS_IOVA_RANGES IOMMUFD_CMD(0x04)
#define IOMMU_IOAS_MAP IOMMUFD_CMD(0x05)
#define IOMMU_IOAS_UNMAP IOMMUFD_CMD(0x06)
#define IOMMU_OPTION IOMMUFD_CMD(0x07)
#define IOMMU_VFIO_IOAS IOMMUFD_CMD(0x08)
#define IOMMU_HWPT_ALLOC IOMMUFD_CMD(0x09)
#define IOMMU_GET_HW_INFO IOMMUFD_CMD(0x0a)
#define IOMMU_HWPT_SET_DIRTY_TRACKING IOMMUFD_CMD(0x0b)
#define IOMMU_HWPT_GET_DIRTY_BITMAP IOMMUFD_CMD(0x0c)
#define IOMMU_HWPT_INVALIDATE IOMMUFD_CMD(0x0d)
#define IOMMU_FAULT_QUEUE_ALLOC IOMMUFD_CMD(0x0e)
#define IOMMU_IOAS_MAP_FILE IOMMUFD_CMD(0x0f)
#define IOMMU_VIOMMU_ALLOC IOMMUFD_CMD(0x10)
#define IOMMU_VDEVICE_ALLOC IOMMUFD_CMD(0x11)
#define IOMMU_IOAS_CHANGE_PROCESS IOMMUFD_CMD(0x12)
#define IOMMU_VEVENTQ_ALLOC IOMMUFD_CMD(0x13)
#define IOMMU_HW_QUEUE_ALLOC IOMMUFD_CMD(0x14)
#define IOMMU_TEST_CMD IOMMUFD_CMD(0x20)

#define VFIO_TYPE (';')
#define VFIO_BASE 100
#define VFIO_GET_API_VERSION _IO(VFIO_TYPE, VFIO_BASE + 0)
#define VFIO_CHECK_EXTENSION _IO(VFIO_TYPE, VFIO_BASE + 1)
#define VFIO_TYPE1v2_IOMMU 3
#define VFIO_DEVICE_BIND_IOMMUFD _IO(VFIO_TYPE, VFIO_BASE + 18)
#define VFIO_DEVICE_ATTACH_IOMMUFD_PT _IO(VFIO_TYPE, VFIO_BASE + 19)
#define VFIO_DEVICE_DETACH_IOMMUFD_PT _IO(VFIO_TYPE, VFIO_BASE + 20)

struct iommu_destroy { uint32_t size, id; };
struct iommu_ioas_alloc { uint32_t size, flags, out_ioas_id; };
struct iommu_iova_range { uint64_t start, last; };
struct iommu_ioas_iova_ranges {
	uint32_t size, ioas_id, num_iovas, __reserved;
	uint64_t allowed_iovas, out_iova_alignment;
};
#define IOMMU_IOAS_MAP_FIXED_IOVA 1
#define IOMMU_IOAS_MAP_WRITEABLE 2
#define IOMMU_IOAS_MAP_READABLE 4
struct iommu_ioas_map {
	uint32_t size, flags, ioas_id, __reserved;
	uint64_t user_va, length, iova;
};
struct iommu_ioas_allow_iovas {
	uint32_t size, ioas_id, num_iovas, __reserved;
	uint64_t allowed_iovas;
};
struct iommu_ioas_copy {
	uint32_t size, flags, dst_ioas_id, src_ioas_id;
	uint64_t length, dst_iova, src_iova;
};
struct iommu_ioas_map_file {
	uint32_t size, flags, ioas_id;
	int32_t fd;
	uint64_t start, length, iova;
};
#define IOMMU_OPTION_RLIMIT_MODE 0
#define IOMMU_OPTION_OP_GET 1
struct iommu_option {
	uint32_t size, option_id;
	uint16_t op, __reserved;
	uint32_t object_id;
	uint64_t val64;
};
#define IOMMU_VFIO_IOAS_GET 0
#define IOMMU_VFIO_IOAS_SET 1
struct iommu_vfio_ioas { uint32_t size, ioas_id; uint16_t op, __reserved; };
#define IOMMU_HWPT_ALLOC_DIRTY_TRACKING 2
#define IOMMU_HWPT_DIRTY_TRACKING_ENABLE 1
struct iommu_hwpt_set_dirty_tracking { uint32_t size, flags, hwpt_id, __reserved; };
struct iommu_hwpt_get_dirty_bitmap {
	uint32_t size, hwpt_id, flags, __reserved;
	uint64_t iova, length, page_size, data;
};
struct iommu_ioas_change_process { uint32_t size, __reserved; };
struct iommu_veventq_alloc {
	uint32_t size, flags, viommu_id, type, veventq_depth, out_veventq_id, out_veventq_fd, __reserved;
};
struct iommufd_vevent_header { uint32_t flags, sequence; };
struct iommu_hw_queue_alloc {
	uint32_t size, flags, viommu_id, type, index, out_hw_queue_id;
	uint64_t nesting_parent_iova, length;
};
struct iommu_ioas_unmap { uint32_t size, ioas_id; uint64_t iova, length; };
#define IOMMU_HWPT_ALLOC_NEST_PARENT 1
#define IOMMU_HWPT_FAULT_ID_VALID 4
struct iommu_hwpt_alloc {
	uint32_t size, flags, dev_id, pt_id, out_hwpt_id, __reserved, data_type, data_len;
	uint64_t data_uptr;
	uint32_t fault_id, __reserved2;
};
struct iommu_hw_info {
	uint32_t size, flags, dev_id, data_len;
	uint64_t data_uptr;
	uint32_t out_data_type;
	uint8_t out_max_pasid_log2, __reserved[3];
	uint64_t out_capabilities;
};
struct iommu_hwpt_invalidate {
	uint32_t size, hwpt_id;
	uint64_t data_uptr;
	uint32_t data_type, entry_len, entry_num, __reserved;
};
struct iommu_fault_alloc { uint32_t size, flags, out_fault_id, out_fault_fd; };
struct iommu_hwpt_pgfault {
	uint32_t flags, dev_id, pasid, grpid, perm, __reserved;
	uint64_t addr;
	uint32_t length, cookie;
};
struct iommu_hwpt_page_response { uint32_t cookie, code; };
struct iommu_viommu_alloc {
	uint32_t size, flags, type, dev_id, hwpt_id, out_viommu_id, data_len, __reserved;
	uint64_t data_uptr;
};
struct iommu_vdevice_alloc { uint32_t size, viommu_id, dev_id, out_vdevice_id; uint64_t virt_id; };

struct vfio_device_bind_iommufd { uint32_t argsz, flags; int32_t iommufd; uint32_t out_devid; };
struct vfio_device_attach_iommufd_pt { uint32_t argsz, flags, pt_id; };
struct vfio_device_detach_iommufd_pt { uint32_t argsz, flags; };

/* CONFIG_IOMMUFD_TEST (drivers/iommu/iommufd/iommufd_test.h) */
enum {
	IOMMU_TEST_OP_MD_CHECK_MAP = 3,
	IOMMU_TEST_OP_CREATE_ACCESS = 5,
	IOMMU_TEST_OP_ACCESS_RW = 8,
	IOMMU_TEST_OP_MD_CHECK_IOTLB = 14,
	IOMMU_TEST_OP_DIRTY = 13,
	IOMMU_TEST_OP_TRIGGER_IOPF = 15,
	IOMMU_TEST_OP_TRIGGER_VEVENT = 17,
};
#define MOCK_APERTURE_START (1UL << 24)
#define MOCK_ACCESS_RW_WRITE (1 << 0)
#define IOMMU_HWPT_DATA_SELFTEST 0xdead
#define IOMMU_TEST_IOTLB_DEFAULT 0xbadbeef
#define IOMMU_VIOMMU_TYPE_SELFTEST 0xdeadbeef
#define IOMMU_HWPT_INVALIDATE_DATA_SELFTEST 0xdeadbeef
#define IOMMU_TEST_INVALIDATE_FLAG_ALL (1 << 0)
#define IOMMU_VEVENTQ_TYPE_SELFTEST 0xbeefbeef
#define IOMMU_HW_QUEUE_TYPE_SELFTEST 0xdeadbeef
struct iommu_test_hw_info { uint32_t flags, test_reg; };
struct iommu_hwpt_selftest { uint32_t iotlb, pagetable_type; };
struct iommu_hwpt_invalidate_selftest { uint32_t flags, iotlb_id; };
struct iommu_test_cmd {
	uint32_t size, op, id, __reserved;
	union {
		struct { uint64_t iova, length, uptr; } check_map;
		struct { uint32_t out_access_fd, flags; } create_access;
		struct { uint64_t iova, length, uptr; uint32_t flags; } access_rw;
		struct { uint32_t id, iotlb; } check_iotlb;
		struct { uint32_t dev_id, pasid, grpid, perm; uint64_t addr; } trigger_iopf;
		struct { uint32_t dev_id; } trigger_vevent;
		struct { uint32_t flags; uint64_t iova, length, page_size, uptr, out_nr_dirty; } dirty;
		uint8_t pad[48];
	};
	uint32_t last;
} __attribute__((aligned(8)));
#endif
