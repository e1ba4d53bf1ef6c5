/**
 * IOMMU mapping protection flags, with the values of include/linux/iommu.h.
 * @linux IOMMU_READ / IOMMU_WRITE / IOMMU_CACHE / IOMMU_NOEXEC / IOMMU_MMIO / IOMMU_PRIV
 */

/** Readable by the device. @linux IOMMU_READ */
export const IOMMU_READ = 1 << 0;
/** Writable by the device. @linux IOMMU_WRITE */
export const IOMMU_WRITE = 1 << 1;
/** DMA cache coherency. @linux IOMMU_CACHE */
export const IOMMU_CACHE = 1 << 2;
/** Not executable by the device. @linux IOMMU_NOEXEC */
export const IOMMU_NOEXEC = 1 << 3;
/** Device (MMIO) memory attributes. @linux IOMMU_MMIO */
export const IOMMU_MMIO = 1 << 4;
/** Privileged-only access. @linux IOMMU_PRIV */
export const IOMMU_PRIV = 1 << 5;

/** read_and_clear_dirty flag: report dirty entries but leave them dirty. @linux IOMMU_DIRTY_NO_CLEAR */
export const IOMMU_DIRTY_NO_CLEAR = 1 << 0;
