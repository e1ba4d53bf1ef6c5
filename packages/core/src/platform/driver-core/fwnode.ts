/**
 * Firmware nodes: the handles firmware gives devices and IOMMU instances (a DT node path, an ACPI object). The IOMMU
 * core finds an IOMMU's ops and its platform device by fwnode, so a node is one object per path.
 */

/**
 * A firmware node. Identity matters: two lookups of one path give the same object.
 * @linux struct fwnode_handle (struct device_node for DT)
 */
export class FwNode {
  /** The last path component (`iommu@9050000` for `/soc/iommu@9050000`). */
  readonly name: string;
  constructor(
    /** The full path, e.g. `/iommu@9050000`; for ACPI-only IOMMUs a synthetic `\\_SB.DMAR0`-like name. */
    readonly path: string,
  ) {
    const parts = path.split("/").filter((p) => p !== "");
    this.name = parts[parts.length - 1] ?? path;
  }

  /** @linux fwnode_get_name / of_node_full_name */
  toString(): string {
    return this.path;
  }
}

/**
 * The machine's firmware node table: one {@link FwNode} per path.
 * @linux the unflattened device tree (of_root) and the ACPI namespace, as lookup tables
 */
export class FwNodeTable {
  private readonly nodes = new Map<string, FwNode>();

  /**
   * The node at `path`, created on first use.
   * @linux of_find_node_by_path (returns the one node for a path)
   */
  node(path: string): FwNode {
    let n = this.nodes.get(path);
    if (!n) {
      n = new FwNode(path);
      this.nodes.set(path, n);
    }
    return n;
  }

  /** The node at `path` if it exists. @linux of_find_node_by_path */
  find(path: string): FwNode | undefined {
    return this.nodes.get(path);
  }

  /** Every node, in creation order. */
  all(): FwNode[] {
    return [...this.nodes.values()];
  }
}
