/**
 * IOMMU_OPTION: the context-wide RLIMIT_MODE and the per-IOAS HUGE_PAGES option.
 * @linux iommufd_option, iommufd_option_rlimit_mode (main.c), iommufd_ioas_option (ioas.c)
 */
import { kerr } from "@iommu-sim/core";
import { IOPT_PAGES_ACCOUNT_MM, IOPT_PAGES_ACCOUNT_USER } from "./ctx.js";
import { ioptDisableLargePages, ioptEnableLargePages } from "./io-pagetable.js";
import { iommufdGetIoas } from "./ioas.js";
import { iommufdPutObject } from "./object.js";
import {
  IOMMU_OPTION_HUGE_PAGES,
  IOMMU_OPTION_OP_GET,
  IOMMU_OPTION_OP_SET,
  IOMMU_OPTION_RLIMIT_MODE,
  type IommuOption,
} from "./uapi.js";
import type { IommufdUcmd } from "./ucmd.js";

/**
 * RLIMIT_MODE: 0 charges pins to the user, 1 to the mm. Setting it needs CAP_SYS_RESOURCE (EPERM) and an empty
 * context (EBUSY).
 * @linux iommufd_option_rlimit_mode
 */
function rlimitMode(ucmd: IommufdUcmd, cmd: IommuOption): void {
  const ictx = ucmd.ictx;
  if (cmd.object_id) throw kerr("EOPNOTSUPP", "object_id must be 0");
  if (cmd.op === IOMMU_OPTION_OP_GET) {
    cmd.val64 = ictx.accountMode === IOPT_PAGES_ACCOUNT_MM ? 1n : 0n;
    return;
  }
  if (cmd.op === IOMMU_OPTION_OP_SET) {
    if (!ucmd.user.capable("CAP_SYS_RESOURCE")) throw kerr("EPERM", "needs CAP_SYS_RESOURCE");
    if (!ictx.objects.empty) throw kerr("EBUSY", "objects exist");
    if (cmd.val64 === 0n) ictx.accountMode = IOPT_PAGES_ACCOUNT_USER;
    else if (cmd.val64 === 1n) ictx.accountMode = IOPT_PAGES_ACCOUNT_MM;
    else throw kerr("EINVAL", "bad mode");
    return;
  }
  throw kerr("EOPNOTSUPP", "bad op");
}

/**
 * HUGE_PAGES of an IOAS: 0 disables large pages (EINVAL while domains hold mappings), 1 enables them.
 * @linux iommufd_ioas_option
 */
async function ioasOption(ucmd: IommufdUcmd, cmd: IommuOption): Promise<void> {
  if (cmd.__reserved) throw kerr("EOPNOTSUPP", "__reserved must be 0");
  const ioas = iommufdGetIoas(ucmd.ictx, cmd.object_id);
  try {
    if (cmd.op === IOMMU_OPTION_OP_SET) {
      if (cmd.val64 === 0n) await ioptDisableLargePages(ioas.iopt);
      else if (cmd.val64 === 1n) await ioptEnableLargePages(ioas.iopt);
      else throw kerr("EINVAL", "bad value");
    } else if (cmd.op === IOMMU_OPTION_OP_GET) {
      cmd.val64 = ioas.iopt.disableLargePages ? 0n : 1n;
    } else {
      throw kerr("EOPNOTSUPP", "bad op");
    }
  } finally {
    iommufdPutObject(ucmd.ictx, ioas);
  }
}

/**
 * IOMMU_OPTION: only `val64` is copied back.
 * @linux iommufd_option
 */
export async function iommufdOption(ucmd: IommufdUcmd): Promise<void> {
  const cmd = ucmd.cmd as unknown as IommuOption;
  if (cmd.__reserved) throw kerr("EOPNOTSUPP", "__reserved must be 0");
  switch (cmd.option_id) {
    case IOMMU_OPTION_RLIMIT_MODE:
      rlimitMode(ucmd, cmd);
      break;
    case IOMMU_OPTION_HUGE_PAGES:
      await ioasOption(ucmd, cmd);
      break;
    default:
      throw kerr("EOPNOTSUPP", "unknown option");
  }
  ucmd.respondField("val64" as never);
}
