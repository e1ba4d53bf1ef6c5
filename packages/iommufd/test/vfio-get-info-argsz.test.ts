/**
 * VFIO_IOMMU_GET_INFO in object form with a huge argsz: Linux (vfio_compat.c iommufd_vfio_iommu_get_info) writes
 * each capability to user memory with copy_to_user and allocates nothing by argsz, so any argsz up to 4 GiB answers
 * at once. Found by the fuzzer (packages/fuzz): the object form allocated argsz bytes.
 */
import { describe, expect, it } from "vitest";
import { IOMMU_VFIO_IOAS, IOMMU_VFIO_IOAS_SET, ioasAlloc, VFIO_IOMMU_GET_INFO } from "../src/index.js";
import { finish, setup } from "./helpers.js";

describe("VFIO_IOMMU_GET_INFO with a huge argsz", () => {
  it("returns the capability chain and nothing sized by argsz", async () => {
    const env = await setup();
    const ioas = await ioasAlloc(env.p, env.fd);
    await env.ioctl(IOMMU_VFIO_IOAS, { size: 0, ioas_id: ioas, op: IOMMU_VFIO_IOAS_SET, __reserved: 0 });
    const sized = { argsz: 24, flags: 0, iova_pgsizes: 0n, cap_offset: 0, pad: 0 };
    await env.ioctl(VFIO_IOMMU_GET_INFO, sized);
    const chain = sized.argsz - 24;
    expect(chain).toBeGreaterThan(0);
    for (const argsz of [sized.argsz + 0x100000, 0xffff_ffff]) {
      const info: Record<string, unknown> = { argsz, flags: 0, iova_pgsizes: 0n, cap_offset: 0, pad: 0 };
      await env.ioctl(VFIO_IOMMU_GET_INFO, info);
      expect(info.argsz).toBe(sized.argsz);
      expect(info.cap_offset).toBe(24);
      expect((info.caps as Uint8Array).byteLength).toBe(chain);
    }
    await finish(env);
  });
});
