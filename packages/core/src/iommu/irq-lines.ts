/**
 * The wired interrupt lines an IOMMU's hardware model may offer its driver, one handler per named line. A
 * platform without them (a model that never raises interrupts) leaves the driver polling.
 * @linux the IRQs a driver finds with platform_get_irq_byname / the unit's MSI and hooks with request_threaded_irq
 */

/**
 * Named interrupt lines: `connectIrq(line, handler)` hooks a handler, `undefined` unhooks it.
 * @linux request_threaded_irq / free_irq on the unit's interrupts
 */
export interface IommuIrqLines<L extends string> {
  connectIrq(line: L, handler: (() => void) | undefined): void;
}

/**
 * Whether what the machine holds under an IOMMU's name offers named interrupt lines.
 * @linux platform_get_irq_byname (an IOMMU without wired interrupts)
 */
export function isIommuIrqLines<L extends string>(x: unknown): x is IommuIrqLines<L> {
  return typeof (x as { connectIrq?: unknown } | undefined)?.connectIrq === "function";
}
