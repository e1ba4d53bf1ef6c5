import "reflect-metadata";
import { type DependencyContainer, container as rootContainer } from "tsyringe";

/**
 * A machine's DI container (tsyringe's), re-exported so packages built on core name it without importing tsyringe
 * themselves: one tsyringe, the one core depends on.
 * @linux none: the DI container of one simulated machine
 */
export type { DependencyContainer };

/**
 * A typed DI token. tsyringe's string and symbol tokens carry no type; this brands a symbol with the service type
 * so `resolve(c, Token)` is typed (the VS Code `createDecorator<IFoo>('foo')` idea).
 */
export type ServiceToken<T> = symbol & { readonly __service?: T };

/** Declare a typed token. */
export function createToken<T>(name: string): ServiceToken<T> {
  return Symbol(`iommu-sim:${name}`) as ServiceToken<T>;
}

/** Resolve one service from a machine's container. */
export function resolve<T>(c: DependencyContainer, token: ServiceToken<T>): T {
  return c.resolve<T>(token);
}

/** Resolve every registration of a multi-injection token (extension points), in registration order. */
export function resolveAll<T>(c: DependencyContainer, token: ServiceToken<T>): T[] {
  return c.isRegistered(token, true) ? c.resolveAll<T>(token) : [];
}

/** Register a value for a token in a machine's container (container-scoped; never the global container). */
export function provide<T>(c: DependencyContainer, token: ServiceToken<T>, value: T): void {
  c.register<T>(token, { useValue: value });
}

/**
 * A fresh child container for one machine. Nothing is ever registered in tsyringe's global container, so two
 * machines in one process share nothing.
 */
export function createMachineContainer(): DependencyContainer {
  return rootContainer.createChildContainer();
}
