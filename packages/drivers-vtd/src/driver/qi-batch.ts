/**
 * A domain's batch of invalidation descriptors: collected per unit while a domain change is flushed, then submitted
 * with one wait descriptor per unit.
 * @linux struct qi_batch, qi_batch_add_* / qi_batch_flush_descs (drivers/iommu/intel/cache.c)
 */
import { KernelError } from "@iommu-sim/core";
import type { IntelIommu } from "./iommu.js";
import type { QiDesc } from "./regs.js";

/**
 * Descriptors being collected, per unit.
 * @linux struct qi_batch
 */
export class QiBatch {
  private readonly byUnit = new Map<IntelIommu, QiDesc[]>();

  /** @linux qi_batch_increment_index (after a qi_desc_* builder filled the slot) */
  add(iommu: IntelIommu, d: QiDesc): void {
    let l = this.byUnit.get(iommu);
    if (!l) {
      l = [];
      this.byUnit.set(iommu, l);
    }
    l.push(d);
  }

  /**
   * Submit what was collected, one synchronous submission per unit. A failed submission (a device-TLB invalidation
   * that kept timing out, a unit that stopped) is not reported to the caller: Linux ignores qi_submit_sync's result
   * here, and unmap cannot fail.
   * @linux qi_batch_flush_descs
   */
  flush(): void {
    for (const [iommu, descs] of this.byUnit) {
      try {
        if (descs.length > 0 && iommu.queued) iommu.submitSync(descs);
      } catch (e) {
        if (!(e instanceof KernelError)) throw e;
      } finally {
        descs.length = 0;
      }
    }
  }
}
