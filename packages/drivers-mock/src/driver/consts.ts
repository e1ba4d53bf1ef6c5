/**
 * Constants the kernel selftests see of the mock IOMMU, with the kernel's names and values
 * (drivers/iommu/iommufd/iommufd_test.h, selftest.c), plus the driver's own sizing choices.
 */

/** First IOVA of a mock paging domain. @linux MOCK_APERTURE_START (iommufd_test.h) */
export const MOCK_APERTURE_START = 1 << 24;
/** Last IOVA of a mock paging domain. @linux MOCK_APERTURE_LAST (iommufd_test.h) */
export const MOCK_APERTURE_LAST = 2 ** 31 - 1;
/** The mock page: half the CPU page. @linux MOCK_PAGE_SIZE (iommufd_test.h) */
export const MOCK_PAGE_SIZE = 2048;
/** The mock huge page: 512 mock pages. @linux MOCK_HUGE_PAGE_SIZE (iommufd_test.h) */
export const MOCK_HUGE_PAGE_SIZE = 512 * MOCK_PAGE_SIZE;
/** Page sizes of a mock paging domain. @linux mock_domain pgsize_bitmap (MOCK_IOMMUPT_DEFAULT) */
export const MOCK_PGSIZE_BITMAP = MOCK_PAGE_SIZE | MOCK_HUGE_PAGE_SIZE;
/** PASID width of the mock IOMMU. @linux MOCK_PASID_WIDTH (selftest.c) */
export const MOCK_PASID_WIDTH = 20;

/**
 * The PASID whose every second set_dev_pasid fails with ENOMEM (attaching the blocked domain re-arms it), so a
 * test can watch the core keep the old domain when a replace fails in the driver.
 * @linux IOMMU_TEST_PASID_RESERVED (iommufd_test.h), mock_domain_set_dev_pasid_nop's pasid_1024_fake_error
 */
export const IOMMU_TEST_PASID_RESERVED = 1024;

/** Mock device flags (a device's `platformData["mock-dev-flags"]`). @linux MOCK_FLAGS_DEVICE_* (iommufd_test.h) */
export const MOCK_FLAGS_DEVICE_NO_DIRTY = 1 << 0;
/** @linux MOCK_FLAGS_DEVICE_PASID */
export const MOCK_FLAGS_DEVICE_PASID = 1 << 2;

/** Cache IDs of a nested mock domain (`iotlb[]`). @linux MOCK_NESTED_DOMAIN_IOTLB_ID_MAX / _NUM */
export const MOCK_NESTED_DOMAIN_IOTLB_ID_MAX = 3;
/** @linux MOCK_NESTED_DOMAIN_IOTLB_NUM (iommufd_test.h) */
export const MOCK_NESTED_DOMAIN_IOTLB_NUM = 4;
/** Initial value of the nested domain's cache entries. @linux IOMMU_TEST_IOTLB_DEFAULT */
export const IOMMU_TEST_IOTLB_DEFAULT = 0xbadbeef;

/** Driver data type of `struct iommu_hwpt_selftest`. @linux IOMMU_HWPT_DATA_SELFTEST */
export const IOMMU_HWPT_DATA_SELFTEST = 0xdead;
/** Invalidation entry type of `struct iommu_hwpt_invalidate_selftest`. @linux IOMMU_HWPT_INVALIDATE_DATA_SELFTEST */
export const IOMMU_HWPT_INVALIDATE_DATA_SELFTEST = 0xdeadbeef;
/** Invalidate every cache ID. @linux IOMMU_TEST_INVALIDATE_FLAG_ALL */
export const IOMMU_TEST_INVALIDATE_FLAG_ALL = 1 << 0;

/** Page-table types of `struct iommu_hwpt_selftest.pagetable_type`. @linux MOCK_IOMMUPT_DEFAULT (iommufd_test.h) */
export const MOCK_IOMMUPT_DEFAULT = 0;
/**
 * The same table, mapping only 1 MiB pages and CPU pages (for the dirty-tracking selftests' huge variants), and
 * with the table's whole aperture instead of the mock one.
 * @linux MOCK_IOMMUPT_HUGE (iommufd_test.h)
 */
export const MOCK_IOMMUPT_HUGE = 1;
/** The real AMD v1 format (not modelled: EOPNOTSUPP). @linux MOCK_IOMMUPT_AMDV1 (iommufd_test.h) */
export const MOCK_IOMMUPT_AMDV1 = 2;
/** Page sizes of a MOCK_IOMMUPT_HUGE domain: huge pages, plus PAGE_SIZE so iommufd accepts the domain. @linux mock_domain_alloc_pgtable */
export const MOCK_HUGE_PGSIZE_BITMAP = MOCK_HUGE_PAGE_SIZE | 4096;
/** IOVA width of a MOCK_IOMMUPT_HUGE domain: the table's, capped at the simulator's 2^53 address limit. */
export const MOCK_HUGE_IAS = 53;

/** The IOVA width of a mock paging domain (covers the aperture). @linux the mock domain's geometry (pt_iommu_mock ias) */
export const MOCK_IAS = 31;
/** Output address width. @linux the mock domain's output address width (pt_iommu_mock oas) */
export const MOCK_OAS = 48;
/** log2 of device-table entries the driver allocates (stream IDs 0..255). @linux arm_smmu_init_strtab sizing (STRTAB_SPLIT-like choice for the mock) */
export const MOCK_DT_LOG2 = 8;
/** log2 of fault-queue records the driver allocates. @linux arm_smmu_init_queues sizing (EVTQ_MAX_SZ_SHIFT-like choice for the mock) */
export const MOCK_FQ_LOG2 = 8;
