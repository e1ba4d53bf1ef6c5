/** Test-only bugs planted in a fresh machine's iommufd command table, to prove the fuzzer finds and shrinks them. */
import type { Machine } from "@iommu-sim/core";
import { _IO, getIommufdCore, IOMMUFD_TYPE, type IommufdUcmd } from "@iommu-sim/iommufd";

/** Run `after` once command `nr` has executed successfully. */
export function plantAfter(m: Machine, nr: number, after: (ucmd: IommufdUcmd, m: Machine) => Promise<void> | void) {
  const core = getIommufdCore(m);
  const op = core.ioctlOps.get(nr);
  if (!op || op.ioctlNum !== _IO(IOMMUFD_TYPE, nr)) throw new Error(`no iommufd op 0x${nr.toString(16)}`);
  core.ioctlOps.set(nr, {
    ...op,
    execute: async (ucmd) => {
      await op.execute(ucmd);
      await after(ucmd, m);
    },
  });
}
